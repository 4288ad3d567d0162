"""The population engine on its own: strategies against exact math, and the one generation loop."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.core import rule, shaping
from rsrp_sim.engine.population import (ES, RSRP, ChunkInfo, EvalResult, Layout, Members, NonFiniteReward,
                                        generation)

W = np.array([1.0, -2.0, 0.5, 1.5])


def quadratic_reward(z):
    z = np.asarray(z, np.float64)
    return z @ W + 2.0 * z[..., 0] * z[..., 1] - 1.5 * z[..., 2] * z[..., 3]


class ToyEvaluator:
    """Rewards from a formula of each member's mask; records what it was asked to evaluate."""

    packs_deterministic = False

    def __init__(self, reward=quadratic_reward, key="syn"):
        self.reward, self.key, self.seen, self.chunks = reward, key, [], []

    def evaluate(self, members, key, context, chunk):
        z = np.asarray(members.batched[self.key], np.float64).reshape(members.n, -1)
        self.seen.append(z)
        self.chunks.append(chunk)
        return EvalResult(self.reward(z).astype(np.float32))

    def evaluate_deterministic(self, net, key, n, context):
        r = float(self.reward(np.asarray(net[self.key], np.float64).reshape(1, -1))[0])
        return EvalResult(np.full(n, r, np.float32))


def test_layout_keys_mean_one_thing():
    lay = Layout(pop_size=10, eval_size=3, chunk_size=4)
    assert (lay.chunk, lay.n_chunks, lay.padding) == (4, 3, 2)
    assert [lay.valid(i) for i in range(3)] == [4, 4, 2]
    assert lay.packed_capacity == 4 + 1  # 3 deterministic members, 2 fit into the last chunk's padding
    assert Layout(10, 2, 4).packed_capacity == 4 and Layout(64, 4, 64).packed_capacity == 68
    assert Layout(7, 0, 3, multiple=2).chunk == 4  # ES: antithetic pairs
    assert Layout(5, 0, 0).chunk == 5  # 0: one chunk


def test_rsrp_one_generation_is_the_rule_on_the_members_evaluated():
    """Chunked over 3 chunks (one padded): the gradient is rule.natural_gradient of the shaped rewards on
    exactly the release patterns the evaluator saw, and p moves by one Adam step of it."""
    strat = RSRP({"syn": (4,)}, lr=0.1, optimizer="adam", shaping=shaping.Transform("centered_rank"))
    state = strat.init(jax.random.PRNGKey(0))
    ev = ToyEvaluator()
    lay = Layout(pop_size=10, eval_size=2, chunk_size=4)
    new, res = generation(strat, state, ev, jax.random.PRNGKey(7), lay)
    z = np.concatenate([ev.seen[i][:lay.valid(i)] for i in range(3)])
    assert z.shape == (10, 4) and [c.valid for c in ev.chunks] == [4, 4, 2]
    f = quadratic_reward(z).astype(np.float32)
    np.testing.assert_array_equal(res.fitness, f)
    shaped, _ = shaping.shape(f, "centered_rank")
    np.testing.assert_array_equal(res.shaped, shaped)
    g = rule.natural_gradient(shaped, z, np.asarray(state.p["syn"]))
    np.testing.assert_allclose(np.asarray(res.grad["syn"]), g, rtol=1e-6, atol=1e-7)
    expected, _ = rule.apply_update(state.p, {"syn": jnp.asarray(g)}, strat.opt, state.opt)
    np.testing.assert_allclose(np.asarray(new.p["syn"]), np.asarray(expected["syn"]), atol=1e-6)
    # the deterministic members: the network p > 0.5 of the state before the update
    det = quadratic_reward(rule.deterministic_mask(np.asarray(state.p["syn"]))[None].astype(float))[0]
    np.testing.assert_array_equal(res.deterministic.fitness, np.full(2, det, np.float32))


