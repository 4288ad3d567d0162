"""The classification task: shared keys, the RSRP population method, the end-of-run test report.

RSRP, one generation (:func:`~rsrp_sim.engine.population.generation`):

1. one minibatch of the training split, shared by every population member (or, with
   ``minibatch=per_member``, an independent random minibatch per member, drawn by the evaluator);
2. the population is sampled chunk by chunk (masks z ~ B(p)); each member's logits on its
   minibatch give its reward (:mod:`rsrp_sim.core.rewards`);
3. the rewards of the whole population are shaped (centred rank x sqrt(12) by default);
4. the gradient mean(R~ (z - p)) is accumulated chunk by chunk (a population that fits in one
   chunk keeps its masks instead of regenerating them), one optimiser step.

Every ``eval_every`` generations and at the end, the deterministic network (p > 0.5) is scored on
the validation split; the test split is used once, by :meth:`RSRPClassify.finalize`.

An evaluator for this task (``rsrp_sim/backends/jax/classification.py``) is built as
``Evaluator(config, ClassifyTask)``, has ``shapes`` (the masks) and ``evaluate(members, key, batch,
chunk)`` (rewards, plus the members' ``accuracy`` in ``extras``) and ``predict(masks, x, y)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as datalib
from ..core.rewards import REWARDS, confusion_counts
from ..infra.config import ConfigBase
from ..infra import distributed
from ..infra.errors import UserError, unknown
from .method import EvaluatedMethod, Figure, Finished
from .population import Layout, PopulationKeys, RSRPKeys, generation

__all__ = ["ClassifyConfig", "RSRPClassifyConfig", "ClassifyTask", "RSRPClassify", "load_data", "test_report"]


@dataclasses.dataclass
class ClassifyConfig(ConfigBase):
    """Data and network settings shared by the classification methods."""

    dataset: str = "mnist"  # mnist, digits, cifar10, or a data set registered with rsrp_sim.data.register
    data_dir: str = ""  # folder of the data files; "" = $RSRP_SIM_DATA, else the user cache
    download: bool = False  # fetch missing MNIST / CIFAR-10 files (checksums verified)
    val_size: int = -1  # validation examples taken from the training data; -1: the data set's default
    test_size: int = -1  # held-out test examples of a test-only folder; -1: the data set's default
    split_seed: int = 0  # seed of the train/val(/test) split, independent of the run's --seed
    net: Literal["mlp", "cnn"] = "mlp"  # architecture file models/<net>_<dataset>.yaml
    ei: Literal["none", "1:1", "1:1_input", "3:1", "2:1", "01"] = "none"  # E/I preset (MLP)
    model_overrides: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 64
    eval_every: int = 20  # iterations between validation scores of the deterministic network
    eval_batch: int = 1000  # examples per jitted evaluation call
    checkpoint_every: int = 10

    def validate(self) -> None:
        super().validate()
        if self.dataset not in datalib.LOADERS:
            raise unknown("dataset", self.dataset, datalib.names())
        self.require_at_least(1, "batch_size", "eval_every", "eval_batch", "checkpoint_every")


@dataclasses.dataclass
class RSRPClassifyConfig(RSRPKeys, PopulationKeys, ClassifyConfig):
    generations: int = 5000
    pop_size: int = 20480  # sampled networks per generation
    eval_size: int = 0  # the deterministic network is scored on the validation split instead
    chunk_size: int = 4096  # networks evaluated at once (bounds memory)
    minibatch: Literal["shared", "per_member"] = "shared"
    reward: Literal["softrecall", "softacc", "accuracy", "recall", "neg_cross_entropy"] = "softrecall"
    unit_variance: bool = True  # centred rank x sqrt(12) (the classification setting)
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = 4.0
    sampler: Literal["uniform", "threefry"] = "threefry"

    def validate(self) -> None:
        super().validate()
        self.require_at_least(1, "generations")
        self.require(self.eval_size == 0, "classification scores the deterministic network on the validation "
                                          f"split (eval_every); eval_size must be 0, got {self.eval_size}")
        self.require(self.release_mode == "trial", "classification networks have no spikes; release_mode must be trial")
        assert self.reward in REWARDS


@dataclasses.dataclass(frozen=True)
class ClassifyTask:
    """What a classification evaluator is built for: the data, the population layout, the seed."""

    data: Any
    layout: Layout
    seed: int


def load_data(cfg: Any) -> Any:
    """The configured data set (one-line errors for missing files; a batch larger than the training split)."""
    ds = datalib.load(cfg.dataset, cfg.data_dir or None, cfg.download, cfg.val_size, cfg.test_size, cfg.split_seed)
    if len(ds.y_train) < cfg.batch_size:
        raise UserError(f"batch_size={cfg.batch_size} exceeds the {len(ds.y_train)} training examples")
    return ds


def test_report(ds: Any, predictions: Any, method: str, extra: dict | None = None) -> Finished:
    """Held-out test accuracy, its confusion matrix (summary and figure) and the data set's sizes."""
    pred = np.asarray(predictions)
    acc = float(np.mean(pred == ds.y_test)) if len(ds.y_test) else float("nan")
    counts = confusion_counts(ds.y_test, pred, ds.n_classes)
    summary = {"test_score": acc, "test_size": int(len(ds.y_test)), "val_size": int(len(ds.y_val)),
               "train_size": int(len(ds.y_train)), "data_source": ds.source, "confusion_test": counts.tolist(),
               **(extra or {})}
    fig = Figure("confusion_matrix", "confusion_test.png",
                 {"counts": counts, "title": f"{ds.name} test split, {method}"})
    return Finished(summary, [fig])


