"""The Brian2 evaluator of RSRP / RSRP-reservoir on CartPole-v1 (all three devices).

:class:`CartPoleChunks` is what the engine (:func:`rsrp_sim.engine.population.generation`) calls:
a chunk of members (release patterns, or spike release with probability ``p``) is laid out over
the copies of one Brian2 network of ConnSNN copies (:mod:`.conn_snn`) in closed loop with CartPole,
run until every member of each loop (sampled / deterministic) has finished an episode or
``max_steps`` steps were done; fitness = mean return of finished episodes.  The deterministic
members ride in the last chunk (``packs_deterministic``), in its padding where it has room.

``release_mode=trial`` (default, as the paper) holds one release pattern per member for the whole
trial; ``release_mode=spike`` releases with probability ``p`` at every presynaptic spike of the input
and recurrent synapses and returns the eligibilities (the engine's strategy turns them into the
gradient); the read-out stays in trial mode.

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
from typing import Literal

import jax
import numpy as np

from ...core.models import SNNConstants
from ...engine.population import EvalResult
from ...envs import cartpole as cp
from ...infra.config import ConfigBase
from ...infra.errors import UserError
from . import devices
from .cartpole import CartPoleGroup, draw_resets
from .conn_snn import ConnSNNPopulation, initial_potentials, input_values
from .synapse import release_values, run_args, write_values

b2 = devices.import_brian2()
F32 = np.float32


@dataclasses.dataclass
class Brian2RLConfig(ConfigBase):
    """Keys of the Brian2 CartPole evaluator."""

    device: Literal["runtime", "cpp_standalone", "cuda_standalone"] = "runtime"
    target: Literal["cython", "numpy"] = "cython"  # code generation target of the runtime device
    build_dir: str = ""  # standalone project folder ('' = per-user cache, keyed by the network)

    def validate(self):
        super().validate()
        self.require(self.env == cp.CartPole.id,
                     f"the brian2 back-end runs env {cp.CartPole.id} only, got {self.env!r}")
        self.require(self.reset_pool == "fresh", "the brian2 back-end supports reset_pool=fresh only")


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

    def __init__(self, const, chunk, max_steps, target, mode="trial", prefix: str = "", monitor: bool = False):
        super().__init__(const, chunk, max_steps, mode)
        import gymnasium as gym

        devices.activate("runtime", target=target)
        self.gate = b2.NeuronGroup(chunk, "running : 1", name=f"{prefix}gate")
        self.pop = ConnSNNPopulation(const, chunk, mode=mode, gate=(self.gate, "running", np.arange(chunk)),
                                     name=f"{prefix}snn")
        self.envs = [gym.make(cp.CartPole.id).unwrapped for _ in range(chunk)]
        op = b2.NetworkOperation(self._tick, dt=self.env_dt, when="start", order=0, name=f"{prefix}gym_step")
        extra = []
        if monitor:  # every spike of every copy (for recordings)
            self.monitor = b2.SpikeMonitor(self.pop.neurons, name=f"{prefix}spikes")
            extra.append(self.monitor)
        self.net = b2.Network(*self.pop.objects, self.gate, op, *extra)
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

    def run_chunk(self, values, v0, member, mean, scale, rng):
        self.net.restore("init")
        write_values(self.pop.synapses, values)
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
        if compile:  # a missing compiler or GPU is one line, before any folder or code exists
            devices.check_toolchain(device)
        key = repr((device, chunk, max_steps, mode, dataclasses.asdict(const), b2.__version__))
        self.folder, self.directory = devices.project_folder(device, key, build_dir)
        self.device = devices.activate(device, self.directory, compile=compile)
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

    def run_chunk(self, values, v0, member, mean, scale, rng):
        resets = draw_resets(rng, self.chunk, self.env.rows)
        args = run_args(self.pop.synapses, values, variables=("release",) if self.mode == "trial" else
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


class CartPoleChunks:
    """Chunks of ConnSNN members on CartPole-v1 in one Brian2 network (see the module docstring)."""

    Config = Brian2RLConfig
    packs_deterministic = True

    def __init__(self, config, task):
        cfg, c = config, task.const
        if not c.input_doubling:
            raise UserError(f"the brian2 back-end needs a model with input doubling (e.g. conn_snn), got {cfg.model!r}")
        self.const, self.layout = c, task.layout
        self.max_steps = cfg.max_episode_steps or cp.MAX_STEPS
        self.modes = dict(task.release)
        mode = self.modes.get("in", "trial")
        self.slots = self.layout.packed_capacity
        self.target = cfg.target
        if cfg.device == "runtime":
            self.sim = RuntimeSim(c, self.slots, self.max_steps, cfg.target, mode=mode)
        else:
            self.sim = StandaloneSim(c, self.slots, self.max_steps, cfg.device, cfg.build_dir, mode=mode)
        self.groups = self.sim.pop.synapses
        self._compile_reported = False

    def _values(self, members, kinds, det):
        out = {}
        for name in self.groups:
            d = np.asarray(det[name], F32)
            if name in members.batched:  # trial release: one pattern per sampled member
                out[name] = release_values("trial", kinds, z=np.asarray(members.batched[name]), det=d)
            elif self.modes.get(name) == "spike":
                out[name] = release_values("spike", kinds, p=np.asarray(members.shared[name]), det=d)
            else:  # a frozen reservoir: every live member releases the same mask
                out[name] = release_values("fixed", kinds, fixed=np.asarray(members.shared[name]))
        return out

    def evaluate(self, members, key, context, chunk, deterministic=None):
        c, n_eval = self.const, (self.layout.eval_size if deterministic is not None else 0)
        kinds = np.full(self.slots, 2)
        kinds[:chunk.valid] = 0
        kinds[chunk.valid:chunk.valid + n_eval] = 1
        if deterministic is None:
            deterministic = {k: np.zeros(g.logical_size(), F32) for k, g in self.groups.items()}
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32))
        v0 = initial_potentials(c, rng, self.slots * c.n_neurons)
        out = self.sim.run_chunk(self._values(members, kinds, deterministic), v0, kinds,
                                 context.obs_mean, context.obs_scale, rng)
        sampled, det = kinds == 0, kinds == 1
        steps_train, steps_eval = int(out["steps"][0]), int(out["steps"][1])
        n_train = int(sampled.sum())
        elig = {}
        for name, mode in self.modes.items():
            if mode == "spike":
                g, size = self.groups[name], self.groups[name].logical_size()
                elig[name] = tuple(np.asarray(v[:], F32).reshape(self.slots, size)[sampled] for v in (g.elig, g.n_spk))
        result = EvalResult(out["fitness"][sampled], eligibility=elig or None, extras={
            "env_steps": steps_train * n_train, "t": steps_train, "episodes": out["episodes"][sampled],
            "spikes": out["spikes"][sampled], "obs_n": steps_train * n_train,
            "obs_sum": np.asarray(out["obs_sum"])[None], "obs_sq": np.asarray(out["obs_sq"])[None]})  # one block
        if n_eval:
            result.deterministic = EvalResult(out["fitness"][det], extras={
                "env_steps": steps_eval * n_eval, "t": steps_eval, "episodes": out["episodes"][det],
                "spikes": out["spikes"][det]})
        return result

    def record_episodes(self, net, key, n_episodes: int, context) -> dict | None:
        """Spikes of the deterministic network ``net`` in ``n_episodes`` episodes, one Brian2 run
        each (fresh initial potentials, gymnasium's CartPole from a seeded reset), on a network of one
        ConnSNN copy with a SpikeMonitor on the runtime device (``target`` of the run, cython for the
        standalone devices).  Same return format as the JAX evaluator's."""
        if n_episodes <= 0:
            return None
        c = self.const
        rec = getattr(self, "_recorder", None)
        if rec is None:
            target = self.target if isinstance(self.sim, RuntimeSim) else "cython"
            rec = self._recorder = RuntimeSim(c, 1, self.max_steps, target, mode="trial", prefix="rec_", monitor=True)
        kinds = np.array([1])
        values = {name: release_values("trial", kinds, z=np.zeros(0, F32), det=np.asarray(net[name], F32))
                  for name in rec.pop.synapses}
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32))
        dt = c.dt  # ms
        steps, units, episodes, t0 = [], [], [], 0
        for _ in range(n_episodes):
            v0 = initial_potentials(c, rng, c.n_neurons)
            out = rec.run_chunk(values, v0, kinds, context.obs_mean, context.obs_scale, rng)
            n = int(out["steps"][1])
            t_ms = np.asarray(rec.monitor.t / b2.ms, np.float64)
            keep = t_ms < n * c.substeps * dt - 1e-9
            # a spike at the step starting at t ends that step (the JAX evaluator's convention)
            steps.append(t0 * c.substeps + np.rint(t_ms[keep] / dt).astype(np.int64))
            units.append(np.asarray(rec.monitor.i, np.int64)[keep])
            episodes.append((t0, n, float(out["fitness"][0]), n < self.max_steps))
            t0 += n
        return {"substep": np.concatenate(steps), "neuron": np.concatenate(units), "episodes": episodes,
                "substeps": c.substeps}

    def evaluate_deterministic(self, net, key, n, context):  # pragma: no cover - packed into the last chunk
        raise NotImplementedError("the brian2 evaluator evaluates the deterministic members in the last chunk")

    def report(self) -> dict:
        """Extra record fields: the compile time, in the first generation's row."""
        if self._compile_reported:
            return {}
        self._compile_reported = True
        return {"compile_s": self.sim.compile_s}

    def close(self):
        if isinstance(self.sim, StandaloneSim):
            self.sim.close()
