"""stdp-dc (Diehl & Cook 2015 on NEURON): the DCNeuron mechanism against independently integrated
equations, theta, the STDP formula, weight normalisation, labelling/prediction, resume, learning."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rsrp_sim
from rsrp_sim.core import models
from rsrp_sim.backends.netpyne.dc_readout import assign_labels, class_means, predict
from rsrp_sim.infra.errors import UserError
from rsrp_sim.protocols import get
from rsrp_sim.infra.records import read_metrics

MODEL = models.load("diehl_cook")


# ---------------------------------------------------------------------------------------------- pure NumPy
def test_labelling_and_prediction_on_a_hand_made_response_matrix():
    # 6 training examples of 3 classes, 5 neurons; neuron 4 never fires
    r = np.array([[9, 0, 1, 0, 0],
                  [7, 1, 0, 2, 0],   # class 0
                  [0, 5, 1, 0, 0],
                  [1, 3, 0, 0, 0],   # class 1
                  [0, 0, 4, 3, 0],
                  [2, 0, 6, 5, 0]])  # class 2
    y = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(class_means(r, y, 3)[:, 0], [8, 0.5, 1])
    a = assign_labels(r, y, 3)
    assert a.tolist() == [0, 1, 2, 2, -1]  # neuron 3: means 1, 0, 4 -> class 2; neuron 4 silent
    # class score = mean over that class's neurons: (example) [0, 0, 3, 1, 9] -> class 2: (3+1)/2 = 2 > 0, 0
    test = np.array([[4, 0, 0, 0, 0], [0, 2, 1, 0, 0], [0, 0, 3, 1, 9], [1, 1, 0, 4, 0], [0, 0, 0, 0, 0]])
    assert predict(test, a, 3).tolist() == [0, 1, 2, 2, 0]  # the last: a tie of zeros goes to class 0
    # a class with two neurons votes with their mean, not their sum
    assert predict(np.array([[3, 0, 2, 2, 0]]), a, 3).tolist() == [0]
    # nobody labelled yet (first iteration): no prediction
    assert predict(test, np.full(5, -1), 3).tolist() == [-1] * 5
    # labels come from the classes present only: a class without examples never wins a neuron
    assert assign_labels(r[:4], y[:4], 3).tolist() == [0, 1, 0, 0, -1]


# ---------------------------------------------------------------------------------------------- NEURON
neuron_mark = pytest.mark.neuron


@pytest.fixture(scope="module")
def h():
    """Compile (on first use, into the per-user cache) and load the mechanisms."""
    pytest.importorskip("neuron")
    from rsrp_sim.backends.netpyne import mechanisms

    try:
        mechanisms.load()
    except UserError as e:
        pytest.skip(f"NEURON mechanisms unavailable: {e}")
    from neuron import h

    h.load_file("stdrun.hoc")
    return h


def one_cell(h, dt, **params):
    """One excitatory DCNeuron with the model's constants (updated by ``params``), fixed step ``dt``."""
    from rsrp_sim.backends.netpyne.dc_network import cell_params

    sec = h.Section(name="dc_test_host")
    cell = h.DCNeuron(sec(0.5))
    for k, v in {**cell_params(MODEL, "exc"), **params}.items():
        setattr(cell, k, v)
    h.dt = dt
    h.CVode().active(0)
    return sec, cell


def inputs(h, cell, events):
    """One NetCon per scripted event (time, kind, weight); call :func:`fire` after finitialize."""
    ncs = []
    for t, kind, w in events:
        nc = h.NetCon(None, cell)
        nc.weight[0], nc.weight[1] = w, kind
        ncs.append((nc, t))
    return ncs


def fire(ncs):
    for nc, t in ncs:
        nc.event(t)


