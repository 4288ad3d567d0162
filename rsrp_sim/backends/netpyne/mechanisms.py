"""Build and load the package's NMODL mechanisms (``rsrp_sim/backends/netpyne/mod/*.mod``).

On first use the whole ``mod/`` folder is compiled with NEURON's ``nrnivmodl`` into a per-user cache
keyed by a hash of the mod files' contents (and the NEURON version and machine), then loaded into
the running NEURON once per process.  Later processes reuse the compiled library; editing a mod file
gives a new hash and a fresh build.  Nothing is ever written into the package's own folder.

    from rsrp_sim.backends.netpyne import mechanisms
    mechanisms.load()          # compile if needed, then nrn_load_dll; returns the library path

Cache location: ``$RSRP_SIM_CACHE/nrnmech/<hash>`` if ``RSRP_SIM_CACHE`` is set, otherwise
``$XDG_CACHE_HOME/rsrp_sim/nrnmech/<hash>`` (default ``~/.cache/rsrp_sim/nrnmech/<hash>``).
Mechanisms must be loaded before a NetPyNE network that uses them is built.

Only this compiled library is ever loaded.  On ``import neuron``, NEURON loads a mechanism library
from the *working directory* (``x86_64/libnrnmech.so``, or ``x86_64/.libs/libnrnmech.so`` passed as
``-dll``) unless it was given a ``-dll`` of its own; :func:`import_neuron` imports NEURON with
``NEURON_MODULE_OPTIONS`` naming this library (``-nogui -dll <cache>/...``, set for the import only),
so whatever lies in the working directory is never opened, and the "no DISPLAY" lines are not printed.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ...infra import assets
from ...infra.cache import ENV_VAR as CACHE_ENV, cache_base
from ...infra.errors import UserError

__all__ = ["OPTIONS_ENV", "INSTALL_HINT", "mod_dir", "mod_files", "neuron_version", "content_hash", "cache_root",
           "find_nrnivmodl", "find_compiler", "build", "import_neuron", "load", "mechanism_names", "ptr_vector"]

OPTIONS_ENV = "NEURON_MODULE_OPTIONS"
INSTALL_HINT = ("install NEURON with pip install -c constraints.txt -e '.[neuron]' and a C++ compiler "
                "with make (e.g. apt-get install g++ make)")

_loaded: dict[str, Path] = {}  # content hash -> library loaded in this process
_imported_with: list[Path] = []  # the library import_neuron gave NEURON as -dll


def mod_dir() -> Path:
    """The package's folder of ``.mod`` files."""
    return assets.folder("mod")


def mod_files(directory: Path | None = None) -> list[Path]:
    directory = Path(directory) if directory is not None else mod_dir()
    files = sorted(directory.glob("*.mod"))
    if not files:
        raise UserError(f"no .mod files in {directory}")
    return files


def neuron_version() -> str:
    try:
        return metadata.version("neuron")
    except metadata.PackageNotFoundError:
        return "unknown"


def content_hash(directory: Path | None = None) -> str:
    """Hash of the mod files' names and contents, the NEURON version and the machine."""
    h = hashlib.sha256()
    h.update(f"neuron {neuron_version()} {platform.machine()} {sys.platform}\n".encode())
    for f in mod_files(directory):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return cache_base()


