"""Population methods on RL tasks: RSRP / RSRP-reservoir on ConnSNN and ES on DenseSNN.

A :class:`RLPopulation` is back-end neutral.  It builds the environment (:mod:`rsrp_sim.envs`), the
network constants (``models/*.yaml``), the strategy (:mod:`.population`) and the back-end's
evaluator, and runs one :func:`~rsrp_sim.engine.population.generation` per iteration.  What it
adds around the engine is the RL bookkeeping: the running observation normaliser (its statistics
come back from the evaluators), environment steps, episodes and spike rates, the record.

An evaluator for RL tasks is a class with a ``Config`` dataclass (its own keys) and::

    Evaluator(config, task: RLTask)
    evaluate(members, key, context: RLContext, chunk: ChunkInfo) -> EvalResult
    evaluate_deterministic(net, key, n, context) -> EvalResult

whose results carry ``extras`` with ``env_steps`` (steps taken by real members), ``episodes`` and
``spikes`` per member, ``t`` (the loop's length), ``obs_n``/``obs_sum``/``obs_sq`` (what the
normaliser learns from; the sums as rows of blocks of environments, added here in order).  See
``rsrp_sim/backends/jax/rl.py`` and ``rsrp_sim/backends/brian2/rl.py``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar, Literal

import jax
import numpy as np

from .. import envs
from ..core.models import SNNConstants
from ..infra import distributed
from ..infra.errors import UserError
from ..infra.recordings import Recording
from .method import EvaluatedMethod, Figure, Finished
from .population import ESKeys, Layout, PopulationKeys, RSRPKeys, Strategy, generation

__all__ = ["RLConfig", "RSRPRLConfig", "ESRLConfig", "RLTask", "RLContext",
           "RLPopulation", "RSRPMethod", "ESMethod", "init_norm", "norm_arrays", "update_norm"]

OBS_NORMS = ("running", "ema_var", "none")


# ----------------------------------------------------------------------------- configuration
@dataclasses.dataclass
class RLConfig(PopulationKeys):
    """The task's keys (the ``paper`` values by default)."""

    env: str = "CartPole-v1"
    max_episode_steps: int = 0  # 0: the environment's own limit (500 for CartPole-v1)
    generations: int = 100
    obs_norm: Literal["running", "ema_var", "none"] = "running"
    reset_pool: Literal["fresh", "fixed"] = "fresh"
    checkpoint_every: int = 1
    record_episodes: int = 1  # episodes of the final deterministic network whose spikes are recorded (0: none)
    model: str = "conn_snn"
    model_overrides: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        self.require_at_least(1, "generations", "checkpoint_every")
        self.require_at_least(0, "record_episodes")
        self.require(self.max_episode_steps >= 0, f"max_episode_steps must be >= 0, got {self.max_episode_steps}")


@dataclasses.dataclass
class RSRPRLConfig(RSRPKeys, RLConfig):
    reservoir: bool = False  # freeze M_h as a Bernoulli(0.5) mask drawn from the run's seed

    def validate(self) -> None:
        super().validate()
        self.require(self.eval_size >= 1, f"eval_size must be at least 1, got {self.eval_size}")


@dataclasses.dataclass
class ESRLConfig(ESKeys, RLConfig):
    model: str = "dense_snn"

    def validate(self) -> None:
        super().validate()
        self.require(self.eval_size >= 1, f"eval_size must be at least 1, got {self.eval_size}")
        self.require(self.pop_size % 2 == 0,
                     f"es needs an even pop_size (antithetic pairs), got pop_size={self.pop_size}")


# ----------------------------------------------------------------------------- what evaluators get
@dataclasses.dataclass(frozen=True)
class RLTask:
    """What an RL evaluator is built for: the environment, the network's constants, the
    population layout, the strategy's release modes and the run's seed."""

    env: Any
    const: SNNConstants
    layout: Layout
    seed: int
    release: dict = dataclasses.field(default_factory=dict)  # group -> 'trial' | 'spike' (RSRP)


@dataclasses.dataclass(frozen=True)
class RLContext:
    """Per-generation inputs of the evaluation: observations enter the network as
    ``(obs - obs_mean) / obs_scale``."""

    obs_mean: np.ndarray
    obs_scale: np.ndarray


# ----------------------------------------------------------------------------- observation normaliser
def init_norm(d: int) -> dict:
    """State of the running observation normaliser for ``d``-dimensional observations."""
    return {"count": np.float64(0.0), "mean": np.zeros(d), "var": np.ones(d)}


def norm_arrays(norm: dict, mode: str, d: int) -> Any:
    """``(mean, scale)`` as float32 arrays; inputs are ``(obs - mean) / scale``.

    ``running``: scale = std; ``ema_var``: scale = var (the reference's quirk); ``none``/no data: (0, 1).
    """
    if mode == "none" or norm["count"] == 0:
        return np.zeros(d, np.float32), np.ones(d, np.float32)
    var = np.maximum(norm["var"], 1e-8)
    scale = var if mode == "ema_var" else np.sqrt(var)
    return np.asarray(norm["mean"], np.float32), np.asarray(scale, np.float32)


