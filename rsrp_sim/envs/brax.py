"""Brax locomotion tasks (humanoid, hopper, walker2d, ant, ...) behind the common env interface.

``make("humanoid")`` or ``make("humanoid:mjx")`` (``name[:pipeline]``) gives an adapter with
``obs_dim``, ``action_kind='continuous'``, ``action_low/high`` (-1, 1: Brax scales actions to each
actuator's range itself), ``max_steps`` (1000 by default), ``reset(key)`` and
``step(key, state, action) -> (obs, state, reward, terminated, truncated)`` without auto-reset:
``terminated`` is the task's own termination (e.g. the humanoid's torso leaving 1.0-2.0 m),
``truncated`` the step limit.

The default pipeline is ``spring``: Brax's fastest (on CPU about 3x ``positional`` and 8x
``generalized`` for the humanoid, measured here) and the one closest to the impulse/spring engine of
Brax v1 that the published runs used (``brax<0.9``).  ``generalized``, ``positional`` and ``mjx`` can be
chosen with the suffix.  Note the observation differs from Brax v1's 299-dim humanoid: 244 dims here.

Compiling a Brax step is expensive (tens of seconds on CPU), so the adapter sets ``stepped = True``:
rollouts keep the environment in its own compiled kernel, shared by every method and by training
and evaluation (see :mod:`rsrp_sim.backends.jax.envloop`).  Adapters are memoised per
``(name, pipeline, max_steps)`` so that kernel is compiled once per process and batch size.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from ..infra.errors import UserError, unknown

PIPELINES = ("spring", "positional", "generalized", "mjx")
DEFAULT_PIPELINE = "spring"
DEFAULT_MAX_STEPS = 1000
INSTALL_HINT = "pip install -c constraints.txt -e '.[rl]'  (brax 0.14.2, mujoco/mujoco-mjx 3.17.0)"

_CACHE: dict = {}


def _import_brax():
    try:
        # mujoco.mjx prints "Failed to import warp" on stdout when the optional warp is absent
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="JAXopt is no longer maintained", category=DeprecationWarning)
            from brax import envs
    except Exception as e:  # ImportError, or a broken mujoco install
        raise UserError(f"Brax environments need brax ({type(e).__name__}: {e}); install with {INSTALL_HINT}") \
            from None
    return envs


def brax_names() -> list[str]:
    """Task names Brax offers (empty when Brax is not installed)."""
    try:
        envs = _import_brax()
    except UserError:
        return []
    return sorted(envs._envs)


#: Brax 0.14's tasks (known without importing Brax, so a missing install gets the right error)
KNOWN_TASKS = ("ant", "fast", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
               "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d")


def is_brax_id(env_id: str) -> bool:
    """Whether ``env_id`` names a Brax task: ``name`` or ``name:pipeline``."""
    return ":" in env_id or env_id in KNOWN_TASKS


def make(env_id: str, max_steps: int | None = None) -> BraxEnv:
    name, _, pipeline = env_id.partition(":")
    pipeline = pipeline or DEFAULT_PIPELINE
    if pipeline not in PIPELINES:
        raise unknown(f"Brax pipeline in env {env_id!r}", pipeline, PIPELINES)
    names = sorted(_import_brax()._envs)
    if name not in names:
        raise unknown("Brax env", name, names)
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else int(max_steps)
    key = (name, pipeline, max_steps)
    if key not in _CACHE:
        _CACHE[key] = BraxEnv(name, pipeline, max_steps)
    return _CACHE[key]


class BraxEnv:
    """A Brax ``PipelineEnv`` as ``reset(key) / step(key, state, action)`` with a step limit."""

    action_kind = "continuous"
    stepped = True  # compile the environment once, in its own kernel
    reward_threshold = None

    def __init__(self, name: str, pipeline: str = DEFAULT_PIPELINE, max_steps: int = DEFAULT_MAX_STEPS):
        envs = _import_brax()
        self.name, self.pipeline, self.max_steps = name, pipeline, int(max_steps)
        self.id = name if pipeline == DEFAULT_PIPELINE else f"{name}:{pipeline}"
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # "Brax System, pipelines and environments are not actively being maintained" (see README)
            warnings.filterwarnings("ignore", message="Brax System", category=UserWarning)
            self.env = envs.get_environment(name, backend=pipeline)
        size = self.env.observation_size
        if not isinstance(size, int):
            raise UserError(f"Brax env {name!r} has dict observations, which are not supported")
        self.obs_dim = int(size)
        self.n_actions = int(self.env.action_size)
        self.action_low = -np.ones(self.n_actions, np.float32)
        self.action_high = np.ones(self.n_actions, np.float32)

    def reset(self, key):
        import jax.numpy as jnp

        s = self.env.reset(key)
        return jnp.asarray(s.obs, jnp.float32), (s, jnp.int32(0))

    def step(self, key, state, action):
        import jax.numpy as jnp

        s, t = state
        s = self.env.step(s, action)
        t = t + 1
        terminated = s.done > 0
        truncated = (t >= self.max_steps) & ~terminated
        return (jnp.asarray(s.obs, jnp.float32), (s, t), jnp.asarray(s.reward, jnp.float32), terminated,
                truncated)
