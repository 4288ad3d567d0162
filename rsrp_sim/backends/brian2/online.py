"""RSRP online on CartPole-v1 in Brian2: ONE ConnSNN learning across episodes inside ONE simulation run.

The method ``rsrp-online`` (``--backend brian2``): a single network (no population) whose input and
recurrent RSRP synapses release in spike mode and learn online (:class:`~.synapse.RSRPSynapses`
with ``online=True``); the read-out synapses draw their release once per episode (trial release).
CartPole-v1 is the Brian2 equations of :mod:`.cartpole`, stepping episode after episode; an
episode is a trial: when it ends, the update runs inside the model with the episode's return as
the reward ``R`` and a running mean of the returns as the baseline.  The whole learning run is one
``run`` -- one binary run on cpp_standalone and cuda_standalone, no Python between episodes.

The run is cut into ``iterations`` blocks of ``steps_per_iteration`` environment steps, sampled
inside the run by monitors (episode count, summed returns, ``p`` at every block end).  The first
iteration runs the simulation; every iteration then reports its block:

    train_score  mean return of the episodes that ended in the block (the learning network,
                 stochastic release)
    eval_score   mean return of the deterministic network ``[p > 0.5]`` at the block's end, over
                 ``eval_episodes`` episodes (one more compiled network holding every block's network
                 as a copy, run after the learning run; ``eval_episodes=0``: none)

Observations are divided by ``obs_scale`` (fixed: the run cannot pause for a running normaliser).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...core import rule
from ...core.models import SNNConstants
from ...engine.method import Figure, Finished, Method
from ...envs import cartpole as cp
from ...infra.config import ConfigBase
from ...infra.errors import UserError
from . import devices
from .cartpole import CartPoleGroup, draw_resets
from .conn_snn import ConnSNNPopulation, initial_potentials

b2 = devices.import_brian2()
F32 = np.float32
__all__ = ["OnlineCartPole", "OnlineCartPoleConfig"]

GROUPS = ("in", "h", "out")


@dataclasses.dataclass
class OnlineCartPoleConfig(ConfigBase):
    """Keys of ``rsrp-online`` on the Brian2 back-end."""

    env: str = "CartPole-v1"
    device: Literal["runtime", "cpp_standalone", "cuda_standalone"] = "cpp_standalone"
    target: Literal["cython", "numpy"] = "cython"  # code generation target of the runtime device
    build_dir: str = ""  # standalone project folder ('' = per-user cache, keyed by the network)
    iterations: int = 10  # blocks of the one learning run (one record each)
    steps_per_iteration: int = 20000  # environment steps per block
    lr_in: float = 0.003
    lr_h: float = 0.003
    lr_out: float = 0.001
    beta: float = rule.BASELINE_BETA  # factor of the running mean of the returns (the baseline)
    p_init: float = rule.P_INIT
    obs_scale: list = dataclasses.field(default_factory=lambda: [0.5, 0.5, 0.05, 0.5])
    max_episode_steps: int = 0  # 0: CartPole-v1's 500
    eval_episodes: int = 1  # episodes of each block's deterministic network (0: no eval run)
    model: str = "conn_snn"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 1

    def validate(self) -> None:
        super().validate()
        self.require(self.env == cp.CartPole.id, f"rsrp-online runs env {cp.CartPole.id} only, got {self.env!r}")
        self.require_at_least(1, "iterations", "steps_per_iteration", "checkpoint_every")
        self.require_at_least(0, "eval_episodes", "max_episode_steps", "lr_in", "lr_h", "lr_out")
        self.require(0.0 <= self.beta <= 1.0, f"beta must be in [0, 1], got {self.beta}")
        self.require(0.0 < self.p_init < 1.0, f"p_init must be in (0, 1), got {self.p_init}")
        self.require(len(self.obs_scale) == cp.OBS_DIM and all(float(s) > 0 for s in self.obs_scale),
                     f"obs_scale must be {cp.OBS_DIM} positive numbers, got {self.obs_scale}")


class _Learner:
    """The learning network: one ConnSNN copy with online RSRP synapses, in closed loop with one CartPole."""

    def __init__(self, cfg: OnlineCartPoleConfig, const: SNNConstants, max_steps: int, directory: Any,
                 seed: int) -> None:
        from .rl import INPUT_MODEL, INPUT_READ

        self.cfg, self.c = cfg, const
        self.env_dt = const.substeps * const.dt * b2.ms
        self.block = cfg.steps_per_iteration * self.env_dt
        self.standalone = cfg.device != "runtime"
        self.directory = directory
        if self.standalone:
            self.device = devices.activate(cfg.device, directory)
        else:
            self.device = devices.activate("runtime", target=cfg.target)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        b2.seed(int(self.rng.integers(2**31)))  # before any object: connect() draws the read-out's first release
        total = cfg.iterations * cfg.steps_per_iteration
        self.env = CartPoleGroup(1, self.env_dt, max_steps, rows=total // 8 + 2, loop="continuous",
                                 name="online_cartpole")
        b2.defaultclock.dt = const.dt * b2.ms   # brian2cuda's synapse code expects the default clock
        envs = self.env.envs
        common = {"online": True, "trial_duration": self.env_dt, "trial_end": (envs, "ended"),
                  "reward": (envs, "last_ret"), "beta": cfg.beta, "p_init": cfg.p_init, "order": 8}
        kw = {"in": {**common, "lr": cfg.lr_in}, "h": {**common, "lr": cfg.lr_h}, "out": {**common, "lr": cfg.lr_out}}
        self.pop = ConnSNNPopulation(const, 1, mode="spike", input_model=INPUT_MODEL, readout=envs,
                                     gate=(envs, "gate", np.arange(1)), clock=b2.defaultclock, synapse_kw=kw,
                                     name="online_snn")
        for c in range(cp.OBS_DIM):
            setattr(self.pop.inputs, f"on{c}", b2.linked_var(envs, f"on{c}", index=np.zeros(const.n_in, np.int64)))
            k = np.arange(const.n_in)
            setattr(self.pop.inputs, f"sel{c}", np.where(k == c, 1.0, 0.0) - np.where(k == c + cp.OBS_DIM, 1.0, 0.0))
        self.pop.inputs.run_regularly(INPUT_READ, dt=self.env_dt, when="start", order=1, name="online_read_obs")
        for c in range(cp.OBS_DIM):
            setattr(envs, f"scale{c}", float(np.float32(cfg.obs_scale[c])))
        envs.member = 0
        # one sample per block end (and t = 0): episode count, summed returns, p of every group
        self.mon_env = b2.StateMonitor(envs, ["n_ep", "ret_sum"], record=0, dt=self.block, when="end",
                                       name="online_blocks")
        self.mon_p = {g: b2.StateMonitor(s, "p", record=True, dt=self.block, when="end", name=f"online_p_{g}")
                      for g, s in self.pop.synapses.items()}
        self.net = b2.Network(*self.pop.objects, *self.env.objects, self.mon_env, *self.mon_p.values())
        self.duration = cfg.iterations * self.block + self.env_dt

    def run(self) -> dict[str, Any]:
        rng, c = self.rng, self.c
        resets = draw_resets(rng, 1, self.env.rows)
        self.pop.neurons.v = initial_potentials(c, rng, c.n_neurons)
        compile_s = 0.0
        t0 = time.perf_counter()
        if self.standalone:
            self.env.resets.values[:] = self.env.table(resets)  # recorded as the initial table
            self.net.run(self.duration, namespace={})
            devices.build(self.device, self.directory)
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.device.run(directory=str(self.directory), with_output=False,
                            run_args={self.env.resets: self.env.table(resets)})
        else:
            self.env.resets.values[:] = self.env.table(resets)
            self.net.run(self.duration, namespace={})
        run_s = time.perf_counter() - t0
        n_ep = np.asarray(self.mon_env.n_ep[0], np.float64)
        ret = np.asarray(self.mon_env.ret_sum[0], np.float64)
        p = {g: np.asarray(m.p, np.float32).T for g, m in self.mon_p.items()}  # (blocks + 1, synapses)
        return {"n_ep": n_ep, "ret_sum": ret, "p": p, "compile_s": compile_s, "run_s": run_s,
                "rbar": float(self.pop.synapses["in"].reward.Rbar[0]),
                "trials": {g: int(s.reward.n_trials[0]) for g, s in self.pop.synapses.items()}}


def _eval_blocks(cfg, const, max_steps, p_blocks, directory, seed):
    """Mean return of each block's deterministic network [p > 0.5], all blocks as copies of one network."""
    from .rl import RuntimeSim, StandaloneSim

    n = p_blocks["in"].shape[0]
    values = {g: {"release": rule.deterministic_mask(p_blocks[g]).astype(F32).ravel()} for g in GROUPS}
    member = np.ones(n, np.int64)
    scale = np.asarray(cfg.obs_scale, F32)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12]))
    if cfg.device == "runtime":
        sim = RuntimeSim(const, n, max_steps, cfg.target, mode="trial", prefix="online_eval_")
    else:
        sim = StandaloneSim(const, n, max_steps, cfg.device, str(directory), mode="trial")
    try:
        scores = []
        for _ in range(cfg.eval_episodes):
            v0 = initial_potentials(const, rng, n * const.n_neurons)
            out = sim.run_chunk(values, v0, member, np.zeros(cp.OBS_DIM, F32), scale, rng)
            scores.append(np.asarray(out["fitness"], np.float64))
        return np.mean(scores, axis=0), sim.compile_s
    finally:
        if hasattr(sim, "close"):
            sim.close()


