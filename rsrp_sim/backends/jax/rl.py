"""The JAX evaluator of the RL population methods: ConnSNN / DenseSNN rollouts in closed loop.

:class:`SNNRollouts` is what the engine (:func:`rsrp_sim.engine.population.generation`) calls for
RSRP, RSRP-reservoir and ES on any JAX environment (CartPole-v1, gymnax ids, Brax): a chunk of
members (release patterns or real weights, with a member axis; a frozen reservoir shared) is
prepared (bit-packed masks for ``spike_impl=bitpack`` and ``fused``) and run until every member has
finished an episode (:mod:`.rollout`), and the deterministic network in ``eval_size`` environments.
``spike_impl=auto`` (the default) is resolved when the evaluator is built: the fused kernel where
it runs (:mod:`.kernels`), else ``bitpack``; the resolved value is what the run's config records.  Cheap
environments run as one ``jit``; Brax (``stepped``) as a host loop over compiled kernels.  Each
chunk's member axis is split across all visible devices (:mod:`.sharding`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

from ...engine.population import EvalResult
from ...infra.config import ConfigBase
from .rollout import Rollout
from ...infra.distributed import shard_members
from .kernels import resolve_spike_impl
from .snn import SPIKE_IMPLS, SNN

__all__ = ["JaxRLConfig", "SNNRollouts"]


@dataclasses.dataclass
class JaxRLConfig(ConfigBase):
    """Keys of the JAX RL evaluator."""

    # the spike step of Bernoulli masks (all give the same spikes); auto: fused where its kernel runs, else bitpack
    spike_impl: Literal["auto", "fused", "bitpack", "dense"] = "auto"
    member_block: int = -1  # networks stepped together in cache-sized blocks; -1 auto, 0 off

    def validate(self) -> None:
        super().validate()
        self.require(self.member_block >= -1,
                     f"member_block must be -1 (auto), 0 (off) or a block size, got {self.member_block}")
        self.require(getattr(self, "release_mode", "trial") == "trial",
                     "the jax back-end draws release once per trial; release_mode=spike needs --backend brian2")


class SNNRollouts:
    """Closed-loop evaluation of ConnSNN / DenseSNN members on a JAX environment."""

    Config = JaxRLConfig
    packs_deterministic = False
    multi_process = True  # members sharded over every device of every process

    def __init__(self, config: Any, task: Any) -> None:
        self.env, self.const, self.layout, self.seed = task.env, task.const, task.layout, task.seed
        self.obs_norm = config.obs_norm
        self.reset_pool = config.reset_pool
        spike_impl = resolve_spike_impl(config.spike_impl, self.const)
        assert spike_impl in SPIKE_IMPLS
        self.snn = SNN(self.const, spike_impl)
        #: config keys this evaluator resolved (``auto``), for the run's recorded config
        self.resolved = {"spike_impl": self.snn.spike_impl}
        self.chunk = self.layout.chunk
        lay = self.layout
        self.train_rollout = Rollout(self.env, self.snn, block=self._member_block(config.member_block),
                                     sum_blocks=lay.blocks(self.chunk))
        self.eval_rollout = Rollout(self.env, self.snn, sum_blocks=lay.blocks(lay.eval_size))
        self.stepped = self.train_rollout.stepped
        self._prepare_fn = jax.jit(self._prepare)
        self._prepare_net_fn = jax.jit(self.snn.prepare)
        if not self.stepped:
            self._train_fn = jax.jit(self._train_chunk)
            self._eval_fn = jax.jit(self._eval_chunk, static_argnames=("n",))

    def _member_block(self, member_block: int) -> int:
        """Auto: blocks of 16 for per-member real weights on CPU (cache reuse); none otherwise."""
        if member_block >= 0:
            return member_block
        on_cpu = jax.default_backend() == "cpu"
        return 16 if on_cpu and self.snn.spike_impl == "dense" else 0

    # ------------------------------------------------------------------ pieces (jitted)
    def _prepare(self, members):
        batched = shard_members(jax.vmap(self.snn.prepare)(members.batched), members.n)
        return batched, self.snn.prepare(members.shared)

    def _train_chunk(self, members, key, pool_keys, mean, scale):
        return self.train_rollout._rollout(self._prepare(members), key, pool_keys, mean, scale, n_members=members.n)

    def _eval_chunk(self, net, key, pool_keys, mean, scale, n):
        return self.eval_rollout._rollout(({}, self.snn.prepare(net)), key, pool_keys, mean, scale, n_members=n)

    def _pool_keys(self, offset: int, n: int) -> Any:
        """Reset keys of member slots ``offset .. offset + n - 1`` (``reset_pool=fixed``), else None."""
        if self.reset_pool != "fixed":
            return None
        pool = jax.random.fold_in(jax.random.PRNGKey(self.seed), 7919)
        return jax.vmap(lambda i: jax.random.fold_in(pool, i))(offset + jnp.arange(n))

    # ------------------------------------------------------------------ the evaluator interface
    def evaluate(self, members: Any, key: Any, context: Any, chunk: Any) -> Any:
        pool = self._pool_keys(chunk.offset, members.n)
        mean, scale = jnp.asarray(context.obs_mean), jnp.asarray(context.obs_scale)
        if self.stepped:
            out = self.train_rollout.run_stepped(self._prepare_fn(members), key, pool, mean, scale,
                                                 n_members=members.n)
        else:
            out = self._train_fn(members, key, pool, mean, scale)
        out = jax.device_get(out)
        t = int(out["steps"])
        return EvalResult(out["fitness"], extras={
            "env_steps": t * chunk.valid, "t": t, "episodes": out["episodes"], "spikes": out["spikes"],
            "obs_n": t * members.n, "obs_sum": out["obs_sum"], "obs_sq": out["obs_sq"]})

    def record_episodes(self, net: Any, key: Any, n_episodes: int, context: Any) -> dict | None:
        """Spikes of one network ``net`` (unprepared masks or weights) in ``n_episodes`` consecutive
        episodes of one environment, closed loop, the neuron state carried across episodes as in
        the evaluation.  Returns ``{"spikes": (substep index, neuron) arrays, "episodes": [(first
        env step, steps, return, terminated)], "substeps": ...}``; None for stepped (Brax)
        environments, whose compiled step is too costly to build for a recording."""
        import numpy as np

        if self.stepped or n_episodes <= 0:
            return None
        env, snn, c = self.env, self.snn, self.const
        mean, scale = jnp.asarray(context.obs_mean), jnp.asarray(context.obs_scale)
        prepared = self._prepare_net_fn(net)
        step = getattr(self, "_record_fn", None)
        if step is None:
            def step(net, carry, obs, env_state, key):
                carry, raster = snn._run(net, carry, (obs - mean) / scale, record=True)
                y = c.r_out * (carry["r"] @ net["out"])
                from ...envs import decode_action

                action = decode_action(jnp, env, y)
                key, k = jax.random.split(key)
                obs, env_state, reward, terminated, truncated = env.step(k, env_state, action)
                return carry, raster, obs, env_state, reward, terminated, truncated, key

            step = self._record_fn = jax.jit(step)
        k_carry, key = jax.random.split(key)
        carry = snn.init_carry(k_carry)
        steps, units, episodes, t = [], [], [], 0
        for _ in range(n_episodes):
            key, k_reset = jax.random.split(key)
            obs, env_state = env.reset(k_reset)
            first, ret = t, 0.0
            while True:
                carry, raster, obs, env_state, reward, terminated, truncated, key = step(prepared, carry, obs,
                                                                                         env_state, key)
                sub, neuron = np.nonzero(np.asarray(raster))
                steps.append(t * c.substeps + sub)
                units.append(neuron)
                ret += float(reward)
                t += 1
                if bool(terminated) or bool(truncated) or t - first >= env.max_steps:
                    episodes.append((first, t - first, ret, bool(terminated)))
                    break
        return {"substep": np.concatenate(steps) if steps else np.zeros(0, np.int64),
                "neuron": np.concatenate(units) if units else np.zeros(0, np.int64),
                "episodes": episodes, "substeps": c.substeps}

    def evaluate_deterministic(self, net: Any, key: Any, n: Any, context: Any) -> Any:
        pool = self._pool_keys(self.layout.pop_size, n)
        mean, scale = jnp.asarray(context.obs_mean), jnp.asarray(context.obs_scale)
        if self.stepped:
            prepared: tuple[dict, Any] = ({}, self._prepare_net_fn(net))
            out = self.eval_rollout.run_stepped(prepared, key, pool, mean, scale, n_members=n)
        else:
            out = self._eval_fn(net, key, pool, mean, scale, n=n)
        out = jax.device_get(out)
        t = int(out["steps"])
        return EvalResult(out["fitness"], extras={"env_steps": t * n, "t": t, "episodes": out["episodes"],
                                                  "spikes": out["spikes"]})
