"""Sphinx configuration of the rsrp_sim documentation (``sphinx-build -W docs docs/_build/html``)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rsrp_sim  # noqa: E402

project = "rsrp_sim"
author = "the rsrp_sim developers"
copyright = "2026, the rsrp_sim developers"
release = version = rsrp_sim.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
nitpicky = False
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# heavy optional back-ends are imported lazily by the package; mock the simulators so the API pages
# build on a machine without them (the CI machine has them all, so nothing is mocked there)
autodoc_mock_imports = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
html_theme = "furo"
html_title = f"rsrp_sim {release}"
html_static_path = []
suppress_warnings = ["myst.header"]
