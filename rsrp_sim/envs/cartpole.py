"""CartPole-v1 physics, written once as array code and used by the JAX back-end.

The equations, constants, termination and reward are gymnasium's ``CartPole-v1`` (Euler
integrator, 500-step limit, reward 1 on every step including the terminating one).  The functions
take the array module as ``xp`` so they run under JAX (float32, ``jit``/``vmap``) and under NumPy
(float64, exactly gymnasium's arithmetic), which is what the equivalence tests compare.
"""
from __future__ import annotations

import math

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
MAX_STEPS = 500
REWARD_THRESHOLD = 475.0  # gymnasium's CartPole-v1 reward_threshold
RESET_HIGH = 0.05
OBS_DIM = 4
N_ACTIONS = 2


def physics_step(xp, state, action):
    """Advance (x, x_dot, theta, theta_dot) by one 20 ms Euler step; ``action`` 1 pushes right.

    Returns ``(new_state, terminated)``.  ``state`` has the four variables on its last axis.
    """
    x, x_dot, theta, theta_dot = (state[..., i] for i in range(4))
    force = xp.where(action == 1, FORCE_MAG, -FORCE_MAG)
    costheta = xp.cos(theta)
    sintheta = xp.sin(theta)
    temp = (force + POLEMASS_LENGTH * theta_dot**2 * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * costheta**2 / TOTAL_MASS))
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    x = x + TAU * x_dot
    x_dot = x_dot + TAU * xacc
    theta = TAU * theta_dot + theta
    theta_dot = theta_dot + TAU * thetaacc
    new = xp.stack([x, x_dot, theta, theta_dot], axis=-1)
    terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
    return new, terminated


class CartPole:
    """Functional JAX CartPole-v1: ``reset(key) -> (obs, state)``, ``step(key, state, a)``.

    ``state`` is ``(physics[4], t)``; ``step`` returns ``(obs, state, reward, terminated,
    truncated)``: terminated when the pole falls or the cart leaves the track, truncated at the
    500-step time limit otherwise.  No auto-reset: the rollout loop resets.
    """

    id = "CartPole-v1"
    obs_dim = OBS_DIM
    action_kind = "discrete"
    n_actions = N_ACTIONS
    action_low = action_high = None
    max_steps = MAX_STEPS
    reward_threshold = REWARD_THRESHOLD
    stepped = False

    def __init__(self, max_steps: int = MAX_STEPS):
        self.max_steps = int(max_steps)

    def reset(self, key):
        import jax
        import jax.numpy as jnp

        phys = jax.random.uniform(key, (4,), jnp.float32, -RESET_HIGH, RESET_HIGH)
        return phys, (phys, jnp.int32(0))

    def step(self, key, state, action):
        import jax.numpy as jnp

        phys, t = state
        phys, terminated = physics_step(jnp, phys, action)
        t = t + 1
        truncated = (t >= self.max_steps) & ~terminated
        return phys, (phys, t), jnp.float32(1.0), terminated, truncated
