"""Classification trainers on the JAX back-end: RSRP on Bernoulli MLP/CNN, and backprop (``bp``).

RSRP, one generation (SPEC §1-§3.3):
  1. one minibatch of the training split, shared by every population member (or, with
     ``minibatch=per_member``, an independent random minibatch per member);
  2. the population is sampled chunk by chunk inside ``jit`` (masks z ~ B(p)), each member's logits
     on its minibatch give its reward (:mod:`rsrp_sim.rewards`);
  3. the rewards of the whole population are shaped (:mod:`rsrp_sim.shaping`; centred rank x sqrt(12)
     by default);
  4. each chunk's masks are regenerated from the same keys and the gradient mean(R~ (z - p)) is
     accumulated (:func:`rsrp_sim.rule.natural_gradient_sum`), so memory is bounded by the chunk;
     a population that fits in one chunk keeps its masks instead of regenerating them;
  5. one optimiser step (:func:`rsrp_sim.rule.apply_update`).
Every ``eval_every`` generations and at the end, the deterministic network (p > 0.5) is scored on
the validation split; the test split is used once, by :meth:`finalize`, for the final number and
the confusion matrix.

Backprop: the same architecture with real weights (LeCun-normal initialisation), softmax
cross-entropy, optax; one iteration is one epoch over the training split.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ... import data as datalib
from ...core import rewards, rule, shaping
from ...infra.errors import UserError
from ...engine.method import Method
from .classifiers import NetSpec, forward, init_real_weights, population_logits


@dataclasses.dataclass
class ClassifyConfig:
    """Data and network settings shared by the classification methods."""

    dataset: Literal["mnist", "digits", "cifar10"] = "mnist"
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

    def validate(self):
        for key in ("batch_size", "eval_every", "eval_batch", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")


@dataclasses.dataclass
class RSRPClassifyConfig(ClassifyConfig):
    generations: int = 5000
    pop_size: int = 20480  # sampled networks per generation
    chunk_size: int = 4096  # networks evaluated at once (bounds memory)
    minibatch: Literal["shared", "per_member"] = "shared"
    reward: Literal["softrecall", "softacc", "accuracy", "recall", "neg_cross_entropy"] = "softrecall"
    shaping: Literal["centered_rank", "raw", "baseline", "sigmoid"] = "centered_rank"
    ties: Literal["average", "index"] = "average"
    unit_variance: bool = True  # centred rank x sqrt(12) (the classification setting)
    baseline_ema: Optional[float] = None
    rank_chunks: int = 1  # ranking scope: 1 = the whole population
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = 4.0
    momentum: float = 0.9
    eps: float = rule.EPS
    p_init: float = rule.P_INIT

    def validate(self):
        super().validate()
        for key in ("generations", "pop_size", "chunk_size", "rank_chunks"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.pop_size < 2:
            raise UserError(f"pop_size must be at least 2, got {self.pop_size}")
        if self.pop_size % self.rank_chunks:
            raise UserError(f"rank_chunks={self.rank_chunks} must divide pop_size={self.pop_size}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.eps < 0.5:
            raise UserError(f"eps must be in (0, 0.5), got {self.eps}")
        if not self.eps <= self.p_init <= 1 - self.eps:
            raise UserError(f"p_init must be in [eps, 1-eps], got {self.p_init}")
        if self.baseline_ema is not None and not 0.0 <= self.baseline_ema < 1.0:
            raise UserError(f"baseline_ema must be in [0, 1), got {self.baseline_ema}")


@dataclasses.dataclass
class BPConfig(ClassifyConfig):
    epochs: int = 5
    optimizer: Literal["adam", "sgd", "momentum"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 added to the gradient (as torch's Adam weight_decay)
    eval_every: int = 1

    def validate(self):
        super().validate()
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")


# ---------------------------------------------------------------------------------------- shared
class _Classifier(Method):
    """Data on the device, the network spec, evaluation and the end-of-run test + confusion matrix."""

    steps_field = "examples"

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.ds = datalib.load(cfg.dataset, cfg.data_dir or None, cfg.download, cfg.val_size, cfg.test_size,
                               cfg.split_seed)
        if len(self.ds.y_train) < cfg.batch_size:
            raise UserError(f"batch_size={cfg.batch_size} exceeds the {len(self.ds.y_train)} training examples")
        self.spec = NetSpec.from_model(cfg.net, cfg.dataset, self.ds.shape, self.ds.n_classes, cfg.ei,
                                       cfg.model_overrides)
        self.x_train = jnp.asarray(self.ds.x_train)  # passed to jitted functions as arguments, not constants
        self.y_train = jnp.asarray(self.ds.y_train)
        self._eval_fn = jax.jit(self._eval_batch)

    # ------------------------------------------------------------------ data
    def _inputs(self, x_uint8):
        return self.ds.normalize(x_uint8, jnp)

    def _epoch_batch(self, index: int) -> np.ndarray:
        """Indices of minibatch ``index`` in an epoch-wise shuffled, drop-last order (deterministic)."""
        n, b = len(self.ds.y_train), self.config.batch_size
        per_epoch = n // b
        epoch, j = divmod(int(index), per_epoch)
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm = np.random.default_rng([self.seed, 7, epoch]).permutation(n)
            self._perm_epoch = epoch
        return self._perm[j * b:(j + 1) * b]

    # ------------------------------------------------------------------ evaluation
    def _eval_weights(self, state):
        raise NotImplementedError

    def _eval_batch(self, weights, x, y, valid):
        logits = forward(self.spec, weights, self._inputs(x))
        pred = jnp.argmax(logits, axis=-1)
        return jnp.sum((pred == y) & valid), pred

    def predict(self, weights, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Accuracy and predictions of one network on a whole split (fixed-size jitted batches)."""
        n, b = len(y), min(self.config.eval_batch, max(len(y), 1))
        correct, preds = 0, []
        for lo in range(0, n, b):
            xb, yb = x[lo:lo + b], y[lo:lo + b]
            m = len(yb)
            valid = np.arange(b) < m
            if m < b:  # pad to the compiled shape
                xb = np.concatenate([xb, np.zeros((b - m,) + xb.shape[1:], xb.dtype)])
                yb = np.concatenate([yb, np.zeros(b - m, yb.dtype)])
            c, p = self._eval_fn(weights, jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(valid))
            correct += int(c)
            preds.append(np.asarray(p)[:m])
        return correct / max(n, 1), np.concatenate(preds) if preds else np.zeros(0, np.int32)

    def val_accuracy(self, state) -> float:
        if len(self.ds.y_val) == 0:
            return float("nan")
        return self.predict(self._eval_weights(state), self.ds.x_val, self.ds.y_val)[0]

    def _due(self, it: int) -> bool:
        return it % self.config.eval_every == 0 or it == self.iterations

    def finalize(self, state, run_dir):
        from ...analysis import plots

        weights = self._eval_weights(state)
        acc, pred = self.predict(weights, self.ds.x_test, self.ds.y_test)
        n = self.ds.n_classes
        counts = np.zeros((n, n), np.int64)
        np.add.at(counts, (self.ds.y_test, pred), 1)
        plots.confusion_matrix(counts, run_dir / "plots" / "confusion_test.png",
                               title=f"{self.ds.name} test split, deterministic network")
        out = {"test_score": acc, "test_size": int(len(self.ds.y_test)), "val_size": int(len(self.ds.y_val)),
               "train_size": int(len(self.ds.y_train)), "data_source": self.ds.source,
               "network": self.spec.describe(), "confusion_test": counts.tolist()}
        return out


