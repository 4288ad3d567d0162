"""PPO-LSTM: GAE, the clipped loss and the tanh-Gaussian density against hand computations;
the fused and stepped collection agree; it solves CartPole-v1 at its cpu preset."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.infra import config as configlib
from rsrp_sim.backends.jax import ppo
from rsrp_sim.infra.errors import UserError
from rsrp_sim.protocols.cartpole import PROTOCOL


def test_gae_hand_computation():
    # gamma 0.9, lambda 0.8; the episode ends at step 1, so step 0 bootstraps from V(s1) and
    # step 1 from nothing; step 2 bootstraps from the value after the segment (2.0).
    r = jnp.array([1.0, 2.0, 3.0])[:, None]
    v = jnp.array([0.5, 1.0, 1.5])[:, None]
    d = jnp.array([False, True, False])[:, None]
    adv, ret = ppo.gae(r, v, d, jnp.array([2.0]), 0.9, 0.8)
    # t2: 3 + 0.9*2 - 1.5 = 3.3;  t1: 2 - 1 = 1.0;  t0: (1 + 0.9*1 - 0.5) + 0.9*0.8*1.0 = 2.12
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [2.12, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [2.62, 2.0, 4.8], rtol=1e-6)


def test_gae_lambda_one_is_monte_carlo_return():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    d = np.zeros((6, 3), bool)
    d[2, 1] = True
    last = rng.normal(size=3).astype(np.float32)
    _, ret = ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), jnp.asarray(last), 0.95, 1.0)
    expect = np.zeros((6, 3))
    g = last.astype(np.float64)
    for t in range(5, -1, -1):
        g = r[t] + 0.95 * g * (1 - d[t])
        expect[t] = g
    np.testing.assert_allclose(np.asarray(ret), expect, rtol=1e-5, atol=1e-5)


def test_clipped_surrogate_hand_computation():
    ratios = np.array([1.5, 0.5, 1.05])
    adv = jnp.array([1.0, 1.0, -2.0])
    old = jnp.array([-1.0, -0.3, -2.0])
    new = old + jnp.log(jnp.asarray(ratios))
    loss, frac = ppo.clipped_surrogate(new, old, adv, 0.2)
    # min(1.5*1, 1.2*1) = 1.2;  min(0.5*1, 0.8*1) = 0.5;  min(1.05*-2, 1.05*-2) = -2.1
    assert float(loss) == pytest.approx(-(1.2 + 0.5 - 2.1) / 3, rel=1e-6)
    assert float(frac) == pytest.approx(2 / 3)
    grad = jax.grad(lambda n: ppo.clipped_surrogate(n, old, adv, 0.2)[0])(new)
    # clipped term has no gradient; the others give -ratio*A/3
    np.testing.assert_allclose(np.asarray(grad), [0.0, -0.5 / 3, 2.1 / 3], rtol=1e-5, atol=1e-7)


def test_tanh_gaussian_logp_is_change_of_variables():
    from scipy.stats import norm

    u = np.array([[-1.3, 0.2], [0.7, 2.5]], np.float32)
    mu = np.array([[0.1, -0.4], [0.3, 1.0]], np.float32)
    std = np.array([[0.5, 1.2], [0.9, 0.3]], np.float32)
    got = np.asarray(ppo.tanh_gaussian_logp(jnp.asarray(u), jnp.asarray(mu), jnp.asarray(std)))
    u64 = u.astype(np.float64)
    expect = (norm.logpdf(u64, mu, std) - np.log(1 - np.tanh(u64) ** 2)).sum(-1)
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="minibatches=3 must divide n_envs=8"):
        PROTOCOL.build_config("ppo-lstm", "jax", "cpu", {"minibatches": 3})
    with pytest.raises(UserError, match="value_loss"):
        PROTOCOL.build_config("ppo-lstm", "jax", "cpu", {"value_loss": "l1"})


def _run(monkeypatch, stepped):
    from rsrp_sim.envs.cartpole import CartPole

    monkeypatch.setattr(CartPole, "stepped", stepped, raising=False)
    cfg = configlib.build(ppo.PPOConfig, ("test", dict(n_envs=4, horizon=8, updates_per_iteration=2, epochs=2,
                                                       minibatches=2, obs_norm="running", reward_norm=True)))
    m = ppo.PPOLSTM(cfg, 3)
    s = m.init_state()
    recs = []
    for _ in range(2):
        s, r = m.step(s)
        r.pop("env_steps_per_s")
        recs.append(r)
    return s, recs


def test_stepped_collection_equals_fused(monkeypatch):
    a, ra = _run(monkeypatch, False)
    b, rb = _run(monkeypatch, True)
    assert ra == rb
    for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert all(math.isfinite(v) for v in ra[-1].values())


@pytest.mark.slow
def test_ppo_lstm_solves_cartpole(tmp_path):
    rd, s = PROTOCOL.run("ppo-lstm", "jax", "cpu", seed=0, out=tmp_path / "run", progress=False)
    assert s["status"] == "completed"
    assert s["best_eval_score"] >= 475, s
    rows = rd.read_metrics()
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["env_steps"] > 0 and r["wall_s"] > 0 for r in rows)
    assert rows[0]["eval_score"] < 475  # it learned, rather than starting solved


@pytest.mark.parametrize("truncation", ["bootstrap", "terminal"])
def test_time_limit_bootstraps_the_value_unless_the_published_terminal_option(truncation):
    """A step cut by the time limit adds gamma * V(s_final) to its reward (bootstrap); a terminal step,
    or any step with truncation=terminal, adds nothing."""
    from rsrp_sim.backends.jax.envloop import Transition

    cfg = configlib.build(ppo.PPOConfig, ("test", dict(n_envs=3, truncation=truncation, gamma=0.9)))
    m = ppo.PPOLSTM(cfg, 0)
    s = m.init_state()
    final = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    step = Transition(reward=jnp.ones(3), terminated=jnp.array([True, False, False]),
                      truncated=jnp.array([False, True, False]), final_obs=final)
    carry = (jnp.full((3, cfg.lstm), 0.1), jnp.full((3, cfg.lstm), -0.2))
    _, rec = m._post(s["params"], s, carry, {}, step)
    _, _, v = m.net.apply(s["params"], carry, final, jnp.zeros(3, bool))
    expected = [0.0, 0.9 * float(v[1]), 0.0] if truncation == "bootstrap" else [0.0, 0.0, 0.0]
    np.testing.assert_allclose(np.asarray(rec["bootstrap"]), expected, rtol=1e-6)
    assert abs(float(v[1])) > 1e-4  # a real value, so the bootstrap case is not trivially zero
    np.testing.assert_array_equal(np.asarray(rec["done"]), [True, True, False])  # both end the episode
