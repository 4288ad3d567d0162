"""Closed-loop evaluation of a population of spiking networks on a JAX environment.

One call of a :class:`Rollout` simulates C networks (a chunk of the population) in their own
environments until every network has completed at least one episode (or the environment's step
cap is reached).  Fitness = mean return over the episodes a network completed.
The network state is carried across episode boundaries, as in the published experiments; the
environment is reset with fresh initial states, or from a fixed per-member pool.

Cheap environments run *fused* (the whole loop is one ``while_loop`` that callers may inline into
their own ``jit``); environments with ``stepped = True`` (Brax) run *stepped*: a host loop over two
compiled kernels, the network step here and the environment's shared kernel
(:mod:`.envloop`).  Both give the same numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ...envs import decode_action
from . import envloop
from ...infra import distributed
from ...infra.distributed import replicate, shard_members


class Rollout:
    """Population evaluation: ``rollout(nets, key, pool_keys, obs_mean, obs_scale, n_members) -> dict``.

    ``nets = (batched, shared)``: prepared parameters with a leading member axis, and parameters
    every member shares (a frozen reservoir; the whole network when one network, e.g. the
    deterministic eval network, is run in ``n_members`` environments).
    ``pool_keys`` (C, 2): reset keys of a fixed initial-state pool, or ``None`` for fresh states.
    ``block > 1`` steps the networks in sequential blocks of that many members, so each block's
    weights stay in cache over the substeps (about 2x on CPU for real-valued per-member weights;
    same results, since members are independent).  ``sum_blocks``: the observation sums are kept
    for that many equal blocks of environments (:func:`.envloop.init`).
    """

    def __init__(self, env, snn, block: int = 0, sum_blocks: int = 1):
        self.env, self.snn, self.block, self.sum_blocks = env, snn, block, sum_blocks
        self.stepped = bool(getattr(env, "stepped", False))
        self._fn = jax.jit(self._rollout, static_argnames=("n_members",))
        self._start = jax.jit(self._init_policy, static_argnames=("n_members",))
        self._net_step = jax.jit(self._policy_step)
        self._result_fn = jax.jit(self._result)
        self._running_fn = jax.jit(lambda ls: replicate(envloop.until_first_episode(self.env, ls)))

    def __call__(self, nets, key, pool_keys, obs_mean, obs_scale, n_members: int):
        if self.stepped:
            return self.run_stepped(nets, key, pool_keys, obs_mean, obs_scale, n_members)
        return self._fn(nets, key, pool_keys, obs_mean, obs_scale, n_members=n_members)

    # ------------------------------------------------------------------ pieces
    def _init_policy(self, key, n_members):
        k_carry, k_reset, k_loop = jax.random.split(key, 3)
        c = n_members
        carry = jax.vmap(self.snn.init_carry)(jax.random.split(k_carry, c))
        return shard_members({"carry": carry, "spikes": jnp.zeros((c,), jnp.float32)}, c), (k_reset, k_loop)

    def _init(self, key, pool_keys, n_members):
        pol, (k_reset, k_loop) = self._init_policy(key, n_members)
        return pol, envloop.init(self.env, k_reset, k_loop, n_members, pool_keys, self.sum_blocks)

    def _policy(self, nets, pol, obs, obs_mean, obs_scale):
        batched, shared = nets
        c = obs.shape[0]
        x = (obs - obs_mean) / obs_scale
        if self.snn.kernel is not None:  # a custom call: one call per device over its members
            step_net = jax.vmap(lambda b, carry, x, sh: self.snn.step({**b, **sh}, carry, x),
                                in_axes=(0, 0, 0, None))
            carry, y, nsp = _map_members(step_net, c, 3)(batched, pol["carry"], x, shared)
        else:
            step_net = jax.vmap(lambda b, carry, x: self.snn.step({**b, **shared}, carry, x))
            if self.block > 1 and batched and c % self.block == 0 and c > self.block:
                step_net = _blocked(step_net, c, self.block)
            carry, y, nsp = step_net(batched, pol["carry"], x)
        action = decode_action(jnp, self.env, y)
        return {"carry": carry, "spikes": pol["spikes"] + nsp.astype(jnp.float32)}, action

    def _policy_step(self, nets, pol, ls, obs_mean, obs_scale):
        """Stepped mode: the network step, a no-op once the rollout has stopped."""
        new, action = self._policy(nets, pol, ls["obs"], obs_mean, obs_scale)
        return envloop.freeze(envloop.until_first_episode(self.env, ls), new, pol), action

    @staticmethod
    def _result(pol, ls):
        """What the host reads, complete on every device (every process): per-member results are
        gathered, the rest is small."""
        return replicate(dict(fitness=envloop.mean_return(ls), episodes=ls["n_ep"], steps=ls["t"],
                              spikes=pol["spikes"], obs_sum=ls["obs_sum"], obs_sq=ls["obs_sq"]))

    # ------------------------------------------------------------------ fused
    def _rollout(self, nets, key, pool_keys, obs_mean, obs_scale, n_members):
        env = self.env

        def cond(s):
            return envloop.until_first_episode(env, s[1])

        def body(s):
            pol, ls = s
            pol, action = self._policy(nets, pol, ls["obs"], obs_mean, obs_scale)
            ls, _ = envloop.advance(env, ls, action, pool_keys)
            return pol, ls

        pol, ls = jax.lax.while_loop(cond, body, self._init(key, pool_keys, n_members))
        return self._result(pol, ls)

    # ------------------------------------------------------------------ stepped
    def run_stepped(self, nets, key, pool_keys, obs_mean, obs_scale, n_members: int):
        kern = envloop.kernels(self.env)
        pol, (k_reset, k_loop) = self._start(key, n_members=n_members)
        ls = kern.init(k_reset, k_loop, n_members, pool_keys, self.sum_blocks)
        while True:
            for _ in range(envloop.CHECK_EVERY):
                pol, action = self._net_step(nets, pol, ls, obs_mean, obs_scale)
                ls, _ = kern.advance_until_first(ls, action, pool_keys)
            if not bool(self._running_fn(ls)):
                break
        return self._result_fn(pol, ls)


def _map_members(fn, n: int, n_batched: int):
    """``fn(*batched, *shared)`` with each device running it on its own members.

    A custom call (the fused spike kernel) is opaque to XLA's partitioner, so the member axis is
    split with ``shard_map``: the first ``n_batched`` arguments (member axis of length ``n`` first)
    over the devices, the others whole on every device; every output has the member axis.  With
    one device, or ``n`` not divisible by the device count, ``fn`` itself.
    """
    if distributed.member_sharding(n) is None:
        return fn
    from jax.sharding import PartitionSpec as P

    def call(*args):
        specs = tuple(P("members") if i < n_batched else P() for i in range(len(args)))
        return jax.shard_map(fn, mesh=distributed.mesh(), in_specs=specs, out_specs=P("members"),
                             check_vma=False)(*args)

    return call


def _blocked(fn, n, block):
    """``fn`` over n members as a sequential map over n // block vmapped blocks."""
    def split(tree):
        return jax.tree_util.tree_map(lambda x: x.reshape((n // block, block) + x.shape[1:]), tree)

    def merge(tree):
        return jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), tree)

    return lambda *args: merge(jax.lax.map(lambda a: fn(*a), split(args)))
