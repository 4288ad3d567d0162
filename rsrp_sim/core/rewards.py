"""Classification rewards (:ref:`science-models`): one scalar per network from its logits on a minibatch.

Every function takes ``logits`` of shape (..., B, C) and integer labels (..., B) and returns the
reward with shape (...), so a population's logits (P, B, C) give P rewards.  NumPy and JAX arrays
alike (also inside ``jit``).

- ``softrecall`` (default): per example a / (a + c), a = 5, c = number of classes whose logit is
  >= the true class's logit (the true class included, so a top-1 hit scores 5/6), macro-averaged
  over the classes present in the minibatch
- ``softacc``: plain mean of the same per-example score
- ``accuracy``: mean(argmax == label)
- ``recall``: macro-averaged recall of the argmax prediction over the classes present
- ``neg_cross_entropy``: mean log-probability of the true class (minus the cross-entropy)
"""
from __future__ import annotations

from typing import Any

from .rule import _xp

__all__ = ["REWARDS", "SOFT_A", "soft_score", "macro_average", "hits", "log_softmax", "reward", "confusion_counts"]

REWARDS = ("softrecall", "softacc", "accuracy", "recall", "neg_cross_entropy")
SOFT_A = 5.0  #: the constant a of softrecall / softacc


def _true_logit(logits, labels):
    xp = _xp(logits, labels)
    return xp.take_along_axis(logits, xp.asarray(labels)[..., None].astype(xp.int32), axis=-1)


def soft_score(logits: Any, labels: Any, a: float = SOFT_A) -> Any:
    """Per-example a / (a + #{classes with logit >= the true logit}); shape (..., B)."""
    xp = _xp(logits, labels)
    count = xp.sum(logits >= _true_logit(logits, labels), axis=-1)
    return a / (a + count.astype(xp.float32))


def macro_average(values: Any, labels: Any, n_classes: int) -> Any:
    """Mean over the classes present in ``labels`` of the per-class mean of ``values`` (..., B)."""
    xp = _xp(values, labels)
    onehot = (xp.asarray(labels)[..., None] == xp.arange(n_classes)).astype(xp.float32)  # (..., B, C)
    count = onehot.sum(axis=-2)
    total = (values[..., None] * onehot).sum(axis=-2)
    present = count > 0
    per_class = xp.where(present, total / xp.maximum(count, 1.0), 0.0)
    return per_class.sum(axis=-1) / xp.maximum(present.sum(axis=-1), 1)


def hits(logits: Any, labels: Any) -> Any:
    """1.0 where argmax(logits) == label (first maximum on ties)."""
    xp = _xp(logits, labels)
    return (xp.argmax(logits, axis=-1) == xp.asarray(labels)).astype(xp.float32)


def log_softmax(logits: Any) -> Any:
    xp = _xp(logits)
    m = xp.max(logits, axis=-1, keepdims=True)
    s = logits - m
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def reward(name: str, logits: Any, labels: Any, n_classes: int | None = None) -> Any:
    """The named reward of each network; see the module docstring."""
    xp = _xp(logits, labels)
    logits = xp.asarray(logits, dtype=xp.float32)
    n_classes = int(n_classes or logits.shape[-1])
    if name == "softrecall":
        return macro_average(soft_score(logits, labels), labels, n_classes)
    if name == "softacc":
        return xp.mean(soft_score(logits, labels), axis=-1)
    if name == "accuracy":
        return xp.mean(hits(logits, labels), axis=-1)
    if name == "recall":
        return macro_average(hits(logits, labels), labels, n_classes)
    if name == "neg_cross_entropy":
        return xp.mean(_true_logit(log_softmax(logits), labels)[..., 0], axis=-1)
    raise ValueError(f"unknown reward {name!r}; allowed: {', '.join(REWARDS)}")


def confusion_counts(labels: Any, predictions: Any, n_classes: int) -> Any:
    """(n_classes, n_classes) counts: row = true class, column = predicted class (NumPy).

    Predictions outside ``0 .. n_classes - 1`` (e.g. -1 for "no answer") are not counted.
    """
    import numpy as np

    y, p = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    ok = (p >= 0) & (p < n_classes)
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (y[ok], p[ok]), 1)
    return counts
