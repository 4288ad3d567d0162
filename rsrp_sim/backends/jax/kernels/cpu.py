"""The fused ConnSNN step on the CPU: ``lif_cpu.cc`` built on first use and called through XLA's FFI.

The C++ source ships with the package.  On first use it is compiled with the machine's C++
compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``) into ``<cache>/kernels/`` (see
:func:`rsrp_sim.infra.cache.cache_dir`), under a name made of the hash of the source, the compiler
and its flags, the jaxlib headers and the CPU's feature flags, so a changed source or machine gets
a fresh build and later processes load the library in milliseconds.  Flags: ``-O3
-ffp-contract=off`` and no ``-ffast-math``, which keeps every float32 operation as written (the
results are bit-identical to the pure-JAX paths).

The code path (AVX-512 with VPOPCNTDQ, AVX2, scalar) is the best the CPU supports; ``isa=`` or
``$RSRP_SIM_FUSED_ISA`` (``auto``, ``avx512``, ``avx2``, ``scalar``) forces one, e.g. to check on
an AVX-512 machine that the other paths give the same bits.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("lif_cpu.cc")
TARGET = "rsrp_lif_substeps"
DENSE_TARGET = "rsrp_dense_lif_substeps"
#: how XLA's CPU code pairs ``a_syn * i_syn + r_h * rec`` into one FMA when the CPU has FMA:
#: ``bitpack`` computes fma(r_h, rec, a_syn * i_syn) (2), ``dense`` fma(a_syn, i_syn, r_h * rec) (1)
FLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-std=c++17", "-fPIC", "-shared", "-pthread")
ISAS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}
ISA_ENV = "RSRP_SIM_FUSED_ISA"


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why in one line."""


def find_compiler() -> str | None:
    """``$CXX`` if set (and only it), else the first of ``c++``, ``g++``, ``clang++`` on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def cpu_flags() -> str:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``), else the processor's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def build_key(cxx: str) -> str:
    import jaxlib

    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _compiler_version(cxx).encode(),
                 jaxlib.__version__.encode(), cpu_flags().encode(), sys.platform.encode()):
        h.update(part + b"\0")
    return h.hexdigest()[:16]


def library_path() -> Path:
    """Where the compiled kernel is (or will be) for this source, compiler and CPU."""
    from ....infra.cache import cache_dir

    cxx = find_compiler()
    if cxx is None:
        raise KernelUnavailable(_no_compiler())
    return cache_dir("kernels") / f"rsrp_lif_{build_key(cxx)}.so"


def _no_compiler() -> str:
    if os.environ.get("CXX"):
        return f"the C++ compiler CXX={os.environ['CXX']} was not found"
    return "no C++ compiler found (c++, g++ or clang++ on PATH, or set CXX)"


def build(force: bool = False) -> Path:
    """Compile the kernel into the cache unless it is there; returns the library's path."""
    import jax

    lib = library_path()
    if lib.is_file() and not force:
        return lib
    cxx = find_compiler()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=lib.parent) as tmp:
        out = Path(tmp) / lib.name
        cmd = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(out)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelUnavailable(f"compiling the kernel failed ({e})") from None
        if p.returncode != 0 or not out.is_file():
            first = next((ln for ln in p.stderr.splitlines() if "error" in ln), p.stderr.strip()[:200] or "no output")
            log = lib.with_suffix(".log")
            log.write_text(" ".join(cmd) + "\n" + p.stderr)
            raise KernelUnavailable(f"compiling the kernel with {cxx} failed: {first.strip()} (log: {log})")
        os.replace(out, lib)  # atomic: a concurrent build of the same key may win, same content
    return lib


@functools.cache
def load():
    """Build (if needed) and load the kernel, register it with XLA; returns the ctypes library."""
    import jax

    path = build()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelUnavailable(f"loading the kernel {path} failed ({e}); delete it to rebuild") from None
    lib.rsrp_lif_supported.restype = ctypes.c_int64
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.RsrpLifSubsteps), platform="cpu")
    jax.ffi.register_ffi_target(DENSE_TARGET, jax.ffi.pycapsule(lib.RsrpDenseLifSubsteps), platform="cpu")
    return lib