# ---------------------------------------------------------------------------------------- RSRP
class RSRPClassifier(_Classifier):
    """RSRP on a Bernoulli MLP / binary CNN: one release probability per connection."""

    Config = RSRPClassifyConfig
    curve_labels = ("train (population mean reward on the minibatch)", "validation accuracy (deterministic network)")

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.opt = rule.make_optimizer(cfg.optimizer, cfg.lr, momentum=cfg.momentum)
        self.chunk = min(cfg.chunk_size, cfg.pop_size)
        self.n_chunks = -(-cfg.pop_size // self.chunk)
        self.shapes = self.spec.mask_shapes()
        self.shared = cfg.minibatch == "shared"
        self._fitness_fn = jax.jit(lambda *a: self._fitness_chunk(*a)[:2])
        self._fitness_keep_fn = jax.jit(self._fitness_chunk)  # also returns the masks
        self._grad_fn = jax.jit(self._grad_chunk)
        self._grad_z_fn = jax.jit(self._grad_from_masks)
        self._update_fn = jax.jit(self._update)

    def init_state(self):
        cfg = self.config
        p = {k: jnp.asarray(rule.init_p(s, cfg.p_init)) for k, s in self.shapes.items()}
        return {"key": jax.random.PRNGKey(self.seed), "params": p, "opt": self.opt.init(p),
                "generation": np.int64(0), "examples": np.int64(0),
                "shaping": {k: np.float64(v) for k, v in shaping.init_state().items()}}

    # ------------------------------------------------------------------ jitted pieces
    def _masks(self, p, key):
        return {k: rule.sample_release_fast(jax.random.fold_in(key, i), p[k], n=self.chunk)
                for i, k in enumerate(sorted(p))}

    def _fitness_chunk(self, p, key, x, y):
        """Rewards and accuracies of one chunk; ``x, y``: the shared minibatch, or (per-member
        minibatches) the whole training split to draw from."""
        masks = self._masks(p, key)
        if not self.shared:  # an independent minibatch per member, drawn with replacement
            sel = jax.random.randint(jax.random.fold_in(key, 10_000), (self.chunk, self.config.batch_size), 0,
                                     y.shape[0])
            x, y = x[sel], y[sel]
        logits = population_logits(self.spec, masks, self._inputs(x), shared_input=self.shared)
        yb = y if not self.shared else jnp.broadcast_to(y, logits.shape[:2])
        fit = rewards.reward(self.config.reward, logits, yb, self.spec.n_classes)
        acc = rewards.reward("accuracy", logits, yb)
        return fit, acc, masks

    def _grad_from_masks(self, p, masks, shaped):
        return {k: rule.natural_gradient_sum(shaped, masks[k], p[k]) for k in p}

    def _grad_chunk(self, p, key, shaped):
        return self._grad_from_masks(p, self._masks(p, key), shaped)

    def _update(self, p, grad, opt_state):
        return rule.apply_update(p, grad, self.opt, opt_state, self.config.eps)

    # ------------------------------------------------------------------ one generation
    def step(self, state):
        cfg = self.config
        key, k_gen = jax.random.split(state["key"])
        gen = int(state["generation"])
        p = state["params"]
        if self.shared:
            idx = self._epoch_batch(gen)
            data = (jnp.asarray(self.ds.x_train[idx]), jnp.asarray(self.ds.y_train[idx]))
        else:
            data = (self.x_train, self.y_train)
        fits, accs, kept = [], [], None
        for i in range(self.n_chunks):
            k_chunk = jax.random.fold_in(k_gen, i)
            if self.n_chunks == 1:  # one chunk: keep the masks instead of regenerating them
                fit, acc, kept = self._fitness_keep_fn(p, k_chunk, *data)
            else:
                fit, acc = self._fitness_fn(p, k_chunk, *data)
            valid = min(self.chunk, cfg.pop_size - i * self.chunk)
            fits.append(np.asarray(fit)[:valid])
            accs.append(np.asarray(acc)[:valid])
        fitness = np.concatenate(fits)
        if not np.all(np.isfinite(fitness)):
            bad = int(np.flatnonzero(~np.isfinite(fitness))[0])
            raise UserError(f"non-finite reward {fitness[bad]} for population member {bad} in generation "
                            f"{gen + 1}; rewards must be finite")
        shaped, shaping_state = shaping.shape(fitness, cfg.shaping, state["shaping"], ties=cfg.ties,
                                              unit_variance=cfg.unit_variance, chunks=cfg.rank_chunks,
                                              ema=cfg.baseline_ema)
        total = None
        for i in range(self.n_chunks):
            w = np.zeros(self.chunk, np.float32)
            part = shaped[i * self.chunk:(i + 1) * self.chunk]
            w[:len(part)] = part
            if kept is not None:
                terms = self._grad_z_fn(p, kept, jnp.asarray(w))
            else:
                terms = self._grad_fn(p, jax.random.fold_in(k_gen, i), jnp.asarray(w))
            total = terms if total is None else jax.tree_util.tree_map(jnp.add, total, terms)
        grad = {k: rule.finish_natural_gradient(total[k][0], total[k][1], p[k], cfg.pop_size) for k in p}
        new_p, opt_state = self._update_fn(p, grad, state["opt"])
        seen = cfg.batch_size * (1 if self.shared else cfg.pop_size)
        new_state = dict(state, key=key, params=new_p, opt=opt_state, generation=np.int64(gen + 1),
                         examples=np.int64(state["examples"] + seen),
                         shaping={k: np.float64(v) for k, v in shaping_state.items()})
        it = gen + 1
        record = {"iteration": it, "examples": int(new_state["examples"]),
                  "train_score": float(fitness.mean()),
                  "eval_score": self.val_accuracy(new_state) if self._due(it) else float("nan"),
                  "train_acc": float(np.concatenate(accs).mean()), "train_max": float(fitness.max())}
        record.update(self._param_metrics(new_p))
        return new_state, record

    def _eval_weights(self, state):
        return self.spec.mask_weights({k: rule.deterministic_mask(v) for k, v in state["params"].items()})

    def _param_metrics(self, p) -> dict:
        flat = np.concatenate([np.asarray(v).ravel() for v in p.values()])
        ent = -(flat * np.log(flat) + (1 - flat) * np.log(1 - flat)).mean() / math.log(2)
        return {"p_mean": float(flat.mean()), "p_entropy_bits": float(ent),
                "density_eval": float((flat > 0.5).mean())}

    def finalize(self, state, run_dir):
        from ...analysis import plots

        out = super().finalize(state, run_dir)
        p = {k: np.asarray(v) for k, v in state["params"].items()}
        plots.p_histogram(p, run_dir / "plots" / "p_histogram.png")
        out["n_synapses"] = self.spec.n_params()
        return out


# ---------------------------------------------------------------------------------------- backprop
class BPClassifier(_Classifier):
    """Backprop baseline: the same MLP / CNN with real weights, softmax cross-entropy, optax."""

    Config = BPConfig
    iterations_key = "epochs"
    curve_labels = ("train accuracy (epoch mean)", "validation accuracy")

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        import optax

        cfg = config
        opts = {"adam": optax.adam, "sgd": optax.sgd, "momentum": lambda lr: optax.sgd(lr, momentum=0.9)}
        chain = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
        self.opt = optax.chain(*chain, opts[cfg.optimizer](cfg.lr))
        self.per_epoch = len(self.ds.y_train) // cfg.batch_size
        self._epoch_fn = jax.jit(self._epoch)

    def init_state(self):
        params = init_real_weights(self.spec, jax.random.PRNGKey(self.seed))
        return {"params": params, "opt": self.opt.init(params), "epoch": np.int64(0), "examples": np.int64(0)}

    def _loss(self, params, x, y):
        logits = forward(self.spec, params, self._inputs(x))
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

    def step(self, state):
        cfg = self.config
        ep = int(state["epoch"])
        batches = np.stack([self._epoch_batch(ep * self.per_epoch + j) for j in range(self.per_epoch)])
        params, opt_state, loss, acc = self._epoch_fn(state["params"], state["opt"], jnp.asarray(batches),
                                                      self.x_train, self.y_train)
        if not np.isfinite(float(loss)):
            raise UserError(f"backprop loss became {float(loss)} in epoch {ep + 1}; lower lr")
        new_state = dict(state, params=params, opt=opt_state, epoch=np.int64(ep + 1),
                         examples=np.int64(state["examples"] + self.per_epoch * cfg.batch_size))
        it = ep + 1
        return new_state, {"iteration": it, "examples": int(new_state["examples"]), "train_score": float(acc),
                           "eval_score": self.val_accuracy(new_state) if self._due(it) else float("nan"),
                           "train_loss": float(loss)}

    def _eval_weights(self, state):
        return state["params"]
