"""The RSRP estimator (rsrp_sim.rule): exactness, convergence, NumPy/JAX agreement."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.core import rule, shaping


def quadratic_reward(z):
    """A reward with interactions between synapses (so the gradient is not separable)."""
    w = np.array([1.0, -2.0, 0.5, 1.5])
    return float(w @ z + 2.0 * z[0] * z[1] - 1.5 * z[2] * z[3])


def test_exact_gradient_matches_finite_differences_of_the_objective():
    # E[R (z - p)] = p (1 - p) dJ/dp  (natural gradient = Fisher^-1 * gradient)
    p = np.array([0.2, 0.5, 0.7, 0.9])
    g = rule.exact_natural_gradient(quadratic_reward, p)

    def J(q):
        total = 0.0
        for bits in range(16):
            z = np.array([(bits >> i) & 1 for i in range(4)], float)
            total += np.prod(np.where(z > 0, q, 1 - q)) * quadratic_reward(z)
        return total

    h = 1e-6
    dJ = np.array([(J(p + h * e) - J(p - h * e)) / (2 * h) for e in np.eye(4)])
    np.testing.assert_allclose(g, p * (1 - p) * dJ, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n", [4_000, 64_000, 1_000_000])
def test_monte_carlo_estimate_converges_to_exact_natural_gradient(n):
    p = np.array([0.2, 0.5, 0.7, 0.9], np.float32)
    exact = rule.exact_natural_gradient(quadratic_reward, p)
    rng = np.random.default_rng(1)
    z = rule.sample_release(rng, p, n=n)
    r = z.astype(np.float64) @ np.array([1.0, -2.0, 0.5, 1.5]) + 2.0 * z[:, 0] * z[:, 1] - 1.5 * z[:, 2] * z[:, 3]
    g = rule.natural_gradient(r.astype(np.float32), z, p)
    # standard error of mean(R (z - p)) per synapse, estimated from the samples themselves
    se = (r[:, None] * (z - p)).std(0) / np.sqrt(n)
    assert np.all(np.abs(g - exact) < 5 * se), (g, exact, se)
    assert np.all(se < 0.06 / np.sqrt(n / 4000))  # the error bound shrinks like 1/sqrt(N)


def test_estimator_equals_direct_formula_and_chunk_sums():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, (5, 3)).astype(np.float32)
    z = rule.sample_release(rng, p, n=40)
    r = rng.normal(size=40).astype(np.float32)
    direct = np.mean(r[:, None, None] * (z - p), axis=0)
    np.testing.assert_allclose(rule.natural_gradient(r, z, p), direct, rtol=1e-5, atol=1e-6)
    # chunked: sums over 4 chunks of 10 give exactly the same estimate
    parts = [rule.natural_gradient_sum(r[i:i + 10], z[i:i + 10], p) for i in range(0, 40, 10)]
    srz = sum(a for a, _ in parts)
    sr = sum(b for _, b in parts)
    np.testing.assert_allclose(rule.finish_natural_gradient(srz, sr, p, 40), direct, rtol=1e-5, atol=1e-6)


def test_numpy_and_jax_agree_also_under_jit():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.9, (7,)).astype(np.float32)
    z = rule.sample_release(rng, p, n=25)
    r = rng.normal(size=25).astype(np.float32)
    g_np = rule.natural_gradient(r, z, p)
    g_jax = jax.jit(rule.natural_gradient)(jnp.asarray(r), jnp.asarray(z), jnp.asarray(p))
    assert isinstance(g_np, np.ndarray) and isinstance(g_jax, jax.Array)
    np.testing.assert_allclose(np.asarray(g_jax), g_np, rtol=1e-5, atol=1e-6)
    zj = rule.sample_release(jax.random.PRNGKey(0), jnp.asarray(p), n=20000)
    np.testing.assert_allclose(np.asarray(zj.mean(0)), p, atol=0.015)  # Bernoulli(p) in JAX too


def test_clip_and_deterministic_mask():
    p = np.array([-1.0, 0.0, 0.3, 0.5, 0.500001, 1.0, 3.0])
    np.testing.assert_allclose(rule.clip_p(p), [1e-3, 1e-3, 0.3, 0.5, 0.500001, 0.999, 0.999])
    np.testing.assert_array_equal(rule.deterministic_mask(p), [False, False, False, False, True, True, True])
    np.testing.assert_allclose(np.asarray(rule.clip_p(jnp.asarray(p), eps=0.1)), np.clip(p, 0.1, 0.9), rtol=1e-6)


def test_apply_update_ascends_and_clips():
    opt = rule.make_optimizer("sgd", lr=1.0)
    p = np.array([0.5, 0.5, 0.998], np.float32)
    g = np.array([0.1, -0.2, 0.5], np.float32)
    new, _ = rule.apply_update(p, g, opt, opt.init(p))
    np.testing.assert_allclose(np.asarray(new), [0.6, 0.3, 0.999], rtol=1e-6)  # ascent, clipped at 1 - eps
    adam = rule.make_optimizer("adam", lr=0.15)
    new, _ = rule.apply_update(p, g, adam, adam.init(p))
    np.testing.assert_allclose(np.asarray(new), [0.65, 0.35, 0.999], rtol=1e-4)  # first Adam step = lr*sign(g)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; allowed: adam"):
        rule.make_optimizer("rmsprop", 0.1)


def test_spike_mode_eligibility_and_gradient():
    e, n = rule.spike_eligibility(np.array([1, 0, 1, 1]), 0.25)
    assert n == 4 and e == pytest.approx(3 - 4 * 0.25)
    shaped = np.array([1.0, -1.0], np.float32)
    elig = np.array([[2.0, 0.0], [-1.0, 0.5]], np.float32)
    counts = np.array([[4, 0], [2, 1]], np.float32)
    # mean_k R_k e_k / max(n_k, 1)
    expected = (1.0 * np.array([0.5, 0.0]) - 1.0 * np.array([-0.5, 0.5])) / 2
    np.testing.assert_allclose(rule.spike_gradient(shaped, elig, counts), expected)


@pytest.mark.parametrize("transform", ["centered_rank", "baseline"])
def test_toy_reward_drives_p_to_target_pattern(transform):
    target = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1], bool)
    rng = np.random.default_rng(5)
    p = rule.init_p(target.size)
    opt = rule.make_optimizer("adam", lr=0.1)
    opt_state, sh_state = opt.init(p), shaping.init_state()
    for _ in range(150):
        z = rule.sample_release(rng, p, n=64)
        reward = (z == target).sum(1).astype(np.float32)  # number of synapses in the target state
        shaped, sh_state = shaping.shape(reward, transform, sh_state)
        p, opt_state = rule.apply_update(p, rule.natural_gradient(shaped, z, p), opt, opt_state)
    p = np.asarray(p)
    np.testing.assert_array_equal(rule.deterministic_mask(p), target)
    assert np.all(np.where(target, p, 1 - p) > 0.95)
