"""The Diehl & Cook (2015) network on NEURON (models/diehl_cook.yaml, mechanism mod/dcneuron.mod).

    n_in Poisson inputs (RateGen, rates set per example)
      -> n_exc excitatory DCNeuron cells: all-to-all plastic NetCons (STDP inside DCNeuron),
         random initial weights, uniform random delays
    excitatory i -> inhibitory i (one-to-one, on ge); inhibitory i -> every excitatory j != i (on gi)

Everything heavy stays in C: the plastic weights, delays, thresholds theta and spike counts are read
and written as whole NumPy arrays through ``h.PtrVector`` (one gather/scatter per example), the input
rates are written the same way and the inputs are told to reschedule by one event fanned out by a
Relay cell.  Integration is NEURON's fixed step (CVode off, ``dt`` from the YAML) with the fixed-step
event bin queue, advanced by ``ParallelContext.psolve`` (by stdrun's ``continuerun`` when the
inhibitory delay is one step or less, which only one process allows).

Over several MPI ranks (NEURON's ParallelContext; see :mod:`.ranks`) the excitatory cell k and its
inhibitory partner k (gids k and n_exc + k) live on the rank that owns k (contiguous blocks), together
with k's n_in plastic input NetCons, so the exc -> inh connection and all plastic synapses are local.
The inhibitory -> excitatory connections cross ranks: NEURON exchanges spikes once per minimum
delay and needs that delay to exceed one fixed step, so ``weights.inh_to_exc_delay_ms`` is two steps
(1 ms) by default.  Every rank holds all n_in inputs, with the same Random123 stream per input
(``(seed, stream, input index)``): every rank sees the same input spikes without any broadcast.
Each rank reads and writes its own cells' arrays; the arrays every rank needs whole (spike counts
per presentation, weights and theta once per iteration) are all-gathered in rank order.  The
results do not depend on the number of ranks, bit for bit (tested for 1, 2 and 4).

The network is instantiated straight on NEURON rather than through NetPyNE's specification layer:
NetPyNE keeps a Python dictionary per connection, too slow and too large for 784 x N_e plastic
synapses (313,600 at N_e = 400); the cells are point processes that keep their own state, which
NetPyNE's spike detection (a threshold on a voltage) cannot see through an adaptive threshold.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...infra.errors import UserError
from . import lifetime, mechanisms, ranks

KIND_PLASTIC, KIND_INH, KIND_EXC = 0.0, 1.0, 2.0  # DCNeuron NetCon weight[1]


def cell_params(model: dict[str, Any], which: str) -> dict[str, float]:
    """DCNeuron parameters of the excitatory (``exc``, with the STDP constants) or inhibitory cells."""
    p = {k: float(v) for k, v in model[which].items()}
    if which == "exc":
        p.update({k: float(v) for k, v in model["stdp"].items()})
    return p


def initial_connectivity(model: dict[str, Any], n_exc: int, n_in: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial input weights ``(U[0,1) + offset) * scale`` and delays ``U(lo, hi)`` ms, both (n_exc, n_in)."""
    w = model["weights"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 6015]))
    w0 = (rng.random((n_exc, n_in)) + float(w["input_init_offset"])) * float(w["input_init_scale"])
    lo, hi = (float(x) for x in w["input_delay_ms"])
    return w0, rng.uniform(lo, hi, (n_exc, n_in))