def find_nrnivmodl() -> str | None:
    """``nrnivmodl`` beside the running Python (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "nrnivmodl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nrnivmodl")


def find_compiler() -> str | None:
    """A C++ compiler nrnivmodl can use ($CXX or the usual names on PATH), and make."""
    if shutil.which("make") is None:
        return None
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _library(build_dir: Path) -> Path | None:
    for pattern in ("*/libnrnmech.so", "*/.libs/libnrnmech.so", "*/libnrnmech.dylib", "*/.libs/libnrnmech.dylib",
                    "nrnmech.dll"):
        found = sorted(build_dir.glob(pattern))
        if found:
            return found[0]
    return None


def build(directory: Path | None = None, force: bool = False) -> Path:
    """Compile ``directory`` (default: the package's mod/) into the cache; return the library path."""
    directory = Path(directory) if directory is not None else mod_dir()
    key = content_hash(directory)
    target = cache_root() / "nrnmech" / key
    lib = _library(target) if target.is_dir() else None
    if lib is not None and not force:
        return lib
    nrnivmodl = find_nrnivmodl()
    if nrnivmodl is None:
        raise UserError(f"cannot compile the NEURON mechanisms: nrnivmodl not found; {INSTALL_HINT}")
    if find_compiler() is None:
        raise UserError(f"cannot compile the NEURON mechanisms: no C++ compiler/make found; {INSTALL_HINT}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    except OSError as e:
        raise UserError(f"cannot write the NEURON mechanism cache {target.parent} ({e.strerror}); "
                        f"set {CACHE_ENV} to a writable folder") from None
    try:
        for f in mod_files(directory):
            shutil.copy2(f, work / f.name)
        proc = subprocess.run([nrnivmodl], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or _library(work) is None:
            (work / "nrnivmodl.log").write_text(proc.stdout)
            last = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.strip()), "no output")
            raise UserError(f"nrnivmodl failed on {directory} (exit {proc.returncode}): {last.strip()}; "
                            f"full log in {work / 'nrnivmodl.log'}")
        (work / "nrnivmodl.log").write_text(proc.stdout)
        if force and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(work, target)  # atomic; a concurrent build that finished first wins
        except OSError:
            pass
    finally:
        if work.exists() and _library(target) is not None:
            shutil.rmtree(work, ignore_errors=True)
    lib = _library(target)
    if lib is None:  # pragma: no cover - only if another process left a broken folder
        raise UserError(f"compiled NEURON mechanisms missing in {target}; delete that folder and retry")
    return lib


def import_neuron(lib: Path) -> Any:
    """Import NEURON with ``lib`` as the one mechanism library it loads at import (see the module
    docstring); returns the ``neuron`` module.  ``NEURON_MODULE_OPTIONS`` is restored afterwards."""
    if "neuron" in sys.modules:
        return sys.modules["neuron"]
    text = str(lib)
    if any(c in text for c in "'\"\\;") or any(c.isspace() and c != " " for c in text):
        raise UserError(f"the NEURON mechanism library path {text!r} holds a quote, backslash, ';' or control "
                        f"character that NEURON cannot take as -dll; set {CACHE_ENV} to a plain folder")
    old = os.environ.get(OPTIONS_ENV)
    words = (old or "").split()
    extra = ([] if "-nogui" in words else ["-nogui"]) + ([] if "-dll" in words else ["-dll", f"'{text}'"])
    os.environ[OPTIONS_ENV] = " ".join([old or ""] + extra).strip()
    try:
        import neuron

        if "-dll" not in words:
            _imported_with.append(Path(lib))
    finally:
        if old is None:
            os.environ.pop(OPTIONS_ENV, None)
        else:
            os.environ[OPTIONS_ENV] = old
    return neuron


def load(directory: Path | None = None) -> Path:
    """Compile (if needed) and load the mechanisms into this process's NEURON, once."""
    directory = Path(directory) if directory is not None else mod_dir()
    key = content_hash(directory)
    if key in _loaded:
        return _loaded[key]
    import importlib.util

    if importlib.util.find_spec("neuron") is None:
        raise UserError(f"the netpyne back-end needs NEURON; {INSTALL_HINT}")
    names = [f.stem for f in mod_files(directory)]
    lib = build(directory)  # before NEURON is imported: it loads this library at import
    if _loaded:
        raise UserError("a different build of the rsrp_sim NEURON mechanisms is already loaded in this process "
                        f"({next(iter(_loaded.values()))}); restart Python to load {lib}")
    h = import_neuron(lib).h
    declared = mechanism_names(directory)
    if all(hasattr(h, name) for name in declared):
        if Path(lib) in _imported_with:  # NEURON loaded ``lib`` itself, at import
            _loaded[key] = lib
            return lib
        if float(getattr(h, "default_dll_loaded_", 0.0)):
            raise UserError(f"NEURON was imported before rsrp_sim and loaded a mechanism library of its own at "
                            f"import (e.g. x86_64/libnrnmech.so from the working directory) that defines "
                            f"{', '.join(declared)}; rsrp_sim only runs its own build ({lib}): import rsrp_sim's "
                            f"netpyne back-end before NEURON, or work in a folder without x86_64/")
        _loaded[key] = lib  # loaded by nrn_load_dll earlier in this process (e.g. by a test)
        return lib
    try:
        h.nrn_load_dll(str(lib))
    except RuntimeError as e:
        raise UserError(f"loading NEURON mechanisms {lib} failed ({e}); mod files: {', '.join(names)}") from None
    _loaded[key] = lib
    return lib


def mechanism_names(directory: Path | None = None) -> list[str]:
    """Names the mod files declare (ARTIFICIAL_CELL / POINT_PROCESS / SUFFIX)."""
    out = []
    for f in mod_files(directory):
        for line in f.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("ARTIFICIAL_CELL", "POINT_PROCESS", "SUFFIX"):
                out.append(words[1])
    return out


def ptr_vector(refs: Any) -> Any:
    """An ``h.PtrVector`` over NEURON references (``nc._ref_weight[0]``, ``cell._ref_theta`` ...), for
    reading and writing many values as one array (``gather`` / ``scatter``)."""
    from neuron import h

    pv = h.PtrVector(len(refs))
    for i, r in enumerate(refs):
        pv.pset(i, r)
    return pv
