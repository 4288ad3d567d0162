"""rsrp_sim: Reward-Optimized Stochastic Release Plasticity (RSRP) for spiking networks.

What a user imports lives here, loaded on first use (``import rsrp_sim`` itself is cheap and
imports neither JAX nor Brian2)::

    from rsrp_sim import rule, shaping          # the rule's math and the reward transforms
    from rsrp_sim import RSRPSynapses, RSRPLearner   # the Brian2 synapse model and its learner
    from rsrp_sim import run                     # run a protocol from Python

- :mod:`rsrp_sim.rule` (:mod:`rsrp_sim.core.rule`): the estimator, the update, the optimisers.
- :mod:`rsrp_sim.shaping` (:mod:`rsrp_sim.core.shaping`): centred rank, baseline, sigmoid, raw.
- :mod:`rsrp_sim.rewards`, :mod:`rsrp_sim.models`: classification rewards, model constants
  (read from ``rsrp_sim/models/*.yaml``).
- :class:`RSRPSynapses`, :class:`RSRPLearner`: :mod:`rsrp_sim.backends.brian2.synapse` (needs the
  ``brian2`` extra).
- :func:`run`: one protocol run (the same as ``python -m rsrp_sim.protocols.NAME``);
  :func:`get_protocol` for the protocol object itself.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = ["rule", "shaping", "rewards", "models", "RSRPSynapses", "RSRPLearner", "run", "get_protocol",
           "__version__"]

_MODULES = {"rule": "rsrp_sim.core.rule", "shaping": "rsrp_sim.core.shaping",
            "rewards": "rsrp_sim.core.rewards", "models": "rsrp_sim.core.models"}
_ATTRS = {"RSRPSynapses": ("rsrp_sim.backends.brian2.synapse", "RSRPSynapses"),
          "RSRPLearner": ("rsrp_sim.backends.brian2.synapse", "RSRPLearner"),
          "get_protocol": ("rsrp_sim.protocols", "get")}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .backends.brian2.synapse import RSRPLearner, RSRPSynapses
    from .core import models, rewards, rule, shaping
    from .protocols import get as get_protocol


def run(protocol: str, method: str | None = None, backend: str | None = None, preset: str = "cpu",
        seed: int = 0, out: str | None = None, progress: bool = True, **keys: Any) -> tuple[Any, dict]:
    """Run one protocol (e.g. ``run('cartpole', 'rsrp', iterations=5)``); returns ``(run_dir, summary)``.

    ``keys`` override the preset's keys as ``key=value`` does on the command line; the run folder
    (default ``runs/PROTOCOL/...``) holds the same records as a command-line run.
    """
    from .protocols import get

    return get(protocol).run(method=method, backend=backend, preset=preset, seed=seed, out=out,
                             overrides=keys, progress=progress)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
    elif name in _ATTRS:
        where, attr = _ATTRS[name]
        module = getattr(importlib.import_module(where), attr)
    else:
        raise AttributeError(f"module 'rsrp_sim' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
