"""Lint and public API: ``ruff check`` on the package and ``mypy`` on the public modules are clean (both
configured in pyproject.toml, pinned in constraints.txt: the ``lint`` extra); every public module has a
truthful ``__all__`` and type hints on every public function and method.

The public modules are those of docs/api.md, and ``rsrp_sim/__main__.py``.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MODULES = re.findall(r"^\.\. automodule:: (\S+)", (ROOT / "docs" / "api.md").read_text(), re.M)
PUBLIC = [*API_MODULES, "rsrp_sim.__main__"]


def _path(module: str) -> str:
    rel = Path(*module.split("."))
    return (rel / "__init__.py").as_posix() if (ROOT / rel).is_dir() else rel.with_suffix(".py").as_posix()


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _need(tool: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed in this environment (pip install -c constraints.txt -e '.[lint]')")


def test_ruff_is_clean():
    _need("ruff")
    p = _run(["ruff", "check", "--no-cache", "rsrp_sim"], timeout=120)
    assert p.returncode == 0, f"ruff check rsrp_sim:\n{p.stdout}{p.stderr}"


def test_mypy_is_clean_on_the_public_modules():
    _need("mypy")
    # a cache outside the repository: a second run takes seconds instead of half a minute
    cache = Path(tempfile.gettempdir()) / "rsrp_sim-mypy-cache"
    p = _run(["mypy", "--cache-dir", str(cache)], timeout=600)
    assert p.returncode == 0, f"mypy:\n{p.stdout}{p.stderr}"


def test_mypy_checks_exactly_the_public_modules():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert sorted(cfg["files"]) == sorted(_path(m) for m in PUBLIC)
    strict = [o for o in cfg["overrides"] if o.get("disallow_incomplete_defs") or o.get("disallow_untyped_defs")]
    covered = {m for o in strict for m in ([o["module"]] if isinstance(o["module"], str) else o["module"])}
    assert covered >= set(PUBLIC)


@pytest.mark.parametrize("module", PUBLIC)
def test_all_is_declared_and_truthful(module: str):
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert isinstance(names, (list, tuple)) and names, f"{module} has no __all__"
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names), names
    missing = []
    for name in names:
        try:
            getattr(mod, name)
        except ModuleNotFoundError as e:  # a lazily imported optional back-end that is not installed
            if (e.name or "").split(".")[0] == "rsrp_sim":
                raise
        except AttributeError:
            missing.append(name)
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"


def _unannotated(tree: ast.Module) -> list[str]:
    out = []

    def check(fn: ast.FunctionDef | ast.AsyncFunctionDef, owner: str, method: bool) -> None:
        a = fn.args
        params = a.posonlyargs + a.args + a.kwonlyargs
        static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
        if method and not static and params:
            params = params[1:]  # self / cls
        missing = [p.arg for p in params if p.annotation is None]
        missing += ["*" + v.arg for v in (a.vararg, a.kwarg) if v is not None and v.annotation is None]
        if fn.returns is None and fn.name != "__init__":
            missing.append("return")
        if missing:
            out.append(f"line {fn.lineno}: {owner}{fn.name} ({', '.join(missing)})")

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            check(node, "", False)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                        (not m.name.startswith("_") or m.name == "__init__"):
                    check(m, f"{node.name}.", True)
    return out


@pytest.mark.parametrize("module", PUBLIC)
def test_public_functions_have_type_hints(module: str):
    path = ROOT / _path(module)
    bare = _unannotated(ast.parse(path.read_text(encoding="utf-8")))
    assert not bare, f"{_path(module)}: public functions without full type hints:\n" + "\n".join(bare)