def test_one_chunk_keeps_its_members_and_gives_the_regenerated_numbers():
    strat = RSRP({"a": (3,), "b": (2, 2)}, lr=0.05, optimizer="sgd", shaping=shaping.Transform("raw"))
    state = strat.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    members = strat.jitted.ask(state, key, 8)
    shaped = jnp.linspace(-1, 1, 8)
    kept = strat.jitted.terms(state, key, 8, shaped, members, None)
    regenerated = strat.jitted.terms(state, key, 8, shaped, None, None)
    for k in ("a", "b"):
        for x, y in zip(kept[k], regenerated[k]):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_rsrp_converges_to_the_exact_natural_gradient_direction():
    """Many generations of a raw-reward estimate average to E[R (z - p)] by exact enumeration."""
    p0 = np.array([0.2, 0.5, 0.7, 0.9], np.float32)
    strat = RSRP({"syn": (4,)}, lr=1e-9, optimizer="sgd", shaping=shaping.Transform("raw"))
    state = dataclasses.replace(strat.init(jax.random.PRNGKey(0)), p={"syn": jnp.asarray(p0)})
    exact = rule.exact_natural_gradient(quadratic_reward, p0)
    grads = []
    for g in range(40):
        _, res = generation(strat, state, ToyEvaluator(), jax.random.PRNGKey(g), Layout(2000, 0, 1000))
        grads.append(np.asarray(res.grad["syn"]))
    mean = np.mean(grads, axis=0)
    se = np.std(grads, axis=0) / np.sqrt(len(grads))
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-4), (mean, exact, se)


def test_spike_release_uses_the_eligibility():
    """Spike mode: members share p; the gradient is mean R~ e / max(n, 1) from the evaluator's eligibilities."""
    strat = RSRP({"syn": (2, 2)}, lr=0.5, optimizer="sgd", release="spike", shaping=shaping.Transform("raw"))
    state = strat.init(jax.random.PRNGKey(0))
    m = strat.ask(state, jax.random.PRNGKey(1), 3)
    assert m.batched == {} and np.asarray(m.shared["syn"]).shape == (2, 2) and m.n == 3
    e = np.array([[1.0, -0.5, 0.0, 2.0], [0.5, 0.5, -1.0, 0.0], [-1.0, 0.0, 0.0, 1.0]], np.float32)
    n = np.array([[2, 1, 0, 4], [1, 1, 2, 0], [3, 0, 0, 1]], np.float32)

    class SpikeEvaluator:
        packs_deterministic = False

        def evaluate(self, members, key, context, chunk):
            return EvalResult(np.array([1.0, -1.0, 0.5], np.float32), eligibility={"syn": (e, n)})

        def evaluate_deterministic(self, net, key, n, context):
            return EvalResult(np.zeros(n, np.float32))

    new, res = generation(strat, state, SpikeEvaluator(), jax.random.PRNGKey(2), Layout(3, 1, 3))
    expected = (np.array([1.0, -1.0, 0.5])[:, None] * e / np.maximum(n, 1)).mean(0).reshape(2, 2)
    np.testing.assert_allclose(np.asarray(res.grad["syn"]), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.p["syn"]), np.clip(0.5 + 0.5 * expected, 1e-3, 1 - 1e-3), rtol=1e-6)
    class NoEligibility(SpikeEvaluator):
        def evaluate(self, members, key, context, chunk):
            return EvalResult(np.zeros(members.n, np.float32))

    with pytest.raises(ValueError, match="NoEligibility returned no eligibilities for spike release"):
        generation(strat, state, NoEligibility(), jax.random.PRNGKey(2), Layout(3, 0, 3))


def test_reservoir_keeps_its_frozen_part():
    strat = RSRP({"in": (3, 4), "h": (4, 4), "out": (4, 1)}, lr=0.2, frozen=("h",),
                 shaping=shaping.Transform("centered_rank"))
    a, b, c = (strat.init(jax.random.PRNGKey(s)) for s in (0, 0, 1))
    assert set(a.p) == {"in", "out"} and a.frozen["h"].dtype == bool
    np.testing.assert_array_equal(np.asarray(a.frozen["h"]), np.asarray(b.frozen["h"]))
    assert not np.array_equal(np.asarray(a.frozen["h"]), np.asarray(c.frozen["h"]))
    members = strat.ask(a, jax.random.PRNGKey(4), 5)
    assert set(members.batched) == {"in", "out"} and set(members.shared) == {"h"}

    class Count:
        packs_deterministic = False

        def evaluate(self, members, key, context, chunk):
            return EvalResult(np.asarray(members.batched["in"], np.float32).reshape(members.n, -1).sum(1))

        def evaluate_deterministic(self, net, key, n, context):
            assert np.array_equal(np.asarray(net["h"]), np.asarray(a.frozen["h"]))
            return EvalResult(np.zeros(n, np.float32))

    new, _ = generation(strat, a, Count(), jax.random.PRNGKey(5), Layout(16, 2, 8))
    np.testing.assert_array_equal(np.asarray(new.frozen["h"]), np.asarray(a.frozen["h"]))
    assert not np.allclose(np.asarray(new.p["in"]), 0.5)


