"""ConnSNN and DenseSNN in JAX (see :ref:`science-models`): one network, explicit state, ``vmap`` for populations.

Per environment step (input current held for all substeps)::

    i_in = R_in * (x_in @ M_in)                       # x_in = [x, -x] for ConnSNN
    repeat substeps:
        i_syn = a_syn * i_syn + R_h * (s @ M_h)       # s: +1 E spike, -1 I spike (ConnSNN), 0/1 (Dense)
        v     = a_m * v + (1 - a_m) * (V_r + i_syn + i_in)
        spiked = v > V_th ; v = V_r where spiked
        r     = a_out * r + (1 - a_out) * s / dt
    y = R_out * (r @ M_out)

The recurrent product ``s @ M_h`` is the hot loop.  For Bernoulli masks three exact implementations
exist: ``dense`` (float32 matmul), ``bitpack`` (the mask stored as 32-bit words per postsynaptic
neuron, the product computed as popcount(M & s_E) - popcount(M & s_I) in int32) and ``fused``
(one kernel runs all substeps of a step for a block of networks, each network's bit-packed mask
kept in cache or on-chip memory; :mod:`.kernels`).  In all three the recurrent sums are integers,
exactly representable in float32.  ``fused`` gives ``bitpack``'s bits exactly, spikes and states
(it pairs multiplies and adds into fused multiply-adds as XLA's CPU code for ``bitpack`` does);
``dense`` pairs one of them differently, so its states can differ from the other two in the last
bit: the spikes agree over short runs, but over a long run of many networks a spike eventually
moves.  For real-valued weights (DenseSNN)
``fused`` is a kernel that adds the rows of the neurons that spiked and gives ``dense``'s bits.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...core.models import SNNConstants

__all__ = ["SPIKE_IMPLS", "pack_bits", "popcount_matvec", "SNN"]

SPIKE_IMPLS = ("fused", "bitpack", "dense")


def pack_bits(b: Any) -> Any:
    """Pack booleans along the last axis into uint32 words (bit k of word w = element 32 w + k)."""
    n = b.shape[-1]
    words = -(-n // 32)
    pad = words * 32 - n
    if pad:
        b = jnp.pad(b, [(0, 0)] * (b.ndim - 1) + [(0, pad)])
    b = b.reshape(b.shape[:-1] + (words, 32)).astype(jnp.uint32)
    return jnp.sum(b << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def popcount_matvec(packed_mask: Any, bits_pos: Any, bits_neg: Any) -> Any:
    """Signed count  sum_pre M[pre, post] * sign(pre) * spiked(pre)  for every postsynaptic neuron.

    ``packed_mask``: (N_post, W) uint32 (rows = postsynaptic neurons, bits = presynaptic);
    ``bits_pos`` / ``bits_neg``: (W,) spike bits of excitatory / inhibitory presynaptic neurons.
    Returns int32 (N_post,).
    """
    pos = jax.lax.population_count(packed_mask & bits_pos).astype(jnp.int32).sum(-1)
    neg = jax.lax.population_count(packed_mask & bits_neg).astype(jnp.int32).sum(-1)
    return pos - neg


class SNN:
    """A ConnSNN (Bernoulli masks) or DenseSNN (real weights) built from :class:`SNNConstants`.

    ``net`` arguments are the *prepared* connectivity from :meth:`prepare`; ``carry`` is the
    neuron state ``{'v', 'i_syn', 'r', 'spk'}``; one call of :meth:`step` is one environment step.
    """

    def __init__(self, const: SNNConstants, spike_impl: str = "bitpack", isa: str | None = None,
                 kernel_backend: str | None = None) -> None:
        """``spike_impl``: ``fused``, ``bitpack`` or ``dense``; ``fused`` falls back to ``bitpack``
        (with a one-line note) where its kernel cannot run.  ``isa``: the CPU kernel's code path
        (``auto``, ``avx512``, ``avx2``, ``scalar``; see :mod:`.kernels.cpu`).  ``kernel_backend``:
        ``cpu``, ``gpu`` or ``interpret`` (the GPU kernel in Pallas' interpreter); default: JAX's
        default back-end."""
        if spike_impl not in SPIKE_IMPLS:
            raise ValueError(f"unknown spike_impl {spike_impl!r}; allowed: {', '.join(SPIKE_IMPLS)}")
        self.c = const
        self.bernoulli = const.connectivity == "bernoulli"
        # bit-packing only applies to {0,1} masks; real weights have the dense path and (CPU) a kernel
        self.spike_impl = spike_impl if self.bernoulli or spike_impl == "fused" else "dense"
        self.kernel: Any = None
        if self.spike_impl == "fused":
            from . import kernels

            self.kernel = kernels.fused(const, isa, kernel_backend)
            if self.kernel is None:
                self.spike_impl = "bitpack" if self.bernoulli else "dense"
        signs = const.signs() if const.dale else np.ones(const.n_neurons, np.float32)
        self.signs = jnp.asarray(signs)
        exc = signs > 0
        self.bits_exc = pack_bits(jnp.asarray(exc))
        self.bits_inh = pack_bits(jnp.asarray(~exc))

    # ------------------------------------------------------------------ state
    def init_carry(self, key: Any) -> Any:
        c = self.c
        n = c.n_neurons
        if c.rand_init_v:
            v = jax.random.uniform(key, (n,), jnp.float32, c.v_reset, c.v_th)
        else:
            v = jnp.full((n,), c.v_reset, jnp.float32)
        z = jnp.zeros((n,), jnp.float32)
        return {"v": v, "i_syn": z, "r": z, "spk": jnp.zeros((n,), bool)}

    def init_weights(self, key: Any) -> Any:
        """DenseSNN parameters W ~ N(0, init_std^2) with the model's shapes."""
        shapes = self.c.param_shapes()
        keys = jax.random.split(key, len(shapes))
        return {k: self.c.init_std * jax.random.normal(kk, s, jnp.float32)
                for kk, (k, s) in zip(keys, shapes.items())}

    def prepare(self, params: Any) -> Any:
        """Turn one network's masks (bool) or weights (float) -- all of ``in``, ``h``, ``out`` or
        some of them -- into the arrays :meth:`step` uses."""
        net = {k: params[k].astype(jnp.float32) for k in ("in", "out") if k in params}
        if "h" in params:
            if self.spike_impl == "bitpack":
                net["h"] = pack_bits(params["h"].T)  # (N_post, W): bits over presynaptic neurons
            elif self.spike_impl == "fused" and self.bernoulli:
                net["h"] = pack_bits(params["h"].T).T  # (W, N_post): word-major for the kernels
            else:
                net["h"] = params["h"].astype(jnp.float32)
        return net

    # ------------------------------------------------------------------ dynamics
    def recurrent(self, h: Any, spk: Any) -> Any:
        """The recurrent drive ``s @ M_h`` (float32) for spike vector ``spk`` (bool)."""
        if self.spike_impl == "bitpack":
            bits = pack_bits(spk)
            return popcount_matvec(h, bits & self.bits_exc, bits & self.bits_inh).astype(jnp.float32)
        return (spk.astype(jnp.float32) * self.signs) @ h

    def _run(self, net: Any, carry: Any, obs: Any, record: bool) -> Any:
        c = self.c
        x = jnp.concatenate([obs, -obs]) if c.input_doubling else obs
        i_in = c.r_in * (x.astype(jnp.float32) @ net["in"])
        if self.kernel is not None:
            return self._run_fused(net["h"], carry, i_in, record)
        a_syn, a_m, a_out = c.alpha_syn, c.alpha_m, c.alpha_out

        def substep(state, _):
            v, i_syn, r, spk = state
            i_syn = a_syn * i_syn + c.r_h * self.recurrent(net["h"], spk)
            v = a_m * v + (1.0 - a_m) * (c.v_reset + i_syn + i_in)
            spk = v > c.v_th
            v = jnp.where(spk, c.v_reset, v)
            s = spk.astype(jnp.float32) * self.signs
            r = a_out * r + (1.0 - a_out) * s / c.dt
            return (v, i_syn, r, spk), (spk if record else spk.sum(dtype=jnp.int32))

        state = (carry["v"], carry["i_syn"], carry["r"], carry["spk"])
        (v, i_syn, r, spk), out = jax.lax.scan(substep, state, None, length=c.substeps)
        return {"v": v, "i_syn": i_syn, "r": r, "spk": spk}, out

    def _run_fused(self, h: Any, carry: Any, i_in: Any, record: bool) -> Any:
        state = (carry["v"], carry["i_syn"], carry["r"], carry["spk"])
        if record:  # one kernel call per substep, to see every substep's spikes
            def substep(state, _):
                *state, _n = self.kernel(h, i_in, *state, substeps=1)
                return tuple(state), state[3]

            (v, i_syn, r, spk), out = jax.lax.scan(substep, state, None, length=self.c.substeps)
        else:
            v, i_syn, r, spk, out = self.kernel(h, i_in, *state)
        return {"v": v, "i_syn": i_syn, "r": r, "spk": spk}, out

    def step(self, net: Any, carry: Any, obs: Any) -> Any:
        """One environment step of one network.  Returns ``(carry, y, n_spikes)``."""
        carry, counts = self._run(net, carry, obs, record=False)
        y = self.c.r_out * (carry["r"] @ net["out"])
        return carry, y, counts.sum()

    def simulate_spikes(self, net: Any, carry: Any, inputs: Any) -> Any:
        """Spike raster of one network for a sequence of observations (T, d_obs) -> (T, substeps, N).

        For equivalence tests between spike implementations and between back-ends.
        """
        def env_step(carry, obs):
            return self._run(net, carry, obs, record=True)

        _, raster = jax.lax.scan(env_step, carry, inputs)
        return raster
