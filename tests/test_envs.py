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
        obs, state, r, done = step(key, state, jnp.int32(a))
        ret += float(r)
        np.testing.assert_allclose(np.asarray(obs), states[k], rtol=1e-4, atol=2e-5)
        assert bool(done) == (k == len(actions) - 1), f"episode end differs at step {k + 1}"
    assert ret == horizon
    if policy == "random":
        assert term


def test_time_limit_truncates_at_500_steps():
    env = envs.make("CartPole-v1")
    obs, state = env.reset(jax.random.PRNGKey(3))
    step = jax.jit(env.step)
    for k in range(1, 501):
        obs, state, r, done = step(jax.random.PRNGKey(0), state, jnp.int32(balance(np.asarray(obs))))
        assert bool(done) == (k == 500), k
    x, _, theta, _ = np.asarray(obs)
    assert abs(x) < cartpole.X_THRESHOLD and abs(theta) < cartpole.THETA_THRESHOLD  # not terminated


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
    dones = []
    for k in range(5):
        obs, st, r, done = env.step(jax.random.PRNGKey(k), st, jnp.array([0.5]))
        assert np.isfinite(float(r))
        dones.append(bool(done))
    assert dones == [False] * 4 + [True]


def test_unknown_env_is_a_one_line_error():
    with pytest.raises(UserError, match=r"unknown env 'CartPole-v2' \(did you mean 'CartPole-v1'\?\); allowed: "):
        envs.make("CartPole-v2")
