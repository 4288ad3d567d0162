"""The RSRP rule, written once for every back-end (the docs' science page, :ref:`science-rule`).

Every plastic synapse has a release probability ``p`` in ``[eps, 1 - eps]``.  A trial draws a
release pattern ``z ~ Bernoulli(p)``; the natural gradient of ``J(p) = E[R(z)]`` under the Fisher
metric of independent Bernoullis is ``E[R (z - p)]``, estimated from a population of ``N`` trials::

    g = (1/N) sum_k  R~_k (z_k - p)

and ``p <- clip(p + optimiser(g), eps, 1 - eps)`` (gradient *ascent*).

Spike mode (stochastic release at every presynaptic spike) replaces ``z - p`` by the per-synapse
eligibility ``e / max(n, 1)`` with ``e = sum_spikes (r - p)`` and ``n`` the number of spikes.

All functions accept NumPy arrays and JAX arrays (also inside ``jit``): the array module is taken
from the arguments, so the Brian2 and NEURON back-ends call exactly this code with NumPy arrays.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..infra.errors import unknown

__all__ = ["EPS", "P_INIT", "init_p", "sample_release", "threefry_bits", "sample_release_fast", "deterministic_mask",
           "clip_p", "natural_gradient", "natural_gradient_sum", "block_sums", "natural_gradient_block_sums",
           "finish_natural_gradient", "spike_eligibility", "spike_gradient_sum", "spike_gradient",
           "exact_natural_gradient", "OPTIMIZERS", "make_optimizer", "apply_update", "BASELINE_BETA", "online_step",
           "online_baseline", "online_continuous_step", "online_continuous_baseline", "brian2_expression"]

EPS = 1e-3  #: default clip margin of p
P_INIT = 0.5  #: default initial release probability


def _xp(*arrays):
    """The array module (numpy or jax.numpy) that the arguments belong to."""
    for a in arrays:
        if type(a).__module__.startswith(("jax", "jaxlib")):
            import jax.numpy as jnp

            return jnp
    return np


# ----------------------------------------------------------------------------- sampling
def init_p(shape: int | tuple[int, ...], value: float = P_INIT, dtype: Any = np.float32) -> np.ndarray:
    """Release probabilities of a fresh synapse group (NumPy)."""
    return np.full(shape, value, dtype=dtype)


def sample_release(rng: Any, p: Any, n: int | None = None) -> Any:
    """Draw release patterns ``z ~ Bernoulli(p)``.

    ``rng`` is a ``numpy.random.Generator`` or a JAX PRNG key.  With ``n`` the result has a leading
    population axis of length ``n``.
    """
    shape = tuple(np.shape(p)) if n is None else (n,) + tuple(np.shape(p))
    if isinstance(rng, np.random.Generator):
        return rng.random(shape) < np.asarray(p)
    import jax

    return jax.random.uniform(rng, shape, dtype=np.float32) < p


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry_bits(key: Any, n: int) -> Any:
    """``n`` random uint32 words: Threefry-2x32 (20 rounds) of the counters ``0..n-1`` under ``key``.

    Bit-identical to ``jax.extend.random.threefry_2x32(key, arange(n))`` (a test checks it), but
    written with plain ``jax.numpy`` integer ops, which XLA vectorises: about 6x faster than
    ``jax.random`` on CPU, where sampling dominates the cost of large Bernoulli populations.
    ``key``: a raw threefry key (uint32[2], e.g. ``jax.random.PRNGKey``) or a typed threefry key.
    """
    import jax
    import jax.numpy as jnp

    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape != (2,):
        raise ValueError(f"threefry_bits needs a threefry key (2 uint32 words), got shape {key.shape}")
    if n >= 2**32:
        raise ValueError(f"threefry_bits draws at most 2**32 - 1 words per key, got {n}")
    key = key.astype(jnp.uint32)
    half = (n + 1) // 2
    x0 = jax.lax.iota(jnp.uint32, half)
    x1 = x0 + jnp.uint32(half)
    if n % 2:  # jax pads an odd count with one zero counter at the end
        x1 = jnp.where(x0 == half - 1, jnp.uint32(0), x1)
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return jnp.concatenate([x0, x1])[:n]


def sample_release_fast(key: Any, p: Any, n: int | None = None) -> Any:
    """:func:`sample_release` for JAX keys with :func:`threefry_bits`: ``z = bits < p * 2**32``.

    Same distribution (exact to 2**-32 in p), different stream; use inside ``jit``.
    """
    import jax.numpy as jnp

    shape = tuple(p.shape) if n is None else (n,) + tuple(p.shape)
    size = 1
    for d in shape:
        size *= int(d)
    threshold = jnp.minimum(jnp.asarray(p, jnp.float32) * 4294967296.0, 4294967040.0).astype(jnp.uint32)
    return threefry_bits(key, size).reshape(shape) < threshold


def deterministic_mask(p: Any) -> Any:
    """The deterministic ("eval") network: a synapse is present where ``p > 0.5``."""
    return p > 0.5


def clip_p(p: Any, eps: float = EPS) -> Any:
    """Keep every probability inside ``[eps, 1 - eps]``."""
    xp = _xp(p)
    return xp.clip(p, eps, 1.0 - eps)


# ----------------------------------------------------------------------------- estimators
def natural_gradient(shaped: Any, z: Any, p: Any) -> Any:
    """Trial-mode estimate ``mean_k shaped_k * (z_k - p)``.

    ``shaped``: (N,) shaped rewards; ``z``: ``(N, *p.shape)`` release patterns (bool or 0/1);
    ``p``: release probabilities.  Computed as ``(shaped @ z) / N - mean(shaped) * p`` so no
    ``(N, *p.shape)`` float temporary is formed.
    """
    xp = _xp(shaped, z, p)
    shaped = xp.asarray(shaped, dtype=xp.float32)
    n = shaped.shape[0]
    zf = xp.reshape(z, (n, -1)).astype(xp.float32)
    rz = xp.reshape(shaped @ zf / n, xp.shape(p))
    return rz - xp.mean(shaped) * p


def natural_gradient_sum(shaped: Any, z: Any, p: Any) -> Any:
    """Un-normalised pieces of :func:`natural_gradient` for chunked populations.

    Returns ``(sum_k shaped_k z_k, sum_k shaped_k)``; summing these over chunks and calling
    :func:`finish_natural_gradient` gives exactly :func:`natural_gradient` of the whole population.
    """
    xp = _xp(shaped, z, p)
    shaped = xp.asarray(shaped, dtype=xp.float32)
    n = shaped.shape[0]
    zf = xp.reshape(z, (n, -1)).astype(xp.float32)
    return xp.reshape(shaped @ zf, xp.shape(p)), xp.sum(shaped)


def block_sums(weights: Any, x: Any, blocks: int = 1) -> Any:
    """``sum_k weights_k x_k`` over the leading (member) axis, in ``blocks`` equal consecutive blocks.

    Returns an array with a leading axis of ``blocks`` partial sums; adding them in order gives the
    total.  A population split over devices holds whole blocks, so the partial sums -- and their
    total, added after gathering them -- do not depend on how many devices share the population.
    ``blocks=1`` is the plain weighted sum.
    """
    xp = _xp(weights, x)
    w = xp.asarray(weights, dtype=xp.float32)
    n = w.shape[0]
    xf = xp.reshape(x, (n, -1)).astype(xp.float32)
    if blocks == 1:
        return xp.reshape(w @ xf, (1,) + tuple(xp.shape(x)[1:]))
    if n % blocks:
        raise ValueError(f"{n} members do not split into {blocks} equal blocks")
    part = xp.einsum("bk,bkp->bp", xp.reshape(w, (blocks, n // blocks)), xp.reshape(xf, (blocks, n // blocks, -1)))
    return xp.reshape(part, (blocks,) + tuple(xp.shape(x)[1:]))


def natural_gradient_block_sums(shaped: Any, z: Any, p: Any, blocks: int = 1) -> Any:
    """:func:`natural_gradient_sum` in ``blocks`` blocks of members (see :func:`block_sums`):
    ``(block sums of shaped_k z_k, block sums of shaped_k)``, each with a leading block axis."""
    if blocks == 1:
        rz, r = natural_gradient_sum(shaped, z, p)
        return rz[None], r[None]
    xp = _xp(shaped, z, p)
    shaped = xp.asarray(shaped, dtype=xp.float32)
    return block_sums(shaped, z, blocks), xp.sum(xp.reshape(shaped, (blocks, -1)), axis=1)


def finish_natural_gradient(sum_rz: Any, sum_r: Any, p: Any, n: int) -> Any:
    """Combine chunk sums from :func:`natural_gradient_sum` into the population estimate."""
    return (sum_rz - sum_r * p) / n


def spike_eligibility(releases: Any, p: Any) -> Any:
    """Eligibility of one synapse in spike mode: ``e = sum over its spikes of (r - p)``.

    ``releases``: 0/1 release outcomes of each presynaptic spike.  Returns ``(e, n)``.
    """
    xp = _xp(releases, p)
    r = xp.asarray(releases, dtype=xp.float32)
    return xp.sum(r - p), r.shape[0]


def spike_gradient_sum(shaped: Any, eligibility: Any, counts: Any) -> Any:
    """Un-normalised spike-mode estimate ``sum_k shaped_k * e_k / max(n_k, 1)`` (for chunks).

    ``eligibility``, ``counts``: ``(N, *p.shape)`` per trial ``e = sum(r - p)`` and spike count ``n``.
    """
    xp = _xp(shaped, eligibility, counts)
    shaped = xp.asarray(shaped, dtype=xp.float32)
    n = shaped.shape[0]
    ratio = xp.asarray(eligibility, dtype=xp.float32) / xp.maximum(xp.asarray(counts, dtype=xp.float32), 1)
    flat = xp.reshape(ratio, (n, -1))
    return xp.reshape(shaped @ flat, xp.shape(eligibility)[1:])


def spike_gradient(shaped: Any, eligibility: Any, counts: Any) -> Any:
    """Spike-mode estimate ``mean_k shaped_k * e_k / max(n_k, 1)`` (see :func:`spike_gradient_sum`)."""
    return spike_gradient_sum(shaped, eligibility, counts) / len(shaped)


def exact_natural_gradient(reward_fn: Callable[[np.ndarray], float], p: Any) -> np.ndarray:
    """Exact ``E_z[R(z) (z - p)]`` by enumerating all ``2**len(p)`` patterns (NumPy, small p).

    For tests and teaching: this is the quantity every estimator above targets.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    m = p.size
    if m > 20:
        raise ValueError(f"exact enumeration needs at most 20 synapses, got {m}")
    g = np.zeros(m)
    for bits in range(2**m):
        z = np.array([(bits >> i) & 1 for i in range(m)], dtype=np.float64)
        prob = np.prod(np.where(z > 0, p, 1 - p))
        g += prob * reward_fn(z) * (z - p)
    return g


