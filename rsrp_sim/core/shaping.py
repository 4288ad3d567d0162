"""Reward regularisation (:ref:`science-shaping`): transforms of a population's raw rewards f_1..f_N.

Every transform is a pure function ``shape(f, state) -> (shaped, state)`` so that stateful ones
(``baseline``, ``sigmoid``) can be checkpointed; the state is a small dict of floats.  All work on
NumPy arrays and on JAX arrays (also inside ``jit``).

- ``centered_rank``: rank(f)/(N-1) - 0.5 in [-0.5, 0.5]; ties averaged (default) or broken by
  index; ``unit_variance=True`` multiplies by sqrt(12) (the classification setting).
- ``raw``: f unchanged.
- ``baseline``: f - b, b = previous generation's mean (first generation b = 0) or an EMA.
- ``sigmoid``: sigmoid(10 (f - b)) with the same baseline.

Ranking scope: ``chunks=k`` ranks each of k equal consecutive chunks separately.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from ..infra.errors import unknown
from .rule import _xp

__all__ = ["TRANSFORMS", "TIES", "SIGMOID_GAIN", "centered_rank", "init_state", "shape", "Transform"]

TRANSFORMS = ("centered_rank", "raw", "baseline", "sigmoid")
TIES = ("average", "index")
SIGMOID_GAIN = 10.0


def _ranks(f: Any, ties: str) -> Any:
    """0-based ranks of f along the last axis (average ranks for ties, or index order)."""
    xp = _xp(f)
    if ties == "index":
        return xp.argsort(xp.argsort(f, axis=-1, stable=True), axis=-1, stable=True).astype(xp.float32)
    if ties != "average":
        raise unknown("ties", ties, TIES)
    s = xp.sort(f, axis=-1)
    if f.ndim == 1:
        lo = xp.searchsorted(s, f, side="left")
        hi = xp.searchsorted(s, f, side="right")
    else:  # per chunk; searchsorted is 1-D only, so loop over the (few) chunks
        lo = xp.stack([xp.searchsorted(s[i], f[i], side="left") for i in range(f.shape[0])])
        hi = xp.stack([xp.searchsorted(s[i], f[i], side="right") for i in range(f.shape[0])])
    return (lo + hi - 1).astype(xp.float32) / 2.0


def centered_rank(f: Any, ties: str = "average", unit_variance: bool = False, chunks: int = 1) -> Any:
    """Centred ranks in [-0.5, 0.5] (times sqrt(12) with ``unit_variance``)."""
    xp = _xp(f)
    f = xp.asarray(f, dtype=xp.float32)
    n = f.shape[0]
    if chunks > 1:
        if n % chunks:
            raise ValueError(f"population {n} is not divisible into {chunks} ranking chunks")
        g = f.reshape(chunks, n // chunks)
        w = _ranks(g, ties) / max(g.shape[1] - 1, 1) - 0.5
        w = w.reshape(n)
    else:
        w = _ranks(f, ties) / max(n - 1, 1) - 0.5
    if unit_variance:
        w = w * math.sqrt(12.0)
    return w


def init_state() -> dict:
    """State of the stateful transforms: the baseline b and whether it has been set."""
    return {"baseline": 0.0, "seen": 0.0}


def _next_baseline(f: Any, state: Any, ema: float | None) -> Any:
    xp = _xp(f)
    m = xp.mean(f)
    if ema is None:
        return m
    # first generation: b_new = mean(f); afterwards b_new = ema*b + (1-ema)*mean(f)
    return xp.where(state["seen"] > 0, ema * state["baseline"] + (1.0 - ema) * m, m)


def shape(f: Any, transform: str = "centered_rank", state: dict | None = None, *, ties: str = "average",
          unit_variance: bool = False, chunks: int = 1, ema: float | None = None) -> Any:
    """Apply the named transform to raw rewards ``f``.  Returns ``(shaped, new_state)``.

    ``ema=None`` makes the baseline the previous generation's mean; a float in [0, 1) makes it an
    exponential moving average with that factor.
    """
    if transform not in TRANSFORMS:
        raise unknown("reward transform", transform, TRANSFORMS)
    state = dict(init_state() if state is None else state)
    xp = _xp(f)
    f = xp.asarray(f, dtype=xp.float32)
    if xp is np and not np.all(np.isfinite(f)):
        bad = int(np.flatnonzero(~np.isfinite(f))[0])
        raise ValueError(f"non-finite reward {f[bad]} for population member {bad}; rewards must be finite")
    if transform == "centered_rank":
        return centered_rank(f, ties=ties, unit_variance=unit_variance, chunks=chunks), state
    if transform == "raw":
        return f, state
    b = state["baseline"]
    shaped = f - b if transform == "baseline" else 1.0 / (1.0 + xp.exp(-SIGMOID_GAIN * (f - b)))
    new = {"baseline": _next_baseline(f, state, ema), "seen": state["seen"] + 1.0}
    if xp is np:
        new = {k: float(v) for k, v in new.items()}
    return shaped, new


@dataclasses.dataclass(frozen=True)
class Transform:
    """A configured reward transform: ``Transform("centered_rank", unit_variance=True)(f, state)``.

    Calling it is :func:`shape` with these settings; it returns ``(shaped, new_state)`` with the
    state's values as ``numpy.float64`` (checkpointable).
    """

    name: str = "centered_rank"
    ties: str = "average"
    unit_variance: bool = False
    chunks: int = 1
    ema: Optional[float] = None

    def __post_init__(self):
        if self.name not in TRANSFORMS:
            raise unknown("reward transform", self.name, TRANSFORMS)
        if self.ties not in TIES:
            raise unknown("ties", self.ties, TIES)

    def __call__(self, f: Any, state: dict | None = None) -> Any:
        shaped, new = shape(f, self.name, state, ties=self.ties, unit_variance=self.unit_variance,
                            chunks=self.chunks, ema=self.ema)
        return shaped, {k: np.float64(v) for k, v in new.items()}
