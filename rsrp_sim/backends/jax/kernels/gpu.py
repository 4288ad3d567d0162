"""The fused ConnSNN step on a GPU: a Pallas (Triton) kernel.

One program runs one network for all substeps of an environment step (``jax.vmap`` adds a grid
axis over the networks): its bit-packed recurrent mask, (W, N) 32-bit words, is loaded once into
registers and reused by every substep, as are the neuron states.  Each substep packs the spikes
into words, counts ``popcount(M & s_E) - popcount(M & s_I)`` per postsynaptic neuron (an exact
integer, converted to float once) and updates the neurons with the same float32 operations as
the other paths.  Neuron counts that are not a power of two (Triton's block shapes must be) are
padded with silent neurons that receive and send nothing.

How multiplies and adds pair up into fused multiply-adds decides the last bit of the states.  On
the GPU they are written as PTX instructions with round-to-nearest (``mul.rn``, ``add.rn``,
``fma.rn``), which the PTX assembler never re-pairs; ``pattern`` picks the pairing (by default
the one XLA's CPU compiler uses for ``spike_impl=bitpack``, so the bits match the CPU paths;
``benchmarks/gpu_kernels.py`` checks which pattern matches XLA's GPU code for ``bitpack``).
``interpret=True`` runs the kernel through Pallas' interpreter (on the CPU, for tests), with
plain jnp arithmetic in place of the PTX instructions.
"""
from __future__ import annotations

import functools

import numpy as np

#: fused multiply-add pairing per update: i_syn (plain | fma_decay: fma(a_syn, i_syn, r_h rec) |
#: fma_drive: fma(r_h, rec, a_syn i_syn)), v (plain | fma_decay: fma(a_m, v, c_m t) | fma_drive:
#: fma(c_m, t, a_m v)), r (plain | fma_decay: fma(a_out, r, s))
DEFAULT_PATTERN = ("fma_drive", "fma_decay", "fma_decay")
PATTERN_CHOICES = (("plain", "fma_decay", "fma_drive"), ("plain", "fma_decay", "fma_drive"), ("plain", "fma_decay"))


def available(trial: bool = False) -> tuple[bool, str]:
    """``(True, '')`` where Pallas' Triton back-end imports (and, with ``trial``, compiles and runs
    the kernel for one small network with the spikes of ``bitpack``), else ``(False, reason)``."""
    try:
        from jax.experimental import pallas  # noqa: F401
        from jax.experimental.pallas import triton  # noqa: F401
    except Exception as e:  # ImportError, or a jaxlib built without Triton
        return False, f"Pallas/Triton is not usable ({type(e).__name__}: {e})"
    if trial:
        try:
            _trial()
        except Exception as e:  # a Triton/driver that cannot build or run the kernel
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            return False, f"the Pallas kernel does not run here ({type(e).__name__}: {msg})"
    return True, ""


def _trial():
    """One step of a 64-neuron network through the kernel, checked against the popcount product."""
    import jax
    import jax.numpy as jnp

    from ....core.models import SNNConstants
    from ..snn import SNN

    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 64})
    key = jax.random.PRNGKey(0)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), s) < 0.5
             for i, (k, s) in enumerate(c.param_shapes().items())}
    ref = SNN(c, "bitpack")
    carry = ref.init_carry(key)
    x = jnp.full((4,), 2.0)
    want = ref.step(ref.prepare(masks), carry, x)
    h = jnp.asarray(jax.jit(lambda m: ref.prepare({"h": m})["h"].T)(masks["h"]))
    i_in = c.r_in * (jnp.concatenate([x, -x]) @ masks["in"].astype(jnp.float32))
    got = jax.jit(lambda *a: lif_substeps(c, *a))(h, i_in, carry["v"], carry["i_syn"], carry["r"], carry["spk"])
    if not bool((got[3] == want[0]["spk"]).all()) or int(got[4]) != int(want[2]):
        raise RuntimeError("its spikes differ from the popcount product's")


class _Ops:
    """float32 mul/add/fma: PTX with round-to-nearest on the GPU, jnp in the interpreter."""

    def __init__(self, ptx: bool):
        self.ptx = ptx

    def _asm(self, code, *args):
        import jax
        import jax.numpy as jnp
        from jax.experimental.pallas import triton as plgpu

        shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in args))
        args = [jnp.broadcast_to(jnp.asarray(a, jnp.float32), shape) for a in args]
        constraints = "=r," + ",".join("r" for _ in args)
        (out,) = plgpu.elementwise_inline_asm(code, args=args, constraints=constraints, pack=1,
                                              result_shape_dtypes=[jax.ShapeDtypeStruct(shape, jnp.float32)])
        return out

    def mul(self, a, b):
        return self._asm("mul.rn.f32 $0, $1, $2;", a, b) if self.ptx else a * b

    def add(self, a, b):
        return self._asm("add.rn.f32 $0, $1, $2;", a, b) if self.ptx else a + b

    def fma(self, a, b, c):
        return self._asm("fma.rn.f32 $0, $1, $2, $3;", a, b, c) if self.ptx else a * b + c

    def lin(self, mode, a, x, b, y):
        """``a x + b y`` with the pairing ``mode``."""
        if mode == "fma_decay":
            return self.fma(a, x, self.mul(b, y))
        if mode == "fma_drive":
            return self.fma(b, y, self.mul(a, x))
        return self.add(self.mul(a, x), self.mul(b, y))