# ----------------------------------------------------------------------------- update
OPTIMIZERS = ("adam", "sgd", "momentum", "adamw")


def make_optimizer(name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Any:
    """An optax transformation that performs gradient *ascent* with step ``lr``.

    ``adam`` is the published RL optimiser (b1 0.9, b2 0.999, eps 1e-8); ``sgd`` and ``momentum``
    the classification ones; ``adamw`` adds decoupled weight decay (used by the ES baseline).
    """
    import optax

    if name == "adam":
        chain = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
        if weight_decay:
            chain.append(optax.add_decayed_weights(-weight_decay))
        return optax.chain(*chain, optax.scale(lr))
    if name == "adamw":
        # ascent on the objective == descent on its negative; decay pulls towards 0.
        return optax.chain(optax.scale(-1.0), optax.adamw(lr, b1=b1, b2=b2, eps=eps,
                                                          weight_decay=weight_decay),)
    if name == "sgd":
        return optax.chain(*([optax.add_decayed_weights(-weight_decay)] if weight_decay else []),
                           optax.scale(lr))
    if name == "momentum":
        return optax.chain(optax.trace(decay=momentum), optax.scale(lr))
    raise unknown("optimizer", name, OPTIMIZERS)


def apply_update(p: Any, grad: Any, opt: Any, opt_state: Any, eps: float = EPS) -> Any:
    """One RSRP step: ``p <- clip(p + opt(grad), eps, 1 - eps)``.  Returns ``(p, opt_state)``.

    ``p`` and ``grad`` may be arrays or matching pytrees (e.g. ``{'in': ..., 'h': ..., 'out': ...}``).
    """
    import jax
    import optax

    updates, opt_state = opt.update(grad, opt_state, p)
    p = optax.apply_updates(p, updates)
    p = jax.tree_util.tree_map(lambda x: clip_p(x, eps), p)
    return p, opt_state


# ----------------------------------------------------------------------------- online (in-simulation)
BASELINE_BETA = 0.1  #: default factor of the online running-mean baseline


def online_step(p: Any, elig: Any, count: Any, reward: Any, baseline: Any, lr: Any, eps: float = EPS,
                xp: Any = None) -> Any:
    """One trial boundary of the online rule for a single network:
    ``p <- clip(p + lr * (R - Rbar) * e / max(n, 1), eps, 1 - eps)``.

    ``elig``/``count``: each synapse's eligibility ``e`` and spike count ``n`` for the trial (trial
    release: ``e = z - p`` and ``n = 1``); ``reward``: the trial's reward ``R``; ``baseline``: the
    running mean ``Rbar`` of the trials before.  ``xp``: the array module (default: from the
    arguments); :func:`brian2_expression` evaluates this same function on symbols to generate the
    Brian2 code of the update, so the formula exists once.
    """
    xp = _xp(p, elig, count) if xp is None else xp
    return xp.clip(p + lr * (reward - baseline) * elig / xp.maximum(count, 1), eps, 1 - eps)


def online_baseline(baseline: Any, reward: Any, beta: float = BASELINE_BETA) -> Any:
    """The running mean after a trial: ``Rbar <- Rbar + beta * (R - Rbar)`` (= ``(1-beta) Rbar + beta R``)."""
    return baseline + beta * (reward - baseline)


def online_continuous_step(p: Any, elig: Any, reward: Any, baseline: Any, lr: Any, step: Any, tau_e: Any,
                           eps: float = EPS, xp: Any = None) -> Any:
    """One step of length ``step`` of the continuous online rule
    ``dp/dt = lr * (R(t) - Rbar(t)) * e(t) / tau_e`` (Euler), clipped to ``[eps, 1 - eps]``.

    ``step`` and ``tau_e`` in the same unit (e.g. seconds)."""
    xp = _xp(p, elig) if xp is None else xp
    return xp.clip(p + lr * (reward - baseline) * elig * (step / tau_e), eps, 1 - eps)


def online_continuous_baseline(baseline: Any, reward: Any, step: Any, tau_r: Any) -> Any:
    """The continuous running mean: ``dRbar/dt = (R - Rbar) / tau_r`` (one Euler step of length ``step``)."""
    return baseline + (step / tau_r) * (reward - baseline)


class _Sym:
    """A symbolic value that records arithmetic as a Brian2 expression string."""

    def __init__(self, text: str):
        self.text = str(text)

    @staticmethod
    def _s(x: Any) -> str:
        return x.text if isinstance(x, _Sym) else repr(float(x)) if isinstance(x, float) else str(x)

    def _op(self, op, other, swap=False):
        a, b = (self._s(other), self.text) if swap else (self.text, self._s(other))
        return _Sym(f"({a} {op} {b})")

    def __add__(self, o):
        return self._op("+", o)

    def __radd__(self, o):
        return self._op("+", o, True)

    def __sub__(self, o):
        return self._op("-", o)

    def __rsub__(self, o):
        return self._op("-", o, True)

    def __mul__(self, o):
        return self._op("*", o)

    def __rmul__(self, o):
        return self._op("*", o, True)

    def __truediv__(self, o):
        return self._op("/", o)

    def __rtruediv__(self, o):
        return self._op("/", o, True)

    def __str__(self):
        return self.text


class _Brian2Ops:
    """The few array functions :func:`online_step` uses, as Brian2 expressions."""

    @staticmethod
    def clip(x, lo, hi):
        return _Sym(f"clip({_Sym._s(x)}, {_Sym._s(lo)}, {_Sym._s(hi)})")

    @staticmethod
    def maximum(x, lo):
        return _Sym(f"clip({_Sym._s(x)}, {_Sym._s(lo)}, inf)")


def brian2_expression(fn: Callable[..., Any], /, **names: Any) -> str:
    """The Brian2 expression computed by ``fn`` (e.g. :func:`online_step`) when each keyword is a
    variable name (str) or a number: the rule evaluated on symbols instead of arrays."""
    args = {k: _Sym(v) if isinstance(v, str) else v for k, v in names.items()}
    import inspect

    if "xp" in inspect.signature(fn).parameters:
        args["xp"] = _Brian2Ops
    return str(fn(**args))