def test_es_climbs_a_quadratic():
    target = np.array([1.5, -2.0, 0.5], np.float32)

    class Quadratic:
        packs_deterministic = False

        def evaluate(self, members, key, context, chunk):
            w = np.asarray(members.batched["w"])
            return EvalResult(-((w - target) ** 2).sum(1).astype(np.float32))

        def evaluate_deterministic(self, net, key, n, context):
            return EvalResult(np.full(n, -float(((np.asarray(net["w"]) - target) ** 2).sum()), np.float32))

    strat = ES({"w": (3,)}, sigma=0.1, lr=0.05, optimizer="adam", weight_decay=0.0, init_std=0.0,
               shaping=shaping.Transform("centered_rank"))
    state = strat.init(jax.random.PRNGKey(0))
    m = strat.ask(state, jax.random.PRNGKey(1), 4)
    w = np.asarray(m.batched["w"])
    np.testing.assert_allclose(w[0] + w[1], 2 * np.asarray(state.mu["w"]), atol=1e-6)  # antithetic pairs
    key, scores = jax.random.PRNGKey(2), []
    for _ in range(150):
        state, res = generation(strat, state, Quadratic(), key, Layout(32, 1, 16, multiple=2))
        key = res.next_key
        scores.append(float(res.deterministic.fitness[0]))
    assert scores[0] < -6 and scores[-1] > -0.02
    np.testing.assert_allclose(np.asarray(state.mu["w"]), target, atol=0.1)


def test_a_non_finite_reward_names_the_generation_and_how_many_members():
    strat = RSRP({"syn": (4,)}, lr=0.1)
    state = strat.init(jax.random.PRNGKey(0))
    bad = ToyEvaluator(reward=lambda z: np.where(z[:, 0] > 0, np.nan, 1.0))
    with pytest.raises(NonFiniteReward, match=r"non-finite reward in generation 7: \d+ of 64 members "
                                              r"\(first: member \d+, reward nan\).*check lr") as e:
        generation(strat, state, bad, jax.random.PRNGKey(0), Layout(64, 0, 32), index=7, hint=" (check lr)")
    assert "\n" not in str(e.value)


def test_tell_on_numpy_members_matches_the_generation():
    """The Brian2 learner's path (ask with a NumPy generator, tell) uses the same rule."""
    strat = RSRP({"syn": (4,)}, lr=0.3, optimizer="sgd", shaping=shaping.Transform("baseline"))
    state = strat.init(None)
    members = strat.ask(state, np.random.default_rng(0), 50)
    z = np.asarray(members.batched["syn"])
    assert isinstance(z, np.ndarray) and z.shape == (50, 4)
    f = quadratic_reward(z).astype(np.float32)
    new, grad = strat.tell(state, f, members=members)
    np.testing.assert_allclose(np.asarray(grad["syn"]), rule.natural_gradient(f, z, np.full(4, 0.5, np.float32)),
                               atol=1e-6)  # baseline 0 in the first trial
    assert float(new.shaping["baseline"]) == pytest.approx(f.mean(), rel=1e-6)


def test_members_pytree_round_trips_through_jit():
    m = Members({"a": jnp.ones((3, 2))}, {"h": jnp.zeros(2)}, 3)
    out = jax.jit(lambda x: x)(m)
    assert isinstance(out, Members) and out.n == 3 and set(out.network(1)) == {"a", "h"}
    assert ChunkInfo(0, 0, 3, True).last