class RSRPClassify(EvaluatedMethod):
    """RSRP on a Bernoulli MLP / binary CNN: one release probability per connection."""

    BaseConfig = RSRPClassifyConfig
    steps_field = "examples"
    curve_labels = ("train (population mean reward on the minibatch)", "validation accuracy (deterministic network)")

    def __init__(self, config: Any, seed: int) -> None:
        super().__init__(config, seed)
        cfg = config
        self.ds = load_data(cfg)
        self.layout = cfg.layout()
        distributed.check_layout(self.layout)
        self.evaluator = self.Evaluator(cfg, ClassifyTask(self.ds, self.layout, self.seed))
        self.strategy = cfg.strategy(self.evaluator.shapes, cfg.transform())
        self.shared = cfg.minibatch == "shared"
        self.batches = datalib.EpochBatches(len(self.ds.y_train), cfg.batch_size, self.seed)

    def init_state(self) -> Any:
        return {"key": jax.random.PRNGKey(self.seed), "generation": np.int64(0), "examples": np.int64(0),
                "search": self.strategy.init(jax.random.PRNGKey(self.seed))}

    def _due(self, it: int) -> bool:
        return it % self.config.eval_every == 0 or it == self.iterations

    def _masks(self, search):
        return {k: np.asarray(v) for k, v in self.strategy.jitted.deterministic(search).items()}

    def val_accuracy(self, search: Any) -> float:
        if len(self.ds.y_val) == 0:
            return float("nan")
        return self.evaluator.predict(self._masks(search), self.ds.x_val, self.ds.y_val)[0]

    def step(self, state: Any) -> Any:
        cfg = self.config
        gen = int(state["generation"])
        if self.shared:
            idx = self.batches(gen)
            batch = (jnp.asarray(self.ds.x_train[idx]), jnp.asarray(self.ds.y_train[idx]))
        else:
            batch = None  # the evaluator draws a minibatch per member from the training split
        search, res = generation(self.strategy, state["search"], self.evaluator, state["key"], self.layout, batch,
                                 index=gen + 1, hint=" (a reward of a network's logits; try reward=softrecall)")
        acc = np.concatenate([np.asarray(ex["accuracy"])[:self.layout.valid(i)] for i, ex in enumerate(res.extras)])
        seen = cfg.batch_size * (1 if self.shared else cfg.pop_size)
        it = gen + 1
        new_state = dict(state, key=res.next_key, search=search, generation=np.int64(it),
                         examples=np.int64(int(state["examples"]) + seen))
        record = {"iteration": it, "examples": int(new_state["examples"]),
                  "train_score": float(res.fitness.mean()),
                  "eval_score": self.val_accuracy(search) if self._due(it) else float("nan"),
                  "train_acc": float(acc.mean()), "train_max": float(res.fitness.max())}
        record.update(self.strategy.metrics(search))  # the network the validation score is of
        return new_state, record

    def finalize(self, state: Any) -> Any:
        search = state["search"]
        _, pred = self.evaluator.predict(self._masks(search), self.ds.x_test, self.ds.y_test)
        fin = test_report(self.ds, pred, "deterministic network",
                          {"network": self.evaluator.describe(), "n_synapses": self.evaluator.n_params()})
        p = {k: np.asarray(v) for k, v in search.p.items()}
        fin.figures.append(Figure("p_histogram", "p_histogram.png", {"p": p}))
        return fin