def _kernel(m_ref, em_ref, iin_ref, v_ref, isyn_ref, r_ref, spk_ref,
            v_out, isyn_out, r_out, spk_out, cnt_out, *, k, substeps, n_valid, n_exc, pattern, ops):
    import jax
    import jax.numpy as jnp

    m = m_ref[...]                    # (W, Np) uint32
    em = em_ref[...]                  # (W,) excitatory bits
    n_words, n = m.shape
    iin = iin_ref[...]
    idx = jax.lax.broadcasted_iota(jnp.int32, (n,), 0)
    valid = idx < n_valid
    sign = jnp.where(idx < n_exc, jnp.float32(k["k_r"]), jnp.float32(-k["k_r"]))
    # word w gets bit (j % 32) of neuron j for the neurons j of that word (a sum of distinct powers of two)
    col = jax.lax.broadcasted_iota(jnp.int32, (n_words, n), 1)
    in_word = (col // 32) == jax.lax.broadcasted_iota(jnp.int32, (n_words, n), 0)
    shift = (col % 32).astype(jnp.uint32)
    p_syn, p_v, p_r = pattern

    def substep(_, st):
        v, isyn, r, spk, cnt = st
        spread = jnp.where(in_word, spk.astype(jnp.uint32)[None, :] << shift, jnp.uint32(0))
        bits = jnp.sum(spread, axis=1)  # (W,)
        be = (bits & em)[:, None]
        bi = (bits & ~em)[:, None]
        pos = jnp.sum(jax.lax.population_count(m & be).astype(jnp.int32), axis=0)
        neg = jnp.sum(jax.lax.population_count(m & bi).astype(jnp.int32), axis=0)
        rec = (pos - neg).astype(jnp.float32)
        isyn = ops.lin(p_syn, jnp.float32(k["a_syn"]), isyn, jnp.float32(k["r_h"]), rec)
        if k["v_reset"] == 0.0:
            t = ops.add(isyn, iin)
        else:
            t = ops.add(ops.add(jnp.float32(k["v_reset"]), isyn), iin)
        v = ops.lin(p_v, jnp.float32(k["a_m"]), v, jnp.float32(k["c_m"]), t)
        spiked = (v > jnp.float32(k["v_th"])) & valid
        v = jnp.where(spiked, jnp.float32(k["v_reset"]), v)
        s = jnp.where(spiked, sign, jnp.float32(0.0))
        if p_r == "fma_decay":
            r = ops.fma(jnp.float32(k["a_out"]), r, s)
        else:
            r = ops.add(ops.mul(jnp.float32(k["a_out"]), r), s)
        spk = spiked.astype(jnp.int32)
        return v, isyn, r, spk, cnt + spk

    init = (v_ref[...], isyn_ref[...], r_ref[...], spk_ref[...], jnp.zeros((n,), jnp.int32))
    v, isyn, r, spk, cnt = jax.lax.fori_loop(0, substeps, substep, init)
    v_out[...] = v
    isyn_out[...] = isyn
    r_out[...] = r
    spk_out[...] = spk
    cnt_out[...] = cnt


def _pow2(n: int) -> int:
    return max(32, 1 << (int(n) - 1).bit_length())


def lif_substeps(const, mask, i_in, v, i_syn, r, spk, *, substeps: int | None = None, interpret: bool = False,
                 pattern=DEFAULT_PATTERN, num_warps: int = 4):
    """All substeps of one environment step of one network (see :func:`.cpu.lif_substeps`)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl

    c = const
    f32 = np.float32
    for mode, choices in zip(pattern, PATTERN_CHOICES):
        if mode not in choices:
            raise ValueError(f"unknown pairing {mode!r}; allowed: {', '.join(choices)}")
    n = v.shape[-1]
    n_pad = _pow2(n)
    words, words_pad = mask.shape[-2], n_pad // 32
    pad = n_pad - n
    if pad:
        mask = jnp.pad(mask, ((0, words_pad - words), (0, pad)))
        i_in, v, i_syn, r = (jnp.pad(x, (0, pad)) for x in (i_in, v, i_syn, r))
        spk = jnp.pad(spk, (0, pad))
    em = np.zeros(words_pad, np.uint32)
    for i in range(c.n_exc):
        em[i // 32] |= np.uint32(1 << (i % 32))
    k = {"a_syn": f32(c.alpha_syn), "r_h": f32(c.r_h), "a_m": f32(c.alpha_m), "c_m": f32(1.0 - c.alpha_m),
         "v_reset": f32(c.v_reset), "v_th": f32(c.v_th), "a_out": f32(c.alpha_out),
         "k_r": f32(f32(1.0 - c.alpha_out) / f32(c.dt))}
    kernel = functools.partial(_kernel, k=k, substeps=int(c.substeps if substeps is None else substeps),
                               n_valid=n, n_exc=c.n_exc, pattern=tuple(pattern), ops=_Ops(ptx=not interpret))
    vec = jax.ShapeDtypeStruct((n_pad,), jnp.float32)
    ivec = jax.ShapeDtypeStruct((n_pad,), jnp.int32)
    params = {}
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        params["compiler_params"] = plgpu.CompilerParams(num_warps=num_warps, num_stages=1)
    call = pl.pallas_call(kernel, out_shape=(vec, vec, vec, ivec, ivec), interpret=interpret,
                          name="rsrp_lif_substeps", **params)
    v, i_syn, r, spk_i, cnt = call(mask, jnp.asarray(em), i_in, v, i_syn, r, spk.astype(jnp.int32))
    return v[:n], i_syn[:n], r[:n], spk_i[:n].astype(bool), cnt.sum(dtype=jnp.int32)
