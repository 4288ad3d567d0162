"""The interface every learning method implements, whatever its back-end.

A :class:`Method` is constructed from its typed config and a seed.  The protocol layer asks it
for an initial state, then calls :meth:`Method.step` once per iteration (a generation, an update,
a block of episodes); each call returns the new state and one record with the standard fields
``iteration, env_steps (or examples), train_score, eval_score`` plus the method's own extras.
The protocol layer adds ``wall_s``, writes ``metrics.csv``, checkpoints the state and draws the
figures: a method returns the data of its end-of-run figures (:class:`Figure`) from
:meth:`Method.finalize`, and never draws or writes files itself.

States are nested dicts (or registered dataclasses) of arrays (NumPy or JAX) and Python scalars,
so they can be checkpointed generically (:mod:`rsrp_sim.infra.records`).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

from ..infra.config import compose
from ..infra.recordings import Recording
from ..infra.records import STANDARD_FIELDS  # noqa: F401  (the record fields every method returns)

__all__ = ["STANDARD_FIELDS", "Figure", "Finished", "Recording", "Method", "EvaluatedMethod"]



@dataclasses.dataclass
class Figure:
    """An end-of-run figure as data: ``kind`` names a function of :mod:`rsrp_sim.analysis.plots`
    (``p_histogram``, ``confusion_matrix``, ``raster``, ...), ``file`` the PNG under ``plots/``,
    ``data`` the function's keyword arguments."""

    kind: str
    file: str
    data: dict


@dataclasses.dataclass
class Finished:
    """What :meth:`Method.finalize` returns: extra summary fields, figures to draw, and spike
    recordings of the final evaluation (name -> :class:`~rsrp_sim.infra.recordings.Recording`),
    which the protocol layer writes to ``recordings/<name>.npz`` in the run folder."""

    summary: dict = dataclasses.field(default_factory=dict)
    figures: list = dataclasses.field(default_factory=list)
    recordings: dict = dataclasses.field(default_factory=dict)


class Method(abc.ABC):
    #: the dataclass of this method's configuration
    Config: ClassVar[type]
    #: config field holding the number of iterations to run
    iterations_key: ClassVar[str] = "generations"
    #: name of the x quantity counted in ``env_steps`` (``env_steps`` or ``examples``)
    steps_field: ClassVar[str] = "env_steps"
    #: legend of train_score and eval_score in the learning curve
    curve_labels: ClassVar[tuple[str, str]] = ("train (population mean)", "eval (deterministic network)")
    #: whether one run of this method can span several processes (jax.distributed)
    multi_process: ClassVar[bool] = False
    #: whether the method's simulator splits one run over MPI ranks itself (NEURON's ParallelContext under
    #: mpiexec / srun): its processes then join MPI instead of jax.distributed, rank 0 writing the records
    mpi_ranks: ClassVar[bool] = False

    def __init__(self, config: Any, seed: int) -> None:
        self.config = config
        self.seed = int(seed)

    @property
    def iterations(self) -> int:
        return int(getattr(self.config, self.iterations_key))

    @property
    def task_name(self) -> str | None:
        """What the method learns on (an environment id, a data set), for titles and summaries."""
        return getattr(self.config, "env", None) or getattr(self.config, "dataset", None)

    @property
    def solved_threshold(self) -> float | None:
        """The score at which the task counts as solved: the environment's gymnasium
        ``reward_threshold`` (None: no environment, or none defined)."""
        from ..envs import reward_threshold

        return reward_threshold(getattr(self.config, "env", None))

    @abc.abstractmethod
    def init_state(self) -> Any:
        """The state before the first iteration (deterministic given config and seed)."""

    @abc.abstractmethod
    def step(self, state: Any) -> tuple[Any, dict[str, Any]]:
        """One iteration: ``(new_state, record)``."""

    def finalize(self, state: Any) -> Finished:
        """Optional end-of-run work (a final evaluation): summary extras, figure data, recordings."""
        return Finished()

    def histograms(self, state: Any) -> dict[str, Any]:
        """Optional: named arrays (host NumPy) whose distribution the experiment trackers log each
        iteration (``logger=tensorboard|wandb``), e.g. the release probabilities ``p``."""
        return {}

    def close(self) -> None:  # noqa: B027 - a hook with nothing to do by default, not an abstract method
        """Release what the method holds (simulator processes, build folders)."""


class EvaluatedMethod(Method):
    """A method whose simulation a back-end supplies as an *evaluator* (the population methods).

    ``BaseConfig`` holds the method's own keys; :meth:`with_evaluator` makes the runnable class
    for one back-end, whose configuration has the evaluator's keys too.
    """

    BaseConfig: ClassVar[type]
    Evaluator: ClassVar[type]
    _with_evaluator: ClassVar[dict[Any, type]]  # set by with_evaluator, per class

    def histograms(self, state: Any) -> dict[str, Any]:
        """The strategy's histograms of the search state (RSRP: ``p``; ES: the mean weights)."""
        strategy = getattr(self, "strategy", None)
        return strategy.histograms(state["search"]) if strategy is not None else {}

    @classmethod
    def with_evaluator(cls, evaluator: Any) -> type:
        """This method on the back-end whose evaluator class is ``evaluator`` (one class per pair)."""
        made = cls.__dict__.get("_with_evaluator")
        if made is None:
            made = {}
            cls._with_evaluator = made
        if evaluator not in made:
            config = compose(f"{cls.__name__}_{evaluator.__name__}_Config", evaluator.Config, cls.BaseConfig)
            made[evaluator] = type(f"{cls.__name__}[{evaluator.__name__}]", (cls,),
                                   {"Evaluator": evaluator, "Config": config, "__module__": cls.__module__,
                                    "multi_process": bool(getattr(evaluator, "multi_process", False))})
        return made[evaluator]