def reference_vm(times, events, p):
    """vm of the model equations integrated independently (scipy, tight tolerances) between the events."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        v, ge, gi = y
        return [((p["v_rest"] - v) + ge * (p["e_exc"] - v) + gi * (p["e_inh"] - v)) / p["tau_m"],
                -ge / p["tau_ge"], -gi / p["tau_gi"]]

    y = np.array([p["v_init"], 0.0, 0.0])
    edges = [0.0] + [e[0] for e in events] + [times[-1]]
    out = np.empty(len(times))
    for i in range(len(edges) - 1):
        if i > 0:
            _, kind, w = events[i - 1]
            y[1 if kind == 2 else 2] += w
        sol = solve_ivp(f, (edges[i], edges[i + 1]), y, rtol=1e-10, atol=1e-12, dense_output=True)
        sel = (times >= edges[i]) & (times <= edges[i + 1])
        out[sel] = sol.sol(times[sel])[0]
        y = sol.y[:, -1]
    return out


@neuron_mark
@pytest.mark.parametrize("dt,tol", [(0.5, 2e-3), (0.1, 1e-4)])
def test_membrane_trajectory_matches_independent_integration(h, dt, tol):
    from rsrp_sim.backends.netpyne.dc_network import KIND_EXC, KIND_INH, cell_params

    # excitatory and inhibitory conductance kicks (kind 2 = fixed excitatory, 1 = inhibitory), no spiking
    events = [(5.0, KIND_EXC, 2.0), (20.0, KIND_EXC, 3.5), (21.0, KIND_EXC, 1.0), (30.0, KIND_INH, 4.0),
              (40.0, KIND_EXC, 5.0), (60.0, KIND_INH, 0.7), (80.0, KIND_EXC, 0.6)]
    sec, cell = one_cell(h, dt, v_thresh=1e3, learning=0)
    ncs = inputs(h, cell, events)
    vm, tv = h.Vector().record(cell._ref_vm, sec=sec), h.Vector().record(h._ref_t, sec=sec)
    h.finitialize()
    fire(ncs)
    h.continuerun(150.0)
    t, v = tv.as_numpy().copy(), vm.as_numpy().copy()
    ref = reference_vm(t, events, cell_params(MODEL, "exc"))
    assert np.abs(v - ref).max() < tol
    p = cell_params(MODEL, "exc")
    leak_only = p["v_rest"] + (p["v_init"] - p["v_rest"]) * np.exp(-t / p["tau_m"])
    assert np.abs(v - leak_only).max() > 5  # the conductances really moved it


@neuron_mark
def test_spike_reset_refractoriness_and_theta_increment(h):
    p = MODEL["exc"]
    sec, cell = one_cell(h, 0.5)
    out = h.NetCon(cell, None)
    spikes = h.Vector()
    out.record(spikes)
    vm = h.Vector().record(cell._ref_vm, sec=sec)
    ncs = inputs(h, cell, [(t, 2, 3.0) for t in np.arange(50.0, 450.0, 1.0)])  # strong steady drive
    h.finitialize()
    cell.vm = p["v_rest"]
    fire(ncs)
    h.continuerun(500.0)
    s = spikes.as_numpy().copy()
    assert len(s) >= 10 and cell.nspikes == len(s)
    # theta: theta_plus per spike, decaying with tau_theta (exp(-T/tau) over the whole run)
    T = h.t
    expect = p["theta_init"] * np.exp(-T / p["tau_theta"]) + p["theta_plus"] * np.exp(-(T - s) / p["tau_theta"]).sum()
    assert cell.theta == pytest.approx(expect, rel=1e-9)
    assert cell.theta - p["theta_init"] == pytest.approx(len(s) * p["theta_plus"], rel=1e-3)
    # reset to v_reset and held there for the refractory period; inter-spike intervals longer than it
    v = vm.as_numpy()
    k = int(round(s[0] / 0.5))
    hold = int(p["refrac"] / 0.5)
    np.testing.assert_allclose(v[k + 1:k + hold], p["v_reset"])
    assert np.diff(s).min() > p["refrac"]
    # frozen (test mode): the same drive, spikes, but theta does not move
    h.finitialize()
    cell.learning = 0
    cell.theta = 23.0
    fire(ncs)
    h.continuerun(500.0)
    assert cell.nspikes >= 5 and cell.theta == 23.0


@neuron_mark
def test_stdp_pair_update_matches_the_formula(h):
    st = MODEL["stdp"]
    sec, cell = one_cell(h, 0.5, w_gain=0.0)  # the plastic input carries no current: spikes come from the drive
    syn = h.NetCon(None, cell)  # plastic (kind 0)
    out = h.NetCon(cell, None)
    spikes = h.Vector()
    out.record(spikes)
    # two forced post spikes (around 20 and 60 ms); the pre spike arrives in between, at 35 ms
    drive = inputs(h, cell, [(20.0, 2, 50.0), (60.0, 2, 50.0)])

    def pair(w_start: float) -> float:
        syn.weight[0] = w_start
        spikes.resize(0)
        h.finitialize()
        cell.vm = MODEL["exc"]["v_rest"]
        fire(drive)
        syn.event(35.0)
        h.continuerun(100.0)
        return syn.weight[0]

    w0 = 0.5
    got = pair(w0)
    s = spikes.as_numpy()
    assert len(s) == 2 and 20 <= s[0] < 22 and 60 <= s[1] < 62
    # pre at 35: depression by nu_pre * post1(35); post at s2: potentiation nu_post * pre(s2) * post2(before)
    w1 = w0 - st["nu_pre"] * np.exp(-(35.0 - s[0]) / st["tau_post1"])
    w2 = w1 + st["nu_post"] * np.exp(-(s[1] - 35.0) / st["tau_pre"]) * np.exp(-(s[1] - s[0]) / st["tau_post2"])
    assert got == pytest.approx(w2, rel=1e-12)
    assert syn.weight[2] == 35.0  # the synapse's last pre arrival
    # bounds: a weight at wmax stays there; from 0 no depression below 0, then the potentiation
    assert pair(st["wmax"]) == st["wmax"]
    assert pair(0.0) == pytest.approx(w2 - w1, rel=1e-12)
    # frozen: no change
    cell.learning = 0
    assert pair(w0) == w0


@neuron_mark
def test_network_normalisation_wiring_and_vectorised_access(h):
    from rsrp_sim.backends.netpyne.dc_network import DCNetwork, initial_connectivity

    net = DCNetwork(MODEL, n_in=64, n_exc=5, seed=3)
    try:
        w0, d0 = initial_connectivity(MODEL, 5, 64, 3)
        np.testing.assert_allclose(net.weights, w0)
        np.testing.assert_allclose(net.delays, d0)
        lo, hi = MODEL["weights"]["input_delay_ms"]
        assert d0.min() >= lo and d0.max() <= hi and w0.min() >= 0
        total = DCNetwork.norm_total(MODEL, 64)
        assert total == pytest.approx(78.0 * 64 / 784)
        assert net.w_gain == pytest.approx(784 / 64)
        net.normalize(total)
        w = net.weights
        np.testing.assert_allclose(w.sum(axis=1), total, rtol=1e-12)
        np.testing.assert_allclose(w / w0, (w / w0)[:, :1] * np.ones((1, 64)), rtol=1e-12)  # a scale per neuron
        # lateral wiring: exc i -> inh i only; inh i -> every exc but i
        assert len(net.lateral) == 5 + 5 * 4
        # a silent network stays silent; driven inputs make the excitatory cells fire
        net.restart((0, 1))
        net.run(100.0)
        assert net.spike_counts().sum() == 0
        net.set_rates(np.full(64, 60.0))
        net.run(350.0)
        assert net.spike_counts().sum() > 0
    finally:
        net.close()


# ---------------------------------------------------------------------------------------------- protocol
def shared_mnist() -> Path | None:
    env = os.environ.get("RSRP_SIM_MNIST")
    p = Path(env) if env else Path(rsrp_sim.__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    return p if (p / "t10k-images-idx3-ubyte.gz").is_file() else None


def run_dc(protocol, out, preset="cpu", **overrides):
    return get(protocol).run("stdp-dc", "netpyne", preset, 0, out, overrides=overrides, progress=False)


SMALL = dict(n_exc=10, examples=30, examples_per_iteration=10, label_window=20, eval_every=2, val_size=10,
             test_size=20)


@neuron_mark
def test_records_plots_and_exact_resume(h, tmp_path):
    rd, s = run_dc("digits", tmp_path / "full", **SMALL)
    rows = read_metrics(rd.metrics_path)
    assert [r["examples"] for r in rows] == [10, 20, 30]
    assert np.isnan(rows[0]["eval_score"]) and 0 <= rows[1]["eval_score"] <= 1
    assert rows[0]["train_score"] == 0  # no labels before the first iteration ends
    assert s["status"] == "completed" and s["examples"] == 30 and s["test_size"] == 20
    for name in ("receptive_fields.png", "assignments.png", "confusion_test.png", "learning_curve.png"):
        assert (rd.path / "plots" / name).is_file()
    ck = np.load(rd.checkpoint_path)
    names = " ".join(ck.files)
    assert all(k in names for k in ("weights", "theta", "assignments"))
    # interrupted after one iteration, resumed: the same numbers as the uninterrupted run
    get("digits").run("stdp-dc", "netpyne", "cpu", 0, tmp_path / "part", overrides=SMALL, progress=False,
                      stop_after=1)
    rd2, s2 = get("digits").run(out=tmp_path / "part", resume=True, progress=False)
    again = read_metrics(rd2.metrics_path)
    for a, b in zip(rows, again):
        for k in ("train_score", "eval_score", "presentations", "mean_spikes", "theta_mean"):
            np.testing.assert_equal(a[k], b[k])
    assert s2["test_score"] == s["test_score"]
    ck2 = np.load(rd2.checkpoint_path)
    for k in ck.files:
        if "wall_s" not in str(ck[k]):  # (the metadata entry holds the wall time)
            np.testing.assert_array_equal(ck[k], ck2[k])


def test_stdp_dc_errors(tmp_path):
    proto = get("digits")
    with pytest.raises(UserError, match="value for dataset"):
        proto.build_config("stdp-dc", "netpyne", "cpu", {"dataset": "cifar10"})
    with pytest.raises(UserError, match="label_window"):
        proto.build_config("stdp-dc", "netpyne", "cpu", {"label_window": 0})
    with pytest.raises(UserError, match="eval_examples"):
        proto.build_config("stdp-dc", "netpyne", "cpu", {"eval_examples": 0})
    with pytest.raises(UserError, match="back-end for method stdp-dc"):
        proto.build_config("stdp-dc", "jax", "cpu", {})
    with pytest.raises(UserError, match="key of model diehl_cook"):
        run_dc("digits", tmp_path / "bad", model_overrides={"stdp.nu_prex": 1.0})


@neuron_mark
@pytest.mark.slow
def test_stdp_dc_learns_digits(h, tmp_path):
    """The digits cpu preset (N_e = 100, 1,000 presentations) reaches >= 70 % held-out test accuracy."""
    rd, s = run_dc("digits", tmp_path / "dc")
    assert s["test_score"] >= 0.70, s
    rows = read_metrics(rd.metrics_path)
    assert rows[-1]["train_score"] >= 0.6 and s["final_eval_score"] >= 0.6
    assert sum(s["labels_per_class"][1:]) == 100 and min(s["labels_per_class"][1:]) >= 1  # every class has neurons


@neuron_mark
@pytest.mark.skipif(shared_mnist() is None, reason="real MNIST files not found (set RSRP_SIM_MNIST or put "
                                                   "them in <repo>/../shared/data/mnist)")
def test_stdp_dc_on_real_mnist_runs(h, tmp_path):
    """A few real MNIST presentations through the protocol (784 inputs, deterministic split)."""
    rd, s = run_dc("mnist", tmp_path / "mn", data_dir=str(shared_mnist()), n_exc=20, examples=20,
                   examples_per_iteration=20, label_window=20, eval_examples=10, test_size=20)
    assert s["train_size"] == 10000 - 20 - 1000 and s["test_size"] == 20 and s["n_inputs"] == 784
    assert read_metrics(rd.metrics_path)[-1]["mean_spikes"] > 0 and 0 <= s["test_score"] <= 1


@pytest.mark.neuron
def test_one_network_per_process_whatever_its_kind(h):
    """Building a Diehl & Cook network closes a live R-STDP network (and back): their NetCons never
    share one simulation."""
    from rsrp_sim.backends.netpyne.dc_network import DCNetwork
    from rsrp_sim.backends.netpyne.network import RSTDPNetwork
    from rsrp_sim.backends.netpyne.rstdp_cartpole import load_model

    dc = DCNetwork(MODEL, n_in=64, n_exc=5, seed=0)
    alone = h.List("NetCon").count()
    rstdp = RSTDPNetwork(load_model("rstdp_cartpole", {}), seed=0)
    assert not dc.alive and rstdp.alive
    assert h.List("NetCon").count() != alone
    dc = DCNetwork(MODEL, n_in=64, n_exc=5, seed=0)
    assert not rstdp.alive and dc.alive
    assert h.List("NetCon").count() == alone   # nothing of the R-STDP network is left
    dc.close()
    assert not dc.alive
