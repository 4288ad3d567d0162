"""Classification on the JAX back-end: the evaluator of RSRP's Bernoulli MLP / binary CNN, and backprop.

:class:`BernoulliClassifier` is the evaluator the engine calls for ``rsrp``
(:class:`rsrp_sim.engine.classify.RSRPClassify`): a chunk of mask sets (one per member) gives the
members' logits on their minibatch (one shared minibatch, or one drawn per member), their rewards
(:mod:`rsrp_sim.core.rewards`) and accuracies; ``predict`` scores one network on a whole split.

:class:`BPClassifier` (``bp``) is the same architecture with real weights (LeCun-normal
initialisation), softmax cross-entropy and optax; one iteration is one epoch over the training split.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ... import data as datalib
from ...core import rewards
from ...engine.classify import ClassifyConfig, load_data, test_report
from ...engine.method import Method
from ...engine.population import EvalResult
from ...infra.config import ConfigBase
from ...infra.distributed import replicate
from ...infra.errors import UserError
from .classifiers import NetSpec, forward, init_real_weights, population_logits

__all__ = ["Predictor", "BernoulliClassifier", "BPConfig", "BPClassifier"]


class Predictor:
    """One network's predictions on a whole split, in fixed-size jitted batches."""

    def __init__(self, spec: NetSpec, ds, eval_batch: int):
        self.spec, self.ds, self.eval_batch = spec, ds, int(eval_batch)
        self._fn = jax.jit(self._batch)

    def _batch(self, weights, x, y, valid):
        logits = forward(self.spec, weights, self.ds.normalize(x, jnp))
        pred = jnp.argmax(logits, axis=-1)
        return jnp.sum((pred == y) & valid), pred

    def __call__(self, weights, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Accuracy and predictions of the network with ``weights`` on ``(x, y)``."""
        n, b = len(y), min(self.eval_batch, max(len(y), 1))
        correct, preds = 0, []
        for lo in range(0, n, b):
            xb, yb = x[lo:lo + b], y[lo:lo + b]
            m = len(yb)
            valid = np.arange(b) < m
            if m < b:  # pad to the compiled shape
                xb = np.concatenate([xb, np.zeros((b - m,) + xb.shape[1:], xb.dtype)])
                yb = np.concatenate([yb, np.zeros(b - m, yb.dtype)])
            c, pr = self._fn(weights, jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(valid))
            correct += int(c)
            preds.append(np.asarray(pr)[:m])
        return correct / max(n, 1), np.concatenate(preds) if preds else np.zeros(0, np.int32)


def _spec(cfg, ds) -> NetSpec:
    return NetSpec.from_model(cfg.net, cfg.dataset, ds.shape, ds.n_classes, cfg.ei, cfg.model_overrides)


# ---------------------------------------------------------------------------------------- RSRP evaluator
@dataclasses.dataclass
class BernoulliConfig(ConfigBase):
    """The JAX classification evaluator has no keys of its own."""


class BernoulliClassifier:
    """Rewards of Bernoulli-mask networks on minibatches (see the module docstring)."""

    Config = BernoulliConfig
    packs_deterministic = False
    multi_process = True  # members sharded over every device of every process

    def __init__(self, config, task):
        self.config, self.ds, self.layout = config, task.data, task.layout
        self.spec = _spec(config, self.ds)
        self.shapes = self.spec.mask_shapes()
        self.shared = config.minibatch == "shared"
        self.x_train = jnp.asarray(self.ds.x_train)  # arguments of the jitted functions, not constants
        self.y_train = jnp.asarray(self.ds.y_train)
        self.predictor = Predictor(self.spec, self.ds, config.eval_batch)
        self._fitness_fn = jax.jit(self._fitness)

    def describe(self) -> str:
        return self.spec.describe()

    def n_params(self) -> int:
        return self.spec.n_params()

    def _fitness(self, masks, key, x, y):
        """Rewards and accuracies of one chunk; ``x, y``: the shared minibatch, or (per-member
        minibatches) the whole training split to draw from."""
        n = jax.tree_util.tree_leaves(masks)[0].shape[0]
        if not self.shared:  # an independent minibatch per member, drawn with replacement
            sel = jax.random.randint(key, (n, self.config.batch_size), 0, y.shape[0])
            x, y = x[sel], y[sel]
        logits = population_logits(self.spec, masks, self.ds.normalize(x, jnp), shared_input=self.shared)
        yb = y if not self.shared else jnp.broadcast_to(y, logits.shape[:2])
        return replicate((rewards.reward(self.config.reward, logits, yb, self.spec.n_classes),
                          rewards.reward("accuracy", logits, yb)))

    def evaluate(self, members, key, batch, chunk):
        x, y = batch if batch is not None else (self.x_train, self.y_train)
        fit, acc = self._fitness_fn(members.batched, key, x, y)
        return EvalResult(np.asarray(fit), extras={"accuracy": np.asarray(acc)})

    def evaluate_deterministic(self, net, key, n, batch):  # pragma: no cover - eval_size is 0 here
        raise NotImplementedError("classification scores the deterministic network with predict()")

    def predict(self, masks, x, y):
        """Accuracy and predictions of the network with these masks on ``(x, y)``."""
        return self.predictor(self.spec.mask_weights(masks), x, y)


# ---------------------------------------------------------------------------------------- backprop
@dataclasses.dataclass
class BPConfig(ClassifyConfig):
    epochs: int = 5
    optimizer: Literal["adam", "sgd", "momentum"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 added to the gradient (as torch's Adam weight_decay)
    eval_every: int = 1

    def validate(self):
        super().validate()
        self.require_at_least(1, "epochs")
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")


class BPClassifier(Method):
    """Backprop baseline: the same MLP / CNN with real weights, softmax cross-entropy, optax."""

    Config = BPConfig
    iterations_key = "epochs"
    steps_field = "examples"
    curve_labels = ("train accuracy (epoch mean)", "validation accuracy")

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        import optax

        cfg = config
        self.ds = load_data(cfg)
        self.spec = _spec(cfg, self.ds)
        self.predictor = Predictor(self.spec, self.ds, cfg.eval_batch)
        self.x_train, self.y_train = jnp.asarray(self.ds.x_train), jnp.asarray(self.ds.y_train)
        opts = {"adam": optax.adam, "sgd": optax.sgd, "momentum": lambda lr: optax.sgd(lr, momentum=0.9)}
        chain = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
        self.opt = optax.chain(*chain, opts[cfg.optimizer](cfg.lr))
        self.batches = datalib.EpochBatches(len(self.ds.y_train), cfg.batch_size, self.seed)
        self.per_epoch = self.batches.per_epoch
        self._epoch_fn = jax.jit(self._epoch)

    def init_state(self):
        params = init_real_weights(self.spec, jax.random.PRNGKey(self.seed))
        return {"params": params, "opt": self.opt.init(params), "epoch": np.int64(0), "examples": np.int64(0)}

    def _loss(self, params, x, y):
        logits = forward(self.spec, params, self.ds.normalize(x, jnp))
        logp = rewards.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    def _epoch(self, params, opt_state, batches, x_train, y_train):
        import optax

        def body(carry, idx):
            params, opt_state = carry
            (loss, acc), g = jax.value_and_grad(self._loss, has_aux=True)(params, x_train[idx], y_train[idx])
            updates, opt_state = self.opt.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, acc)

        (params, opt_state), (loss, acc) = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, loss.mean(), acc.mean()

    def _due(self, it: int) -> bool:
        return it % self.config.eval_every == 0 or it == self.iterations

    def step(self, state):
        cfg = self.config
        ep = int(state["epoch"])
        batches = np.stack([self.batches(ep * self.per_epoch + j) for j in range(self.per_epoch)])
        params, opt_state, loss, acc = self._epoch_fn(state["params"], state["opt"], jnp.asarray(batches),
                                                      self.x_train, self.y_train)
        if not np.isfinite(float(loss)):
            raise UserError(f"backprop loss became {float(loss)} in epoch {ep + 1}; lower lr")
        new_state = dict(state, params=params, opt=opt_state, epoch=np.int64(ep + 1),
                         examples=np.int64(state["examples"] + self.per_epoch * cfg.batch_size))
        it = ep + 1
        val = self.predictor(params, self.ds.x_val, self.ds.y_val)[0] if self._due(it) and len(self.ds.y_val) \
            else float("nan")
        return new_state, {"iteration": it, "examples": int(new_state["examples"]), "train_score": float(acc),
                           "eval_score": val, "train_loss": float(loss)}

    def finalize(self, state):
        _, pred = self.predictor(state["params"], self.ds.x_test, self.ds.y_test)
        return test_report(self.ds, pred, "backprop", {"network": self.spec.describe()})
