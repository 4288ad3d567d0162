"""Population machinery of the JAX back-end: rollouts, chunking, normaliser, reset pools."""
import jax
import numpy as np
import pytest

from rsrp_sim.core import rule
from rsrp_sim.backends.jax.rl import ESConfig, ESTrainer, RSRPConfig, RSRPTrainer

TINY = dict(pop_size=34, eval_size=2, chunk_size=32, generations=2, model_overrides={"n_neurons": 32})


def one_train_chunk(m, state, key=1):
    mean, scale = m._norm_arrays(state["norm"])
    return jax.device_get(m._train_fn(state["params"], state["extra"], jax.random.PRNGKey(key), None, mean, scale))


def test_member_blocks_do_not_change_results():
    outs = []
    for block in (0, 8):
        m = ESTrainer(ESConfig(**TINY, member_block=block), seed=0)
        assert m.train_rollout.block == block
        outs.append(one_train_chunk(m, m.init_state()))
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])
    assert outs[0]["steps"] > 5 and outs[0]["episodes"].min() >= 1  # every member finished an episode


def test_fitness_is_mean_return_of_completed_episodes():
    m = RSRPTrainer(RSRPConfig(**TINY, max_episode_steps=30), seed=0)
    out = one_train_chunk(m, m.init_state())
    # every member completes >= 1 episode; its fitness is a mean of integer episode lengths <= 30
    assert out["episodes"].min() >= 1 and int(out["steps"]) <= 30
    assert np.all(out["fitness"] <= 30) and np.all(out["fitness"] >= 8)
    assert np.all(out["fitness"] * out["episodes"] <= int(out["steps"]) + 1e-3)


def test_chunked_generation_equals_single_chunk_statistics():
    """Two chunks of 16 and one of 32 see the same population size, gradient shape and finite updates."""
    res = []
    for chunk in (16, 32):
        m = RSRPTrainer(RSRPConfig(**{**TINY, "chunk_size": chunk}), seed=0)
        assert m.n_chunks == 32 // chunk
        s, rec = m.step(m.init_state())
        res.append((s, rec))
        assert np.all(np.isfinite(np.asarray(s["params"]["h"])))
        assert rec["train_score"] > 0 and rec["env_steps"] > 0
    # the gradient of a chunked population uses every member: p moved away from 0.5 everywhere it can
    for s, _ in res:
        moved = np.abs(np.asarray(s["params"]["in"]) - 0.5) > 1e-6
        assert moved.mean() > 0.9


def test_running_normaliser_matches_numpy_over_all_batches():
    m = RSRPTrainer(RSRPConfig(**TINY), seed=0)
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (n, 4)) for n in (50, 7, 300)]
    norm = m._base_state(jax.random.PRNGKey(0))["norm"]
    for b in batches:
        norm = m._update_norm(norm, len(b), b.sum(0), (b**2).sum(0))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(norm["mean"], allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm["var"], allx.var(0), rtol=1e-10)
    mean, scale = m._norm_arrays(norm)
    np.testing.assert_allclose(np.asarray(scale), allx.std(0), rtol=1e-5)


@pytest.mark.parametrize("pool,same", [("fixed", True), ("fresh", False)])
def test_reset_pool_fixed_reuses_initial_states(pool, same):
    m = RSRPTrainer(RSRPConfig(**TINY, reset_pool=pool), seed=0)
    k1 = m._pool_keys(jax.random.PRNGKey(1), 0, 32)
    k2 = m._pool_keys(jax.random.PRNGKey(2), 0, 32)
    if same:
        np.testing.assert_array_equal(np.asarray(k1), np.asarray(k2))
        s = m.init_state()
        a, b = one_train_chunk(m, s, key=1), one_train_chunk(m, s, key=1)
        np.testing.assert_array_equal(a["fitness"], b["fitness"])
    else:
        assert k1 is None and k2 is None


def test_reservoir_freezes_recurrent_mask_from_the_seed():
    a = RSRPTrainer(RSRPConfig(**TINY, reservoir=True), seed=0).init_state()
    b = RSRPTrainer(RSRPConfig(**TINY, reservoir=True), seed=0).init_state()
    c = RSRPTrainer(RSRPConfig(**TINY, reservoir=True), seed=1).init_state()
    assert set(a["params"]) == {"in", "out"} and a["extra"]["h"].shape == (32, 32)
    np.testing.assert_array_equal(np.asarray(a["extra"]["h"]), np.asarray(b["extra"]["h"]))
    assert (np.asarray(a["extra"]["h"]) != np.asarray(c["extra"]["h"])).mean() > 0.3
    assert abs(float(np.asarray(a["extra"]["h"]).mean()) - 0.5) < 0.1
    m = RSRPTrainer(RSRPConfig(**TINY, reservoir=True), seed=0)
    s, _ = m.step(a)
    np.testing.assert_array_equal(np.asarray(s["extra"]["h"]), np.asarray(a["extra"]["h"]))  # never learned


def test_rsrp_gradient_is_the_rule_on_regenerated_samples():
    """The chunked gradient equals rule.natural_gradient on the very masks that were evaluated."""
    m = RSRPTrainer(RSRPConfig(**TINY), seed=0)
    s = m.init_state()
    p = s["params"]
    key = jax.random.PRNGKey(5)
    members = m._chunk_members(p, {}, jax.random.fold_in(key, 0))
    shaped = np.linspace(-0.5, 0.5, 32).astype(np.float32)
    terms = m._grad_fn(p, {}, key, shaped)
    g = m._finish_grad(p, terms, 32)
    for k in p:
        np.testing.assert_allclose(np.asarray(g[k]), rule.natural_gradient(shaped, np.asarray(members[k]),
                                                                           np.asarray(p[k])), atol=1e-6)
