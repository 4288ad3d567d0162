"""Online RSRP learning inside the Brian2 model: the generated update is the rule, on every target;
a user's E/I network learns in one run; the synapses' variables are the truth; the traps of the
between-trial learner are errors or gone."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("brian2")
from rsrp_sim.backends.brian2 import RSRPLearner, RSRPSynapses, devices
from rsrp_sim.core import rule
from rsrp_sim.infra.errors import UserError

pytestmark = pytest.mark.brian2
b2 = devices.import_brian2()
ROOT = Path(__file__).resolve().parents[1]
HAS_CXX = shutil.which("g++") is not None or shutil.which("c++") is not None
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")
ms = b2.ms


@pytest.fixture(autouse=True)
def numpy_runtime():
    devices.activate("runtime", target="numpy")
    yield
    devices.activate("runtime", target="numpy")


def test_generated_expression_is_the_rule():
    """The Brian2 expression of the update, evaluated with NumPy, equals rule.online_step."""
    expr = rule.brian2_expression(rule.online_step, p="p", elig="elig", count="n_spk", reward="R",
                                  baseline="Rbar", lr="lr", eps=rule.EPS)
    rng = np.random.default_rng(0)
    env = {"p": rng.uniform(0, 1, 50), "elig": rng.normal(0, 3, 50), "n_spk": rng.integers(0, 5, 50).astype(float),
           "R": 2.5, "Rbar": 0.7, "lr": 0.3, "clip": np.clip, "inf": np.inf}
    got = eval(expr, {"__builtins__": {}}, env)
    want = rule.online_step(env["p"], env["elig"], env["n_spk"], 2.5, 0.7, 0.3)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= rule.EPS and got.max() <= 1 - rule.EPS
    base = rule.brian2_expression(rule.online_baseline, baseline="Rbar", reward="R", beta="beta")
    assert eval(base, {}, {"Rbar": 0.7, "R": 2.5, "beta": 0.1}) == pytest.approx(0.7 + 0.1 * (2.5 - 0.7), abs=1e-15)


N_SRC, T_STEPS, N_TRIALS, LR, BETA = 3, 10, 6, 0.3, 0.2
P0 = np.array([0.2, 0.5, 0.8])


def _online_net(mode, tau_e=None):
    """3 inputs spiking at known steps -> 1 neuron, online RSRP, the reward of trial k from a table."""
    rng = np.random.default_rng(4)
    fire = rng.random((N_TRIALS * T_STEPS + 1, N_SRC)) < 0.4
    steps, idx = np.nonzero(fire)
    src = b2.SpikeGeneratorGroup(N_SRC, idx, steps * ms, dt=ms, name="src")
    tgt = b2.NeuronGroup(1, "v : 1", dt=ms, name="tgt")
    S = RSRPSynapses(src, tgt, target_var="v", mode=mode, weight=0.0, online=True, lr=LR, beta=BETA,
                     trial_duration=T_STEPS * ms, tau_e=tau_e, dt=ms, name="S")
    S.connect(i=np.arange(N_SRC), j=np.zeros(N_SRC, int))
    S.p = P0
    rewards = rng.normal(1.0, 2.0, N_TRIALS + 1)
    S.reward.namespace["Rtab"] = b2.TimedArray(rewards, dt=T_STEPS * ms)
    S.reward.run_regularly("R = Rtab(t)", when="end", dt=ms, name="set_reward")
    rel = b2.StateMonitor(S, "release", record=True, when="after_synapses", dt=ms, name="rel")
    pmon = b2.StateMonitor(S, "p", record=True, dt=T_STEPS * ms, when="start", order=0, name="pmon")
    bmon = b2.StateMonitor(S.reward, "Rbar", record=0, dt=T_STEPS * ms, when="start", order=0, name="bmon")
    net = b2.Network(src, tgt, S, rel, pmon, bmon)
    return net, S, fire, rewards, rel, pmon, bmon


def _replay(mode, fire, rewards, releases, tau_e_ms=None):
    """The same trials with rule.online_step / online_baseline in NumPy: p after every boundary."""
    p, rbar, out, bars = P0.copy(), 0.0, [P0.copy()], [0.0]
    for k in range(N_TRIALS):
        lo, hi = k * T_STEPS, (k + 1) * T_STEPS
        if mode == "trial":
            e, n = releases[:, lo] - p, np.ones(N_SRC)
        else:
            e, n = np.zeros(N_SRC), np.zeros(N_SRC)
            for s in range(lo, hi):
                w = 1.0 if tau_e_ms is None else np.exp(-(hi - s) / tau_e_ms)
                e += fire[s] * (releases[:, s] - p) * w
                n += fire[s]
        p = rule.online_step(p, e, n, rewards[k], rbar, LR)
        rbar = rule.online_baseline(rbar, rewards[k], BETA)
        out.append(p.copy())
        bars.append(rbar)
    return np.array(out).T, np.array(bars)


def _run(net, device, tmp_path):
    duration = N_TRIALS * T_STEPS * ms + ms   # the last trial's update is at the first step after it
    if device == "cpp_standalone":
        net.run(duration, namespace={})
        dev = b2.get_device()
        devices.build(dev, tmp_path / "build")
        dev.run(directory=str(tmp_path / "build"), with_output=False)
    else:
        net.run(duration, namespace={})


@pytest.mark.parametrize("device", ["numpy", "cython", pytest.param("cpp_standalone", marks=needs_cxx)])
def test_generated_update_equals_the_python_rule_spike_mode(device, tmp_path):
    if device == "cpp_standalone":
        devices.activate("cpp_standalone", tmp_path / "build")
    else:
        if device == "cython" and not HAS_CXX:
            pytest.skip("no C++ compiler")
        devices.activate("runtime", target=device)
    b2.seed(7)
    net, S, fire, rewards, rel, pmon, bmon = _online_net("spike")
    _run(net, device, tmp_path)
    releases = np.asarray(rel.release)
    want, bars = _replay("spike", fire, rewards, releases)
    got = np.asarray(pmon.p)
    assert got.shape == (N_SRC, N_TRIALS + 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bmon.Rbar)[0], bars, rtol=1e-12, atol=1e-14)
    assert not np.allclose(got[:, -1], P0)                      # it learned something
    assert int(S.reward.n_trials[0]) == N_TRIALS
    assert float(S.reward.last_R[0]) == pytest.approx(rewards[N_TRIALS - 1])


def test_generated_update_equals_the_python_rule_trial_mode_and_decay(tmp_path):
    b2.seed(8)
    net, _S, fire, rewards, rel, pmon, _bmon = _online_net("trial")
    _run(net, "numpy", tmp_path)
    want, _bars = _replay("trial", fire, rewards, np.asarray(rel.release))
    np.testing.assert_allclose(np.asarray(pmon.p), want, rtol=1e-12, atol=1e-14)
    rel_k = np.asarray(rel.release)[:, ::T_STEPS]
    assert set(np.unique(rel_k)) <= {0.0, 1.0}                  # z drawn inside the simulation
    b2.start_scope()
    b2.seed(9)
    net, _S, fire, rewards, rel, pmon, _bmon = _online_net("spike", tau_e=4 * ms)
    _run(net, "numpy", tmp_path)
    want, _ = _replay("spike", fire, rewards, np.asarray(rel.release), tau_e_ms=4.0)
    np.testing.assert_allclose(np.asarray(pmon.p), want, rtol=1e-10, atol=1e-12)


def test_two_groups_share_one_reward_unit():
    """reward=S.reward: a second plastic group learns from the same reward and baseline."""
    b2.seed(10)
    net, S, fire, rewards, rel, pmon, bmon = _online_net("spike")
    src, tgt = S.source, S.target
    S2 = RSRPSynapses(src, tgt, target_var="v", mode="spike", weight=0.0, online=True, lr=LR,
                      trial_duration=T_STEPS * ms, reward=S.reward, dt=ms, name="S2")
    S2.connect(i=np.arange(N_SRC), j=np.zeros(N_SRC, int))
    S2.p = P0
    rel2 = b2.StateMonitor(S2, "release", record=True, when="after_synapses", dt=ms, name="rel2")
    pmon2 = b2.StateMonitor(S2, "p", record=True, dt=T_STEPS * ms, when="start", order=0, name="pmon2")
    net.add(S2, rel2, pmon2)
    _run(net, "numpy", None)
    for r, m in ((rel, pmon), (rel2, pmon2)):
        want, bars = _replay("spike", fire, rewards, np.asarray(r.release))
        np.testing.assert_allclose(np.asarray(m.p), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bmon.Rbar)[0], bars, rtol=1e-12)   # one baseline, updated once a trial
    assert not np.array_equal(np.asarray(rel.release), np.asarray(rel2.release))
    with pytest.raises(UserError, match="same here"):
        RSRPSynapses(src, tgt, target_var="v", online=True, trial_duration=5 * ms, reward=S.reward, dt=ms)


def test_continuous_update_is_the_rule_and_frozen_groups_do_not_change():
    src = b2.SpikeGeneratorGroup(2, [0, 1, 0], [1, 2, 3] * ms, dt=ms)
    tgt = b2.NeuronGroup(1, "v : 1", dt=ms)
    S = RSRPSynapses(src, tgt, target_var="v", mode="spike", weight=0.0, online=True, lr=0.5, update="continuous",
                     tau_e=20 * ms, dt=ms, name="Sc")
    S.connect(i=[0, 1], j=[0, 0])
    S.reward.R = 3.0
    mon = b2.StateMonitor(S, ["p", "elig", "t_elig"], record=True, when="start", order=-60, dt=ms)
    net = b2.Network(src, tgt, S, mon)
    net.run(6 * ms, namespace={})
    p, e, te = np.asarray(mon.p), np.asarray(mon.elig), np.asarray(mon.t_elig)
    rbar = 0.0
    for k in range(5):   # p at step k+1 from the values before step k's update
        t = k * 1e-3
        e_now = e[:, k] * np.exp(-(t - te[:, k]) / 0.02)
        want = rule.online_continuous_step(p[:, k], e_now, 3.0, rbar, 0.5, 1e-3, 0.02)
        np.testing.assert_allclose(p[:, k + 1], want, rtol=1e-12)
        rbar = rule.online_continuous_baseline(rbar, 3.0, 1e-3, 0.2)
    assert float(S.reward.Rbar[0]) == pytest.approx(rbar + 1e-3 / 0.2 * (3.0 - rbar), rel=1e-9)
    S.plastic = 0
    before = np.asarray(S.p[:]).copy()
    net.run(5 * ms, namespace={})
    np.testing.assert_array_equal(S.p[:], before)


@needs_cxx
def test_online_with_random_connect_in_one_cpp_standalone_run(tmp_path):
    """connect(p=...) on standalone: the synapses are drawn inside the binary, the learning runs there."""
    devices.activate("cpp_standalone", tmp_path / "build")
    b2.seed(5)
    src = b2.PoissonGroup(20, 50 * b2.Hz, dt=ms)
    tgt = b2.NeuronGroup(2, "v : 1", threshold="v > 1", reset="v = 0", dt=ms)
    S = RSRPSynapses(src, tgt, target_var="v", mode="spike", weight=0.3, online=True, lr=0.2,
                     trial_duration=20 * ms, dt=ms)
    S.connect(p=0.5)
    counter = b2.Synapses(tgt, S.reward, on_pre="R_post += 1 - 2 * i", dt=ms)  # spikes of 0 minus those of 1
    counter.connect(i=[0, 1], j=[0, 0])
    b2.Network(src, tgt, S, counter).run(10 * 20 * ms + ms, namespace={})
    dev = b2.get_device()
    devices.build(dev, tmp_path / "build")
    dev.run(directory=str(tmp_path / "build"), with_output=False)
    n = len(S)
    assert 8 <= n <= 32                                          # Binomial(40, 0.5), drawn in the binary
    p, post = np.asarray(S.p[:]), np.asarray(S.j[:])
    assert int(S.reward.n_trials[0]) == 10
    assert np.all((p >= rule.EPS) & (p <= 1 - rule.EPS)) and np.abs(p - 0.5).max() > 0.05
    assert p[post == 0].mean() > p[post == 1].mean()


# ----------------------------------------------------------------------------- the E/I example
def run_example(name, *args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, check=False)


def _ei(device, tmp_path, trials=60):
    out = run_example("brian2_online_ei.py", "--device", device, "--trials", str(trials), "--json",
                      "--build-dir", str(tmp_path / "build"))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_user_ei_network_learns_online_on_runtime(tmp_path):
    r = _ei("runtime", tmp_path)
    assert r["n_trials"] == 60
    assert r["last10"] > r["first10"] + 2.0, r        # neuron 0 now wins clearly
    assert r["p0"] > 0.55 and r["p1"] < 0.45, r       # from 0.5: onto neuron 0 up, onto neuron 1 down
    assert abs(r["p_other"] - 0.5) < 0.05, r          # the unrewarded neurons' inputs drift little


@needs_cxx
def test_user_ei_network_learns_online_in_one_cpp_standalone_run(tmp_path):
    r = _ei("cpp_standalone", tmp_path)
    assert r["n_trials"] == 60
    assert r["last10"] > r["first10"] + 2.0, r
    assert r["p0"] > 0.55 and r["p1"] < 0.45, r
    main = tmp_path / "build" / "main"
    assert main.exists()                              # one project, one binary, run once
    assert len(list((tmp_path / "build" / "results").glob("*"))) > 0


def test_cuda_standalone_without_a_gpu_says_so_in_one_line(tmp_path):
    if devices.has_gpu():
        pytest.skip("a GPU is present")
    out = run_example("brian2_online_ei.py", "--device", "cuda_standalone", "--build-dir", str(tmp_path / "b"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs an NVIDIA GPU" in lines[0], out.stderr
    assert not (tmp_path / "b").exists()              # nothing generated or compiled


@pytest.mark.gpu
def test_cuda_standalone_runs_the_online_example(tmp_path):
    pytest.importorskip("brian2cuda")
    r = _ei("cuda_standalone", tmp_path)
    assert r["n_trials"] == 60
    assert r["last10"] > r["first10"] + 1.0, r
    assert r["p0"] > r["p1"], r


@pytest.mark.parametrize("device", ["runtime", pytest.param("cpp_standalone", marks=needs_cxx)])
def test_between_trials_example_learns_with_a_population(device, tmp_path):
    out = run_example("brian2_between_trials.py", "--trials", "15", "--json", "--device", device,
                      "--build-dir", str(tmp_path / "build"))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["p0"] > 0.55 and r["p1"] < 0.45, r       # the learner's p, from 0.5
    assert r["last5"] > r["first5"] + 3, r


# ----------------------------------------------------------------------------- the group is the truth
def _small(mode="spike", online=False, **kw):
    src = b2.SpikeGeneratorGroup(2, [0, 1] * 20, np.repeat(np.arange(20), 2) * ms, dt=ms)
    tgt = b2.NeuronGroup(2, "v : 1", dt=ms)
    if online:
        kw.setdefault("trial_duration", 5 * ms)
    S = RSRPSynapses(src, tgt, target_var="v", mode=mode, weight=1.0, online=online, dt=ms, **kw)
    return src, tgt, S


def test_p_is_p_init_after_connect_and_a_user_p_is_honoured():
    src, tgt, S = _small(p_init=0.7)
    S.connect(j="i")
    np.testing.assert_array_equal(S.p[:], [0.7, 0.7])
    S.p = [0.9, 0.1]
    net = b2.Network(src, tgt, S)
    b2.seed(1)
    net.run(20 * ms, namespace={})                    # no learner: the group releases with its own p
    released = np.asarray(S.elig[:]) + np.asarray(S.p[:]) * 20
    assert released[0] >= 14 and released[1] <= 6, released
    np.testing.assert_allclose(tgt.v[:], released)
    learner = RSRPLearner(S, lr=0.1, optimizer="sgd")  # the learner starts from the group's p
    np.testing.assert_allclose(learner.p["syn"], [0.9, 0.1], rtol=1e-6)
    S.connect(i=0, j=1)                               # a later connect: new synapses only
    np.testing.assert_allclose(S.p[:], [0.9, 0.1, 0.7], rtol=1e-6)
    # trial release without a learner releases with p_init
    src2, tgt2, S2 = _small(mode="trial", p_init=1.0)
    S2.connect(j="i")
    b2.Network(src2, tgt2, S2).run(20 * ms, namespace={})
    np.testing.assert_array_equal(tgt2.v[:], [20, 20])


def test_learner_writes_p_back_and_store_restore_in_either_order_keeps_learning():
    src, tgt, S = _small()
    S.connect(j="i")
    net = b2.Network(src, tgt, S)
    learner = RSRPLearner(S, lr=0.05, optimizer="sgd", seed=0)
    net.store()
    for k in range(12):
        if k % 2:
            net.restore()
            learner.begin_trial()
        else:
            learner.begin_trial()
            net.restore()
        net.run(20 * ms, namespace={})
        learner.end_trial([float(tgt.v[0] - tgt.v[1])])
        np.testing.assert_allclose(S.p[:], learner.p["syn"], rtol=1e-6)  # the group holds the learned p
    assert S.p[0] > 0.6 and S.p[1] < 0.4, S.p[:]
    S.p = [0.3, 0.3]                                  # a user's p between trials is adopted
    learner.begin_trial()
    np.testing.assert_allclose(learner.p["syn"], [0.3, 0.3], rtol=1e-6)


def test_online_learning_survives_restore_between_trials():
    src, tgt, S = _small(online=True, lr=0.05)
    S.connect(j="i")
    net = b2.Network(src, tgt, S)
    net.store()
    b2.seed(2)
    for _ in range(10):
        net.restore()
        S.reward.R = 1.0
        S.elig = [2.0, -2.0]                            # as if synapse 0 released more than p
        S.n_spk = [4.0, 4.0]
        net.run(5 * ms, namespace={})
    # every run's first step applied the previous trial's update: p moved, the baseline followed R
    assert int(S.reward.n_trials[0]) == 9
    assert 0.5 < float(S.reward.Rbar[0]) < 1.0          # 1 - 0.9**9 = 0.61
    p = np.asarray(S.p[:])
    assert p[0] > 0.6 and p[1] < 0.4, p


# ----------------------------------------------------------------------------- the traps
def test_trap_errors_at_construction():
    src, tgt, _ = _small()
    with pytest.raises(UserError, match=r"without '_post' \(target_var='v'\)"):
        RSRPSynapses(src, tgt, target_var="v_post")
    with pytest.raises(UserError, match="unknown target_var.*'ge'"):
        RSRPSynapses(src, tgt, target_var="ge")
    with pytest.raises(UserError, match="p_init must be >= 0 and <= 1"):
        RSRPSynapses(src, tgt, target_var="v", p_init=1.5)
    with pytest.raises(UserError, match="lr must be >= 0"):
        RSRPSynapses(src, tgt, target_var="v", online=True, lr=-0.1, trial_duration=5 * ms)
    with pytest.raises(UserError, match="needs trial_duration"):
        RSRPSynapses(src, tgt, target_var="v", online=True)
    with pytest.raises(UserError, match="not a multiple of the synapses' dt"):
        RSRPSynapses(src, tgt, target_var="v", online=True, trial_duration=2.5 * ms, dt=ms)
    with pytest.raises(UserError, match="options of online learning: add online=True"):
        RSRPSynapses(src, tgt, target_var="v", trial_duration=5 * ms)
    with pytest.raises(UserError, match="continuous' needs an eligibility decay"):
        RSRPSynapses(src, tgt, target_var="v", online=True, update="continuous")
    with pytest.raises(UserError, match=r"trial_duration must be a positive time \(e.g. 200\*ms\), got 5"):
        RSRPSynapses(src, tgt, target_var="v", online=True, trial_duration=5)
    with pytest.raises(UserError, match=r"tau_e must be a positive time .*got -1. \* second"):
        RSRPSynapses(src, tgt, target_var="v", mode="spike", tau_e=-1 * b2.second)
    with pytest.raises(UserError, match=r"tau_r must be a positive time"):
        RSRPSynapses(src, tgt, target_var="v", mode="spike", online=True, update="continuous", tau_e=20 * ms,
                     tau_r=3.0)


def test_trap_errors_of_the_learner():
    src, tgt, S = _small()
    with pytest.raises(UserError, match="no synapses yet: create the learner after connect"):
        RSRPLearner(S)
    S.connect(j="i")
    with pytest.raises(UserError, match="centered_rank.*every reward becomes -0.5.*shaping='baseline'"):
        RSRPLearner(S, shaping="centered_rank")
    with pytest.raises(UserError, match="did you mean 'baseline'"):
        RSRPLearner(S, shaping="baselin")
    with pytest.raises(UserError, match="lr must be >= 0"):
        RSRPLearner(S, lr=-1)
    assert RSRPLearner(S).strategy.shaping.name == "baseline"   # single network: a baseline by default
    learner = RSRPLearner(S, optimizer="sgd")
    with pytest.raises(UserError, match="end_trial\\(\\) without a trial"):
        learner.end_trial([1.0])
    learner.begin_trial()
    b2.Network(src, tgt, S).run(20 * ms, namespace={})
    learner.end_trial([1.0])
    with pytest.raises(UserError, match="end_trial\\(\\) without a trial"):
        learner.end_trial([1.0])                              # twice in a trial
    S.connect(i=0, j=1)                                       # connected after the learner was made
    with pytest.raises(UserError, match="has 3 synapses but the learner was created for 2"):
        learner.begin_trial()
    _src2, _tgt2, S2 = _small(online=True)
    S2.connect(j="i")
    with pytest.raises(UserError, match="learns online"):
        RSRPLearner(S2)
    # a list of groups is accepted (named by the groups)
    src3, tgt3, A = _small()
    B = RSRPSynapses(src3, tgt3, target_var="v", mode="spike", dt=ms, name="B_syn")
    A.connect(j="i")
    B.connect(j="i")
    both = RSRPLearner([A, B], optimizer="sgd")
    assert set(both.p) == {A.name, "B_syn"}


def test_trap_errors_on_standalone(tmp_path):
    devices.activate("cpp_standalone", tmp_path / "b", compile=False)
    _src, _tgt, S = _small()
    S.connect(p=0.5)
    with pytest.raises(UserError, match="known only after a run.*i=..., j=... arrays"):
        RSRPLearner(S)
    _src, _tgt, S2 = _small(mode="trial")
    S2.connect(i=[0, 1], j=[0, 1])
    learner = RSRPLearner(S2)                                  # arrays: the size is known before the run
    assert learner.p["syn"].shape == (2,)
    _src, _tgt, S3 = _small()
    S3.connect()                                               # all-to-all: known too
    assert RSRPLearner(S3).p["syn"].shape == (4,)
    b2.seed(3)                                                 # the same noise in every run of the binary
    with pytest.warns(UserWarning, match="same random numbers"):
        RSRPLearner(S3)
    with pytest.raises(UserError, match="standalone device cannot do between runs: call learner.new_trial"):
        learner.begin_trial()
    learner.new_trial()
    args = learner.run_args(learner.member_values())
    assert {v.name for v in args} == {"release", "p"}


# ----------------------------------------------------------------------------- CartPole online
@needs_cxx
def test_cartpole_rsrp_online_learns_in_one_cpp_standalone_run(tmp_path):
    from rsrp_sim.infra.records import read_metrics
    from rsrp_sim.protocols.cartpole import PROTOCOL

    rd, summary = PROTOCOL.run("rsrp-online", "brian2", seed=0, out=tmp_path / "run", progress=False,
                               overrides={"device": "cpp_standalone", "iterations": 2, "steps_per_iteration": 20000,
                                          "eval_episodes": 0, "build_dir": str(tmp_path / "build")})
    rows = read_metrics(rd.path / "metrics.csv")
    assert summary["status"] == "completed" and len(rows) == 2
    assert list((tmp_path / "build").glob("*/main")) == [tmp_path / "build" / "learn" / "main"]  # one binary
    assert rows[0]["compile_s"] > 0 and rows[0]["sim_run_s"] > 0  # both recorded (their sizes: benchmarks/)
    assert rows[1]["env_steps"] == 40000
    assert 0.01 < rows[0]["p_change"] < rows[1]["p_change"]                  # p moved from p_init, and on
    first, second = rows[0]["train_score"], rows[1]["train_score"]
    assert rows[0]["episodes_in_block"] > 2 * rows[1]["episodes_in_block"]   # longer episodes, fewer of them
    assert second > 2 * first, (first, second)                                # returns of ~25-35 roughly triple
    assert rows[1]["episodes"] == rows[0]["episodes"] + rows[1]["episodes_in_block"]
    assert (rd.path / "plots" / "learning_curve.png").stat().st_size > 5000
    assert (rd.path / "plots" / "p.png").exists()
    assert summary["episodes"] == rows[1]["episodes"]


def test_cuda_standalone_generates_the_online_update(tmp_path):
    """Without a GPU or nvcc: brian2cuda generates the project of the online E/I example, with the
    rule's update in the kernel and the spike-mode release's random numbers set up."""
    pytest.importorskip("brian2cuda")
    import importlib.util

    spec = importlib.util.spec_from_file_location("brian2_online_ei", ROOT / "examples" / "brian2_online_ei.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    dev = devices.activate("cuda_standalone", tmp_path / "cuda", compile=False)
    try:
        b2.defaultclock.dt = 0.5 * ms
        objects, _S, _ = ex.build(trial=10 * ms)
        b2.Network(*objects).run(5 * 10 * ms + b2.defaultclock.dt)
        devices.build(dev, tmp_path / "cuda", compile=False)
    finally:
        b2.defaultclock.dt = 0.1 * ms
    code = (tmp_path / "cuda" / "code_objects" / "S_in_online_update_codeobject.cu").read_text()
    assert "(lr * ((R - Rbar) * e_now))" in code and "0.999" in code
    assert "_array_S_in_N[0]" in (tmp_path / "cuda" / "rand.cu").read_text()


def test_cartpole_rsrp_online_on_runtime_and_cuda_without_a_gpu(tmp_path, capsys):
    from rsrp_sim.infra.records import read_metrics
    from rsrp_sim.protocols.cartpole import PROTOCOL

    rd, _summary = PROTOCOL.run("rsrp-online", "brian2", seed=0, out=tmp_path / "run", progress=False,
                               overrides={"device": "runtime", "target": "numpy", "iterations": 2,
                                          "steps_per_iteration": 100, "eval_episodes": 1,
                                          "model_overrides": {"n_neurons": 16}})
    rows = read_metrics(rd.path / "metrics.csv")
    assert [r["env_steps"] for r in rows] == [100, 200] and rows[1]["episodes"] > rows[0]["episodes"] > 0
    assert all(1 <= r["eval_score"] <= 500 for r in rows)    # the deterministic network of each block
    if devices.has_gpu():
        return
    code = PROTOCOL.main(["--method", "rsrp-online", "--device", "cuda_standalone", "--out", str(tmp_path / "cu")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs an NVIDIA GPU" in err[0], err
    assert not (tmp_path / "cu").exists()
