"""The documentation: the Sphinx site builds without a warning, the README's Python runs and does what
it says, every file the README and the docs point at exists, and every command they show names a
protocol module and a subcommand that exist."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_readme_contract_commands():
    """The two commands of the contract: the install-and-run line and the test line .ci/run calls."""
    s = _text(README)
    blocks = re.findall(r"```bash\n(.*?)```", s, re.S)
    assert blocks[0].strip() == ('python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[all]" '
                                 '&& .venv/bin/python -m rsrp_sim.protocols.cartpole')
    test_cmd = blocks[1].strip()
    ci = _text(ROOT / ".ci" / "run").strip().splitlines()
    assert ci[-1].strip() == test_cmd
    assert len(s.splitlines()) <= 150


def test_readme_python_runs():
    """The README's example learns the target mask it prints the comparison for."""
    s = _text(README)
    (block,) = re.findall(r"```python\n(.*?)```", s, re.S)
    printed = []
    ns = {"print": lambda *a: printed.append(a)}
    exec(compile(block, "README.md", "exec"), ns)
    (result,) = printed[-1]
    assert np.asarray(result).all(), result


def _links(path: Path):
    s = _text(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", s):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        yield target.split("#")[0]
    for target in re.findall(r"```\{(?:image|literalinclude|include|figure)\}\s+(\S+)", s):
        yield target


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_exist(path):
    missing = [t for t in _links(path) if t and not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)} points at missing files: {missing}"


def _commands():
    for path in [README, *PAGES]:
        for block in re.findall(r"```(?:bash|console|sh)\n(.*?)```", _text(path), re.S):
            for line in block.splitlines():
                yield path, line.split("#")[0].strip()


def test_shown_commands_name_real_modules_and_subcommands(capsys):
    """Every ``python -m MODULE`` shown is a module of the package; every ``rsrp-sim SUB`` shown answers
    ``--help`` with status 0 (an unknown subcommand is a one-line error with status 2)."""
    from rsrp_sim.__main__ import main

    protocols_dir = ROOT / "rsrp_sim" / "protocols"
    bad, subcommands = [], set()
    for path, line in _commands():
        for mod in re.findall(r"python -m (rsrp_sim(?:\.\w+)*)", line):
            rel = Path(*mod.split("."))
            if not ((ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__main__.py").exists()):
                bad.append((path.name, line))
        m = re.match(r"(?:\S*/)?rsrp-sim\s+([\w-]+)", line)
        if m:
            subcommands.add(m.group(1))
        m = re.search(r"rsrp-sim launch .*?-- (\w+)", line)
        if m and not (protocols_dir / f"{m.group(1)}.py").exists():
            bad.append((path.name, line))
    assert {"compare", "report", "sweep", "launch"} <= subcommands
    for sub in sorted(subcommands):
        try:
            code = main([sub, "--help"])
        except SystemExit as e:
            code = e.code
        if code not in (0, None):
            bad.append(("rsrp-sim", sub, code))
    capsys.readouterr()
    assert main(["no-such-command"]) == 2
    assert not bad, bad


@pytest.mark.skipif(shutil.which("sphinx-build") is None and
                    subprocess.run([sys.executable, "-c", "import sphinx, myst_parser"]).returncode != 0,
                    reason="Sphinx and myst-parser are not installed (pip install -e '.[docs]')")
def test_sphinx_builds_without_warnings(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(DOCS), str(tmp_path / "html")], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    assert (tmp_path / "html" / "science.html").exists()
    assert (tmp_path / "html" / "api.html").exists()
