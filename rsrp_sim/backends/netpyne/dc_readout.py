"""Readout of the Diehl & Cook (2015) network: neuron labels from training responses, class votes.

Pure NumPy (no NEURON), shared by the stdp-dc method and its tests.

    assign_labels(responses, labels, n_classes)  each neuron -> the class whose examples it answered
                                                 most strongly on average (-1: it never fired)
    predict(responses, assignments, n_classes)   per example, the class whose assigned neurons fire
                                                 most on average (-1: no neuron assigned yet)
"""
from __future__ import annotations

import numpy as np


def class_means(responses: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean response of every neuron to the examples of every class, shape (n_classes, n_neurons);
    classes without examples have mean 0."""
    responses = np.asarray(responses, dtype=float)
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_classes, responses.shape[1]))
    np.add.at(sums, labels, responses)
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    return sums / np.maximum(counts, 1)[:, None]


def assign_labels(responses: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class each neuron responds to most (mean spike count per class); -1 for neurons that never fired.

    ``responses``: spike counts (n_examples, n_neurons) on *training* examples, ``labels`` their classes.
    Ties go to the lowest class.
    """
    means = class_means(responses, labels, n_classes)
    out = np.argmax(means, axis=0).astype(np.int64)
    out[means.max(axis=0) <= 0] = -1
    return out


def class_scores(responses: np.ndarray, assignments: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean response of the neurons assigned to each class, shape (n_examples, n_classes)
    (0 for a class with no neuron)."""
    responses = np.atleast_2d(np.asarray(responses, dtype=float))
    assignments = np.asarray(assignments, dtype=np.int64)
    scores = np.zeros((responses.shape[0], n_classes))
    for c in range(n_classes):
        sel = assignments == c
        if sel.any():
            scores[:, c] = responses[:, sel].mean(axis=1)
    return scores


def predict(responses: np.ndarray, assignments: np.ndarray, n_classes: int) -> np.ndarray:
    """Predicted class of each example (rows of ``responses``); -1 when no neuron has a label.
    Ties go to the lowest class."""
    scores = class_scores(responses, assignments, n_classes)
    pred = np.argmax(scores, axis=1).astype(np.int64)
    if not (np.asarray(assignments) >= 0).any():
        pred[:] = -1
    return pred