class DCNetwork:
    """One instantiated network (this rank's part of it); see the module docstring.  Weights are
    (n_exc, n_in) arrays: :attr:`weights` gathers them from every rank (a collective), the setter
    takes the whole matrix and keeps this rank's rows."""

    def __init__(self, model: dict[str, Any], n_in: int, n_exc: int, seed: int):
        from neuron import h

        if n_in < 1 or n_exc < 1:
            raise UserError(f"the network needs at least one input and one excitatory cell "
                            f"(n_in={n_in}, n_exc={n_exc})")
        pc = ranks.context()
        ranks.load_mechanisms(pc)
        h.load_file("stdrun.hoc")
        lifetime.close_current()
        self.h, self.model, self.pc = h, model, pc
        self.nhost, self.rank = int(pc.nhost()), int(pc.id())
        self.n_in, self.n_exc, self.seed = int(n_in), int(n_exc), int(seed)
        self.check(model, self.n_exc, self.nhost)
        self.lo, self.hi = ranks.block(self.n_exc, self.nhost, self.rank)
        self.n_local = self.hi - self.lo
        self.dt = float(model["dt"])
        w = model["weights"]
        self.delay_ei, self.delay_ie = float(w["exc_to_inh_delay_ms"]), float(w["inh_to_exc_delay_ms"])
        self._psolve = self.delay_ie > self.dt  # (shorter: one process, continuerun)
        self._cvode = cvode = h.CVode()
        cvode.active(0)
        self._queue_mode = int(cvode.queue_mode())
        cvode.queue_mode(1, 0)  # fixed-step bin queue (events on step boundaries); close() restores the mode
        h.dt = self.dt
        pc.gid_clear()

        self.host = h.Section(name="dc_host")  # the cells keep their own state; one section hosts them all
        self.exc, self.inh = [], []
        self.w_gain = self.input_gain(model, self.n_in)
        for name, cells in (("exc", self.exc), ("inh", self.inh)):
            params = cell_params(model, name)
            for _ in range(self.n_local):
                cell = h.DCNeuron(self.host(0.5))
                for k, v in params.items():
                    setattr(cell, k, v)
                cell.w_gain = self.w_gain
                if name == "inh":
                    cell.learning = 0
                cells.append(cell)
        # gids: excitatory k -> k, inhibitory k -> n_exc + k, on the rank that owns k
        self._sources = []
        for j in range(self.n_local):
            for gid, cell in ((self.lo + j, self.exc[j]), (self.n_exc + self.lo + j, self.inh[j])):
                pc.set_gid2node(gid, self.rank)
                nc = h.NetCon(cell, None)
                pc.cell(gid, nc)
                self._sources.append(nc)
        self.inputs = []
        for _i in range(self.n_in):
            u = h.RateGen()
            u.noise, u.hz, u.start = 1, 0.0, 0.0
            self.inputs.append(u)
        self.relay = h.Relay()
        self._relay_ctl = h.NetCon(None, self.relay)
        self._relay_ncs = [h.NetCon(self.relay, u, 0, 0, 1) for u in self.inputs]

        w0, delays = initial_connectivity(model, self.n_exc, self.n_in, self.seed)
        # plastic NetCons of this rank's cells, exc-major: index (e - lo) * n_in + i
        # (kind 0 = plastic is NEURON's default weight[1])
        self.ncs = [h.NetCon(u, cell) for cell in self.exc for u in self.inputs]
        self._w_ptr = mechanisms.ptr_vector([nc._ref_weight[0] for nc in self.ncs])
        self._d_ptr = mechanisms.ptr_vector([nc._ref_delay for nc in self.ncs])
        self._vec = h.Vector(len(self.ncs))
        self._scatter(self._d_ptr, delays[self.lo:self.hi])
        self.initial_weights = w0
        self.weights = w0
        # exc k -> inh k on this rank; inh j -> exc k (j != k) through the gids, from whichever rank owns j
        self.lateral = [h.NetCon(e, i, 0, self.delay_ei, float(w["exc_to_inh"])) for e, i in zip(self.exc, self.inh)]
        for nc in self.lateral:
            nc.weight[1] = KIND_EXC
        for j in range(self.n_exc):
            for k, dst in enumerate(self.exc, start=self.lo):
                if j != k:
                    nc = pc.gid_connect(self.n_exc + j, dst)
                    nc.delay, nc.weight[0], nc.weight[1] = self.delay_ie, float(w["inh_to_exc"]), KIND_INH
                    self.lateral.append(nc)
        if self._psolve:
            pc.set_maxstep(10)  # spike exchange interval: the smallest delay between the cells (>= dt)
        self._theta_ptr = mechanisms.ptr_vector([c._ref_theta for c in self.exc])
        self._count_ptr = mechanisms.ptr_vector([c._ref_nspikes for c in self.exc])
        self._hz_ptr = mechanisms.ptr_vector([u._ref_hz for u in self.inputs])
        self._small = h.Vector(max(self.n_exc, self.n_in))
        self.learning = True
        self._started = False
        lifetime.claim(self)

    @staticmethod
    def check(model: dict[str, Any], n_exc: int, nhost: int):
        """Refuse (one line) a network that ``nhost`` MPI ranks cannot run."""
        dt, w = float(model["dt"]), model["weights"]
        d_ei, d_ie = float(w["exc_to_inh_delay_ms"]), float(w["inh_to_exc_delay_ms"])
        if d_ei < 0 or d_ie < 0:
            raise UserError(f"model.weights delays must be >= 0 ms (exc_to_inh_delay_ms={d_ei:g}, "
                            f"inh_to_exc_delay_ms={d_ie:g})")
        if nhost > 1 and n_exc < nhost:
            raise UserError(f"n_exc={n_exc} excitatory cells cannot be split over {nhost} MPI ranks; start at most "
                            f"{n_exc} ranks")
        if nhost > 1 and d_ie <= dt:
            raise UserError(f"model.weights.inh_to_exc_delay_ms={d_ie:g} must exceed one step (dt={dt:g} ms) over "
                            f"several MPI ranks: NEURON exchanges their spikes once per minimum delay; use e.g. "
                            f"{2 * dt:g} (the default) or run in one process")

    def close(self):
        """Free this network's NEURON objects (and gids) and restore the event queue mode (another network
        may follow)."""
        if lifetime.release(self, ("lateral", "ncs", "_relay_ncs", "_relay_ctl", "_w_ptr", "_d_ptr", "_theta_ptr",
                                   "_count_ptr", "_hz_ptr", "_sources", "exc", "inh", "inputs", "relay", "host",
                                   "_vec", "_small", "_rec_ncs", "_rec_t", "_rec_id")):
            self.pc.gid_clear()
            self._cvode.queue_mode(self._queue_mode, 0)

    @staticmethod
    def input_gain(model: dict[str, Any], n_in: int) -> float:
        """Conductance per unit input weight: 784 / n_in with ``gain_with_input_size``, else 1."""
        w = model["weights"]
        return float(w["norm_reference_inputs"]) / n_in if w["gain_with_input_size"] else 1.0

    @staticmethod
    def norm_total(model: dict[str, Any], n_in: int) -> float:
        """Column sum of the input weights: 78 x n_in / 784."""
        w = model["weights"]
        return float(w["norm_total"]) * n_in / float(w["norm_reference_inputs"])

    # ------------------------------------------------------------------ vectorised access
    def _gather(self, pv, vec=None) -> np.ndarray:
        vec = self._vec if vec is None else vec
        vec.resize(int(pv.size()))
        pv.gather(vec)
        return vec.as_numpy().copy()

    def _scatter(self, pv, values, vec=None):
        vec = self._vec if vec is None else vec
        vec.from_python(np.ascontiguousarray(values, dtype=float).ravel())
        pv.scatter(vec)

    def _whole(self, local: np.ndarray) -> np.ndarray:
        """This rank's rows/entries of a per-cell array joined with every other rank's (a collective)."""
        if self.nhost == 1:
            return local
        return np.concatenate(ranks.allgather(self.pc, local), axis=0)

    @property
    def local_weights(self) -> np.ndarray:
        """This rank's plastic input weights, shape (n_local, n_in): rows lo .. hi - 1."""
        return self._gather(self._w_ptr).reshape(self.n_local, self.n_in)

    @local_weights.setter
    def local_weights(self, w):
        self._scatter(self._w_ptr, w)

    @property
    def weights(self) -> np.ndarray:
        """Plastic input weights of every cell, shape (n_exc, n_in) (a collective over the ranks)."""
        return self._whole(self.local_weights)

    @weights.setter
    def weights(self, w):
        w = np.asarray(w, dtype=float)
        if w.shape != (self.n_exc, self.n_in):
            raise UserError(f"expected input weights of shape {(self.n_exc, self.n_in)}, got {w.shape}")
        self.local_weights = w[self.lo:self.hi]

    @property
    def delays(self) -> np.ndarray:
        """Input delays of every cell, shape (n_exc, n_in) (a collective over the ranks)."""
        return self._whole(self._gather(self._d_ptr).reshape(self.n_local, self.n_in))

    def read_theta(self) -> np.ndarray:
        """The excitatory cells' thresholds theta now (they change while learning; a collective)."""
        return self._whole(self._gather(self._theta_ptr, self._small))

    def write_theta(self, theta):
        """Set theta from the whole (n_exc,) array (this rank keeps its cells')."""
        self._scatter(self._theta_ptr, np.asarray(theta, dtype=float)[self.lo:self.hi], self._small)

    def spike_counts(self) -> np.ndarray:
        """Spikes of every excitatory cell since the last :meth:`reset_counts` (a collective)."""
        return self._whole(self._gather(self._count_ptr, self._small))

    def record_spikes(self, on: bool = True):
        """Record the time of every excitatory and inhibitory spike (cells 0 .. n_exc - 1 excitatory,
        n_exc .. 2 n_exc - 1 inhibitory: the cells' gids) until switched off; read them with
        :meth:`take_spikes`.  Each rank records its own cells."""
        h = self.h
        if on and not self.__dict__.get("_rec_ncs"):
            self._rec_t, self._rec_id = h.Vector(), h.Vector()
            self._rec_ncs = []
            cells = [(self.lo + j, c) for j, c in enumerate(self.exc)] + \
                [(self.n_exc + self.lo + j, c) for j, c in enumerate(self.inh)]
            for gid, cell in cells:
                nc = h.NetCon(cell, None)
                nc.record(self._rec_t, self._rec_id, gid)
                self._rec_ncs.append(nc)
        elif not on:
            self.__dict__.pop("_rec_ncs", None)

    def take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """Recorded spikes ``(times in ms, cell index)`` of every rank since the last call, in time
        order (the recorders are emptied; a collective over the ranks)."""
        if not self.__dict__.get("_rec_ncs"):
            t, ids = np.zeros(0), np.zeros(0, np.int64)
        else:
            t, ids = self._rec_t.as_numpy().copy(), self._rec_id.as_numpy().astype(np.int64)
            self._rec_t.resize(0)
            self._rec_id.resize(0)
        if self.nhost > 1:
            t, ids = self._whole(t), self._whole(ids)
            order = np.lexsort((ids, t))
            t, ids = t[order], ids[order]
        return t, ids

    def reset_counts(self):
        self._scatter(self._count_ptr, np.zeros(self.n_local), self._small)

    def normalize(self, total: float):
        """Scale each excitatory cell's input weights so that they sum to ``total`` (all-zero rows stay);
        each rank scales its own cells' rows."""
        w = self.local_weights
        s = w.sum(axis=1, keepdims=True)
        self.local_weights = w * np.where(s > 0, total / np.where(s > 0, s, 1.0), 1.0)

    def set_learning(self, on: bool):
        """Plasticity and theta adaptation on (training) or frozen (labelling, evaluation)."""
        if on != self.learning:
            for c in self.exc:
                c.learning = 1 if on else 0
            self.learning = bool(on)

    def set_rates(self, rates_hz):
        """Input rates (Hz); every input reschedules its next spike at once."""
        self._scatter(self._hz_ptr, rates_hz, self._small)
        if self._started:
            self._relay_ctl.event(self.h.t)

    def present(self, unit_rates, learning: bool) -> tuple[np.ndarray, int]:
        """Present one example whose inputs fire at ``unit_rates * intensity`` Hz for ``present_ms``, then
        ``rest_ms`` of silence; while it evokes fewer than ``min_spikes`` excitatory spikes, raise the intensity
        by ``intensity_step`` and present it again (at most ``max_repeats`` times).  While learning, the input
        weights are normalised before every presentation.  Returns the excitatory spike counts of the last
        presentation and the number of presentations (the same on every rank)."""
        inp = self.model["input"]
        unit_rates = np.asarray(unit_rates, dtype=float)
        zero = np.zeros(self.n_in)
        intensity = float(inp["intensity_start"])
        total = self.norm_total(self.model, self.n_in)
        for rep in range(int(inp["max_repeats"]) + 1):  # noqa: B007 - `rep` is returned after the loop
            if learning:
                self.normalize(total)
            self.set_rates(unit_rates * intensity)
            self.reset_counts()
            self.run(float(inp["present_ms"]))
            counts = self.spike_counts()
            self.set_rates(zero)
            self.run(float(inp["rest_ms"]))
            if counts.sum() >= int(inp["min_spikes"]):
                break
            intensity += float(inp["intensity_step"])
        return counts, rep + 1

    # ------------------------------------------------------------------ running
    def restart(self, stream: tuple[int, int], theta=None):
        """Fresh cell states at t = 0 with thresholds ``theta`` (default: keep the current ones; the
        weights are kept), inputs silent, Poisson streams ids ``(stream[0], stream[1], input)``."""
        a, b = (int(x) & 0xFFFFFFFF for x in stream)
        for i, u in enumerate(self.inputs):
            u.ranvar.set_ids(a, b, i)
        self._scatter(self._hz_ptr, np.zeros(self.n_in), self._small)
        self.h.dt = self.dt  # (other NEURON users in this process may have changed them)
        self._cvode.active(0)
        if theta is None:
            theta = self.read_theta() if self._started else np.full(self.n_exc, float(self.model["exc"]["theta_init"]))
        self.h.finitialize()
        self.write_theta(theta)
        self._started = True

    def run(self, ms: float):
        """Advance the simulation by ``ms`` (every rank together)."""
        if not self._started:
            raise RuntimeError("call restart() before run()")
        if self._psolve:
            self.pc.psolve(self.h.t + float(ms))
        else:
            self.h.continuerun(self.h.t + float(ms))
