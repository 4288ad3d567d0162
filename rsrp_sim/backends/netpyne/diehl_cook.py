"""stdp-dc: the Diehl & Cook (2015) unsupervised STDP network on NEURON, as a classification method.

One iteration = ``examples_per_iteration`` training presentations (see :ref:`science-baselines`):
before each one the input weights of every excitatory neuron are normalised to the column sum, the
image drives the Poisson inputs at ``pixel / scale * 31.875 Hz * intensity`` for 350 ms, then 150 ms
of rest; fewer than 5 excitatory spikes raise the intensity by 1 and present the example again.
STDP and theta adaptation run throughout.  Each training example's spike counts are kept (the last
``label_window`` of them); at the end of the iteration every neuron is labelled with the class it
answered most strongly on average over that window of *training* responses.  The running training
accuracy (``train_score``) predicts each training example with the labels of the previous iteration,
as the reference does.

Held-out scores use a frozen network (plasticity and theta adaptation off, no normalisation) and the
labels from training responses only: the validation split every ``eval_every`` iterations
(``eval_score``; ``eval_examples`` examples of it), the test split once at the end (``test_score``).
Plots at the end: the learned receptive fields (input weights as a grid of images) and the
histogram of neuron labels.

Every iteration and every evaluation starts the simulation afresh (cells at rest, Poisson streams
seeded by (seed, iteration)) from the weights and thresholds in the state, so a resumed run
continues exactly as an uninterrupted one.  The checkpoint holds the weights, theta, labels and the
window of training responses.

Over MPI ranks (``mpiexec -n N python -m rsrp_sim.protocols.mnist --method stdp-dc``) every rank runs
this method on its part of the network (:mod:`.dc_network`): the spike counts of each presentation
and the weights and theta at the end of an iteration are gathered to every rank, so the state, the
labels and the records are the same on all of them and rank 0 writes them.  The numbers do not depend
on the number of ranks, and a run may be resumed with another number.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import time
from typing import Literal

import numpy as np

from ... import data as datalib
from ...core import models
from ...infra.errors import UserError
from ...core.rewards import confusion_counts
from ...engine.method import Figure, Finished, Method
from .dc_readout import assign_labels, predict

if importlib.util.find_spec("neuron") is None:  # fail at selection time (the protocol prints an install hint)
    raise ImportError("No module named 'neuron'")

EVAL_STREAM = 1 << 30  # Poisson stream ids of evaluations: EVAL_STREAM + split index (training uses the iteration)


@dataclasses.dataclass
class DCConfig:
    dataset: Literal["mnist", "digits"] = "mnist"
    data_dir: str = ""  # folder of the data files; "" = $RSRP_SIM_DATA, else the user cache
    download: bool = False  # fetch missing MNIST files (checksums verified)
    val_size: int = -1  # validation examples held out of the training data; -1: the data set's default
    test_size: int = -1  # held-out test examples of a test-only folder; -1: the data set's default
    split_seed: int = 0  # seed of the train/val(/test) split, independent of the run's --seed
    n_exc: int = 0  # excitatory (= inhibitory) neurons; 0: the model's n_exc
    examples: int = 60000  # training presentations in total (repeats at a raised intensity not counted)
    examples_per_iteration: int = 500
    label_window: int = 1000  # most recent training responses used to label the neurons
    eval_every: int = 1  # iterations between validation scores
    eval_examples: int = -1  # validation examples scored each time; -1: the whole split
    checkpoint_every: int = 1
    record_examples: int = 20  # test presentations whose spikes are recorded at the end (0: none, -1: all)
    model: str = "diehl_cook"
    model_overrides: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        for key in ("examples", "examples_per_iteration", "label_window", "eval_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.n_exc < 0:
            raise UserError(f"n_exc must be >= 1 (or 0 for the model's), got {self.n_exc}")
        if self.record_examples < -1:
            raise UserError(f"record_examples must be >= 0 (or -1 for every test example), got {self.record_examples}")
        if self.eval_examples == 0 or self.eval_examples < -1:
            raise UserError(f"eval_examples must be >= 1 (or -1 for the whole validation split), "
                            f"got {self.eval_examples}")


class DiehlCook(Method):
    """Diehl & Cook (2015) STDP baseline on NEURON; see the module docstring."""

    Config = DCConfig
    iterations_key = "examples"
    steps_field = "examples"
    curve_labels = ("running training accuracy (previous labels)", "validation accuracy (frozen network)")
    mpi_ranks = True  # NEURON's ParallelContext splits the cells over the MPI ranks

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.model = models.load(cfg.model, cfg.model_overrides)
        self.n_exc = int(cfg.n_exc or self.model["n_exc"])
        self.ds = datalib.load(cfg.dataset, cfg.data_dir or None, cfg.download, cfg.val_size, cfg.test_size,
                               cfg.split_seed)
        self.n_in = self.ds.n_features
        self.n_classes = self.ds.n_classes
        inp = self.model["input"]
        self.unit_rate = float(inp["rate_full_scale_hz"]) / self.ds.scale  # Hz per pixel value per intensity
        from .dc_network import DCNetwork
        from .ranks import context

        pc = context()
        if int(pc.nhost()) > 1:
            pc.barrier()  # (the ranks get here together: a refusal every rank makes is said once, by rank 0)
        DCNetwork.check(self.model, self.n_exc, int(pc.nhost()))  # before a run folder exists
        self._net = None
        from . import mechanisms

        mechanisms.build()  # compiled (or found in the cache) before a run folder exists

    @property
    def iterations(self) -> int:
        return -(-self.config.examples // self.config.examples_per_iteration)

    @property
    def net(self):
        if self._net is None or not self._net.alive:  # (re)build; another network may have replaced it
            from .dc_network import DCNetwork

            self._net = DCNetwork(self.model, self.n_in, self.n_exc, self.seed)
        return self._net

    # ------------------------------------------------------------------ state
    def init_state(self):
        from .dc_network import initial_connectivity

        w0, _ = initial_connectivity(self.model, self.n_exc, self.n_in, self.seed)
        win = self.config.label_window
        return {"weights": w0, "theta": np.full(self.n_exc, float(self.model["exc"]["theta_init"])),
                "assignments": np.full(self.n_exc, -1, np.int64),
                "responses": np.zeros((win, self.n_exc), np.float32), "labels": np.full(win, -1, np.int64),
                "iteration": np.int64(0), "examples": np.int64(0), "presentations": np.int64(0)}

    # ------------------------------------------------------------------ presenting examples
    def present(self, x, learning: bool) -> tuple[np.ndarray, int]:
        """Show one image (see :meth:`DCNetwork.present`); its excitatory spike counts and presentations."""
        return self.net.present(np.asarray(x, dtype=float).reshape(-1) * self.unit_rate, learning)

    def _load(self, state, learning: bool, stream: int):
        net = self.net
        net.weights = state["weights"]
        net.set_learning(learning)
        net.restart((self.seed, stream), theta=state["theta"])

    def responses(self, state, x: np.ndarray, stream: int, bounds: list | None = None) -> tuple[np.ndarray, int]:
        """Spike counts (n, n_exc) of the frozen network (plasticity and theta off) to images ``x``;
        ``bounds`` (a list) receives each example's ``(start ms, stop ms, presentations)``."""
        self._load(state, learning=False, stream=stream)
        out = np.zeros((len(x), self.n_exc))
        shown = 0
        for k in range(len(x)):
            t0 = float(self.net.h.t)
            out[k], reps = self.present(x[k], learning=False)
            shown += reps
            if bounds is not None:
                bounds.append((t0, float(self.net.h.t), reps))
        return out, shown

    def score(self, state, split: str, bounds: list | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        """Accuracy, predictions and true labels of the frozen network on the ``val`` or ``test`` split."""
        x, y = getattr(self.ds, f"x_{split}"), getattr(self.ds, f"y_{split}")
        if split == "val" and self.config.eval_examples > 0:
            x, y = x[:self.config.eval_examples], y[:self.config.eval_examples]
        if len(y) == 0:
            return float("nan"), np.zeros(0, np.int64), y
        r, _ = self.responses(state, x, EVAL_STREAM + (0 if split == "val" else 1), bounds)
        pred = predict(r, state["assignments"], self.n_classes)
        return float(np.mean(pred == y)), pred, y

    # ------------------------------------------------------------------ one iteration
    def _order(self, index: int) -> int:
        """Training example shown as presentation ``index``: epoch-wise shuffled, deterministic."""
        n = len(self.ds.y_train)
        epoch, j = divmod(int(index), n)
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm = np.random.default_rng([self.seed, 11, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[j])

    def step(self, state):
        from . import ranks

        cfg = self.config
        it = int(state["iteration"]) + 1
        t0 = time.perf_counter()
        self._load(state, learning=True, stream=it)
        comm0 = ranks.COMM["s"] + float(self.net.pc.wait_time())
        seen = int(state["examples"])
        n = min(cfg.examples_per_iteration, cfg.examples - seen)
        responses, labels = state["responses"].copy(), state["labels"].copy()
        win = len(labels)
        correct, shown, spikes = 0, 0, 0.0  # spikes: excitatory spikes of each example's counted presentation
        for k in range(n):
            i = self._order(seen + k)
            counts, reps = self.present(self.ds.x_train[i], learning=True)
            y = int(self.ds.y_train[i])
            correct += int(predict(counts[None], state["assignments"], self.n_classes)[0] == y)
            shown += reps
            spikes += counts.sum()
            slot = (seen + k) % win
            responses[slot], labels[slot] = counts, y
        net = self.net
        have = labels >= 0
        assignments = assign_labels(responses[have], labels[have], self.n_classes)
        sim_s = time.perf_counter() - t0
        comm_s = ranks.COMM["s"] + float(net.pc.wait_time()) - comm0
        new = dict(state, weights=net.weights, theta=net.read_theta(), assignments=assignments,
                   responses=responses, labels=labels, iteration=np.int64(it), examples=np.int64(seen + n),
                   presentations=np.int64(int(state["presentations"]) + shown))
        due = it % cfg.eval_every == 0 or it == self.iterations
        eval_score = self.score(new, "val")[0] if due else float("nan")
        rec = {"iteration": it, "examples": seen + n, "train_score": correct / max(n, 1), "eval_score": eval_score,
               "presentations": int(new["presentations"]), "repeats": shown - n,
               "train_pres_per_s": shown / max(sim_s, 1e-9), "comm_share": comm_s / max(sim_s, 1e-9),
               "mean_spikes": spikes / max(n, 1),
               "theta_mean": float(np.mean(new["theta"]) - float(self.model["exc"]["theta_offset"])),
               "labelled": int((assignments >= 0).sum())}
        return new, rec

    # ------------------------------------------------------------------ end of run
    def close(self):
        """Free the NEURON network (a later call rebuilds it)."""
        if self._net is not None:
            self._net.close()
            self._net = None

    def finalize(self, state) -> Finished:
        n_rec = self.config.record_examples
        bounds: list = []
        if n_rec:
            self.net.record_spikes(True)
        acc, pred, y = self.score(state, "test", bounds)
        recordings = {}
        if n_rec and len(y):
            recordings["test"] = self._recording(state, bounds, pred, y, n_rec)
        self.close()
        counts = confusion_counts(y, pred, self.n_classes)
        h, w = self.ds.shape[:2]
        assignments = np.asarray(state["assignments"])
        figures = [
            Figure("confusion_matrix", "confusion_test.png",
                   {"counts": counts, "title": f"{self.ds.name} test split, stdp-dc (frozen)"}),
            Figure("weight_grid", "receptive_fields.png",
                   {"weights": np.asarray(state["weights"]).reshape(self.n_exc, h, w),
                    "title": f"stdp-dc input weights, {self.n_exc} excitatory neurons", "labels": assignments}),
            Figure("assignment_histogram", "assignments.png",
                   {"assignments": assignments, "n_classes": self.n_classes,
                    "title": f"stdp-dc neuron labels ({self.n_exc} excitatory neurons)"})]
        return Finished({"test_score": acc, "test_size": int(len(y)), "val_size": int(len(self.ds.y_val)),
                         "train_size": int(len(self.ds.y_train)), "data_source": self.ds.source,
                         "n_exc": self.n_exc, "n_inputs": self.n_in, "confusion_test": counts.tolist(),
                         "labels_per_class": np.bincount(assignments + 1, minlength=self.n_classes + 1).tolist()},
                        figures, recordings)

    def _recording(self, state, bounds, pred, y, n_rec: int):
        """The recorded spikes of the first ``n_rec`` test presentations (all with -1)."""
        from ...infra.recordings import Recording

        t, cells = self.net.take_spikes()
        self.net.record_spikes(False)
        n = len(bounds) if n_rec < 0 else min(n_rec, len(bounds))
        stop_ms = bounds[n - 1][1]
        keep = t < stop_ms
        n_exc = self.n_exc
        inp = self.model["input"]
        return Recording(
            spike_times=t[keep] / 1000.0, spike_units=cells[keep],
            units={"population": np.array(["Ae"] * n_exc + ["Ai"] * n_exc),
                   "cell_type": np.array(["excitatory"] * n_exc + ["inhibitory"] * n_exc),
                   "assigned_class": np.concatenate([np.asarray(state["assignments"], np.int64),
                                                     np.full(n_exc, -1, np.int64)])},
            intervals={"start_time": np.array([b[0] for b in bounds[:n]]) / 1000.0,
                       "stop_time": np.array([b[1] for b in bounds[:n]]) / 1000.0,
                       "presentations": np.array([b[2] for b in bounds[:n]], np.int64),
                       "label": np.asarray(y[:n], np.int64), "prediction": np.asarray(pred[:n], np.int64)},
            description=(f"stdp-dc: the frozen network's first {n} test presentations of {self.ds.name} "
                         f"({inp['present_ms']} ms image, {inp['rest_ms']} ms rest, shown again at a higher "
                         f"intensity while it evokes fewer than {inp['min_spikes']} spikes); every spike of the "
                         f"{n_exc} excitatory and {n_exc} inhibitory neurons"),
            interval_kind="presentation", duration=stop_ms / 1000.0, resolution=float(self.model["dt"]) / 1000.0,
            constants={"model": self.config.model, "dataset": self.ds.name, "n_exc": n_exc, "n_inputs": self.n_in,
                       **{k: v for k, v in self.model.items() if k != "name"}})
