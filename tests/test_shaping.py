"""Reward transforms (rsrp_sim.shaping) on hand-made inputs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.core import shaping


def test_centered_rank_distinct_values():
    w, _ = shaping.shape(np.array([3.0, 1.0, 5.0, 2.0, 4.0]))
    np.testing.assert_allclose(w, [0.0, -0.5, 0.5, -0.25, 0.25])


def test_centered_rank_ties_average_by_default_and_index_as_option():
    f = np.array([500.0, 20.0, 500.0, 500.0, 7.0])
    w, _ = shaping.shape(f)
    # ranks: 7 -> 0, 20 -> 1, three 500s share ranks 2, 3, 4 -> 3
    np.testing.assert_allclose(w, np.array([3, 1, 3, 3, 0]) / 4 - 0.5)
    w_idx, _ = shaping.shape(f, ties="index")
    np.testing.assert_allclose(w_idx, np.array([2, 1, 3, 4, 0]) / 4 - 0.5)
    assert w.sum() == pytest.approx(0.0) and w_idx.sum() == pytest.approx(0.0)


def test_centered_rank_unit_variance_and_chunks():
    f = np.arange(8.0)
    w, _ = shaping.shape(f, unit_variance=True)
    np.testing.assert_allclose(w, (np.arange(8) / 7 - 0.5) * math.sqrt(12), rtol=1e-6)
    w, _ = shaping.shape(np.array([5.0, 1.0, 9.0, 30.0, 10.0, 20.0]), chunks=2)
    np.testing.assert_allclose(w, [0.0, -0.5, 0.5, 0.5, -0.5, 0.0])  # each chunk of 3 ranked alone
    with pytest.raises(ValueError, match="not divisible into 4"):
        shaping.shape(np.arange(6.0), chunks=4)


def test_raw_is_identity():
    f = np.array([1.5, -2.0, 7.0])
    w, st = shaping.shape(f, "raw")
    np.testing.assert_array_equal(w, f.astype(np.float32))


def test_baseline_previous_mean_and_first_generation_zero():
    w1, st = shaping.shape(np.array([1.0, 3.0]), "baseline")
    np.testing.assert_allclose(w1, [1.0, 3.0])  # b = 0 at first
    w2, st = shaping.shape(np.array([4.0, 0.0]), "baseline", st)
    np.testing.assert_allclose(w2, [2.0, -2.0])  # b = mean(1, 3) = 2
    w3, st = shaping.shape(np.array([0.0]), "baseline", st)
    np.testing.assert_allclose(w3, [-2.0])  # b = mean(4, 0) = 2


def test_baseline_ema():
    st = shaping.init_state()
    _, st = shaping.shape(np.array([10.0]), "baseline", st, ema=0.5)  # first: b <- 10
    assert st["baseline"] == pytest.approx(10.0)
    w, st = shaping.shape(np.array([0.0, 4.0]), "baseline", st, ema=0.5)
    np.testing.assert_allclose(w, [-10.0, -6.0])
    assert st["baseline"] == pytest.approx(0.5 * 10 + 0.5 * 2)


def test_sigmoid_of_baselined_reward():
    _, st = shaping.shape(np.array([1.0, 1.0]), "sigmoid")  # sets b = 1
    w, _ = shaping.shape(np.array([1.0, 1.1, 0.8]), "sigmoid", st)
    np.testing.assert_allclose(w, 1 / (1 + np.exp(-10 * np.array([0.0, 0.1, -0.2]))), rtol=1e-6)


def test_errors_on_unknown_transform_and_nan():
    with pytest.raises(ValueError, match="unknown reward transform 'rank'; allowed: centered_rank, raw"):
        shaping.shape(np.ones(3), "rank")
    with pytest.raises(ValueError, match="non-finite reward nan for population member 1"):
        shaping.shape(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="unknown ties"):
        shaping.shape(np.ones(3), ties="random")


@pytest.mark.parametrize("transform", shaping.TRANSFORMS)
def test_jax_path_matches_numpy_under_jit(transform):
    f = np.array([3.0, 3.0, -1.0, 8.0, 0.5, 3.0], np.float32)
    st = {"baseline": 1.25, "seen": 1.0}
    ref, ref_st = shaping.shape(f, transform, st)
    fn = jax.jit(lambda x, s: shaping.shape(x, transform, s))
    got, got_st = fn(jnp.asarray(f), {k: jnp.float32(v) for k, v in st.items()})
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6, atol=1e-7)
    for k in ref_st:
        assert float(got_st[k]) == pytest.approx(ref_st[k])
