"""What ships (the package, its data folders) and what users read (README, docs) points at nothing
outside the repository: no "SPEC §" section numbers, no ``../shared/...`` paths, no design notes or
issue numbers that an installed copy's user never sees.  (The tests may read ``../shared/data`` and
skip without it; they are not checked here.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the package and the data folders a wheel carries (setup.py, rsrp_sim/infra/assets.py), and the docs
CHECKED = [ROOT / "rsrp_sim", ROOT / "models", ROOT / "protocols", ROOT / "mod", ROOT / "docs", ROOT / "README.md"]
SKIP_DIRS = {"__pycache__", "_build", ".ipynb_checkpoints"}
OUTSIDE = re.compile(
    r"SPEC\s*§"                 # sections of a specification that is not part of the repository
    r"|\bSPEC\.md\b|\bDESIGN\.md\b"
    r"|\.\./shared\b|\bshared/notes\b|\bshared/data\b"
    r"|package-stack notes|reference-experiments"
    r"|\bissue \d+\b"           # tracker numbers
)


def _files() -> list[Path]:
    out = []
    for top in CHECKED:
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in paths:
            if SKIP_DIRS.intersection(p.relative_to(ROOT).parts):
                continue
            try:
                p.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # figures and other binary files
                continue
            out.append(p)
    return out


FILES = _files()


def test_the_checked_folders_exist_and_hold_files():
    assert all(top.exists() for top in CHECKED), [str(t) for t in CHECKED if not t.exists()]
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/science.md", "rsrp_sim/core/rule.py", "models/conn_snn.yaml",
            "protocols/cartpole.yaml", "rsrp_sim/data/datasets.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_reference_outside_the_repository(path: Path):
    hits = [f"{path.relative_to(ROOT).as_posix()}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, ("points outside the repository (state the fact, or refer to the docs, e.g. "
                      ":ref:`science-models`):\n" + "\n".join(hits))
