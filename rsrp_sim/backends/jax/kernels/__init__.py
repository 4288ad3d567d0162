"""Fused kernels of the ConnSNN environment step (``spike_impl=fused``).

One kernel call runs all substeps of one environment step for a whole batch of networks, each
network's bit-packed recurrent mask kept resident (the L1 cache on a CPU, registers / shared
memory on a GPU) across the substeps, instead of one XLA operation per substep that streams every
mask from memory again.  The input product ``R_in * x @ M_in`` and the read-out stay in XLA.

* CPU: :mod:`.cpu`, an XLA FFI custom call written in C++ (AVX-512 VPOPCNTDQ, AVX2 or scalar code,
  picked at run time), compiled on first use with the machine's C++ compiler; also for DenseSNN's
  real-valued weights (only the rows of the neurons that spiked are added).
* GPU: :mod:`.gpu`, a Pallas (Triton) kernel.

Both reproduce the float32 operations of the pure-JAX paths one by one, so spikes and states are
bit-identical to ``spike_impl=bitpack`` and ``dense``.  Where a kernel cannot run (no compiler, no
Pallas), :func:`fused` says so in one line and returns ``None``; the caller runs ``bitpack``.
"""
from __future__ import annotations

import functools
import sys

__all__ = ["fused", "fused_status", "resolve_spike_impl"]

_said: set[str] = set()


def _note(text: str):
    """Print ``text`` on stderr once per process."""
    if text not in _said:
        _said.add(text)
        print(f"note: {text}", file=sys.stderr)


def platform() -> str:
    import jax

    return jax.default_backend()


@functools.cache
def fused_status(backend: str | None = None) -> tuple[bool, str]:
    """Whether the fused kernel runs on ``backend`` (default: JAX's default back-end): ``(ok, why not)``."""
    backend = backend or platform()
    if backend == "cpu":
        from . import cpu

        return cpu.available()
    if backend in ("gpu", "cuda", "rocm"):
        from . import gpu

        return gpu.available(trial=True)
    return False, f"there is no fused kernel for the {backend} back-end"


def fused(const, isa: str | None = None, backend: str | None = None):
    """The fused step for networks with constants ``const`` on ``backend`` (default: JAX's default
    back-end; ``"interpret"``: the GPU kernel in Pallas' interpreter, for tests on a CPU), or
    ``None`` (after a one-line note) where it cannot run.

    The returned callable is ``kernel(h, i_in, v, i_syn, r, spk, substeps=None) -> (v, i_syn, r,
    spk, n_spikes)`` for one network (``h``: word-major packed mask, see
    :func:`~rsrp_sim.backends.jax.snn.SNN.prepare`); under ``jax.vmap`` it is one call for the batch.
    """
    real = const.connectivity != "bernoulli"
    if real and (backend or platform()) != "cpu":
        _note("spike_impl=fused has no kernel for real-valued weights off the CPU; running spike_impl=dense")
        return None
    if backend == "interpret":
        from . import gpu

        ok, why = gpu.available()
        if not ok:
            _note(f"the Pallas interpreter is not available here ({why})")
            return None
        return functools.partial(gpu.lif_substeps, const, interpret=True)
    backend = backend or platform()
    ok, why = fused_status(backend)
    if not ok:
        other = "dense" if real else "bitpack"
        _note(f"spike_impl=fused is not available here ({why}); running spike_impl={other} (same results)")
        return None
    if backend == "cpu":
        from . import cpu

        isa = cpu.resolve_isa(isa)
        return functools.partial(cpu.dense_lif_substeps if real else cpu.lif_substeps, const, isa=isa)
    from . import gpu

    return functools.partial(gpu.lif_substeps, const)


def resolve_spike_impl(requested: str, const) -> str:
    """``auto`` -> the fastest exact path here: ``fused`` where its kernel runs, else ``bitpack``
    (``dense`` for real-valued weights, whose kernel runs on the CPU only); ``bitpack`` means
    ``dense`` for real-valued weights.  ``fused`` where it cannot run becomes the pure-JAX path,
    with a one-line note."""
    real = const.connectivity != "bernoulli"
    other = "dense" if real else "bitpack"
    runs = fused_status()[0] and not (real and platform() != "cpu")
    if requested == "auto":
        return "fused" if runs else other
    if requested == "fused" and not runs:
        why = fused_status()[1] or "no kernel for real-valued weights off the CPU"
        _note(f"spike_impl=fused is not available here ({why}); running spike_impl={other} (same results)")
        return other
    if real:
        return "fused" if requested == "fused" else "dense"
    return requested