def available() -> tuple[bool, str]:
    """``(True, '')`` if the kernel loads here, else ``(False, reason)``."""
    try:
        load()
    except KernelUnavailable as e:
        return False, str(e)
    except OSError as e:  # e.g. a read-only cache folder
        return False, f"cannot write the kernel cache ({e.strerror or e}); set RSRP_SIM_CACHE to a writable folder"
    return True, ""


def supported_isas() -> list[str]:
    """The code paths this CPU runs, best first (the kernel must load)."""
    mask = int(load().rsrp_lif_supported())
    return [name for name in ("avx512", "avx2", "scalar") if mask & (1 << ISAS[name])]


def cpu_has_fma() -> bool:
    """Whether the CPU has fused multiply-add, which XLA's CPU compiler then always uses."""
    return bool(int(load().rsrp_lif_supported()) & (1 << 8))


def resolve_isa(isa: str | None) -> str:
    """``isa``, else ``$RSRP_SIM_FUSED_ISA``, else ``auto``; checked against the CPU."""
    from ....infra.errors import UserError, unknown

    isa = isa or os.environ.get(ISA_ENV) or "auto"
    if isa not in ISAS:
        raise unknown(f"fused kernel code path ({ISA_ENV})", isa, ISAS)
    if isa != "auto" and isa not in supported_isas():
        raise UserError(f"this CPU cannot run the {isa} code path of the fused kernel; it supports "
                        f"{', '.join(supported_isas())}")
    return isa


def _attrs(c, substeps, isa, threads, contract):
    f32 = np.float32
    return dict(substeps=np.int64(c.substeps if substeps is None else substeps), n_exc=np.int64(c.n_exc),
                a_syn=f32(c.alpha_syn), r_h=f32(c.r_h), a_m=f32(c.alpha_m), c_m=f32(1.0 - c.alpha_m),
                v_reset=f32(c.v_reset), v_th=f32(c.v_th), a_out=f32(c.alpha_out),
                k_r=f32(f32(1.0 - c.alpha_out) / f32(c.dt)),
                contract=np.int64(cpu_has_fma() if contract is None else bool(contract)),
                isa=np.int64(ISAS[isa]), threads=np.int64(threads))


def _results(shape):
    import jax
    import jax.numpy as jnp

    return (jax.ShapeDtypeStruct(shape, jnp.float32),) * 3 + (jax.ShapeDtypeStruct(shape, jnp.bool_),
                                                             jax.ShapeDtypeStruct(shape[:-1], jnp.int32))


def lif_substeps(const, mask, i_in, v, i_syn, r, spk, *, substeps: int | None = None, isa: str = "auto",
                 threads: int = 0, contract: bool | None = None):
    """All substeps of one environment step of one ConnSNN network (``vmap`` makes it one call for all).

    ``mask``: (W, N) uint32, word-major bit-packed recurrent mask (``pack_bits(M_h.T).T``);
    ``i_in``, ``v``, ``i_syn``, ``r``: (N,) float32; ``spk``: (N,) bool.
    Returns ``(v, i_syn, r, spk, n_spikes)`` after ``substeps`` (default: the model's) substeps.
    ``contract``: fuse multiplies and adds as XLA's CPU compiler does in the ``bitpack`` path
    (default: when the CPU has FMA, as XLA then does); ``False``: the plain float32 sequence.
    ``threads``: 0 uses XLA's intra-op thread pool, n > 0 at most n threads.
    """
    import jax

    call = jax.ffi.ffi_call(TARGET, _results(v.shape), vmap_method="expand_dims")
    return call(mask, i_in, v, i_syn, r, spk, **_attrs(const, substeps, isa, threads, contract))


def dense_lif_substeps(const, w, i_in, v, i_syn, r, spk, *, substeps: int | None = None, isa: str = "auto",
                       threads: int = 0, contract: bool | None = None):
    """As :func:`lif_substeps` for a DenseSNN network with real weights ``w`` (N, N) [pre, post].

    With ``contract`` the multiply-adds pair as in XLA's CPU code for ``s @ W`` (``dense``).
    """
    import jax

    attrs = _attrs(const, substeps, isa, threads, contract)
    attrs["pair_syn"] = np.int64(1 if attrs["contract"] else 0)
    call = jax.ffi.ffi_call(DENSE_TARGET, _results(v.shape), vmap_method="expand_dims")
    return call(w, i_in, v, i_syn, r, spk, **attrs)