class OnlineCartPole(Method):
    """``rsrp-online`` on the Brian2 back-end (see the module docstring)."""

    Config = OnlineCartPoleConfig
    iterations_key = "iterations"
    steps_field = "env_steps"
    curve_labels = ("train (the learning network, episodes of the block)", "eval (deterministic network [p > 0.5])")

    def __init__(self, config: Any, seed: int) -> None:
        super().__init__(config, seed)
        config.validate()
        self.const = SNNConstants.from_model(config.model, cp.OBS_DIM, 1, config.model_overrides)
        if not self.const.input_doubling or self.const.connectivity != "bernoulli":
            raise UserError(f"rsrp-online needs a ConnSNN model (Bernoulli masks, input doubling), "
                            f"got {config.model!r}")
        self.max_steps = config.max_episode_steps or cp.MAX_STEPS
        devices.check_toolchain(config.device, config.target)  # one line before any folder or code exists
        self._folders: list[devices.BuildDir] = []

    def _folder(self, what: str) -> Path:
        key = repr((what, self.config.device, dataclasses.asdict(self.config), self.seed, b2.__version__))
        folder, path = devices.project_folder(self.config.device, key,
                                              Path(self.config.build_dir) / what if self.config.build_dir else "")
        if folder is not None:
            self._folders.append(folder)
        return path

    def init_state(self) -> Any:
        n, c = self.config.iterations, self.const
        sizes = {"in": c.n_in * c.n_neurons, "h": c.n_neurons * c.n_neurons, "out": c.n_neurons * c.d_act}
        return {"ran": np.int64(0), "iteration": np.int64(0), "n_ep": np.zeros(n + 1), "ret_sum": np.zeros(n + 1),
                "eval": np.full(n, np.nan), "p": {g: np.full(sizes[g], self.config.p_init, F32) for g in GROUPS},
                "p_blocks": {g: np.zeros((n + 1, sizes[g]), F32) for g in GROUPS},
                "compile_s": np.float64(0.0), "run_s": np.float64(0.0), "rbar": np.float64(0.0),
                "episodes_total": np.int64(0)}

    def _simulate(self, state):
        cfg = self.config
        learner = _Learner(cfg, self.const, self.max_steps, self._folder("learn") if cfg.device != "runtime" else None,
                           self.seed)
        out = learner.run()
        if set(out["trials"].values()) != {int(out["n_ep"][-1])}:
            raise UserError(f"the online update ran {out['trials']} times but {int(out['n_ep'][-1])} episodes ended")
        st = dict(state)
        st.update(n_ep=out["n_ep"], ret_sum=out["ret_sum"], compile_s=np.float64(out["compile_s"]),
                  run_s=np.float64(out["run_s"]), rbar=np.float64(out["rbar"]), ran=np.int64(1),
                  episodes_total=np.int64(out["n_ep"][-1]),
                  p={g: out["p"][g][cfg.iterations].astype(F32) for g in GROUPS})
        if cfg.eval_episodes:
            blocks = {g: out["p"][g][1:cfg.iterations + 1] for g in GROUPS}
            folder = self._folder("eval") if cfg.device != "runtime" else None
            scores, _ = _eval_blocks(cfg, self.const, self.max_steps, blocks, folder, self.seed)
            st["eval"] = scores
        st["p_blocks"] = {g: out["p"][g][:cfg.iterations + 1].astype(F32) for g in GROUPS}
        return st

    def step(self, state: Any) -> tuple[Any, dict[str, Any]]:
        if not int(state["ran"]):
            state = self._simulate(state)
        st = dict(state)
        it = int(st.get("iteration", 0)) + 1
        st["iteration"] = np.int64(it)
        d_ep = float(st["n_ep"][it] - st["n_ep"][it - 1])
        d_ret = float(st["ret_sum"][it] - st["ret_sum"][it - 1])
        record = {"iteration": it, "env_steps": it * self.config.steps_per_iteration,
                  "train_score": d_ret / d_ep if d_ep else math.nan,
                  "eval_score": float(st["eval"][it - 1]) if self.config.eval_episodes else None,
                  "episodes": int(st["n_ep"][it]), "episodes_in_block": int(d_ep)}
        pb = st["p_blocks"]
        record["p_mean"] = float(np.mean(np.concatenate([pb[g][it] for g in GROUPS])))
        record["p_change"] = float(np.mean(np.concatenate([np.abs(pb[g][it] - pb[g][0]) for g in GROUPS])))
        if it == 1:
            record.update(compile_s=float(st["compile_s"]), sim_run_s=float(st["run_s"]))
        return st, record

    def histograms(self, state: Any) -> dict[str, Any]:
        return {f"p_{g}": np.asarray(v) for g, v in state["p"].items() if np.size(v)}

    def finalize(self, state: Any) -> Finished:
        p = {g: np.asarray(v) for g, v in state["p"].items()}
        figures = [Figure("p_histogram", "p.png", {"p": p, "title": "release probabilities after the online run"})]
        return Finished({"episodes": int(state["episodes_total"]), "sim_run_s": float(state["run_s"]),
                         "compile_s": float(state["compile_s"]), "baseline": float(state["rbar"])}, figures)

    def close(self) -> None:
        for f in self._folders:
            f.release()
