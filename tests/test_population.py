"""The RL population methods through the engine with the JAX evaluator: rollouts, chunks, normaliser,
reset pools, the reservoir; all through public interfaces (the engine, the evaluator, the method)."""
import jax
import numpy as np
import pytest

from rsrp_sim.core import rule
from rsrp_sim.engine import rl
from rsrp_sim.engine.population import ChunkInfo, generation
from rsrp_sim.infra import config as configlib
from rsrp_sim.backends.jax.rl import SNNRollouts

TINY = dict(pop_size=32, eval_size=2, chunk_size=32, generations=2, model_overrides={"n_neurons": 32})


def method(cls=rl.RSRPMethod, seed=0, **overrides):
    runnable = cls.with_evaluator(SNNRollouts)
    return runnable(configlib.build(runnable.Config, ("test", {**TINY, **overrides})), seed)


def evaluate_first_chunk(m, state, key=1):
    """The evaluator on the members of chunk 0, as the engine asks for them."""
    members = m.strategy.jitted.ask(state["search"], jax.random.PRNGKey(key), m.layout.chunk)
    mean, scale = rl.norm_arrays(state["norm"], m.config.obs_norm, m.env.obs_dim)
    out = m.evaluator.evaluate(members, jax.random.PRNGKey(key + 1), rl.RLContext(mean, scale),
                               ChunkInfo(0, 0, m.layout.valid(0), m.layout.n_chunks == 1))
    return out, members


def test_member_blocks_do_not_change_results():
    outs = []
    for block in (0, 8):
        m = method(rl.ESMethod, member_block=block)
        assert m.evaluator.train_rollout.block == block
        outs.append(evaluate_first_chunk(m, m.init_state())[0])
    np.testing.assert_array_equal(outs[0].fitness, outs[1].fitness)
    for k in outs[0].extras:
        np.testing.assert_array_equal(outs[0].extras[k], outs[1].extras[k])
    assert outs[0].extras["t"] > 5 and outs[0].extras["episodes"].min() >= 1  # every member finished an episode


def test_fitness_is_mean_return_of_completed_episodes():
    m = method(max_episode_steps=30)
    out, _ = evaluate_first_chunk(m, m.init_state())
    eps, t = out.extras["episodes"], out.extras["t"]
    # every member completes >= 1 episode; its fitness is a mean of integer episode lengths <= 30
    assert eps.min() >= 1 and t <= 30 and out.extras["env_steps"] == t * 32
    assert np.all(out.fitness <= 30) and np.all(out.fitness >= 8)
    assert np.all(out.fitness * eps <= t + 1e-3)


def test_chunked_generation_uses_every_member():
    """Two chunks of 16 and one of 32 see the same population size, gradient shape and finite updates."""
    for chunk in (16, 32):
        m = method(chunk_size=chunk)
        assert m.layout.n_chunks == 32 // chunk
        s, rec = m.step(m.init_state())
        assert np.all(np.isfinite(np.asarray(s["search"].p["h"])))
        assert rec["train_score"] > 0 and rec["env_steps"] > 0
        # the gradient of a chunked population uses every member: p moved away from 0.5 everywhere it can
        assert (np.abs(np.asarray(s["search"].p["in"]) - 0.5) > 1e-6).mean() > 0.9


def test_engine_gradient_is_the_rule_on_the_very_masks_the_rollouts_evaluated():
    m = method(chunk_size=16)
    seen = []

    class Recording:
        packs_deterministic = False

        def evaluate(self, members, key, context, chunk):
            seen.append(jax.device_get(members.batched))
            return m.evaluator.evaluate(members, key, context, chunk)

        def evaluate_deterministic(self, *a):
            return m.evaluator.evaluate_deterministic(*a)

    state = m.init_state()
    mean, scale = rl.norm_arrays(state["norm"], "running", 4)
    _, res = generation(m.strategy, state["search"], Recording(), state["key"], m.layout, rl.RLContext(mean, scale))
    assert len(seen) == 2
    p = state["search"].p
    for k in p:
        z = np.concatenate([s[k] for s in seen])
        np.testing.assert_allclose(np.asarray(res.grad[k]), rule.natural_gradient(res.shaped, z, np.asarray(p[k])),
                                   atol=1e-6)


def test_running_normaliser_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (n, 4)) for n in (50, 7, 300)]
    norm = rl.init_norm(4)
    for b in batches:
        norm = rl.update_norm(norm, "running", len(b), b.sum(0), (b**2).sum(0))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(norm["mean"], allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm["var"], allx.var(0), rtol=1e-10)
    mean, scale = rl.norm_arrays(norm, "running", 4)
    np.testing.assert_allclose(scale, allx.std(0), rtol=1e-5)
    assert np.all(rl.norm_arrays(norm, "none", 4)[1] == 1.0)


@pytest.mark.parametrize("pool", ["fixed", "fresh"])
def test_reset_pool_fixed_reuses_initial_states(pool):
    m = method(reset_pool=pool)
    s = m.init_state()
    members = m.strategy.jitted.ask(s["search"], jax.random.PRNGKey(1), 32)
    ctx = rl.RLContext(*rl.norm_arrays(s["norm"], "running", 4))
    info = ChunkInfo(0, 0, 32, True)
    a = m.evaluator.evaluate(members, jax.random.PRNGKey(2), ctx, info)
    b = m.evaluator.evaluate(members, jax.random.PRNGKey(3), ctx, info)  # another loop key
    if pool == "fixed":  # the same initial states: the same episodes
        np.testing.assert_array_equal(a.fitness, b.fitness)
    else:
        assert not np.array_equal(a.fitness, b.fitness)


def test_reservoir_freezes_recurrent_mask_from_the_seed():
    a, b, c = (method(reservoir=True, seed=s).init_state()["search"] for s in (0, 0, 1))
    assert set(a.p) == {"in", "out"} and a.frozen["h"].shape == (32, 32)
    np.testing.assert_array_equal(np.asarray(a.frozen["h"]), np.asarray(b.frozen["h"]))
    assert (np.asarray(a.frozen["h"]) != np.asarray(c.frozen["h"])).mean() > 0.3
    assert abs(float(np.asarray(a.frozen["h"]).mean()) - 0.5) < 0.1
    m = method(reservoir=True)
    s, _ = m.step(m.init_state())
    np.testing.assert_array_equal(np.asarray(s["search"].frozen["h"]), np.asarray(a.frozen["h"]))  # never learned
