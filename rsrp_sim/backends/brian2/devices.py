"""Brian2 devices in one place: runtime (numpy / cython), cpp_standalone, cuda_standalone.

* :func:`import_brian2` imports Brian2 so that it leaves nothing behind in the source tree or in
  ``/tmp``: its import-time log and script copies and its compiler-output capture files go to
  :func:`scratch_dir`, and the Cython extension cache to ``<cache>/brian2/cython`` (unless the user
  set ``prefs.codegen.runtime.cython.cache_dir`` already); ``<cache>`` is :func:`rsrp_sim.cache.cache_dir`.
* :func:`activate` selects a device for one network: ``runtime`` (``target`` numpy or cython) or a
  standalone device building into ``directory`` with ``build_on_run=False`` (the caller builds once
  with :func:`build` and re-runs the binary with new values through ``device.run(run_args=...)``).
  It first checks what the device needs (:func:`check_toolchain`): a C/C++ compiler for the cython
  target, make and a C++ compiler for the standalone devices, and an NVIDIA GPU for
  ``cuda_standalone`` (checked before anything is generated or compiled); each missing piece is one
  line saying what to install or which device/target to use instead.
* :func:`cuda_prefs` holds every brian2cuda setting this project needs:
  GPU detection only where ``nvidia-smi`` exists (else ``gpu_id`` 0 and an explicit
  ``compute_capability``), C++17 for CUDA >= 13 (its CCCL headers refuse older standards while
  brian2cuda 1.0a7's makefile says ``-std=c++11``), and cuRAND from the ``nvidia-curand`` wheel when
  the CUDA toolkit lacks it (or nvcc, headers and libraries from NVIDIA's pip wheels when there is no
  ``nvcc`` on ``PATH``: untested on a GPU machine), and a fix of brian2cuda 1.0a7's random-number
  set-up for subclasses of ``Synapses`` that call ``rand()`` (the RSRP synapses in spike mode).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from ...infra.cache import cache_dir as shared_cache_dir
from ...infra.errors import UserError, unknown

DEVICES = ("runtime", "cpp_standalone", "cuda_standalone")
TARGETS = ("cython", "numpy")
#: compute capability used for CUDA code generation when no GPU can be queried (H100)
DEFAULT_COMPUTE_CAPABILITY = 9.0


def cache_dir() -> Path:
    """The per-user cache folder of this back-end: ``<cache>/brian2`` (see :mod:`rsrp_sim.cache`)."""
    return shared_cache_dir("brian2")


def scratch_dir() -> Path:
    """Where Brian2's temporary files (logs, compiler output, crash reports) go."""
    path = cache_dir() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _tempdir(path: Path):
    old = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = old


def import_brian2():
    """Import and return ``brian2`` with its temporary files and caches outside the source tree."""
    if "brian2" in sys.modules:
        import brian2
    else:
        with _tempdir(scratch_dir()):
            import brian2
            from brian2.utils.logger import std_silent

            std_silent()  # creates its stdout/stderr capture files now, inside the scratch dir
    prefs = brian2.prefs
    if not prefs["codegen.runtime.cython.cache_dir"]:
        cython = cache_dir() / "cython"
        cython.mkdir(parents=True, exist_ok=True)
        prefs["codegen.runtime.cython.cache_dir"] = str(cython)
    return brian2


def check_device(device: str, target: str = "cython"):
    if device not in DEVICES:
        raise unknown("brian2 device", device, DEVICES)
    if target not in TARGETS:
        raise unknown("brian2 runtime target", target, TARGETS)


def _found(command: str | None) -> str | None:
    """The executable of a command line such as ``gcc -pthread`` on PATH (None if not found)."""
    try:
        first = shlex.split(command or "")[0]
    except (ValueError, IndexError):
        return None
    return shutil.which(first)


def _tool(env: str, default: str) -> str:
    """The compiler command ``env`` (CC, CXX): the environment's, else Python's build's, else ``default``."""
    return os.environ.get(env) or sysconfig.get_config_var(env) or default


