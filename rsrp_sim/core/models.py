"""Declarative model parameter sets (``models/*.yaml``) and the constants derived from them.

The YAML files are the one source of truth for a model's constants; every back-end reads them
through :func:`load` and derives scales and decay factors through :class:`SNNConstants`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml

from ..infra import assets
from ..infra.config import check_positive, coerce
from ..infra.errors import UserError, unknown


__all__ = ["available", "load", "SNNConstants"]


def available() -> list[str]:
    """Names of the bundled model files."""
    return sorted(p.stem for p in assets.folder("models").glob("*.yaml"))


def load(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``models/<name>.yaml`` and apply validated ``overrides`` (same keys, same types).

    A key may be a dotted path into nested mappings (``stdp.RLhebbwt``, ``cells.E.VTH``).  Every
    number must be finite, and time constants (``tau*``), time steps (``dt``) and gains (``*gain``,
    ``gain.*``) must be > 0 (see :func:`rsrp_sim.infra.config.must_be_positive`).
    """
    if name not in available():
        raise unknown("model", name, available())
    data = yaml.safe_load(assets.read_text("models", f"{name}.yaml"))
    for key, value in (overrides or {}).items():
        node, parts = data, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                raise UserError(f"model.{'.'.join(parts[:depth])} is a value, not a group of keys")
            if part not in node:
                raise unknown(f"key of model {'.'.join([name] + parts[:depth])}", part, sorted(node))
            if depth < len(parts) - 1:
                node = node[part]
        node[parts[-1]] = coerce(f"model.{key}", value, type(node[parts[-1]]))
    _check_numbers(data, "model")
    return data


def _check_numbers(node: Any, prefix: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _check_numbers(v, f"{prefix}.{k}")
    elif isinstance(node, list):
        for v in node:
            _check_numbers(v, prefix)
    elif isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{prefix} must be a finite number, got {node}")
    else:
        check_positive(prefix, node)


@dataclasses.dataclass(frozen=True)
class SNNConstants:
    """ConnSNN / DenseSNN constants for one task (:ref:`science-models`) and the derived quantities."""

    name: str
    connectivity: str
    input_doubling: bool
    dale: bool
    n_neurons: int
    excitatory_ratio: float
    dt: float
    sim_time: float
    tau_syn: float
    tau_m: float
    tau_out: float
    v_reset: float
    v_th: float
    k_in: float
    k_h: float
    k_out: float
    rho0: float
    rand_init_v: bool
    d_obs: int
    d_act: int
    init_std: float = 1.0

    @classmethod
    def from_model(cls, name: str, d_obs: int, d_act: int, overrides: dict | None = None) -> SNNConstants:
        data = load(name, overrides)
        fields = {f.name for f in dataclasses.fields(cls)}
        c = cls(**{k: v for k, v in data.items() if k in fields}, d_obs=d_obs, d_act=d_act)
        c.validate()
        return c

    def validate(self) -> None:
        if self.n_neurons < 2:
            raise UserError(f"model.n_neurons must be at least 2, got {self.n_neurons}")
        if not 0.0 < self.excitatory_ratio <= 1.0:
            raise UserError(f"model.excitatory_ratio must be in (0, 1], got {self.excitatory_ratio}")
        if self.dt <= 0 or self.sim_time < self.dt:
            raise UserError(f"model.dt must be > 0 and <= sim_time, got dt={self.dt} sim_time={self.sim_time}")
        for key in ("tau_syn", "tau_m", "tau_out", "k_in", "k_h", "k_out", "init_std"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"model.{key} must be a finite number > 0, got {value}")
        if not 0.0 < self.rho0 <= 1.0:
            raise UserError(f"model.rho0 must be in (0, 1], got {self.rho0}")
        if not self.v_th > self.v_reset:
            raise UserError(f"model.v_th must be above model.v_reset, got v_th={self.v_th} v_reset={self.v_reset}")

    # ---- derived
    @property
    def n_exc(self) -> int:
        """Number of excitatory neurons (the first ones); all neurons without Dale's law."""
        return int(round(self.n_neurons * self.excitatory_ratio)) if self.dale else self.n_neurons

    @property
    def substeps(self) -> int:
        return int(round(self.sim_time / self.dt))

    @property
    def n_in(self) -> int:
        """Rows of the input mask/weights: 2*d_obs with [x, -x] doubling."""
        return 2 * self.d_obs if self.input_doubling else self.d_obs

    @property
    def r_in(self) -> float:
        return self.k_in * self.v_th * self.tau_m * math.sqrt(2.0 / (self.rho0 * self.d_obs))

    @property
    def r_h(self) -> float:
        return self.k_h * self.v_th * (self.tau_m / self.tau_syn) * math.sqrt(2.0 / (self.rho0 * self.n_neurons))

    @property
    def r_out(self) -> float:
        return self.k_out * math.sqrt(1.0 / (self.rho0 * self.n_neurons))

    @property
    def alpha_syn(self) -> float:
        return math.exp(-self.dt / self.tau_syn)

    @property
    def alpha_m(self) -> float:
        return math.exp(-self.dt / self.tau_m)

    @property
    def alpha_out(self) -> float:
        return math.exp(-self.dt / self.tau_out)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the plastic masks / weights: in (n_in, N), h (N, N) [pre, post], out (N, d_act)."""
        n = self.n_neurons
        return {"in": (self.n_in, n), "h": (n, n), "out": (n, self.d_act)}

    def signs(self) -> Any:
        """Per-neuron output sign: +1 for excitatory, -1 for inhibitory (all +1 without Dale)."""
        import numpy as np

        s = np.ones(self.n_neurons, dtype=np.float32)
        s[self.n_exc:] = -1.0
        return s
