"""Back-end-neutral pieces of the population methods on RL tasks (RSRP, RSRP-reservoir, ES).

The JAX and Brian2 back-ends share their configuration dataclasses, the running observation
normaliser and the statistics of ``p`` from here, so that the same preset keys and the same
records mean the same thing on every back-end.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import numpy as np

from ..core import rule
from ..infra.errors import UserError

OBS_NORMS = ("running", "ema_var", "none")


@dataclasses.dataclass
class RLPopulationConfig:
    """Settings shared by the population methods on RL tasks (the ``paper`` values by default)."""

    env: str = "CartPole-v1"
    max_episode_steps: int = 0  # 0: the environment's own limit (500 for CartPole-v1)
    generations: int = 100
    pop_size: int = 10240  # networks per generation, eval_size of them deterministic
    eval_size: int = 128
    chunk_size: int = 1024  # networks simulated at once (bounds memory)
    lr: float = 0.15
    optimizer: Literal["adam", "adamw", "sgd", "momentum"] = "adam"
    weight_decay: float = 0.0
    shaping: Literal["centered_rank", "raw", "baseline", "sigmoid"] = "centered_rank"
    ties: Literal["average", "index"] = "average"
    unit_variance: bool = False
    baseline_ema: Optional[float] = None  # None: previous generation's mean
    rank_chunks: int = 1  # ranking scope: 1 = whole population
    obs_norm: Literal["running", "ema_var", "none"] = "running"
    reset_pool: Literal["fresh", "fixed"] = "fresh"
    checkpoint_every: int = 1
    member_block: int = -1  # JAX: networks stepped together in cache-sized blocks; -1 auto, 0 off
    model: str = "conn_snn"
    model_overrides: dict = dataclasses.field(default_factory=dict)

    @property
    def train_size(self) -> int:
        return self.pop_size - self.eval_size

    def validate(self):
        if self.eval_size < 1:
            raise UserError(f"eval_size must be at least 1, got {self.eval_size}")
        if self.train_size < 2:
            raise UserError(f"pop_size must exceed eval_size by at least 2 sampled networks, "
                            f"got pop_size={self.pop_size} eval_size={self.eval_size}")
        for key in ("generations", "chunk_size", "checkpoint_every", "rank_chunks"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.member_block < -1:
            raise UserError(f"member_block must be -1 (auto), 0 (off) or a block size, got {self.member_block}")
        if self.max_episode_steps < 0:
            raise UserError(f"max_episode_steps must be >= 0, got {self.max_episode_steps}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.baseline_ema is not None and not 0.0 <= self.baseline_ema < 1.0:
            raise UserError(f"baseline_ema must be in [0, 1), got {self.baseline_ema}")
        if self.train_size % self.rank_chunks:
            raise UserError(f"rank_chunks={self.rank_chunks} must divide the {self.train_size} sampled networks")


@dataclasses.dataclass
class RSRPConfig(RLPopulationConfig):
    eps: float = rule.EPS
    p_init: float = rule.P_INIT
    reservoir: bool = False  # freeze M_h as a Bernoulli(0.5) mask drawn from the run's seed

    def validate(self):
        super().validate()
        if not 0.0 < self.eps < 0.5:
            raise UserError(f"eps must be in (0, 0.5), got {self.eps}")
        if not self.eps <= self.p_init <= 1 - self.eps:
            raise UserError(f"p_init must be in [eps, 1-eps], got {self.p_init}")


# ----------------------------------------------------------------------------- observation normaliser
def init_norm(d: int) -> dict:
    """State of the running observation normaliser for ``d``-dimensional observations."""
    return {"count": np.float64(0.0), "mean": np.zeros(d), "var": np.ones(d)}


def norm_arrays(norm: dict, mode: str, d: int):
    """``(mean, scale)`` as float32 arrays; inputs are ``(obs - mean) / scale``.

    ``running``: scale = std; ``ema_var``: scale = var (the reference's quirk); ``none``/no data: (0, 1).
    """
    if mode == "none" or norm["count"] == 0:
        return np.zeros(d, np.float32), np.ones(d, np.float32)
    var = np.maximum(norm["var"], 1e-8)
    scale = var if mode == "ema_var" else np.sqrt(var)
    return np.asarray(norm["mean"], np.float32), np.asarray(scale, np.float32)


def update_norm(norm: dict, mode: str, n, s, sq) -> dict:
    """Merge ``n`` observations with sum ``s`` and sum of squares ``sq`` into the normaliser."""
    if n == 0 or mode == "none":
        return norm
    bmean = s / n
    bvar = np.maximum(sq / n - bmean**2, 0.0)
    if mode == "ema_var":
        first = norm["count"] == 0
        mean = bmean if first else 0.9 * norm["mean"] + 0.1 * bmean
        var = bvar if first else 0.9 * norm["var"] + 0.1 * bvar
        return {"count": np.float64(norm["count"] + n), "mean": mean, "var": var}
    na, tot = norm["count"], norm["count"] + n
    delta = bmean - norm["mean"]
    mean = norm["mean"] + delta * n / tot
    m2 = norm["var"] * na + bvar * n + delta**2 * na * n / tot
    return {"count": np.float64(tot), "mean": mean, "var": m2 / tot}


# ----------------------------------------------------------------------------- p statistics
def p_metrics(p: dict) -> dict:
    """Mean p, mean binary entropy (bits) and the deterministic network's density."""
    flat = np.concatenate([np.asarray(v).ravel() for v in p.values()])
    ent = -(flat * np.log(flat) + (1 - flat) * np.log(1 - flat)).mean() / math.log(2)
    return {"p_mean": float(flat.mean()), "p_entropy_bits": float(ent), "density_eval": float((flat > 0.5).mean())}


def p_finalize(p: dict, run_dir) -> dict:
    """End-of-run p histogram (``plots/p_histogram.png``) and summary extras."""
    from ..analysis import plots

    p = {k: np.asarray(v) for k, v in p.items()}
    plots.p_histogram(p, run_dir / "plots" / "p_histogram.png")
    return {"p_mean": float(np.mean(np.concatenate([v.ravel() for v in p.values()])))}
