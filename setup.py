"""Build hook: a wheel carries the repository's models/, mod/ and protocols/ inside the package.

The folders live at the repository's root (``nrnivmodl mod`` works there); ``build_py`` copies them
to ``rsrp_sim/_assets/`` in the build, where :mod:`rsrp_sim.infra.assets` finds them in an installed
copy.  Editable installs read them from the source tree.  Everything else is in ``setup.cfg``.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

FOLDERS = {"models": "*.yaml", "mod": "*.mod", "protocols": "*.yaml"}


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name, pattern in FOLDERS.items():
            target = Path(self.build_lib, "rsrp_sim", "_assets", name)
            target.mkdir(parents=True, exist_ok=True)
            for src in sorted((root / name).glob(pattern)):
                shutil.copy2(src, target / src.name)


setup(cmdclass={"build_py": BuildPyWithAssets})
