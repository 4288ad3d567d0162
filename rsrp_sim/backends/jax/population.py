"""Closed-loop evaluation of a population of spiking networks on a JAX environment.

One call of a :class:`Rollout` simulates C networks (a chunk of the population) in their own
environments until every network has completed at least one episode (or the environment's step
cap is reached).  Fitness = mean return over the episodes a network completed (SPEC §4, issue 2).
The network state is carried across episode boundaries, as in the published experiments; the
environment is reset with fresh initial states, or from a fixed per-member pool.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ...envs import decode_action


def _where_tree(mask, a, b):
    """Per-member select over a pytree whose leaves have the member axis first."""
    def sel(x, y):
        m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        return jnp.where(m, x, y)
    return jax.tree_util.tree_map(sel, a, b)


class Rollout:
    """Jitted population evaluation: ``rollout(nets, key, pool_keys, obs_mean, obs_scale) -> dict``.

    ``shared_net=True`` evaluates one network (e.g. the deterministic eval network) in C
    environments; ``nets`` then has no member axis and ``n_members`` gives C.
    ``pool_keys`` (C, 2): reset keys of a fixed initial-state pool, or ``None`` for fresh states.
    ``block > 1`` steps the networks in sequential blocks of that many members, so each block's
    weights stay in cache over the substeps (about 2x on CPU for real-valued per-member weights;
    same results, since members are independent).
    """

    def __init__(self, env, snn, shared_net: bool = False, block: int = 0):
        self.env, self.snn, self.shared, self.block = env, snn, shared_net, block
        self._fn = jax.jit(self._rollout, static_argnames=("n_members",))

    def __call__(self, nets, key, pool_keys, obs_mean, obs_scale, n_members: int):
        return self._fn(nets, key, pool_keys, obs_mean, obs_scale, n_members=n_members)

    def _rollout(self, nets, key, pool_keys, obs_mean, obs_scale, n_members):
        env, snn, c = self.env, self.snn, n_members
        step_net = jax.vmap(snn.step, in_axes=(None if self.shared else 0, 0, 0))
        if self.block > 1 and not self.shared and c % self.block == 0 and c > self.block:
            step_net = _blocked(step_net, c, self.block)
        env_step = jax.vmap(env.step)
        env_reset = jax.vmap(env.reset)
        k_carry, k_reset, k_loop = jax.random.split(key, 3)
        fixed_pool = pool_keys is not None
        obs, env_state = env_reset(pool_keys if fixed_pool else jax.random.split(k_reset, c))
        obs = obs.astype(jnp.float32)
        carry = jax.vmap(snn.init_carry)(jax.random.split(k_carry, c))
        zeros = jnp.zeros((c,), jnp.float32)
        d = obs.shape[-1]
        init = dict(t=jnp.int32(0), key=k_loop, obs=obs, env_state=env_state, carry=carry,
                    ep_ret=zeros, ret_sum=zeros, n_ep=jnp.zeros((c,), jnp.int32), spikes=zeros,
                    obs_sum=jnp.zeros((d,), jnp.float32), obs_sq=jnp.zeros((d,), jnp.float32))

        def cond(s):
            return (s["t"] < env.max_steps) & jnp.any(s["n_ep"] < 1)

        def body(s):
            obs_in = (s["obs"] - obs_mean) / obs_scale
            carry, y, nsp = step_net(nets, s["carry"], obs_in)
            action = decode_action(jnp, env, y)
            key, k_step, k_res = jax.random.split(s["key"], 3)
            obs2, st2, rew, done = env_step(jax.random.split(k_step, c), s["env_state"], action)
            ret = s["ep_ret"] + rew
            reset_keys = pool_keys if fixed_pool else jax.random.split(k_res, c)
            obs_r, st_r = env_reset(reset_keys)
            return dict(
                t=s["t"] + 1, key=key,
                obs=jnp.where(done[:, None], obs_r, obs2).astype(jnp.float32),
                env_state=_where_tree(done, st_r, st2), carry=carry,
                ep_ret=jnp.where(done, 0.0, ret),
                ret_sum=s["ret_sum"] + jnp.where(done, ret, 0.0),
                n_ep=s["n_ep"] + done.astype(jnp.int32),
                spikes=s["spikes"] + nsp.astype(jnp.float32),
                obs_sum=s["obs_sum"] + s["obs"].sum(0),
                obs_sq=s["obs_sq"] + (s["obs"] ** 2).sum(0))

        s = jax.lax.while_loop(cond, body, init)
        n_ep = jnp.maximum(s["n_ep"], 1)
        # an episode still running at the step cap counts as one with its partial return
        fitness = jnp.where(s["n_ep"] > 0, s["ret_sum"] / n_ep, s["ep_ret"])
        return dict(fitness=fitness, episodes=s["n_ep"], steps=s["t"], spikes=s["spikes"],
                    obs_sum=s["obs_sum"], obs_sq=s["obs_sq"])


def _blocked(fn, n, block):
    """``fn`` over n members as a sequential map over n // block vmapped blocks."""
    def split(tree):
        return jax.tree_util.tree_map(lambda x: x.reshape((n // block, block) + x.shape[1:]), tree)

    def merge(tree):
        return jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), tree)

    return lambda *args: merge(jax.lax.map(lambda a: fn(*a), split(args)))