def check_toolchain(device: str, target: str = "cython"):
    """What ``device`` (and the runtime's ``target``) needs to compile, or one line saying what is missing."""
    check_device(device, target)
    if device == "runtime":
        if target == "numpy":
            return
        missing = [cmd for cmd in (_tool("CC", "cc"), _tool("CXX", "c++")) if not _found(cmd)]
        if missing:
            raise UserError(f"brian2's cython target needs a C/C++ compiler and none was found "
                            f"({', '.join(shlex.split(m)[0] for m in missing)} not on PATH): install one "
                            f"(e.g. apt-get install g++) or use target=numpy")
        return
    if device == "cuda_standalone" and not has_gpu():
        raise UserError("device=cuda_standalone needs an NVIDIA GPU and none was found (nvidia-smi is missing "
                        "or lists no GPU; checked before compiling): use device=cpp_standalone or "
                        "device=runtime, or run on a machine with a GPU")
    b2 = import_brian2()
    make = b2.prefs["devices.cpp_standalone.make_cmd_unix"] or "make"
    cxx = os.environ.get("CXX") or "g++"  # the standalone makefile's $(CXX): make's default is g++
    missing = [shlex.split(cmd)[0] for cmd in (make, cxx) if not _found(cmd)]
    if missing:
        raise UserError(f"device={device} compiles with make and a C++ compiler, and {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH: install them (e.g. apt-get install "
                        f"g++ make) or use device=runtime target=numpy")


def activate(device: str, directory=None, target: str = "cython", compile: bool = True):
    """Make ``device`` Brian2's current device for the next network (see the module docstring).

    Returns the Brian2 device object.  Standalone devices are reset first, so several standalone
    networks can be built one after the other in one process.  ``compile=False`` (generate code
    only) skips the checks of what compiling needs.
    """
    if compile:
        check_toolchain(device, target)
    else:
        check_device(device, target)
    b2 = import_brian2()
    if device != "cuda_standalone" and _GCC_ARGS:  # undo cuda_prefs' C++17 override of the C++ flags
        b2.prefs["codegen.cpp.extra_compile_args_gcc"] = list(_GCC_ARGS[0])
    if device == "runtime":
        b2.set_device("runtime")
        b2.prefs.codegen.target = target
        return b2.get_device()
    if directory is None:
        raise ValueError("standalone devices need a build directory")
    if device == "cuda_standalone":
        cuda_prefs()
    b2.set_device(device, directory=str(directory), build_on_run=False)
    dev = b2.get_device()
    dev.reinit()  # forget any network built before on this device
    dev.activate(directory=str(directory), build_on_run=False)
    return dev


def build(dev, directory, compile: bool = True):
    """Generate (and compile) the standalone project once, without running it."""
    with _tempdir(scratch_dir()):
        dev.build(directory=str(directory), compile=compile, run=False)


def binary_path(directory) -> Path:
    """The compiled standalone executable in ``directory``."""
    return Path(directory) / "main"


# ----------------------------------------------------------------------------- CUDA
def _nvcc_version() -> tuple[int, int] | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def has_gpu() -> bool:
    """True when ``nvidia-smi`` lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _nvidia_dirs() -> list[Path]:
    """Folders of NVIDIA's pip wheels (``nvidia/cu13``, ``nvidia/cuda_nvcc``, ``nvidia/curand`` ...)."""
    try:
        import nvidia  # namespace package of NVIDIA's wheels
    except ImportError:
        return []
    return [d for base in getattr(nvidia, "__path__", []) for d in sorted(Path(base).iterdir()) if d.is_dir()]


def _link_unversioned(lib: Path):
    """``libX.so`` links (in the cache) for wheels that ship only ``libX.so.N``, so ``-lX`` links."""
    link_dir = cache_dir() / "cuda_lib_links"
    for so in sorted(lib.glob("lib*.so.*")):
        name = so.name.split(".so")[0] + ".so"
        if not (lib / name).exists():
            link_dir.mkdir(parents=True, exist_ok=True)
            link = link_dir / name
            if link.is_symlink() and link.resolve() != so.resolve():
                link.unlink()  # left by another CUDA installation
            if not link.is_symlink():
                link.symlink_to(so)
            _add_env_path("LIBRARY_PATH", str(link_dir))


def _use_pip_cuda(only_curand: bool):
    """Point the build at CUDA from NVIDIA's pip wheels: cuRAND only, or (no nvcc on PATH) everything."""
    for d in _nvidia_dirs():
        inc, lib = d / "include", d / "lib"
        if only_curand and not (inc / "curand.h").exists():
            continue
        if not only_curand and (d / "bin" / "nvcc").exists() and shutil.which("nvcc") is None:
            _add_env_path("PATH", str(d / "bin"))
            os.environ.setdefault("CUDA_PATH", str(d))
        if inc.is_dir():
            _add_env_path("CPATH", str(inc))
        if lib.is_dir():
            _add_env_path("LIBRARY_PATH", str(lib))
            _add_env_path("LD_LIBRARY_PATH", str(lib))
            _link_unversioned(lib)


def _toolkit_has_curand() -> bool:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return False
    root = Path(nvcc).resolve().parent.parent
    return any((root / d / "curand.h").exists() for d in ("include", "targets/x86_64-linux/include"))


