"""The R-STDP CartPole network in NetPyNE (models/rstdp_cartpole.yaml) and its closed-loop runner.

:class:`RSTDPNetwork` builds the populations (DeflIF cells, RateGen input units), the connectivity
(NetPyNE convergence rules, seeded), one RLSTDP mechanism per plastic synapse, and spike recording.
It exposes the plastic weights as NumPy arrays (gathered/scattered through ``h.PtrVector``), the
reward delivery (each synapse's ``reward_punish``, targeted by motor half), the homeostatic input
normalisation and the input rates.  :meth:`RSTDPNetwork.run` runs one simulation through NetPyNE's
``sim.runSimWithIntervalFunc``, calling a controller every ``action_ms``; the controller stops the
simulation by raising :class:`StopRun`.

NetPyNE keeps one network per process (its ``sim`` module is global): building a second
:class:`RSTDPNetwork` clears the first.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any
from collections.abc import Callable

import numpy as np

from ...infra.errors import UserError
from . import lifetime, mechanisms

RECEPTORS = {"AM": 0, "NM": 1, "GA": 2, "AM2": 3, "NM2": 4, "GA2": 5}  # DeflIF NetCon weight index
STIM_POP = "stim"
GROUP_LEFT, GROUP_RIGHT, GROUP_OTHER = 0, 1, 2  # plastic synapses onto EM-left / EM-right (= action ids) / others
STDP_DELAY = 1.0  # ms, the same for the pre and post spike NetCons feeding RLSTDP


class StopRun(Exception):
    """Raised by a controller to end the current simulation."""



def conn_type(pre: str, post: str) -> str:
    return pre[0] + post[0]


def conn_specs(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every connection rule of the model: pre, post, receptor, effective weight, convergence."""
    pops = model["populations"]
    out = []
    for pre, targets in model["cmat"].items():
        for post, spec in targets.items():
            if pre not in pops or post not in pops:
                raise UserError(f"model.cmat {pre}->{post}: unknown population (allowed: {', '.join(pops)})")
            if "conv" in spec:
                conv = int(spec["conv"])
            else:
                conv = int(0.5 + float(spec["p"]) * pops[pre])
            if conv <= 0:
                continue
            gain = model["gain"][conn_type(pre, post)]
            for rec, value in spec.items():
                if rec in ("conv", "p") or float(value) <= 0:
                    continue
                if rec not in RECEPTORS:
                    raise UserError(f"model.cmat {pre}->{post}: unknown receptor {rec!r}; "
                                    f"allowed: {', '.join(RECEPTORS)}")
                out.append({"pre": pre, "post": post, "receptor": rec, "weight": float(value) * gain,
                            "conv": conv, "label": f"{pre}-{rec}->{post}",
                            "plastic": f"{pre}-{post}" in model["plastic"] and rec == model["plastic_receptor"]})
    return out