def update_norm(norm: dict, mode: str, n: Any, s: Any, sq: Any) -> dict:
    """Merge ``n`` observations with sum ``s`` and sum of squares ``sq`` into the normaliser."""
    if n == 0 or mode == "none":
        return norm
    bmean = s / n
    bvar = np.maximum(sq / n - bmean**2, 0.0)
    if mode == "ema_var":
        first = norm["count"] == 0
        mean = bmean if first else 0.9 * norm["mean"] + 0.1 * bmean
        var = bvar if first else 0.9 * norm["var"] + 0.1 * bvar
        return {"count": np.float64(norm["count"] + n), "mean": mean, "var": var}
    na, tot = norm["count"], norm["count"] + n
    delta = bmean - norm["mean"]
    mean = norm["mean"] + delta * n / tot
    m2 = norm["var"] * na + bvar * n + delta**2 * na * n / tot
    return {"count": np.float64(tot), "mean": mean, "var": m2 / tot}


# ----------------------------------------------------------------------------- the method
class RLPopulation(EvaluatedMethod):
    """A population method on an RL task with a back-end's evaluator (see the module docstring).

    Subclasses name the strategy (:meth:`make_strategy`) and its configuration (``BaseConfig``);
    :meth:`~rsrp_sim.engine.method.EvaluatedMethod.with_evaluator` makes the runnable class for
    one back-end.
    """

    connectivity: ClassVar[str]  # the model kind the strategy needs ('bernoulli' or 'real')
    method_name: ClassVar[str] = "population method"

    def __init__(self, config: Any, seed: int) -> None:
        super().__init__(config, seed)
        cfg = config
        self.env = envs.make(cfg.env, cfg.max_episode_steps or None)
        self.const = SNNConstants.from_model(cfg.model, self.env.obs_dim, envs.output_dim(self.env),
                                             cfg.model_overrides)
        if self.const.connectivity != self.connectivity:
            kind = {"bernoulli": "Bernoulli connectivity (e.g. conn_snn)",
                    "real": "real-valued weights (e.g. dense_snn)"}
            raise UserError(f"{self.method_name} needs a model with {kind[self.connectivity]}, got model {cfg.model!r}")
        self.strategy = self.make_strategy()
        self.layout = cfg.layout(self.strategy.multiple)
        distributed.check_layout(self.layout)
        release = dict(getattr(self.strategy, "modes", {}))
        self.evaluator = self.Evaluator(cfg, RLTask(self.env, self.const, self.layout, self.seed, release))
        # keys the evaluator resolved for this machine (e.g. spike_impl=auto) are what the run records
        self.config = dataclasses.replace(cfg, **getattr(self.evaluator, "resolved", {}))

    def make_strategy(self) -> Strategy:
        raise NotImplementedError

    @property
    def task_name(self) -> str:
        return self.env.id

    # ------------------------------------------------------------------ state
    def init_state(self) -> Any:
        key, k_init = jax.random.split(jax.random.PRNGKey(self.seed))
        return {"key": key, "generation": np.int64(0), "env_steps": np.int64(0),
                "norm": init_norm(self.env.obs_dim), "search": self.strategy.init(k_init)}

    # ------------------------------------------------------------------ one generation
    def step(self, state: Any) -> Any:
        t0 = time.perf_counter()
        cfg, layout = self.config, self.layout
        mean, scale = norm_arrays(state["norm"], cfg.obs_norm, self.env.obs_dim)
        gen = int(state["generation"]) + 1
        search, res = generation(self.strategy, state["search"], self.evaluator, state["key"], layout,
                                 RLContext(mean, scale), index=gen, hint=self._nonfinite_hint())
        env_steps, episodes, obs_n = 0, 0, 0
        obs_s = obs_sq = 0.0
        for i, ex in enumerate(res.extras):
            env_steps += int(ex["env_steps"])
            episodes += int(np.asarray(ex["episodes"])[:layout.valid(i)].sum())
            obs_n += int(ex["obs_n"])
            obs_s = obs_s + np.asarray(ex["obs_sum"], np.float64).sum(0)  # its blocks, in order
            obs_sq = obs_sq + np.asarray(ex["obs_sq"], np.float64).sum(0)
        det = res.deterministic
        env_steps += int(det.extras["env_steps"])
        c = self.const
        ms = max(int(det.extras["t"]), 1) * c.substeps * c.dt * c.n_neurons
        det_fit = np.asarray(det.fitness)
        new_state = dict(state, key=res.next_key, search=search, generation=np.int64(gen),
                         env_steps=np.int64(int(state["env_steps"]) + env_steps),
                         norm=update_norm(state["norm"], cfg.obs_norm, obs_n, obs_s, obs_sq))
        record = {
            "iteration": gen,
            "env_steps": int(new_state["env_steps"]),
            "train_score": float(res.fitness.mean()),
            "eval_score": float(det_fit.mean()),
            "train_max": float(res.fitness.max()),
            "eval_min": float(det_fit.min()),
            "episodes": episodes,
            "spikes_per_ms": float(np.asarray(det.extras["spikes"]).mean() / ms),
            "env_steps_per_s": env_steps / max(time.perf_counter() - t0, 1e-9),
        }
        record.update(self.strategy.metrics(state["search"]))  # the networks this generation evaluated
        record.update(getattr(self.evaluator, "report", lambda: {})())
        return new_state, record

    def _nonfinite_hint(self) -> str:
        """The likely cause of a non-finite reward: the settings that differ from the model's file."""
        cfg = self.config
        given = ", ".join(f"model.{k}={v!r}" for k, v in sorted((cfg.model_overrides or {}).items()))
        if given:
            cause = f"likely cause: the model override(s) {given} make the network diverge; check them"
        else:
            cause = f"likely cause: the network (model {cfg.model}) diverges; check the model's constants"
        steps = [f"{k}={getattr(cfg, k):g}" for k in ("lr", "sigma") if isinstance(getattr(cfg, k, None), float)]
        return f" (environment {self.env.id}; {cause}" + (f" and {', '.join(steps)})" if steps else ")")

    def finalize(self, state: Any) -> Any:
        """The spikes of the final deterministic network in ``record_episodes`` episodes (when the
        back-end's evaluator can record them)."""
        rec = self.record(state, self.config.record_episodes)
        return Finished(recordings={"episodes": rec} if rec is not None else {})

    def record(self, state: Any, n_episodes: int) -> Recording | None:
        """A :class:`~rsrp_sim.infra.recordings.Recording` of the deterministic network of ``state``."""
        fn = getattr(self.evaluator, "record_episodes", None)
        if fn is None or n_episodes < 1:
            return None
        mean, scale = norm_arrays(state["norm"], self.config.obs_norm, self.env.obs_dim)
        net = {k: np.asarray(v) for k, v in self.strategy.jitted.deterministic(state["search"]).items()}
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), 0x7EC)
        out = fn(net, key, n_episodes, RLContext(mean, scale))
        if out is None:
            return None
        c = self.const
        dt = c.dt / 1000.0  # seconds per substep
        env_dt = c.substeps * dt
        eps = out["episodes"]
        signs = c.signs() if c.dale else np.zeros(c.n_neurons)
        cell = np.where(signs > 0, "excitatory", np.where(signs < 0, "inhibitory", "unsigned"))
        return Recording(
            spike_times=(np.asarray(out["substep"], np.float64) + 1.0) * dt,  # the end of the substep that spiked
            spike_units=out["neuron"],
            units={"population": np.full(c.n_neurons, "recurrent"), "cell_type": cell,
                   "neuron": np.arange(c.n_neurons)},
            intervals={"start_time": np.array([e[0] * env_dt for e in eps]),
                       "stop_time": np.array([(e[0] + e[1]) * env_dt for e in eps]),
                       "steps": np.array([e[1] for e in eps], np.int64),
                       "return": np.array([e[2] for e in eps], np.float64),
                       "terminated": np.array([e[3] for e in eps], bool)},
            description=(f"{self.method_name}: the final deterministic network on {self.env.id}, {len(eps)} "
                         f"episode(s) in closed loop, every spike of the {c.n_neurons} recurrent neurons"),
            interval_kind="episode", duration=float(sum(e[1] for e in eps) * env_dt), resolution=dt,
            constants={"model": self.config.model, "env": self.env.id, **_plain_constants(c)})

    def close(self) -> None:
        getattr(self.evaluator, "close", lambda: None)()


