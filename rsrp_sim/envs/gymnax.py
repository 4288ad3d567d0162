"""gymnax environments (``Acrobot-v1``, ``Pendulum-v1``, ``MountainCar-v0`` ...) behind the interface of
:mod:`.base`."""
from __future__ import annotations

import numpy as np

from .base import gymnasium_threshold


class GymnaxEnv:
    """Adapter from a gymnax environment to the interface of :mod:`.base` (no auto-reset)."""

    stepped = False

    def __init__(self, env_id: str, max_steps: int | None = None):
        import gymnax

        self.id = env_id
        self.reward_threshold = gymnasium_threshold(env_id)
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
        import jax.numpy as jnp

        obs, state = self.env.reset_env(key, self.params)
        return obs.reshape(-1).astype(jnp.float32), state

    def step(self, key, state, action):
        import jax.numpy as jnp

        obs, state, reward, terminated, _ = self.env.step_env(key, state, action, self.params)
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.logical_and(self.env.is_truncated(state, self.params), ~terminated)
        return obs.reshape(-1).astype(jnp.float32), state, jnp.asarray(reward, jnp.float32), terminated, truncated