@contextlib.contextmanager
def _quiet(stderr: bool = False):
    """Silence NetPyNE's Python-level prints and progress bars (NEURON's own C-level messages are unaffected)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if stderr:
            with contextlib.redirect_stderr(io.StringIO()):
                yield
        else:
            yield


class RSTDPNetwork:
    """One instantiated model; see the module docstring."""

    def __init__(self, model: dict[str, Any], seed: int):
        mechanisms.load()
        from neuron import h
        from netpyne import sim, specs

        self.h, self.sim = h, sim
        self.model = model
        self.seed = int(seed)
        self.action_ms = float(model["action_ms"])
        pops = model["populations"]
        for key in (model["input_pop"], model["motor_pop"]):
            if key not in pops:
                raise UserError(f"model population {key!r} is not defined; populations: {', '.join(pops)}")

        net = specs.NetParams()
        cfg = specs.SimConfig()
        cfg.dt = float(model["dt"])
        cfg.duration = 1.0
        cfg.verbose = False
        cfg.progressBar = 0
        cfg.printRunTime = False
        cfg.printPopAvgRates = False
        cfg.recordCellsSpikes = []
        cfg.recordTraces = {}
        cfg.recordStim = False
        cfg.saveJson = cfg.savePickle = cfg.saveMat = False
        cfg.createNEURONObj = True
        cfg.createPyStruct = True
        cfg.includeParamsLabel = True
        cfg.seeds = {"conn": self.seed, "stim": self.seed, "loc": self.seed, "cell": self.seed}
        cfg.hParams = dict(cfg.hParams, celsius=37.0)
        net.defaultThreshold = 0.0
        for pop, n in pops.items():
            ctype = model["cell_type"][pop]
            net.popParams[pop] = {"cellModel": "DeflIF", "numCells": int(n), **model["cells"][ctype]}
        n_in = int(pops[model["input_pop"]])
        net.popParams[STIM_POP] = {"cellModel": "RateGen", "numCells": n_in, "hz": 0.0,
                                   "noise": float(model["input_noise"]), "start": 0.0}
        lo, hi = model["stim_delay_ms"]
        net.connParams[f"{STIM_POP}->{model['input_pop']}"] = {
            "preConds": {"pop": STIM_POP}, "postConds": {"pop": model["input_pop"]},
            "connList": [[i, i] for i in range(n_in)], "weight": float(model["stim_weight"]),
            "weightIndex": RECEPTORS["AM"], "delay": f"uniform({lo}, {hi})"}
        self.specs = conn_specs(model)
        for s in self.specs:
            lo, hi = model["delay_ga2_ms"] if s["receptor"] == "GA2" else model["delay_ms"]
            net.connParams[s["label"]] = {
                "preConds": {"pop": s["pre"]}, "postConds": {"pop": s["post"]}, "convergence": s["conv"],
                "weight": s["weight"], "weightIndex": RECEPTORS[s["receptor"]], "delay": f"uniform({lo}, {hi})"}

        if not lifetime.close_current() and hasattr(sim, "net"):  # a NetPyNE network built elsewhere
            with _quiet():
                sim.clearAll()
        with _quiet(stderr=True):
            sim.initialize(netParams=net, simConfig=cfg)
            sim.net.createPops()
            sim.net.createCells()
            sim.net.connectCells()
        self.pop_gids = {p: np.asarray(sim.net.pops[p].cellGids, dtype=np.int64) for p in list(pops) + [STIM_POP]}
        self.cell_of = {c.gid: c for c in sim.net.cells}
        self.n_cells = len(sim.net.cells)
        self._stim_units = [self.cell_of[g].hPointp for g in self.pop_gids[STIM_POP]]
        self._stim_ctl = [h.NetCon(None, u) for u in self._stim_units]
        self._rates = np.zeros(len(self._stim_units))
        self._wire_plasticity()
        self.tvec, self.idvec = h.Vector(), h.Vector()
        sim.pc.spike_record(-1, self.tvec, self.idvec)
        self._initialized = False
        lifetime.claim(self)

    def close(self):
        """Release this network's NEURON objects and NetPyNE's network (building another one does this)."""
        if lifetime.release(self, ("mechs", "_ncs", "_relays", "_relay_ncs", "_relay_ctl", "_stim_units", "_stim_ctl",
                                   "_w_ptr", "_r_ptr", "_vec", "_host", "cell_of", "tvec", "idvec")):
            with _quiet():
                self.sim.clearAll()

    # ------------------------------------------------------------------ plasticity
    def _wire_plasticity(self):
        h, sim = self.h, self.sim
        plastic_labels = {s["label"] for s in self.specs if s["plastic"]}
        motor = self.pop_gids[self.model["motor_pop"]]
        half = len(motor) // 2
        left = set(motor[:half].tolist())
        right = set(motor[half:2 * half].tolist())
        stdp = self.model["stdp"]
        self._host = h.Section(name="rlstdp_host")
        self.mechs, self._ncs = [], []
        pre, post, base = [], [], []
        for cell in sim.net.cells:
            for conn in cell.conns:
                if conn.get("label") not in plastic_labels:
                    continue
                m = h.RLSTDP(self._host(0.5))
                for key in ("RLwindhebb", "RLwindanti", "RLlenhebb", "RLlenanti", "RLhebbwt", "RLantiwt",
                            "useRLexp", "wbase", "wmax", "mindt"):
                    setattr(m, key, float(stdp[key]))
                m.tstart = float(stdp["tstart_ms"])
                nc_pre = sim.pc.gid_connect(int(conn["preGid"]), m)
                nc_pre.weight[0], nc_pre.weight[1], nc_pre.delay = 1.0, 0.0, STDP_DELAY
                nc_post = sim.pc.gid_connect(int(cell.gid), m)
                nc_post.weight[0], nc_post.weight[1], nc_post.delay = -1.0, 0.0, STDP_DELAY
                idx = RECEPTORS[self.model["plastic_receptor"]]
                h.setpointer(conn["hObj"]._ref_weight[idx], "synweight", m)
                self.mechs.append(m)
                self._ncs.append((conn["hObj"], nc_pre, nc_post))
                pre.append(int(conn["preGid"]))
                post.append(int(cell.gid))
                base.append(float(conn["hObj"].weight[idx]))
        self.pre_gid = np.asarray(pre, dtype=np.int64)
        self.post_gid = np.asarray(post, dtype=np.int64)
        self.base_weight = np.asarray(base)
        self.n_plastic = len(self.mechs)
        self.group = np.full(self.n_plastic, GROUP_OTHER, dtype=np.int64)
        self.group[np.isin(self.post_gid, list(left))] = GROUP_LEFT
        self.group[np.isin(self.post_gid, list(right))] = GROUP_RIGHT
        # dense indices of the cells that send / receive plastic synapses
        self.pre_cells, self.pre_idx = np.unique(self.pre_gid, return_inverse=True)
        self.post_cells, self.post_idx = np.unique(self.post_gid, return_inverse=True)
        self._w_ptr = mechanisms.ptr_vector([nc._ref_weight[idx] for nc, _, _ in self._ncs])
        self._r_ptr = mechanisms.ptr_vector([m._ref_rpending for m in self.mechs])
        self._vec = h.Vector(self.n_plastic)
        # reward delivery: one event into a Relay fans out to every synapse (kind 1: reward; 2: reward + reset)
        self._relays, self._relay_ncs, self._relay_ctl = [], [], []
        for kind in (1, 2):
            relay = h.Relay()
            for mech in self.mechs:
                nc = h.NetCon(relay, mech)
                nc.delay = 0.0
                nc.weight[0], nc.weight[1] = 0.0, float(kind)
                self._relay_ncs.append(nc)
            self._relays.append(relay)
            self._relay_ctl.append(h.NetCon(None, relay))

    def _gather(self, pv) -> np.ndarray:
        pv.gather(self._vec)
        return self._vec.as_numpy().copy()

    @property
    def weights(self) -> np.ndarray:
        return self._gather(self._w_ptr)

    @weights.setter
    def weights(self, w):
        w = np.asarray(w, dtype=float)
        if w.shape != (self.n_plastic,):
            raise UserError(f"expected {self.n_plastic} plastic weights, got shape {w.shape}")
        self._vec.from_python(w)
        self._w_ptr.scatter(self._vec)

    def mean_by(self, w: np.ndarray, which: str) -> np.ndarray:
        """Mean plastic weight per receiving ('in') or sending ('out') cell."""
        idx, n = (self.post_idx, len(self.post_cells)) if which == "in" else (self.pre_idx, len(self.pre_cells))
        return np.bincount(idx, w, n) / np.maximum(np.bincount(idx, None, n), 1)

    def reward(self, r: float, action: int, out_ref: np.ndarray | None = None, end_episode: bool = False):
        """Deliver the critic's reward ``r`` for ``action`` now (and clear the eligibility if ``end_episode``).

        Synapses onto the motor half that acted get ``reward_main * r``, those onto the other half
        ``reward_opposite * r`` and the non-motor plastic synapses ``reward_non_motor * r``; with output
        balancing each presynaptic cell's share is scaled by ``out_ref / current mean output weight``
        (inverted for r > 0) clipped to ``output_balancing_range``.  Each synapse's RLSTDP applies its
        share with ``reward_punish`` (eligibility, weight bounds) when the event fanned out by a Relay
        cell arrives, at the current time, at the start of the next simulated interval.
        """
        m = self.model
        if r != 0:
            factor = np.where(self.group == action, m["reward_main"],
                              np.where(self.group == GROUP_OTHER, m["reward_non_motor"], m["reward_opposite"]))
            rs = r * factor
            if m["output_balancing"] and out_ref is not None:
                scale = out_ref / np.maximum(self.mean_by(self.weights, "out"), 1e-12)
                if r > 0:
                    scale = 1.0 / scale
                lo, hi = m["output_balancing_range"]
                rs = rs * np.clip(scale, lo, hi)[self.pre_idx]
        elif end_episode:
            rs = np.zeros(self.n_plastic)
        else:
            return
        self._vec.from_python(rs)
        self._r_ptr.scatter(self._vec)
        self._relay_ctl[1 if end_episode else 0].event(self.h.t)

    def reset_eligibility(self):
        for mech in self.mechs:
            mech.reset_eligibility()

    def normalize_inputs(self, target: np.ndarray):
        """Rescale each cell's plastic input weights so that their mean is ``target`` (per post cell)."""
        w = self.weights
        scale = target / np.maximum(self.mean_by(w, "in"), 1e-12)
        stdp = self.model["stdp"]
        self.weights = np.clip(w * scale[self.post_idx], stdp["wbase"], stdp["wmax"])

    # ------------------------------------------------------------------ inputs and spikes
    def set_rates(self, rates_hz: np.ndarray):
        """Input unit rates (Hz); units whose rate changes are rescheduled at once."""
        t = self.h.t
        rates_hz = np.asarray(rates_hz, dtype=float)
        for i in np.flatnonzero(rates_hz != self._rates):
            self._stim_units[i].hz = float(rates_hz[i])
            if self._initialized:  # before the first run the units start from `hz` at initialisation
                self._stim_ctl[i].event(t)
        self._rates = rates_hz.copy()

    def set_input_seeds(self, *ids: int):
        """Random123 stream ids of the (Poisson) input units: (ids..., unit index)."""
        a, b = (list(ids) + [0, 0])[:2]
        for i, unit in enumerate(self._stim_units):
            unit.ranvar.set_ids(int(a) & 0xFFFFFFFF, int(b) & 0xFFFFFFFF, i)

    def take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """Spikes (times, gids) recorded since the last call; the recorders are emptied."""
        t = self.tvec.as_numpy().copy()
        g = self.idvec.as_numpy().astype(np.int64)
        self.tvec.resize(0)
        self.idvec.resize(0)
        return t, g

    # ------------------------------------------------------------------ running
    def run(self, controller: Callable[[float], None], max_ms: float):
        """One simulation from t = 0 (fresh cell states, the current weights and input rates) until
        ``controller`` raises :class:`StopRun` or ``max_ms`` is reached; ``controller(t)`` runs every
        ``action_ms`` of simulated time.
        """
        sim = self.sim
        sim.cfg.duration = float(max_ms)
        sim.fih = []  # NetPyNE appends one FInitializeHandler per cell and run; keep the list from growing
        self.take_spikes()
        self._initialized = True
        try:
            with _quiet():
                sim.runSimWithIntervalFunc(self.action_ms, controller)
        except StopRun:
            pass
        # deliver the events the last controller call queued (e.g. the final reward) before anyone reads weights
        sim.pc.psolve(self.h.t + sim.cfg.dt)
