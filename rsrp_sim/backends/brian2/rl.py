"""RSRP / RSRP-reservoir on CartPole-v1 with the Brian2 back-end (all three devices).

One generation, like the JAX trainer (``backends/jax/rl.py``):
  1. :class:`~.synapse.RSRPLearner` draws ``z ~ Bernoulli(p)`` for the sampled members; the last
     ``eval_size`` members are the deterministic network (``p > 0.5``);
  2. the population is simulated in chunks of copies of ConnSNN (:mod:`.conn_snn`) in closed loop
     with CartPole until every member of each loop (sampled / deterministic) has finished an
     episode or ``max_steps`` steps were done; fitness = mean return of finished episodes;
  3. the learner shapes the rewards and updates ``p`` through :mod:`rsrp_sim.rule`.

``release_mode=trial`` (default, as the paper) holds one release pattern per member for the whole
trial; ``release_mode=spike`` releases with probability ``p`` at every presynaptic spike of the input
and recurrent synapses and updates from the eligibilities (:func:`rsrp_sim.rule.spike_gradient`),
collected chunk by chunk; the read-out stays in trial mode (SPEC §1).

Devices (``device=``):
  ``runtime``          numpy or cython (``target=``); gymnasium's ``CartPole-v1`` is stepped from
                       Python by a ``network_operation`` every environment step (``sim_time`` of
                       network time, 33 substeps of 0.5 ms).
  ``cpp_standalone``   the environments are Brian2 equations (:mod:`.cartpole`) so a whole chunk runs
  ``cuda_standalone``  in generated code; the project is compiled once and every chunk/generation
                       re-runs the binary with new release patterns, initial potentials, reset
                       states and normaliser through ``device.run(run_args=...)``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from ...core import rule
from ...envs import cartpole as cp
from ...infra.errors import UserError
from ...engine.method import Method
from ...core.models import SNNConstants
from ...engine.rl import RSRPConfig, init_norm, norm_arrays, p_finalize, p_metrics, update_norm
from . import devices
from .cartpole import CartPoleGroup, draw_resets
from .conn_snn import ConnSNNPopulation, input_values
from .synapse import RSRPLearner

b2 = devices.import_brian2()
F32 = np.float32


@dataclasses.dataclass
class Brian2RSRPConfig(RSRPConfig):
    device: Literal["runtime", "cpp_standalone", "cuda_standalone"] = "runtime"
    target: Literal["cython", "numpy"] = "cython"  # code generation target of the runtime device
    build_dir: str = ""  # standalone project folder ('' = per-user cache, keyed by the network)
    release_mode: Literal["trial", "spike"] = "trial"  # release drawn once per trial / at every spike

    def validate(self):
        super().validate()
        if self.env != cp.CartPole.id:
            raise UserError(f"the brian2 back-end runs env {cp.CartPole.id} only, got {self.env!r}")
        if self.reset_pool != "fresh":
            raise UserError("the brian2 back-end supports reset_pool=fresh only")


# input units of the standalone network read their environment's normalised observation
INPUT_MODEL = "x : 1\n" + "".join(f"on{c} : 1 (linked)\nsel{c} : 1 (constant)\n" for c in range(4))
INPUT_READ = "x = " + " + ".join(f"sel{c} * on{c}" for c in range(4))


class _Sim:
    """A Brian2 network of ``chunk`` ConnSNN copies in closed loop with ``chunk`` CartPoles."""

    def __init__(self, const: SNNConstants, chunk: int, max_steps: int, mode: str = "trial"):
        self.c, self.chunk, self.max_steps, self.mode = const, chunk, max_steps, mode
        self.n = const.n_neurons
        self.env_dt = const.substeps * const.dt * b2.ms
        self.duration = max_steps * self.env_dt + const.dt * b2.ms  # the initial tick + max_steps steps
        self.compile_s = 0.0

    def spikes_per_copy(self):
        return np.asarray(self.pop.neurons.nspk[:], np.float64).reshape(self.chunk, self.n).sum(1)


class RuntimeSim(_Sim):
    """numpy / cython: gymnasium environments stepped by a ``network_operation``."""

    def __init__(self, const, chunk, max_steps, target, mode="trial"):
        super().__init__(const, chunk, max_steps, mode)
        import gymnasium as gym

        devices.activate("runtime", target=target)
        self.gate = b2.NeuronGroup(chunk, "running : 1", name="gate")
        self.pop = ConnSNNPopulation(const, chunk, mode=mode, gate=(self.gate, "running", np.arange(chunk)))
        self.envs = [gym.make(cp.CartPole.id).unwrapped for _ in range(chunk)]
        op = b2.NetworkOperation(self._tick, dt=self.env_dt, when="start", order=0, name="gym_step")
        self.net = b2.Network(*self.pop.objects, self.gate, op)
        self.net.store("init")

    def _tick(self):
        k, self.k = self.k, self.k + 1
        if k > 0:
            action = (self.pop.y()[:, 0] > 0).astype(np.int64)
            live = np.append(self.running, False)[self.member]
            train = live & (self.member == 0)
            self.obs_sum += self.obs[train].sum(0, dtype=np.float64)
            self.obs_sq += (self.obs[train].astype(np.float64) ** 2).sum(0)
            for e in np.flatnonzero(live):
                obs, reward, terminated, _, _ = self.envs[e].step(int(action[e]))
                self.t_ep[e] += 1
                ret = self.ep_ret[e] + reward
                if terminated or self.t_ep[e] >= self.max_steps:
                    self.ret_sum[e] += ret
                    self.n_ep[e] += 1
                    self.ep_ret[e] = self.t_ep[e] = 0
                    obs, _ = self.envs[e].reset()
                else:
                    self.ep_ret[e] = ret
                self.obs[e] = obs
            for g in (0, 1):
                if self.running[g]:
                    self.steps[g] += 1
                    mine = self.member == g
                    self.running[g] = bool(np.any(self.n_ep[mine] < 1)) and self.steps[g] < self.max_steps
            self.gate.running = np.append(self.running, False)[self.member].astype(float)
            if not self.running.any():
                self.net.stop()
        x = (self.obs - self.mean) / self.scale
        self.pop.inputs.x = input_values(x).ravel()

    def run_chunk(self, learner, values, v0, member, mean, scale, rng):
        self.net.restore("init")
        learner.write(values)
        self.pop.neurons.v = v0
        self.member = member
        self.mean, self.scale = mean, scale
        c = self.chunk
        self.obs = np.zeros((c, cp.OBS_DIM), F32)
        for e in np.flatnonzero(member < 2):
            self.obs[e] = self.envs[e].reset(seed=int(rng.integers(2**31)))[0]
        self.running = np.array([np.any(member == 0), np.any(member == 1)])
        self.gate.running = np.append(self.running, False)[member].astype(float)
        self.k, self.steps = 0, np.zeros(2, np.int64)
        self.t_ep, self.ep_ret, self.ret_sum = np.zeros(c, np.int64), np.zeros(c), np.zeros(c)
        self.n_ep = np.zeros(c, np.int64)
        self.obs_sum, self.obs_sq = np.zeros(cp.OBS_DIM), np.zeros(cp.OBS_DIM)
        self.net.run(self.duration, namespace={})
        fitness = np.where(self.n_ep > 0, self.ret_sum / np.maximum(self.n_ep, 1), self.ep_ret)
        return {"fitness": fitness, "episodes": self.n_ep.copy(), "steps": self.steps.copy(),
                "spikes": self.spikes_per_copy(), "obs_sum": self.obs_sum.copy(), "obs_sq": self.obs_sq.copy()}


class StandaloneSim(_Sim):
    """cpp_standalone / cuda_standalone: CartPole as Brian2 equations; compiled once, run with run_args."""

    def __init__(self, const, chunk, max_steps, device, build_dir: str = "", compile: bool = True, mode="trial"):
        super().__init__(const, chunk, max_steps, mode)
        if build_dir:
            self.folder, self.directory = None, Path(build_dir)
            self.directory.mkdir(parents=True, exist_ok=True)
        else:
            key = repr((device, chunk, max_steps, mode, dataclasses.asdict(const), b2.__version__))
            self.folder = devices.BuildDir(device, key)
            self.directory = self.folder.path
        self.device = devices.activate(device, self.directory)
        self.env = CartPoleGroup(chunk, self.env_dt, max_steps)
        b2.defaultclock.dt = const.dt * b2.ms   # brian2cuda's synapse code expects the default clock
        self.pop = ConnSNNPopulation(const, chunk, mode=mode, input_model=INPUT_MODEL, readout=self.env.envs,
                                     gate=(self.env.envs, "gate", np.arange(chunk)), clock=b2.defaultclock)
        units = np.arange(chunk * const.n_in)
        copy, k = np.divmod(units, const.n_in)
        for c in range(cp.OBS_DIM):
            setattr(self.pop.inputs, f"on{c}", b2.linked_var(self.env.envs, f"on{c}", index=copy.astype(np.int64)))
            sel = np.where(k == c, 1.0, 0.0) - np.where(k == c + cp.OBS_DIM, 1.0, 0.0)
            setattr(self.pop.inputs, f"sel{c}", sel)
        self.pop.inputs.run_regularly(INPUT_READ, dt=self.env_dt, when="start", order=1, name="read_obs")
        self.net = b2.Network(*self.pop.objects, *self.env.objects)
        if device == "cpp_standalone":
            self.env.stop_early(self.net)
        self.net.run(self.duration, namespace={})
        t0 = time.perf_counter()
        devices.build(self.device, self.directory, compile=compile)
        self.compile_s = time.perf_counter() - t0

    def run_chunk(self, learner, values, v0, member, mean, scale, rng):
        resets = draw_resets(rng, self.chunk, self.env.rows)
        args = learner.run_args(values, variables=("release",) if self.mode == "trial" else
                                ("release", "p", "elig", "n_spk"))
        args[self.pop.neurons.v] = v0
        args.update(self.env.run_args(resets, mean, scale, member))
        try:
            self.device.run(directory=str(self.directory), run_args=args, with_output=False)
        finally:
            for name in self.device.run_args_arrays:
                for suffix in ("", ".lock"):
                    path = self.directory / "static_arrays" / (name + suffix)
                    if path.exists():
                        os.unlink(path)
        r = self.env.results()
        train = member == 0
        return {"fitness": r["fitness"], "episodes": r["episodes"], "steps": r["steps"],
                "spikes": self.spikes_per_copy(), "obs_sum": r["obs_sum"][train].sum(0),
                "obs_sq": r["obs_sq"][train].sum(0)}

    def close(self):
        if self.folder is not None:
            self.folder.release()


class Brian2RSRPTrainer(Method):
    """RSRP (``reservoir=False``) or RSRP-reservoir on CartPole-v1 with Brian2 (see the module docstring)."""

    Config = Brian2RSRPConfig

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.max_steps = cfg.max_episode_steps or cp.MAX_STEPS
        self.const = SNNConstants.from_model(cfg.model, cp.OBS_DIM, 1, cfg.model_overrides)
        if self.const.connectivity != "bernoulli" or not self.const.input_doubling:
            raise UserError(f"rsrp needs a model with Bernoulli connectivity and input doubling (e.g. conn_snn), "
                            f"got model {cfg.model!r}")
        self.n_chunks = -(-cfg.pop_size // cfg.chunk_size)
        self.chunk = -(-cfg.pop_size // self.n_chunks)
        if cfg.device == "runtime":
            self.sim = RuntimeSim(self.const, self.chunk, self.max_steps, cfg.target, mode=cfg.release_mode)
        else:
            self.sim = StandaloneSim(self.const, self.chunk, self.max_steps, cfg.device, cfg.build_dir,
                                     mode=cfg.release_mode)
        syn = self.sim.pop.synapses
        fixed = ("h",) if cfg.reservoir else ()
        self.learner = RSRPLearner(syn, lr=cfg.lr, optimizer=cfg.optimizer, shaping=cfg.shaping,
                                   eps=cfg.eps, weight_decay=cfg.weight_decay, fixed=fixed,
                                   n_members=cfg.pop_size,
                                   shaping_kw=dict(ties=cfg.ties, unit_variance=cfg.unit_variance,
                                                   chunks=cfg.rank_chunks, ema=cfg.baseline_ema))
        for g in syn.values():
            g.p_init = cfg.p_init
        if cfg.reservoir:  # a fixed Bernoulli(0.5) recurrent mask drawn from the run's seed
            n = self.const.n_neurons
            self.learner.set_fixed("h", np.random.default_rng([self.seed, 1]).random((n, n)) < 0.5)
        self._compile_reported = False

    # ------------------------------------------------------------------ state
    def init_state(self):
        p = {k: rule.init_p(self.sim.pop.synapses[k].logical_size(), self.config.p_init) for k in self.learner.learned}
        return {"generation": np.int64(0), "env_steps": np.int64(0), "p": p, "opt": self.learner.opt.init(p),
                "shaping": {k: np.float64(v) for k, v in self.learner.shaping_state.items()},
                "norm": init_norm(cp.OBS_DIM)}

    def _p_shaped(self, p):
        shapes = self.const.param_shapes()
        return {k: np.asarray(v).reshape(shapes[k]) for k, v in p.items()}

    # ------------------------------------------------------------------ one generation
    def step(self, state):
        cfg, c, L = self.config, self.const, self.learner
        L.load_state(state)
        gen = int(state["generation"])
        rng = np.random.default_rng([self.seed, gen, 2])
        L.new_trial(n_eval=cfg.eval_size, rng=rng)
        mean, scale = norm_arrays(state["norm"], cfg.obs_norm, cp.OBS_DIM)
        pop, chunk = cfg.pop_size, self.chunk
        fitness, episodes, spikes = np.zeros(pop), np.zeros(pop, np.int64), np.zeros(pop)
        env_steps, t_eval, obs_n = 0, 0, 0
        obs_s, obs_sq = np.zeros(cp.OBS_DIM), np.zeros(cp.OBS_DIM)
        spike_mode = [k for k in L.learned if L.groups[k].mode == "spike"]
        elig = {k: (np.zeros((cfg.train_size, L.p[k].size), F32), np.zeros((cfg.train_size, L.p[k].size), F32))
                for k in spike_mode}
        t0 = time.perf_counter()
        for ci in range(self.n_chunks):
            lo = ci * chunk
            rows = np.arange(lo, lo + chunk)
            member = np.where(rows < cfg.train_size, 0, np.where(rows < pop, 1, 2))
            v0 = rng.uniform(c.v_reset, c.v_th, chunk * c.n_neurons).astype(F32) if c.rand_init_v \
                else np.full(chunk * c.n_neurons, c.v_reset, F32)
            out = self.sim.run_chunk(L, L.member_values(lo, chunk), v0, member, mean, scale, rng)
            valid = member < 2
            hi = lo + int(valid.sum())
            fitness[lo:hi], episodes[lo:hi] = out["fitness"][valid], out["episodes"][valid]
            spikes[lo:hi] = out["spikes"][valid]
            sampled = member == 0
            for k in spike_mode:  # spike mode: this chunk's sampled members' eligibilities and counts
                g, size = L.groups[k], L.p[k].size
                for acc, var in zip(elig[k], (g.elig, g.n_spk)):
                    acc[lo:lo + int(sampled.sum())] = np.asarray(var[:], F32).reshape(chunk, size)[sampled]
            n_train, n_eval = int((member == 0).sum()), int((member == 1).sum())
            env_steps += int(out["steps"][0]) * n_train + int(out["steps"][1]) * n_eval
            t_eval = max(t_eval, int(out["steps"][1]) if n_eval else 0)
            obs_n += int(out["steps"][0]) * n_train
            obs_s, obs_sq = obs_s + out["obs_sum"], obs_sq + out["obs_sq"]
        sim_s = time.perf_counter() - t0
        train, ev = fitness[:cfg.train_size], fitness[cfg.train_size:]
        p_used = dict(L.p)
        L.end_trial(train, eligibility=elig or None)
        ms = max(t_eval, 1) * c.substeps * c.dt * c.n_neurons
        new_state = {"generation": np.int64(gen + 1), "env_steps": np.int64(int(state["env_steps"]) + env_steps),
                     "p": L.p, "opt": L.opt_state,
                     "shaping": {k: np.float64(v) for k, v in L.shaping_state.items()},
                     "norm": update_norm(state["norm"], cfg.obs_norm, obs_n, obs_s, obs_sq)}
        record = {
            "iteration": gen + 1,
            "env_steps": int(new_state["env_steps"]),
            "train_score": float(train.mean()),
            "eval_score": float(ev.mean()),
            "train_max": float(train.max()),
            "eval_min": float(ev.min()),
            "episodes": int(episodes[:cfg.train_size].sum()),
            "spikes_per_ms": float(spikes[cfg.train_size:].mean() / ms),
            "sim_s": sim_s,
        }
        if not self._compile_reported:
            record["compile_s"] = self.sim.compile_s
            self._compile_reported = True
        record.update(p_metrics(p_used))
        return new_state, record

    def finalize(self, state, run_dir):
        if isinstance(self.sim, StandaloneSim):
            self.sim.close()
        return p_finalize(self._p_shaped(state["p"]), run_dir)