def _add_env_path(name: str, path: str):
    parts = [p for p in os.environ.get(name, "").split(os.pathsep) if p]
    if path not in parts:
        os.environ[name] = os.pathsep.join([path] + parts)


_GCC_ARGS: list = []  # the C++ flags before cuda_prefs changed them


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _patch_rand_source():
    """brian2cuda 1.0a7's random-number set-up (``rand.cu``) recognises synapses by the class name
    ``Synapses`` and fails for a subclass (such as RSRPSynapses) whose code calls ``rand()``; while it
    generates that file, subclasses of ``Synapses`` carry the name ``Synapses``."""
    from brian2cuda.device import CUDAStandaloneDevice

    original = CUDAStandaloneDevice.generate_rand_source
    if getattr(original, "_rsrp_patched", False):
        return
    b2 = import_brian2()

    def generate_rand_source(self, writer):
        subs = list(_all_subclasses(b2.Synapses))
        names = [c.__name__ for c in subs]
        for c in subs:
            c.__name__ = "Synapses"
        try:
            return original(self, writer)
        finally:
            for c, name in zip(subs, names):
                c.__name__ = name

    generate_rand_source._rsrp_patched = True
    CUDAStandaloneDevice.generate_rand_source = generate_rand_source


def cuda_prefs(compute_capability: float | None = None):
    """Apply the brian2cuda preferences (see the module docstring).  Returns them as a dict."""
    import brian2cuda  # noqa: F401  (registers the cuda_standalone device and its preferences)

    _patch_rand_source()
    b2 = import_brian2()
    prefs = b2.prefs
    backend = "devices.cuda_standalone.cuda_backend"
    applied = {}
    gpu = has_gpu()
    if not gpu:
        cc = compute_capability or float(os.environ.get("RSRP_SIM_CUDA_CC", DEFAULT_COMPUTE_CAPABILITY))
        applied.update({f"{backend}.detect_gpus": False, f"{backend}.gpu_id": 0,
                        f"{backend}.compute_capability": float(cc)})
    elif compute_capability is not None:
        applied[f"{backend}.compute_capability"] = float(compute_capability)
    if shutil.which("nvcc") is None:
        _use_pip_cuda(only_curand=False)
    version = _nvcc_version()
    if version is None and not gpu:
        applied[f"{backend}.detect_cuda"] = False
        applied[f"{backend}.cuda_runtime_version"] = 13.0
    if version is None or version >= (13, 0):
        nvcc_args = [a for a in prefs[f"{backend}.extra_compile_args_nvcc"] if not a.startswith("-std=")]
        applied[f"{backend}.extra_compile_args_nvcc"] = nvcc_args + ["-std=c++17"]
        if not _GCC_ARGS:
            _GCC_ARGS.append(list(prefs["codegen.cpp.extra_compile_args_gcc"]))
        gcc_args = [a for a in _GCC_ARGS[0] if not a.startswith("-std=")]
        applied["codegen.cpp.extra_compile_args_gcc"] = gcc_args + ["-std=c++17"]
    for key, value in applied.items():
        prefs[key] = value
    if version is not None and not _toolkit_has_curand():
        _use_pip_cuda(only_curand=True)
    return applied


# ----------------------------------------------------------------------------- build folders
class BuildDir:
    """A standalone project folder under the cache, keyed by what determines the generated code.

    The folder is locked (``fcntl``) while in use; a second process with the same key gets a
    sibling folder, so concurrent runs never share one.  Reusing a folder in a later process lets
    ``make`` skip unchanged sources.
    """

    def __init__(self, device: str, key: str, root=None):
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        base = Path(root) if root else cache_dir() / device
        base.mkdir(parents=True, exist_ok=True)
        for i in range(64):
            path = base / (digest if i == 0 else f"{digest}-{i}")
            path.mkdir(parents=True, exist_ok=True)
            fh = open(path / ".lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            self.path, self._lock = path, fh
            return
        raise UserError(f"no free brian2 build folder under {base} (64 in use)")

    def release(self):
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file drops the flock

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


def project_folder(device: str, key: str, build_dir: str | Path = "") -> tuple[BuildDir | None, Path]:
    """A standalone project folder: ``build_dir`` when given (created), else a locked :class:`BuildDir`
    under the cache keyed by ``key``.  Returns ``(the BuildDir to release, or None; its path)``."""
    if build_dir:
        path = Path(build_dir)
        path.mkdir(parents=True, exist_ok=True)
        return None, path
    folder = BuildDir(device, key)
    return folder, folder.path
