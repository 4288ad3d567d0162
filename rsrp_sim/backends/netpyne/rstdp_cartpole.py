"""R-STDP on CartPole-v1 (NetPyNE/NEURON): the Hasegan et al. (2022) baseline as a protocol method.

One iteration = a block of ``episodes_per_iteration`` training episodes in one NEURON simulation
(``sim.runSimWithIntervalFunc``, one action per ``action_ms`` = 50 ms): every 50 ms the two halves of
EM vote (more spikes wins, a tie is a random, punished move), gymnasium's CartPole-v1 takes the action,
the critic turns the change of the pole's angular error into a reward that goes to the RLSTDP
synapses onto the half that acted (opposite half x -0.8, ES->EA x ``reward_non_motor``), eligibility
is cleared at episode ends, and homeostasis rescales each cell's plastic inputs to a target mean
(every 25 actions) whose value follows the population rates (every 75 actions).  The new observation
sets the input units' rates for the next 50 ms.

Scores (episode length = return, at most 500):
    train_score  mean length of the block's training episodes
    eval_score   mean length of ``eval_episodes`` episodes with plasticity and homeostasis frozen,
                 run after each block from fixed (seed-derived) initial states: the current network's
                 performance, comparable across iterations and with the JAX methods' deterministic network
    median21     median length of the last 21 training episodes (the reference's running metric)
    mean50       mean length of the last 50 training episodes

Every block starts a fresh simulation (cells at rest) from the weights and homeostatic targets in the
method state, so a resumed run continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from typing import Any

import numpy as np

from ...infra.errors import UserError
from ...engine.method import Figure, Finished, Method
from ...core import models
from .rstdp_io import UNDECIDED, Critic, Encoder, decide

RECENT = 64  # training episode lengths kept in the state (>= 50)
ENVS = ("CartPole-v1",)

for _pkg in ("neuron", "netpyne"):  # fail at selection time (the protocol turns this into a one-line hint)
    if importlib.util.find_spec(_pkg) is None:
        raise ImportError(f"No module named {_pkg!r}")


@dataclasses.dataclass
class RSTDPConfig:
    env: str = "CartPole-v1"
    episodes: int = 9000  # training episodes in total (defaults: the paper preset)
    episodes_per_iteration: int = 100
    eval_episodes: int = 10  # frozen-plasticity test episodes after each iteration (0: none)
    max_episode_steps: int = 0  # 0: the environment's own limit (500)
    raster_ms: float = 5000.0  # simulated time shown in the final raster plot
    record_episodes: int = 1  # frozen-network test episodes whose spikes are recorded at the end (0: none)
    checkpoint_every: int = 1
    model: str = "rstdp_cartpole"
    model_overrides: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        if self.env not in ENVS:
            raise UserError(f"rstdp supports env {', '.join(ENVS)} (its critic reads the pole angle), got {self.env!r}")
        for key in ("episodes", "episodes_per_iteration", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.eval_episodes < 0 or self.max_episode_steps < 0:
            raise UserError("eval_episodes and max_episode_steps must be >= 0")
        if self.record_episodes < 0:
            raise UserError(f"record_episodes must be >= 0, got {self.record_episodes}")
        if self.raster_ms <= 0:
            raise UserError(f"raster_ms must be > 0, got {self.raster_ms}")
        load_model(self.model, self.model_overrides)  # bad model keys fail here, before a run folder exists


def load_model(name: str, overrides: dict) -> dict[str, Any]:
    model = models.load(name, overrides)
    if "populations" not in model or "stdp" not in model:
        raise UserError(f"model {name!r} is not an R-STDP CartPole model (see models/rstdp_cartpole.yaml)")
    return model


def _episode_seed(seed: int, stream: int, k: int) -> int:
    return int(np.random.SeedSequence([int(seed), stream, int(k)]).generate_state(1)[0])


class _Block:
    """The controller of one simulation: plays episodes, delivers rewards, runs homeostasis."""

    def __init__(self, method: RSTDPCartPole, state: dict, n_episodes: int, train: bool, seeds, rng,
                 record: bool = False, stop_ms: float | None = None):
        self.m, self.net, self.train = method, method.net, train
        self.n_episodes, self.seeds, self.rng = n_episodes, list(seeds), rng
        self.state = state
        self.lengths: list[int] = []
        self.ep_len = 0
        self.steps = 0
        self.rewards = 0.0
        self.undecided = 0
        self.record = record
        self.stop_ms = stop_ms
        self.spikes: list[tuple[np.ndarray, np.ndarray]] = []
        self.counts = np.zeros(3, dtype=np.int64)  # spikes of EA, EM-left, EM-right in this block
        self.bounds: list[tuple[float, float]] = []  # (start ms, stop ms) of every finished episode
        self.ep_start = 0.0
        self.prev = None
        self.obs = self._reset()

    def _reset(self):
        seed = self.seeds[len(self.lengths)] if len(self.lengths) < len(self.seeds) else None
        obs, _ = self.m.env.reset(seed=seed)
        self.prev = obs
        return obs

    def start(self):
        self.net.set_rates(self.m.encoder.rates(self.obs))

    def __call__(self, t: float):
        from .network import StopRun

        m, net, st = self.m, self.net, self.state
        ts, gids = net.take_spikes()
        if self.record:
            self.spikes.append((ts, gids))
        c = np.bincount(m.spike_group[gids], minlength=4)[:3] if len(gids) else np.zeros(3, np.int64)
        self.counts += c
        action = decide(int(c[1]), int(c[2]))
        undecided = action == UNDECIDED
        if undecided:
            action = int(self.rng.integers(2))
            self.undecided += 1
        obs, _, terminated, truncated, _ = m.env.step(action)
        r = m.critic.reward(self.prev, obs, undecided, bool(terminated), bool(truncated))
        self.rewards += r
        self.steps += 1
        self.ep_len += 1
        end = bool(terminated or truncated)
        if self.train:
            self._homeostasis(c)
            net.reward(r, action, st["out_ref"], end_episode=end and m.model["reset_eligibility_each_episode"])
        if end:
            self.lengths.append(self.ep_len)
            self.bounds.append((self.ep_start, float(t)))
            self.ep_start = float(t)
            self.ep_len = 0
            if len(self.lengths) >= self.n_episodes:
                raise StopRun
            obs = self._reset()
        else:
            self.prev = obs
        if self.stop_ms is not None and t >= self.stop_ms:
            raise StopRun
        net.set_rates(m.encoder.rates(obs))

    def _homeostasis(self, counts):
        m, st = self.m.model, self.state
        st["actions"] = np.int64(st["actions"] + 1)
        n = int(st["actions"])
        window = st["gain_queue"].shape[0]
        st["gain_queue"][(n - 1) % window] = counts
        every = int(m["gain_control_every"])
        if every and n % every == 0 and n >= window:
            seconds = window * float(m["action_ms"]) / 1000.0
            rates = st["gain_queue"].sum(0) / seconds / self.m.group_sizes
            targets = self.m.group_targets
            up = rates < targets - 0.01
            down = rates > targets + 0.01
            factor = np.where(up, 1 + m["gain_control_step"], np.where(down, 1 - m["gain_control_step"], 1.0))
            st["in_target"] = st["in_target"] * factor[self.m.post_group]
        norm_every = int(m["normalize_inputs_every"])
        if norm_every and n % norm_every == 0:
            self.net.normalize_inputs(st["in_target"])


class RSTDPCartPole(Method):
    """R-STDP CartPole baseline on the NetPyNE back-end; see the module docstring."""

    Config = RSTDPConfig
    iterations_key = "episodes"
    steps_field = "env_steps"
    curve_labels = ("train (mean of the iteration's episodes)", "eval (frozen network, mean of eval_episodes)")

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        self.model = load_model(config.model, config.model_overrides)
        self.encoder = Encoder(self.model)
        self.critic = Critic(self.model["critic"])
        n_in = self.model["populations"][self.model["input_pop"]]
        if self.encoder.n_units != n_in:
            raise UserError(f"the encoder needs {self.encoder.n_units} input cells (4 observations x "
                            f"{self.encoder.bins} bins), but model population {self.model['input_pop']} has {n_in}")
        import gymnasium as gym

        kwargs = {"max_episode_steps": config.max_episode_steps} if config.max_episode_steps else {}
        self.env = gym.make(config.env, **kwargs)
        self.max_steps = int(self.env.spec.max_episode_steps or 500)
        self._net = None
        from . import mechanisms

        mechanisms.build()  # compiled (or found in the cache) before a run folder exists

    @property
    def iterations(self) -> int:
        return -(-self.config.episodes // self.config.episodes_per_iteration)

    # ------------------------------------------------------------------ network
    @property
    def net(self):
        if self._net is None or not self._net.alive:  # (re)build; another network may have replaced it
            from .network import RSTDPNetwork

            net = RSTDPNetwork(self.model, self.seed)
            motor = net.pop_gids[self.model["motor_pop"]]
            half = len(motor) // 2
            # spike group of every gid: 0 EA (gain-controlled association), 1 EM-left, 2 EM-right, 3 other
            groups = np.full(int(max(g.max() for g in net.pop_gids.values())) + 1, 3, dtype=np.int64)
            assoc = [p for p in self.model["target_rate_hz"] if p != self.model["motor_pop"]]
            for p in assoc:
                groups[net.pop_gids[p]] = 0
            groups[motor[:half]] = 1
            groups[motor[half:2 * half]] = 2
            self.spike_group = groups
            self.group_sizes = np.array([sum(len(net.pop_gids[p]) for p in assoc) or 1, half, half], dtype=float)
            tr = self.model["target_rate_hz"]
            self.group_targets = np.array([float(tr[assoc[0]]) if assoc else 0.0,
                                           float(tr.get(self.model["motor_pop"], 0.0)),
                                           float(tr.get(self.model["motor_pop"], 0.0))])
            # gain-control group of each plastic post cell (0 association, 1/2 motor halves)
            self.post_group = groups[net.post_cells].clip(0, 2)
            self._net = net
        return self._net

    # ------------------------------------------------------------------ state
    def init_state(self) -> dict[str, Any]:
        net = self.net
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7]))
        v = float(self.model["weight_var"])
        w = net.base_weight * rng.uniform(1 - v, 1 + v, net.n_plastic)
        return {
            "iteration": np.int64(0),
            "episodes": np.int64(0),
            "env_steps": np.int64(0),
            "actions": np.int64(0),
            "weights": w,
            "in_target": net.mean_by(w, "in"),
            "out_ref": net.mean_by(w, "out"),
            "gain_queue": np.zeros((int(self.model["gain_control_window"]), 3), dtype=np.int64),
            "recent": np.zeros(RECENT),
            "recent_n": np.int64(0),
            "pre_gid": net.pre_gid.copy(),
            "post_gid": net.post_gid.copy(),
        }

    def _check(self, state):
        if not (np.array_equal(state["pre_gid"], self.net.pre_gid)
                and np.array_equal(state["post_gid"], self.net.post_gid)):
            raise UserError("the saved plastic synapses do not match the network built from this config and seed")

    def _simulate(self, state, n_episodes, train, seeds, rng, stream, record=False, stop_ms=None):
        net = self.net
        net.set_input_seeds(self.seed, stream)
        block = _Block(self, state, n_episodes, train, seeds, rng, record=record, stop_ms=stop_ms)
        block.start()
        margin = 2 * float(self.model["action_ms"])
        net.run(block, n_episodes * self.max_steps * float(self.model["action_ms"]) + margin)
        return block

    def evaluate(self, state, n_episodes: int, record: bool = False, stop_ms: float | None = None):
        """Episodes with frozen weights (no reward, no homeostasis) from the fixed evaluation initial states."""
        self._check(state)
        self.net.weights = state["weights"]
        seeds = [_episode_seed(self.seed, 1, k) for k in range(n_episodes)]
        rng = np.random.default_rng([self.seed, 1, int(state["iteration"])])
        return self._simulate(state, n_episodes, False, seeds, rng, stream=2 * int(state["iteration"]) + 1,
                              record=record, stop_ms=stop_ms)

    def step(self, state):
        cfg = self.config
        self._check(state)
        st = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
        it = int(st["iteration"])
        done = int(st["episodes"])
        n = min(cfg.episodes_per_iteration, cfg.episodes - done)
        self.net.weights = st["weights"]
        seeds = [_episode_seed(self.seed, 0, done + k) for k in range(n)]
        rng = np.random.default_rng([self.seed, 0, it])
        train = self._simulate(st, n, True, seeds, rng, stream=2 * it)
        st["weights"] = self.net.weights
        lengths = np.asarray(train.lengths, dtype=float)
        recent = np.concatenate([st["recent"][:int(min(st["recent_n"], RECENT))], lengths])[-RECENT:]
        st["recent"] = np.concatenate([recent, np.zeros(RECENT - len(recent))])
        st["recent_n"] = np.int64(min(int(st["recent_n"]) + len(lengths), RECENT))
        st["episodes"] = np.int64(done + len(lengths))
        st["iteration"] = np.int64(it + 1)
        steps = train.steps
        ev_score = None
        ev_steps = 0
        if cfg.eval_episodes:
            ev = self.evaluate(st, cfg.eval_episodes)
            ev_score = float(np.mean(ev.lengths))
            ev_steps = ev.steps
        st["env_steps"] = np.int64(st["env_steps"] + steps + ev_steps)
        sim_s = (steps + ev_steps) * float(self.model["action_ms"]) / 1000.0
        seconds = max(steps * float(self.model["action_ms"]) / 1000.0, 1e-9)
        rates = train.counts / seconds / self.group_sizes
        w = st["weights"]
        motor = self.net.group != 2
        record = {
            "iteration": it + 1,
            "env_steps": int(st["env_steps"]),
            "train_score": float(lengths.mean()),
            "eval_score": ev_score,
            "episodes": int(st["episodes"]),
            "median21": self._recent_stat(st, 21, np.median),
            "mean50": self._recent_stat(st, 50, np.mean),
            "train_max": float(lengths.max()),
            "reward_per_step": train.rewards / max(steps, 1),
            "undecided_frac": train.undecided / max(steps, 1),
            "rate_assoc_hz": float(rates[0]),
            "rate_motor_hz": float(rates[1:].mean()),
            "w_motor_mean": float(w[motor].mean()) if motor.any() else math.nan,
            "w_assoc_mean": float(w[~motor].mean()) if (~motor).any() else math.nan,
            "sim_s": sim_s,
        }
        return st, record

    @staticmethod
    def _recent_stat(state, n, fn) -> float:
        k = int(min(state["recent_n"], RECENT))
        return float(fn(state["recent"][:k][-n:])) if k else math.nan

    # ------------------------------------------------------------------ end of run
    def finalize(self, state) -> Finished:
        init = self.init_state()["weights"]
        motor = self.model["motor_pop"]
        to_motor = [c.replace("-", "->") for c in self.model["plastic"] if c.endswith(f"-{motor}")]
        others = [c.replace("-", "->") for c in self.model["plastic"] if not c.endswith(f"-{motor}")]
        names = {0: f"{', '.join(to_motor)} (left half)", 1: f"{', '.join(to_motor)} (right half)",
                 2: ", ".join(others)}
        groups = {names[g]: (init[self.net.group == g], state["weights"][self.net.group == g])
                  for g in (2, 0, 1) if (self.net.group == g).any()}
        figures = [Figure("weight_histogram", "weights.png",
                          {"groups": groups, "title": "R-STDP plastic weights (initial vs final)"})]
        n_rec = self.config.record_episodes
        stop = None if n_rec else self.config.raster_ms
        ev = self.evaluate(state, max(n_rec, 1), record=True, stop_ms=stop)
        recordings = {}
        if ev.spikes:
            t = np.concatenate([s[0] for s in ev.spikes])
            g = np.concatenate([s[1] for s in ev.spikes])
            shown = t <= self.config.raster_ms
            figures.append(Figure("raster", "raster.png", {
                "times": t[shown], "gids": g[shown],
                "groups": {p: self.net.pop_gids[p] for p in self.model["populations"]},
                "title": f"R-STDP CartPole, frozen network after {int(state['episodes'])} episodes "
                         f"(test episode: {ev.lengths[0] if ev.lengths else ev.steps} steps)"}))
            if n_rec and ev.bounds:
                recordings["episodes"] = self._recording(t, g, ev)
        return Finished({"mean50": self._recent_stat(state, 50, np.mean),
                         "median21": self._recent_stat(state, 21, np.median),
                         "episodes": int(state["episodes"])}, figures, recordings)

    def _recording(self, t, g, ev):
        """The recorded test episodes: every spike of the model's populations (input units left out)."""
        from ...infra.recordings import Recording

        pops = list(self.model["populations"])
        gids = np.concatenate([self.net.pop_gids[p] for p in pops])
        pop = np.concatenate([[p] * len(self.net.pop_gids[p]) for p in pops])
        kinds = {"E": "excitatory", "I": "inhibitory", "IL": "inhibitory (low threshold)"}
        cell = np.array([kinds.get(self.model["cell_type"][p], self.model["cell_type"][p]) for p in pop])
        index = np.full(int(max(gids.max(), g.max() if len(g) else 0)) + 1, -1, np.int64)
        index[gids] = np.arange(len(gids))
        stop_ms = ev.bounds[-1][1]
        keep = (index[g] >= 0) & (t <= stop_ms)
        return Recording(
            spike_times=t[keep] / 1000.0, spike_units=index[g[keep]],
            units={"population": pop, "cell_type": cell, "gid": gids},
            intervals={"start_time": np.array([b[0] for b in ev.bounds]) / 1000.0,
                       "stop_time": np.array([b[1] for b in ev.bounds]) / 1000.0,
                       "steps": np.asarray(ev.lengths[:len(ev.bounds)], np.int64),
                       "return": np.asarray(ev.lengths[:len(ev.bounds)], np.float64)},
            description=(f"rstdp: the frozen network's {len(ev.bounds)} test episode(s) on {self.config.env} "
                         f"(plasticity and homeostasis off, one action per {self.model['action_ms']} ms); every "
                         f"spike of the {len(gids)} cells of {', '.join(pops)}"),
            interval_kind="episode", duration=stop_ms / 1000.0, resolution=float(self.model["dt"]) / 1000.0,
            constants={"model": self.config.model, **{k: v for k, v in self.model.items() if k != "name"}})
