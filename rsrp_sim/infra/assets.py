"""The project's data folders: ``models/`` (model constants), ``mod/`` (NMODL), ``protocols/`` (presets).

They sit at the repository's root, beside ``rsrp_sim/`` (so that ``nrnivmodl mod`` works from the
root, as NEURON users expect); a wheel carries copies of them inside the package, under
``rsrp_sim/_assets/`` (``setup.py`` copies them at build time).  :func:`folder` finds whichever
this installation has: the wheel's copy first, else the source tree's (editable installs and
checkouts).
"""
from __future__ import annotations

from pathlib import Path

from .errors import UserError

__all__ = ["FOLDERS", "folder", "read_text"]

#: the data folders shipped with the package
FOLDERS = ("models", "mod", "protocols")
_PACKAGE = Path(__file__).resolve().parents[1]


def folder(name: str) -> Path:
    """The folder ``name`` (one of :data:`FOLDERS`) of this installation."""
    if name not in FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; allowed: {', '.join(FOLDERS)}")
    for candidate in (_PACKAGE / "_assets" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise UserError(f"the {name}/ folder of rsrp_sim is missing from this installation ({_PACKAGE}); "
                    f"reinstall the package")


def read_text(name: str, file: str) -> str:
    """The text of ``<name>/<file>``; a missing file is a one-line error."""
    path = folder(name) / file
    if not path.is_file():
        raise UserError(f"{name}/{file} does not exist in this installation ({path.parent})")
    return path.read_text()
