"""Batched environment stepping with resets and return bookkeeping, fused or stepped.

A *loop state* holds C environments side by side: their observations and states, the running
episode return, the sum and count of completed episodes' returns, observation sums (for the
normaliser) and a step counter.  :func:`advance` applies one batch of actions, resets the
environments that finished (fresh initial states, or from a fixed per-member key pool) and updates
the bookkeeping.  Everything is a pure function of arrays, used two ways:

* **fused** (cheap environments such as CartPole): the caller's whole rollout, policy and
  environment, is one ``lax.while_loop``/``scan`` inside one ``jit``;
* **stepped** (environments with ``stepped = True``, e.g. Brax, whose step takes tens of seconds to
  compile): a Python loop calls two compiled kernels per step, the caller's policy step and the
  environment's :func:`kernels` (compiled once per environment and batch size, shared by every
  method, by training and evaluation).  A step taken after the stopping condition holds changes
  nothing, so the stepped loop gives the same numbers as the fused one while checking the
  condition on the host only every few steps.
"""
from __future__ import annotations

import weakref
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ...infra.distributed import shard_members

CHECK_EVERY = 8  # stepped loops look at the stopping condition on the host every this many steps


def where_tree(mask, a, b):
    """Per-member select over pytrees whose leaves have the member axis first."""
    def sel(x, y):
        m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        return jnp.where(m, x, y)
    return jax.tree_util.tree_map(sel, a, b)


