"""Environment adapters for the JAX back-end.

Every environment is a functional object with ``obs_dim``, ``action_kind`` ('discrete' or
'continuous'), ``n_actions`` (discrete) or ``action_low``/``action_high`` (continuous arrays),
``max_steps``, ``reset(key) -> (obs, state)`` and ``step(key, state, action) -> (obs, state, reward,
done)`` with no auto-reset.  ``CartPole-v1`` is our own (gymnasium-exact) implementation; lowercase
ids are Brax tasks (``humanoid``, ``ant``, ``hopper``, ``walker2d`` ..., optionally ``name:pipeline``;
:mod:`.brax`); any other id is looked up in gymnax (``Acrobot-v1``, ``Pendulum-v1`` ...).
An environment may set ``stepped = True`` when compiling its step is expensive: rollouts then keep
it in its own compiled kernel (:mod:`rsrp_sim.backends.jax.envloop`).
"""
from __future__ import annotations

import numpy as np

from ..infra.errors import UserError, unknown
from .cartpole import CartPole

NATIVE = {"CartPole-v1": CartPole}


class GymnaxEnv:
    """Adapter from a gymnax environment to the interface above (no auto-reset)."""

    def __init__(self, env_id: str, max_steps: int | None = None):
        import gymnax

        self.id = env_id
        self.env, self.params = gymnax.make(env_id)
        if max_steps is not None:
            self.params = self.params.replace(max_steps_in_episode=max_steps)
        self.max_steps = int(self.params.max_steps_in_episode)
        space = self.env.action_space(self.params)
        self.obs_dim = int(np.prod(self.env.observation_space(self.params).shape))
        if hasattr(space, "n"):
            self.action_kind, self.n_actions = "discrete", int(space.n)
            self.action_low = self.action_high = None
        else:
            self.action_kind, self.n_actions = "continuous", int(np.prod(space.shape))
            self.action_low = np.broadcast_to(np.asarray(space.low, np.float32), (self.n_actions,))
            self.action_high = np.broadcast_to(np.asarray(space.high, np.float32), (self.n_actions,))

    def reset(self, key):
        obs, state = self.env.reset_env(key, self.params)
        return obs.reshape(-1), state

    def step(self, key, state, action):
        import jax.numpy as jnp

        obs, state, reward, terminated, _ = self.env.step_env(key, state, action, self.params)
        done = jnp.logical_or(terminated, self.env.is_truncated(state, self.params))
        return obs.reshape(-1), state, jnp.asarray(reward, jnp.float32), done


def list_envs() -> list[str]:
    """Environment ids accepted by ``--env``."""
    try:
        import gymnax

        extra = [e for e in gymnax.registered_envs if e not in NATIVE]
    except ImportError:  # pragma: no cover - gymnax is a core dependency
        extra = []
    from .brax import brax_names

    return list(NATIVE) + extra + brax_names()


def make(env_id: str, max_steps: int | None = None):
    """An environment by id (our CartPole-v1, Brax tasks, else gymnax); unknown ids raise a UserError."""
    if env_id in NATIVE:
        return NATIVE[env_id](**({} if max_steps is None else {"max_steps": max_steps}))
    from . import brax

    if brax.is_brax_id(env_id):
        return brax.make(env_id, max_steps)
    allowed = list_envs()
    if env_id not in allowed:
        raise unknown("env", env_id, allowed)
    if env_id.endswith(("-bsuite", "-MinAtar")) and "MNISTBandit" in env_id:
        raise UserError(f"env {env_id!r} downloads data at run time, which is not supported")
    return GymnaxEnv(env_id, max_steps)


def output_dim(env) -> int:
    """Network outputs needed: 1 for two discrete actions (sign read-out), n for n > 2, dim for boxes."""
    if env.action_kind == "discrete" and env.n_actions == 2:
        return 1
    return env.n_actions


def decode_action(xp, env, y):
    """Network output ``y`` (..., output_dim) to an environment action (SPEC §3.1 read-outs)."""
    if env.action_kind == "discrete":
        if env.n_actions == 2:
            return (y[..., 0] > 0).astype(xp.int32)  # push right when positive
        return xp.argmax(y, axis=-1).astype(xp.int32)
    return scale_action(xp, env, y)


def scale_action(xp, env, y):
    """A continuous action in [-1, 1] (clipped) to the environment's box ``[action_low, action_high]``."""
    low, high = xp.asarray(env.action_low), xp.asarray(env.action_high)
    return low + (xp.clip(y, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
