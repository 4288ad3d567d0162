"""The JAX CartPole-v1 against gymnasium's, and the environment adapters."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim import envs
from rsrp_sim.envs import cartpole
from rsrp_sim.infra.errors import UserError


def gym_rollout(init, policy, max_steps=600):
    """States, actions and the end of one gymnasium CartPole-v1 episode from state ``init``."""
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.asarray(init, np.float64)
    obs = np.asarray(init, np.float32)
    states, actions = [], []
    for _ in range(max_steps):
        a = policy(obs)
        obs, r, term, trunc, _ = env.step(a)
        assert r == 1.0
        states.append(np.array(env.unwrapped.state, np.float64))
        actions.append(a)
        if term or trunc:
            return np.array(states), np.array(actions), bool(term), bool(trunc)
    raise AssertionError("episode did not end")


def balance(obs):
    return int(obs[2] + 0.5 * obs[3] + 0.05 * obs[0] + 0.2 * obs[1] > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_physics_is_gymnasium_exactly(seed):
    rng = np.random.default_rng(seed)
    init = rng.uniform(-0.05, 0.05, 4)
    states, actions, term, _ = gym_rollout(init, lambda o: int(rng.integers(2)))
    s = init
    for k, a in enumerate(actions):
        s, t = cartpole.physics_step(np, s, np.int64(a))
        np.testing.assert_array_equal(s, states[k])  # float64, bit for bit
        assert bool(t) == (term and k == len(actions) - 1)


@pytest.mark.parametrize("policy,seed", [("random", 11), ("random", 12), ("random", 13), ("balance", 11)])
def test_jax_cartpole_follows_gymnasium_trajectory(policy, seed):
    env = envs.make("CartPole-v1")
    obs, state = env.reset(jax.random.PRNGKey(seed))
    init = np.asarray(obs)
    assert np.all(np.abs(init) <= 0.05) and init.dtype == np.float32
    rng = np.random.default_rng(seed)
    pol = balance if policy == "balance" else (lambda o: int(rng.integers(2)))
    states, actions, term, trunc = gym_rollout(init, pol)
    # Replaying gymnasium's actions open-loop is chaotic near the balance point: float32 vs float64
    # rounding grows ~e^(0.08 k), so the balancing episode is compared over its first 60 steps.
    horizon = len(actions) if policy == "random" else 60
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(0)
    ret = 0.0
    for k, a in enumerate(actions[:horizon]):
        obs, state, r, terminated, truncated = step(key, state, jnp.int32(a))
        ret += float(r)
        np.testing.assert_allclose(np.asarray(obs), states[k], rtol=1e-4, atol=2e-5)
        last = k == len(actions) - 1
        assert bool(terminated) == (last and term), f"termination differs at step {k + 1}"
        assert bool(truncated) == (last and trunc and not term), f"truncation differs at step {k + 1}"
    assert ret == horizon
    if policy == "random":
        assert term


def test_time_limit_is_reported_as_truncated_not_terminated_at_500_steps():
    env = envs.make("CartPole-v1")
    obs, state = env.reset(jax.random.PRNGKey(3))
    step = jax.jit(env.step)
    for k in range(1, 501):
        obs, state, r, terminated, truncated = step(jax.random.PRNGKey(0), state, jnp.int32(balance(np.asarray(obs))))
        assert not bool(terminated), k
        assert bool(truncated) == (k == 500), k
    x, _, theta, _ = np.asarray(obs)
    assert abs(x) < cartpole.X_THRESHOLD and abs(theta) < cartpole.THETA_THRESHOLD  # not terminated
    # gymnasium says the same of the same episode: truncated by its TimeLimit, not terminated
    gym_env = gym.make("CartPole-v1")
    o, _ = gym_env.reset(seed=0)
    gym_env.unwrapped.state = np.asarray(env.reset(jax.random.PRNGKey(3))[0], np.float64)
    o = np.asarray(gym_env.unwrapped.state, np.float32)
    for k in range(1, 501):
        o, _, term, trunc, _ = gym_env.step(balance(o))
        if term or trunc:
            break
    assert (k, term, trunc) == (500, False, True)


def test_reset_distribution():
    env = envs.make("CartPole-v1")
    obs, _ = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4000))
    obs = np.asarray(obs)
    assert obs.min() >= -0.05 and obs.max() <= 0.05
    np.testing.assert_allclose(obs.mean(0), 0.0, atol=0.003)
    np.testing.assert_allclose(obs.std(0), 0.1 / np.sqrt(12), rtol=0.05)


def test_action_decoding():
    cp = envs.make("CartPole-v1")
    assert envs.output_dim(cp) == 1
    np.testing.assert_array_equal(envs.decode_action(np, cp, np.array([[0.3], [-0.1], [0.0]])), [1, 0, 0])
    acro = envs.make("Acrobot-v1")
    assert acro.action_kind == "discrete" and envs.output_dim(acro) == 3
    np.testing.assert_array_equal(envs.decode_action(np, acro, np.array([[0.1, 0.5, -1.0]])), [1])
    pend = envs.make("Pendulum-v1")
    assert pend.action_kind == "continuous" and envs.output_dim(pend) == 1
    np.testing.assert_allclose(envs.decode_action(np, pend, np.array([[3.0], [-0.25], [0.5]])),
                               [[2.0], [-0.5], [1.0]])  # clip to [-1, 1], scaled to [-2, 2]


def test_gymnax_adapter_steps_without_auto_reset():
    env = envs.make("Pendulum-v1", max_steps=5)
    obs, st = env.reset(jax.random.PRNGKey(0))
    assert obs.shape == (3,)
    ends = []
    for k in range(5):
        obs, st, r, terminated, truncated = env.step(jax.random.PRNGKey(k), st, jnp.array([0.5]))
        assert np.isfinite(float(r))
        ends.append((bool(terminated), bool(truncated)))
    assert ends == [(False, False)] * 4 + [(False, True)]  # Pendulum never terminates; cut by the limit


def test_unknown_env_is_a_one_line_error():
    with pytest.raises(UserError, match=r"unknown env 'CartPole-v2' \(did you mean 'CartPole-v1'\?\); allowed: "):
        envs.make("CartPole-v2")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0",
                                    "MountainCarContinuous-v0"])
def test_every_adapter_passes_the_conformance_check(env_id):
    env = envs.make(env_id, max_steps=40)
    seen = envs.check_env(env)
    assert 1 <= seen["steps"] <= 40
    assert seen["terminated"] or seen["truncated"]
    assert env.reward_threshold == envs.gymnasium_threshold(env_id)


def test_reward_threshold_is_gymnasiums():
    assert envs.make("CartPole-v1").reward_threshold == 475.0
    assert envs.reward_threshold("Acrobot-v1") == -100.0
    assert envs.reward_threshold("Pendulum-v1") is None and envs.reward_threshold(None) is None


class _Broken:
    """CartPole with one thing wrong (``what``)."""

    def __init__(self, what):
        self.inner, self.what = envs.make("CartPole-v1", max_steps=20), what
        for name in ("id", "obs_dim", "action_kind", "n_actions", "action_low", "action_high", "max_steps",
                     "reward_threshold", "stepped"):
            setattr(self, name, getattr(self.inner, name))
        if what == "attribute":
            self.obs_dim = 4.0

    def reset(self, key):
        obs, st = self.inner.reset(key)
        if self.what == "impure_reset":
            obs = obs + jax.random.uniform(jax.random.PRNGKey(np.random.randint(1 << 30)), obs.shape)
        return obs, st

    def step(self, key, state, action):
        obs, st, r, term, trunc = self.inner.step(key, state, action)
        if self.what == "four_values":
            return obs, st, r, term | trunc
        if self.what == "no_truncation":  # the time limit not reported at all
            return obs, st, r, term, jnp.zeros((), bool)
        if self.what == "both_flags":  # the time limit reported as a termination too
            return obs, st, r, term | trunc, trunc
        if self.what == "float64_obs":
            return obs.astype(jnp.float16), st, r, term, trunc
        return obs, st, r, term, trunc


@pytest.mark.parametrize("what,message", [
    ("attribute", "attribute obs_dim must be int"),
    ("impure_reset", "reset\\(key\\) must be a pure function of its key"),
    ("four_values", "step must return \\(obs, state, reward, terminated, truncated\\), got 4 values"),
    ("no_truncation", "reached the time limit of 20 steps but truncated is false"),
    ("both_flags", "step 20: terminated and truncated are both true"),
    ("float64_obs", "step must return a float32 observation"),
])
def test_conformance_check_names_what_a_broken_adapter_gets_wrong(what, message):
    env = _Broken(what)
    with pytest.raises(envs.EnvCheckError, match=message):
        # a balancing policy keeps CartPole up, so the episode reaches the 20-step limit
        envs.check_env(env, seed=3, policy=lambda obs: jnp.int32(balance(np.asarray(obs))))


def test_conformance_check_sees_truncation_at_the_limit_with_a_balancing_policy():
    seen = envs.check_env(envs.make("CartPole-v1", max_steps=60), seed=3,
                          policy=lambda obs: jnp.int32(balance(np.asarray(obs))))
    assert seen == {"steps": 60, "terminated": False, "truncated": True}
