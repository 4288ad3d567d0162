"""The environment interface every adapter implements, and its conformance check.

An environment is a functional object (gymnasium's conventions, JAX's style)::

    id: str                      the id it was made from ("CartPole-v1", "Acrobot-v1", "humanoid")
    obs_dim: int                 length of the (flat, float32) observation
    action_kind: str             "discrete" (n_actions actions, int32) or "continuous" (n_actions floats
                                 in [action_low, action_high])
    max_steps: int               the time limit of an episode
    reward_threshold: float|None the return at which the task counts as solved (gymnasium's)
    stepped: bool                compiling the step is expensive: keep it in its own kernel (Brax)
    reset(key) -> (obs, state)
    step(key, state, action) -> (obs, state, reward, terminated, truncated)

``terminated``: the episode reached a terminal state (the pole fell); ``truncated``: it was cut by
the time limit without being terminal (so a value function may bootstrap).  They are never both
true.  There is no auto-reset: the rollout loops reset (:mod:`rsrp_sim.backends.jax.envloop`).
:func:`check_env` checks an adapter against all of this, like gymnasium's ``check_env``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ACTION_KINDS", "EnvCheckError", "check_env", "gymnasium_threshold"]

ACTION_KINDS = ("discrete", "continuous")


class EnvCheckError(AssertionError):
    """An adapter does not follow the environment interface (the message says where)."""


def gymnasium_threshold(env_id: str) -> float | None:
    """gymnasium's ``reward_threshold`` for ``env_id`` (None when gymnasium has none)."""
    try:
        import gymnasium

        spec = gymnasium.spec(env_id)
    except Exception:  # not a gymnasium id, or gymnasium unavailable
        return None
    return None if spec.reward_threshold is None else float(spec.reward_threshold)


def _fail(env: Any, what: str) -> None:
    raise EnvCheckError(f"environment {getattr(env, 'id', type(env).__name__)!r}: {what}")


def _check_attributes(env):
    for name, kind in (("id", str), ("obs_dim", int), ("action_kind", str), ("n_actions", int), ("max_steps", int)):
        value = getattr(env, name, None)
        if not isinstance(value, kind) or isinstance(value, bool):
            _fail(env, f"attribute {name} must be {kind.__name__}, got {value!r}")
    if env.obs_dim < 1 or env.n_actions < 1 or env.max_steps < 1:
        _fail(env, f"obs_dim, n_actions and max_steps must be >= 1, "
                   f"got {env.obs_dim}, {env.n_actions}, {env.max_steps}")
    if env.action_kind not in ACTION_KINDS:
        _fail(env, f"action_kind must be one of {ACTION_KINDS}, got {env.action_kind!r}")
    thr = getattr(env, "reward_threshold", "missing")
    if thr == "missing" or not (thr is None or isinstance(thr, float)):
        _fail(env, f"reward_threshold must be a float or None, got {thr!r}")
    if not isinstance(getattr(env, "stepped", False), bool):
        _fail(env, "stepped must be a bool")
    if env.action_kind == "continuous":
        low, high = (np.asarray(getattr(env, a)) for a in ("action_low", "action_high"))
        if low.shape != (env.n_actions,) or high.shape != (env.n_actions,) or not np.all(low < high):
            _fail(env, f"action_low/action_high must be ({env.n_actions},) arrays with low < high")


def _check_obs(env: Any, obs: Any, where: str) -> None:
    shape, dtype = np.shape(obs), getattr(obs, "dtype", None)
    if shape != (env.obs_dim,) or dtype != np.float32:
        _fail(env, f"{where} must return a float32 observation of shape ({env.obs_dim},), got {dtype} {shape}")
    if not np.all(np.isfinite(np.asarray(obs))):
        _fail(env, f"{where} returned a non-finite observation")


def _action(env, rng):
    import jax.numpy as jnp

    if env.action_kind == "discrete":
        return jnp.int32(rng.integers(env.n_actions))
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    return jnp.asarray(rng.uniform(low, high), jnp.float32)


def check_env(env: Any, seed: int = 0, episode_steps: int | None = None, policy: Any = None) -> dict[str, Any]:
    """Check ``env`` against the interface; raise :class:`EnvCheckError` naming the first problem.

    Checks the attributes, that ``reset`` is a pure function of its key and ``jit``/``vmap``-able,
    that ``step`` returns ``(obs, state, reward, terminated, truncated)`` with the right shapes and
    types under ``jit``, and, over one episode (at most ``episode_steps`` steps, default
    ``max_steps``) of ``policy(obs) -> action`` (default: uniformly random actions), that
    ``truncated`` comes exactly at the time limit and never together with ``terminated``.
    Returns what it saw: ``{"steps", "terminated", "truncated"}``.
    """
    import jax

    _check_attributes(env)
    key = jax.random.PRNGKey(seed)
    obs, state = env.reset(key)
    _check_obs(env, obs, "reset(key)")
    obs2, _ = env.reset(key)
    if not np.array_equal(np.asarray(obs), np.asarray(obs2)):
        _fail(env, "reset(key) must be a pure function of its key (two calls gave different observations)")
    keys = jax.random.split(key, 3)
    batch = jax.vmap(env.reset)(keys)[0]
    if np.shape(batch) != (3, env.obs_dim):
        _fail(env, f"jax.vmap(reset) must give observations of shape (3, {env.obs_dim}), got {np.shape(batch)}")
    step = jax.jit(env.step)
    rng = np.random.default_rng(seed)
    limit = env.max_steps if episode_steps is None else min(episode_steps, env.max_steps)
    seen = {"steps": 0, "terminated": False, "truncated": False}
    for t in range(1, limit + 1):
        action = _action(env, rng) if policy is None else policy(obs)
        out = step(jax.random.fold_in(key, t), state, action)
        if not isinstance(out, tuple) or len(out) != 5:
            n = len(out) if isinstance(out, tuple) else type(out).__name__
            _fail(env, f"step must return (obs, state, reward, terminated, truncated), got {n} values")
        obs, state, reward, terminated, truncated = out
        _check_obs(env, obs, "step")
        for name, v, dt in (("reward", reward, np.float32), ("terminated", terminated, np.bool_),
                            ("truncated", truncated, np.bool_)):
            if np.shape(v) != () or getattr(v, "dtype", None) != dt:
                _fail(env, f"step's {name} must be a {np.dtype(dt).name} scalar, got "
                           f"{getattr(v, 'dtype', type(v).__name__)} {np.shape(v)}")
        term, trunc = bool(terminated), bool(truncated)
        if term and trunc:
            _fail(env, f"step {t}: terminated and truncated are both true (truncated means cut by the time limit "
                       f"without a terminal state)")
        if trunc and t != env.max_steps:
            _fail(env, f"step {t}: truncated before the time limit of {env.max_steps} steps")
        if not term and t == env.max_steps and not trunc:
            _fail(env, f"step {t} reached the time limit of {env.max_steps} steps but truncated is false")
        seen.update(steps=t, terminated=term, truncated=trunc)
        if term or trunc:
            break
    return seen