def _plain_constants(c: Any) -> dict:
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(c).items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[k] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            out[k] = list(v)
    return out


class RSRPMethod(RLPopulation):
    """RSRP (``reservoir=False``) or RSRP-reservoir on a ConnSNN: p per synapse of M_in, M_h, M_out."""

    BaseConfig = RSRPRLConfig
    connectivity = "bernoulli"
    method_name = "rsrp"

    def make_strategy(self) -> Any:
        cfg = self.config
        return cfg.strategy(self.const.param_shapes(), cfg.transform(), frozen=("h",) if cfg.reservoir else (),
                            release=self._release_modes())

    def _release_modes(self):
        """Spike release applies to the input and recurrent synapses; the read-out, a rate
        read-out of every neuron, keeps one release pattern per trial."""
        mode = self.config.release_mode
        return {k: (mode if k != "out" else "trial") for k in self.const.param_shapes()}

    def finalize(self, state: Any) -> Any:
        fin = super().finalize(state)
        p = {k: np.asarray(v) for k, v in state["search"].p.items()}
        fin.summary["p_mean"] = float(np.mean(np.concatenate([v.ravel() for v in p.values()])))
        fin.figures.append(Figure("p_histogram", "p_histogram.png", {"p": p}))
        return fin


class ESMethod(RLPopulation):
    """Antithetic Gaussian ES on a DenseSNN (the EC/RSRP baseline)."""

    BaseConfig = ESRLConfig
    connectivity = "real"
    method_name = "es"

    def make_strategy(self) -> Any:
        cfg = self.config
        return cfg.strategy(self.const.param_shapes(), cfg.transform(), init_std=self.const.init_std)
