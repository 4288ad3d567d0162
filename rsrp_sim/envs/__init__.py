"""Environments: one functional interface (:mod:`.base`, with :func:`check_env`) and its adapters.

``CartPole-v1`` is our own (gymnasium-exact) implementation (:mod:`.cartpole`); lowercase ids are
Brax tasks (``humanoid``, ``ant``, ``hopper``, ``walker2d`` ..., optionally ``name:pipeline``;
:mod:`.brax`); any other id is looked up in gymnax (``Acrobot-v1``, ``Pendulum-v1`` ...;
:mod:`.gymnax`).  ``make(id)`` returns an adapter, ``list_envs()`` the accepted ids.
"""
from __future__ import annotations

from typing import Any

from ..infra.errors import UserError, unknown
from .base import EnvCheckError, check_env, gymnasium_threshold
from .cartpole import CartPole

__all__ = ["NATIVE", "register", "list_envs", "make", "reward_threshold", "output_dim", "decode_action",
           "scale_action", "check_env", "EnvCheckError", "CartPole"]

#: environments implemented here (and registered with :func:`register`): id -> factory
NATIVE = {"CartPole-v1": CartPole}


def register(env_id: str, factory: Any, replace: bool = False) -> None:
    """Make ``envs.make(env_id)`` build ``factory(max_steps=...)`` (an adapter of :mod:`.base`).

    For environments of one's own: ``register("Swing-v0", Swing)`` in a module or a script, then
    ``--env Swing-v0`` / ``env=Swing-v0`` wherever an environment id is accepted (the factory takes
    ``max_steps`` as a keyword, as :class:`~.cartpole.CartPole` does).  Check the adapter with
    :func:`check_env`.
    """
    if env_id in NATIVE and not replace:
        raise UserError(f"environment {env_id!r} is already registered")
    NATIVE[env_id] = factory


def list_envs() -> list[str]:
    """Environment ids accepted by ``--env``."""
    try:
        import gymnax

        extra = [e for e in gymnax.registered_envs if e not in NATIVE]
    except ImportError:  # pragma: no cover - gymnax is a core dependency
        extra = []
    from .brax import brax_names

    return list(NATIVE) + extra + brax_names()


def make(env_id: str, max_steps: int | None = None) -> Any:
    """An environment by id (registered ones such as our CartPole-v1, Brax tasks, else gymnax);
    unknown ids raise a UserError."""
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
    from .gymnax import GymnaxEnv

    return GymnaxEnv(env_id, max_steps)


def reward_threshold(env_id: str | None) -> float | None:
    """The return at which ``env_id`` counts as solved (gymnasium's ``reward_threshold``), or None."""
    if not env_id:
        return None
    if env_id in NATIVE:
        return getattr(NATIVE[env_id], "reward_threshold", None)
    from . import brax

    return None if brax.is_brax_id(env_id) else gymnasium_threshold(env_id)


def output_dim(env: Any) -> int:
    """Network outputs needed: 1 for two discrete actions (sign read-out), n for n > 2, dim for boxes."""
    if env.action_kind == "discrete" and env.n_actions == 2:
        return 1
    return env.n_actions


def decode_action(xp: Any, env: Any, y: Any) -> Any:
    """Network output ``y`` (..., output_dim) to an environment action (the read-outs of :ref:`science-models`)."""
    if env.action_kind == "discrete":
        if env.n_actions == 2:
            return (y[..., 0] > 0).astype(xp.int32)  # push right when positive
        return xp.argmax(y, axis=-1).astype(xp.int32)
    return scale_action(xp, env, y)


def scale_action(xp: Any, env: Any, y: Any) -> Any:
    """A continuous action in [-1, 1] (clipped) to the environment's box ``[action_low, action_high]``."""
    low, high = xp.asarray(env.action_low), xp.asarray(env.action_high)
    return low + (xp.clip(y, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
