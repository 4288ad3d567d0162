"""The RSRP synapse as a Brian2 model: delivery, both release modes, the between-trial update."""
import numpy as np
import pytest

pytest.importorskip("brian2")
from rsrp_sim.backends.brian2 import RSRPLearner, RSRPSynapses, devices  # noqa: E402
from rsrp_sim.infra.errors import UserError  # noqa: E402

pytestmark = pytest.mark.brian2
b2 = devices.import_brian2()


@pytest.fixture(autouse=True)
def numpy_runtime():
    devices.activate("runtime", target="numpy")
    yield
    devices.activate("runtime", target="numpy")


def spike_source(n_units, n_spikes, period_ms=1.0):
    idx = np.repeat(np.arange(n_units), n_spikes)
    times = np.tile(np.arange(n_spikes) * period_ms, n_units) * b2.ms
    return b2.SpikeGeneratorGroup(n_units, idx, times, dt=period_ms * b2.ms)


def test_spike_mode_release_fraction_matches_p_and_delivery_is_w_times_release():
    n_spk, p = 1500, np.array([0.1, 0.5, 0.9])
    src = spike_source(3, n_spk)
    tgt = b2.NeuronGroup(3, "v : 1", dt=b2.ms)
    b2.seed(3)
    syn = RSRPSynapses(src, tgt, target_var="v", mode="spike", weight=0.5, dt=b2.ms)
    syn.connect(j="i")
    syn.p = p
    b2.Network(src, tgt, syn).run(n_spk * b2.ms, namespace={})
    counts = np.asarray(syn.n_spk[:])
    assert np.all(counts == n_spk)
    released = np.asarray(syn.elig[:]) + p * counts          # elig = sum(r - p)
    frac = released / counts
    tol = 4 * np.sqrt(p * (1 - p) / n_spk)                   # binomial, 4 standard errors
    assert np.all(np.abs(frac - p) < tol), (frac, p)
    np.testing.assert_allclose(tgt.v[:], 0.5 * released, rtol=1e-6)   # on_pre: v_post += w * release


def test_trial_mode_holds_the_drawn_release():
    src = spike_source(4, 100)
    tgt = b2.NeuronGroup(1, "v : 1", dt=b2.ms)
    syn = RSRPSynapses(src, tgt, target_var="v", mode="trial", dt=b2.ms)
    syn.connect()
    syn.w = [1.0, 2.0, 4.0, 8.0]
    learner = RSRPLearner(syn, seed=5)
    learner.p["syn"][:] = [0.999, 0.001, 0.999, 0.001]
    learner.begin_trial()
    z = learner.z["syn"][0]
    np.testing.assert_array_equal(z, [1, 0, 1, 0])
    b2.Network(src, tgt, syn).run(100 * b2.ms, namespace={})
    assert tgt.v[0] == pytest.approx(100 * (1.0 + 4.0))


def _population(n_copies, n_logical, n_spikes):
    src = spike_source(n_copies * n_logical, n_spikes)
    tgt = b2.NeuronGroup(n_copies, "v : 1", dt=b2.ms)
    syn = RSRPSynapses(src, tgt, target_var="v", mode="spike", weight=0.0, dt=b2.ms)
    syn.connect_copies(np.arange(n_logical), np.zeros(n_logical), n_copies)
    return b2.Network(src, tgt, syn), syn


def test_spike_mode_update_is_zero_mean_when_reward_ignores_release():
    n_copies, n_logical, n_spikes = 400, 6, 20
    net, syn = _population(n_copies, n_logical, n_spikes)
    learner = RSRPLearner(syn, optimizer="sgd", lr=1.0, seed=0)
    assert (learner.n_copies, syn.logical_size()) == (n_copies, n_logical)
    b2.seed(11)
    learner.begin_trial()
    net.run(n_spikes * b2.ms, namespace={})
    e = np.asarray(syn.elig[:]).reshape(n_copies, n_logical)
    rate = e / n_spikes                                         # (r - p) averaged over each copy's spikes
    rng = np.random.default_rng(1)

    def check(rewards):
        grad, shaped = learner.gradient(rewards)
        se = (shaped[:, None] * rate).std(0) / np.sqrt(n_copies)
        return grad["syn"], se

    grad, se = check(rng.normal(size=n_copies))                # reward independent of release
    assert np.all(np.abs(grad) < 4 * se), (grad, se)
    # the control: rewarding synapse 0's releases gives a clearly positive update on it
    grad, se = check(rate[:, 0] + 0.01 * rng.normal(size=n_copies))
    assert grad[0] > 6 * se[0]
    assert np.all(np.abs(grad[1:]) < 4 * se[1:])
    # with SGD (lr 1) the update of p is the gradient itself: mean update ~ 0 for independent rewards
    p0 = learner.p["syn"].copy()
    learner.end_trial(rng.normal(size=n_copies))
    dp = learner.p["syn"] - p0
    assert abs(dp.mean()) < 4 * se.mean()


def test_learner_lays_out_sampled_eval_and_padding_members():
    src = spike_source(2 * 4, 1)
    tgt = b2.NeuronGroup(4, "v : 1", dt=b2.ms)
    syn = RSRPSynapses(src, tgt, target_var="v", dt=b2.ms)
    syn.connect_copies([0, 1], [0, 0], 4)
    learner = RSRPLearner(syn, n_members=6, seed=0)
    learner.p["syn"][:] = [0.9, 0.2]
    learner.new_trial(n_eval=2)
    assert learner.z["syn"].shape == (4, 2)
    first, second = learner.member_values(0, 4)["syn"], learner.member_values(4, 4)["syn"]
    np.testing.assert_array_equal(first["release"].reshape(4, 2), learner.z["syn"])
    rel = second["release"].reshape(4, 2)
    np.testing.assert_array_equal(rel, [[1, 0], [1, 0], [0, 0], [0, 0]])   # 2 deterministic, 2 padding
    with pytest.raises(ValueError, match="expected 4 rewards"):
        learner.gradient(np.zeros(6))
    with pytest.raises(UserError, match="non-finite reward"):
        learner.gradient([1.0, np.nan, 0.0, 0.0])


def test_bad_release_mode_is_a_user_error():
    src = spike_source(1, 1)
    with pytest.raises(UserError, match="allowed: trial, spike"):
        RSRPSynapses(src, src, target_var="v", mode="burst")
