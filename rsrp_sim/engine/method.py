"""The interface every learning method implements, whatever its back-end.

A :class:`Method` is constructed from its typed config and a seed.  The protocol layer asks it
for an initial state, then calls :meth:`Method.step` once per iteration (a generation, an update,
a block of episodes); each call returns the new state and one record with the standard fields
``iteration, env_steps (or examples), train_score, eval_score`` plus the method's own extras.
The protocol layer adds ``wall_s``, writes ``metrics.csv``, checkpoints the state and draws plots.

States are plain nested dicts of arrays (NumPy or JAX) and Python scalars, so they can be
checkpointed generically (:mod:`rsrp_sim.records`).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar

STANDARD_FIELDS = ("iteration", "env_steps", "wall_s", "train_score", "eval_score")


class Method(abc.ABC):
    #: the dataclass of this method's configuration
    Config: ClassVar[type]
    #: config field holding the number of iterations to run
    iterations_key: ClassVar[str] = "generations"
    #: name of the x quantity counted in ``env_steps`` (``env_steps`` or ``examples``)
    steps_field: ClassVar[str] = "env_steps"
    #: legend of train_score and eval_score in the learning curve
    curve_labels: ClassVar[tuple[str, str]] = ("train (population mean)", "eval (deterministic network)")

    def __init__(self, config, seed: int):
        self.config = config
        self.seed = int(seed)

    @property
    def iterations(self) -> int:
        return int(getattr(self.config, self.iterations_key))

    @abc.abstractmethod
    def init_state(self) -> dict[str, Any]:
        """The state before the first iteration (deterministic given config and seed)."""

    @abc.abstractmethod
    def step(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One iteration: ``(new_state, record)``."""

    def finalize(self, state: dict[str, Any], run_dir) -> dict[str, Any]:
        """Optional end-of-run work (extra plots, a final evaluation); returns summary extras."""
        return {}