def freeze(active, new, old):
    """``new`` where the scalar ``active`` holds, else ``old`` (a no-op step)."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(active, x, y), new, old)


def reset_batch(env, key, n, pool_keys):
    keys = pool_keys if pool_keys is not None else jax.random.split(key, n)
    obs, state = jax.vmap(env.reset)(keys)
    return obs.astype(jnp.float32), state


def init(env, k_reset, k_loop, n, pool_keys=None, blocks: int = 1):
    """Loop state of ``n`` freshly reset environments (``k_reset``; ``k_loop`` drives the steps).

    The observation sums are kept per block of ``n / blocks`` environments (``blocks`` rows), so
    that they do not depend on how many devices share the environments.
    """
    obs, env_state = reset_batch(env, k_reset, n, pool_keys)
    zeros = jnp.zeros((n,), jnp.float32)
    d = obs.shape[-1]
    return shard_members(dict(
        t=jnp.int32(0), key=k_loop, obs=obs, env_state=env_state, ep_ret=zeros,
        ret_sum=zeros, n_ep=jnp.zeros((n,), jnp.int32),
        obs_sum=jnp.zeros((blocks, d), jnp.float32), obs_sq=jnp.zeros((blocks, d), jnp.float32)), n)


def _block_sum(x, blocks: int):
    """Sums of ``x`` (n, d) over ``blocks`` equal consecutive blocks of rows: (blocks, d)."""
    if blocks == 1:
        return x.sum(0)[None]
    return x.reshape((blocks, x.shape[0] // blocks) + x.shape[1:]).sum(1)


BOOKKEEPING = ("t", "key", "ep_ret", "ret_sum", "n_ep", "obs_sum", "obs_sq")


class Transition(NamedTuple):
    """What one step of C environments gave: rewards, and which episodes ended and how
    (``terminated``: a terminal state; ``truncated``: the time limit), with the observation each
    environment reached before a reset replaced it (``final_obs``, for bootstrapping)."""

    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array

    @property
    def done(self):
        return self.terminated | self.truncated

    def masked(self, active):
        """The transition where ``active`` (a scalar), else nothing happened."""
        return Transition(jnp.where(active, self.reward, 0.0), self.terminated & active, self.truncated & active,
                          self.final_obs)


def advance(env, ls, action, pool_keys=None, restart=None, reset_key=None):
    """One step of every environment; finished ones are reset.  Returns ``(ls, transition)``.

    ``restart`` (traced bool, with ``reset_key``): instead, reset every environment with
    ``reset_key`` and leave the bookkeeping as it is -- how the stepped kernels start a loop
    without compiling the reset a second time.
    """
    n = ls["obs"].shape[0]
    key, k_step, k_res = jax.random.split(ls["key"], 3)
    obs2, st2, rew, term, trunc = jax.vmap(env.step)(jax.random.split(k_step, n), ls["env_state"], action)
    rew = rew.astype(jnp.float32)
    obs2 = obs2.astype(jnp.float32)
    done = term | trunc
    if restart is not None:
        k_res = jnp.where(restart, reset_key, k_res)
        done = done | restart
    ret = ls["ep_ret"] + rew
    obs_r, st_r = reset_batch(env, k_res, n, pool_keys)
    new = dict(
        t=ls["t"] + 1, key=key,
        obs=jnp.where(done[:, None], obs_r, obs2),
        env_state=where_tree(done, st_r, st2),
        ep_ret=jnp.where(done, 0.0, ret),
        ret_sum=ls["ret_sum"] + jnp.where(done, ret, 0.0),
        n_ep=ls["n_ep"] + done.astype(jnp.int32),
        obs_sum=ls["obs_sum"] + _block_sum(ls["obs"], ls["obs_sum"].shape[0]),
        obs_sq=ls["obs_sq"] + _block_sum(ls["obs"] ** 2, ls["obs_sq"].shape[0]))
    step = Transition(rew, term, trunc, obs2)
    if restart is not None:
        new.update(freeze(restart, {k: ls[k] for k in BOOKKEEPING}, {k: new[k] for k in BOOKKEEPING}))
        step = step.masked(~restart)
    return new, step


def until_first_episode(env, ls):
    """Population evaluation runs while some member has not finished an episode (and t < cap)."""
    return (ls["t"] < env.max_steps) & jnp.any(ls["n_ep"] < 1)


def mean_return(ls):
    """Mean return of the completed episodes; a member with none gets its partial return."""
    n_ep = jnp.maximum(ls["n_ep"], 1)
    return jnp.where(ls["n_ep"] > 0, ls["ret_sum"] / n_ep, ls["ep_ret"])


# ----------------------------------------------------------------------------- compiled kernels
def _kernel(env, ls, action, pool_keys, until_first, restart, reset_key):
    active = jnp.logical_not(until_first) | until_first_episode(env, ls) | restart
    new, step = advance(env, ls, action, pool_keys, restart, reset_key)
    return freeze(active, new, ls), step.masked(active)


class _Kernels:
    """One compiled executable per batch size (and pool mode) serves starting, stepping, and
    stepping until every environment finished an episode."""

    def __init__(self, env):
        self.env = env
        self._kernel = jax.jit(partial(_kernel, env))
        self._templates = {}
        self._no_key = jax.random.PRNGKey(0)

    def _template(self, n, pool_keys, blocks):
        """A zero loop state and action of the right shapes (traced, never compiled)."""
        k = (n, pool_keys is None, blocks)
        if k not in self._templates:
            shapes = jax.eval_shape(lambda key: init(self.env, key, key, n, pool_keys, blocks), self._no_key)
            ls = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            if self.env.action_kind == "continuous":
                action = jnp.zeros((n, self.env.n_actions), jnp.float32)
            else:
                action = jnp.zeros((n,), jnp.int32)
            self._templates[k] = (ls, action)
        return self._templates[k]

    def init(self, k_reset, k_loop, n, pool_keys=None, blocks: int = 1):
        """Same loop state as :func:`init`, through the stepping kernel."""
        ls, action = self._template(n, pool_keys, blocks)
        ls = shard_members(dict(ls, key=k_loop), n)
        return self._kernel(ls, action, pool_keys, False, True, k_reset)[0]

    def advance(self, ls, action, pool_keys=None):
        return self._kernel(ls, action, pool_keys, False, False, self._no_key)

    def advance_until_first(self, ls, action, pool_keys=None):
        """:func:`advance`, a no-op once every environment has finished an episode (or at the cap)."""
        return self._kernel(ls, action, pool_keys, True, False, self._no_key)


_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kernels(env) -> _Kernels:
    """The environment's compiled kernels, one set per environment object while it lives."""
    k = _KERNELS.get(env)
    if k is None:
        k = _KERNELS[env] = _Kernels(env)
    return k
