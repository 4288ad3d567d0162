"""NetPyNE/NEURON back-end: mechanism build, the RLSTDP synapse, encoding, critic, closed loop, learning."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from rsrp_sim.core import models
from rsrp_sim.backends.netpyne import rstdp_io
from rsrp_sim.infra.errors import UserError

MODEL = models.load("rstdp_cartpole")


# ---------------------------------------------------------------------------------------------- pure Python
def test_critic_on_hand_made_observation_pairs():
    c = rstdp_io.Critic(MODEL["critic"])
    o = lambda th, thd: np.array([0.0, 0.0, th, thd])  # noqa: E731
    # pole angle error 0.1 -> 0.05: r = 3 * 0.05, positive x 1.5
    assert c.reward(o(0.1, 0.0), o(0.05, 0.0)) == pytest.approx(0.225)
    assert c.reward(o(0.05, 0.0), o(0.1, 0.0)) == pytest.approx(-0.15)
    # angular velocity enters with weight 0.7 under the square root
    assert c.reward(o(0.0, 0.2), o(0.0, 0.1)) == pytest.approx(3 * np.sqrt(0.7) * 0.1 * 1.5)
    assert c.reward(o(0.0, 0.0), o(0.5, 0.0)) == 0.0  # after a balanced state: no reward
    assert c.reward(o(0.02, 0.3), o(0.005, 0.005)) == 1.0  # reaching balance: +1.5 clipped to 1
    assert c.reward(o(0.1, 0.0), o(0.5, 0.0)) == -1.0  # clipped
    assert c.reward(o(0.1, 0.0), o(0.05, 0.0), undecided=True) == pytest.approx(-1 / 1.5)
    assert c.reward(None, o(0.05, 0.0)) == 0.0
    assert c.reward(o(0.1, 0.0), o(0.25, 0.0), terminated=True) == -1.0
    assert c.reward(o(0.1, 0.0), o(0.05, 0.0), truncated=True) == pytest.approx(0.225)
    ref = rstdp_io.Critic(dict(MODEL["critic"], reference_terminal=True))
    assert ref.reward(o(0.1, 0.0), o(0.25, 0.0), terminated=True) == 0.0
    assert ref.reward(o(0.1, 0.0), o(0.05, 0.0), truncated=True) == 0.0


def test_encoding_of_known_observations():
    from scipy.stats import norm

    enc = rstdp_io.Encoder(MODEL)
    mean, std = np.asarray(MODEL["obs_mean"]), np.asarray(MODEL["obs_std"])
    # z-scores at the centres of bins 0, 7, 12, 19 (equiprobable standard-normal bins of width 1/20)
    bins = np.array([0, 7, 12, 19])
    obs = mean + std * norm.ppf((bins + 0.5) / 20)
    assert enc.active_units(obs).tolist() == [0, 27, 52, 79]
    r = enc.rates(obs)
    assert r.shape == (80,) and np.flatnonzero(r).tolist() == [0, 27, 52, 79] and set(r[r > 0]) == {50.0}
    # the mean lies on the middle edge: the lower bin (as the reference's searchsorted); far out: end bins
    assert enc.active_units(mean).tolist() == [9, 29, 49, 69]
    assert enc.active_units(mean + 50 * std).tolist() == [19, 39, 59, 79]
    assert enc.active_units(mean - 50 * std).tolist() == [0, 20, 40, 60]


def test_decide():
    assert rstdp_io.decide(3, 1) == rstdp_io.LEFT
    assert rstdp_io.decide(0, 2) == rstdp_io.RIGHT
    assert rstdp_io.decide(2, 2) == rstdp_io.decide(0, 0) == rstdp_io.UNDECIDED


def test_model_connectivity_matches_the_published_table():
    from rsrp_sim.backends.netpyne.network import conn_specs

    specs = {s["label"]: s for s in conn_specs(MODEL)}
    # effective weights (cmat x gain) and convergences of reference-experiments.md §2.3
    expect = {"ES-AM2->EA": (10.0, 25), "ES-NM2->EA": (0.196, 25), "EA-AM2->IA": (5.85, 15),
              "EA-NM2->IAL": (0.294, 15), "EA-AM2->EM": (6.5, 20), "EA-NM2->EM": (0.1, 20),
              "IA-GA->EA": (18.0, 4), "IA-GA->IA": (4.5, 1), "IA-GA->IAL": (4.5, 2), "IAL-GA2->EA": (5.0, 4),
              "IAL-GA2->IA": (2.25, 2), "IAL-GA2->IAL": (5.5, 1), "EM-AM2->IM": (5.85, 16),
              "EM-AM2->IML": (2.94, 16), "EM-NM2->IML": (0.294, 16), "IM-GA->EM": (18.0, 4)}
    for label, (w, conv) in expect.items():
        assert specs[label]["weight"] == pytest.approx(w) and specs[label]["conv"] == conv, label
    assert {k for k, s in specs.items() if s["plastic"]} == {"ES-AM2->EA", "EA-AM2->EM"}


def test_bad_model_override_is_one_line():
    with pytest.raises(UserError, match="unknown key of model rstdp_cartpole.stdp 'RLhebwt'"):
        models.load("rstdp_cartpole", {"stdp.RLhebwt": 0.1})
    with pytest.raises(UserError, match="model.stdp.RLhebbwt must be float"):
        models.load("rstdp_cartpole", {"stdp.RLhebbwt": "big"})


# ---------------------------------------------------------------------------------------------- NEURON
neuron_mark = pytest.mark.neuron


@pytest.fixture(scope="session")
def nrn():
    """Compile (on first use, into the per-user cache) and load the mechanisms once per session."""
    pytest.importorskip("neuron")
    pytest.importorskip("netpyne")
    from rsrp_sim.backends.netpyne import mechanisms

    try:
        lib = mechanisms.load()
    except UserError as e:
        pytest.skip(f"NEURON mechanisms unavailable: {e}")
    from neuron import h

    h.load_file("stdrun.hoc")
    return lib


@neuron_mark
def test_mechanisms_compile_into_the_cache_and_load_once(nrn, monkeypatch, tmp_path):
    from neuron import h

    from rsrp_sim.backends.netpyne import mechanisms

    key = mechanisms.content_hash()
    assert nrn.is_file() and key in str(nrn)
    for name in ("DeflIF", "RLSTDP", "RateGen", "Relay"):
        assert hasattr(h, name)
    assert mechanisms.load() == nrn  # once per process
    assert mechanisms.build() == nrn  # cached: no recompilation
    src = mechanisms.mod_dir()
    assert {p.suffix for p in src.iterdir()} == {".mod"}  # nothing built in the package
    assert not any(p.name in ("x86_64", "arm64", "aarch64") for p in src.parent.iterdir())
    # the key follows the mod files' content
    copy = tmp_path / "mod"
    shutil.copytree(src, copy)
    (copy / "relay.mod").write_text((copy / "relay.mod").read_text() + "\n: edited\n")
    assert mechanisms.content_hash(copy) != key
    # no compiler / no nrnivmodl: one clear line, nothing half-built
    monkeypatch.setenv(mechanisms.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(mechanisms, "find_compiler", lambda: None)
    with pytest.raises(UserError, match=r"no C\+\+ compiler.*install NEURON") as e:
        mechanisms.build(copy)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(mechanisms, "find_nrnivmodl", lambda: None)
    with pytest.raises(UserError, match="nrnivmodl not found"):
        mechanisms.build(copy)


class _Synapse:
    """One RLSTDP synapse acting on the AM2 weight of a NetCon onto a DeflIF cell; spikes by hand."""

    def __init__(self, w0=10.0, **params):
        from neuron import h

        self.h = h
        self.cell = h.DeflIF()
        self.syn = h.NetCon(None, self.cell)
        self.syn.weight[3] = w0
        self.host = h.Section(name="stdp_test")
        self.m = h.RLSTDP(self.host(0.5))
        for k, v in params.items():
            setattr(self.m, k, v)
        h.setpointer(self.syn._ref_weight[3], "synweight", self.m)
        self.pre = h.NetCon(None, self.m)
        self.pre.weight[0] = 1.0
        self.post = h.NetCon(None, self.m)
        self.post.weight[0] = -1.0
        self.h.finitialize()

    def spikes(self, pre=(), post=()):
        for t in pre:
            self.pre.event(t)
        for t in post:
            self.post.event(t)

    def run(self, t):
        self.h.continuerun(t)

    @property
    def w(self):
        return self.syn.weight[3]


@neuron_mark
@pytest.mark.parametrize("r", [1.0, -1.0])
def test_rlstdp_hebbian_and_anti_hebbian_rewards(nrn, r):
    # Hebbian: post 2 ms after pre -> dw = r * RLhebbwt
    s = _Synapse()
    s.spikes(pre=[10.0], post=[12.0])
    s.run(100)
    s.m.reward_punish(r)
    assert s.w - 10.0 == pytest.approx(r * 0.04)
    s.m.reward_punish(r)  # traces are not consumed
    assert s.w - 10.0 == pytest.approx(2 * r * 0.04)
    # anti-Hebbian: pre 2 ms after post -> dw = r * RLantiwt = -r * 0.04
    s = _Synapse()
    s.spikes(pre=[12.0], post=[10.0])
    s.run(100)
    s.m.reward_punish(r)
    assert s.w - 10.0 == pytest.approx(-r * 0.04)
    # both orders within the window: they cancel
    s = _Synapse()
    s.spikes(pre=[10.0, 14.0], post=[12.0])
    s.run(100)
    s.m.reward_punish(r)
    assert s.w == pytest.approx(10.0)


@neuron_mark
def test_rlstdp_no_change_outside_the_windows(nrn):
    for pre, post in (([10.0], [15.0]),  # 5 ms > RLwindhebb = 3 ms
                      ([10.0], [10.5]),  # 0.5 ms < mindt = 1 ms
                      ([15.0], [10.0])):  # 5 ms > RLwindanti
        s = _Synapse()
        s.spikes(pre=pre, post=post)
        s.run(100)
        s.m.reward_punish(1.0)
        assert s.w == 10.0, (pre, post)
    # eligibility lasts RLlenhebb = 250 ms after the pairing (at 12 ms), not longer
    s = _Synapse()
    s.spikes(pre=[10.0], post=[12.0])
    s.run(261.0)
    s.m.reward_punish(1.0)
    assert s.w == pytest.approx(10.04)
    s.run(263.0)
    s.m.reward_punish(1.0)
    assert s.w == pytest.approx(10.04)
    # a reset clears the eligibility
    s = _Synapse()
    s.spikes(pre=[10.0], post=[12.0])
    s.run(50)
    s.m.reset_eligibility()
    s.m.reward_punish(1.0)
    assert s.w == 10.0


@neuron_mark
def test_rlstdp_weight_bounds_and_reward_events(nrn):
    s = _Synapse(w0=399.99)
    s.spikes(pre=[10.0], post=[12.0])
    s.run(50)
    s.m.reward_punish(1.0)
    assert s.w == 400.0  # wmax
    s = _Synapse(w0=0.01)
    s.spikes(pre=[10.0], post=[12.0])
    s.run(50)
    s.m.reward_punish(-1.0)
    assert s.w == 0.0  # wbase
    # the event path (used to reward all synapses at once): kind 1 = reward, kind 2 = reward then reset
    s = _Synapse()
    s.spikes(pre=[10.0], post=[12.0])
    ev = s.h.NetCon(None, s.m)
    ev.weight[0], ev.weight[1] = 0.0, 1.0
    s.run(50)
    s.m.rpending = -0.5
    ev.event(50.0)
    s.run(60)
    assert s.w == pytest.approx(10.0 - 0.5 * 0.04) and s.m.rpending == 0
    ev.weight[1] = 2.0
    s.m.rpending = 1.0
    ev.event(60.0)
    s.run(70)
    assert s.w == pytest.approx(10.0 + 0.5 * 0.04)
    s.m.reward_punish(1.0)  # eligibility was reset by the kind-2 event
    assert s.w == pytest.approx(10.0 + 0.5 * 0.04)


@neuron_mark
def test_deflif_cell_spikes_refractoriness_and_block(nrn):
    from neuron import h

    c = h.DeflIF()
    for k, v in MODEL["cells"]["E"].items():
        setattr(c, k, v)
    nc = h.NetCon(None, c)
    out = h.Vector()
    rec = h.NetCon(c, None)
    rec.record(out)
    h.finitialize()
    nc.weight[0] = 20.0  # -65 + 20 = -45 mV: below threshold -40
    nc.event(1.0)
    h.continuerun(2.0)
    assert c.Vm == pytest.approx(-45.0) and len(out) == 0
    nc.weight[0] = 15.0  # 2 ms later: -65 + 20 e^-0.2 + 15 (1 - 16.4/65) ~ -37.4 mV -> spike
    nc.event(3.0)
    h.continuerun(4.0)
    assert list(out) == [3.0] and c.AHP == -1.0 and c.refractory == 1
    nc.event(5.0)  # absolutely refractory (5 ms)
    h.continuerun(6.0)
    assert len(out) == 1
    # relative refractoriness: threshold raised to VTH + 0.75 (Vblock - VTH) and relaxing with tauRR
    nc.event(8.5)
    h.continuerun(9.0)
    assert c.VTHC == pytest.approx(-40 + 0.75 * 15 * np.exp(-0.5 / 8.0))
    # depolarisation block: a large input pushes Vm above Vblock = -25 mV -> no spike
    h.finitialize()
    out.resize(0)
    nc.weight[0] = 50.0
    nc.event(1.0)
    h.continuerun(2.0)
    assert c.Vm > -25.0 and len(out) == 0


@neuron_mark
def test_rategen_regular_and_poisson_rates(nrn):
    from neuron import h

    u = h.RateGen()
    u.hz = 50.0
    ctl = h.NetCon(None, u)
    out = h.Vector()
    rec = h.NetCon(u, None)
    rec.record(out)
    h.finitialize()
    h.continuerun(100.0)
    assert list(out) == pytest.approx([0, 20, 40, 60, 80, 100])
    u.hz = 200.0  # faster: continues from the last spike at the new interval
    ctl.event(h.t)
    h.continuerun(120.0)
    assert np.diff(list(out)[5:]) == pytest.approx([5.0] * 4)
    u.hz = 0.0  # silent
    ctl.event(h.t)
    h.continuerun(300.0)
    assert len(out) == 10
    u.hz = 50.0  # switched on after a pause: fires at once
    ctl.event(h.t)
    h.continuerun(301.0)
    assert out[-1] == pytest.approx(300.0)

    def poisson(ids, hz=100.0, ms=5000.0):
        p = h.RateGen()
        p.noise, p.hz = 1.0, hz
        p.ranvar.set_ids(*ids)
        v = h.Vector()
        nc = h.NetCon(p, None)
        nc.record(v)
        h.finitialize()
        h.continuerun(ms)
        return np.array(v)

    a, b, c = poisson((1, 2, 3)), poisson((1, 2, 3)), poisson((1, 2, 4))
    assert abs(len(a) - 500) < 4 * np.sqrt(500)
    isi = np.diff(a)
    assert isi.std() / isi.mean() == pytest.approx(1.0, abs=0.15)  # exponential intervals
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # reproducible per stream id


# ---------------------------------------------------------------------------------------------- network
@pytest.fixture(scope="module")
def method(nrn):
    from rsrp_sim.backends.netpyne.rstdp_cartpole import RSTDPCartPole, RSTDPConfig

    cfg = RSTDPConfig(episodes=6, episodes_per_iteration=3, eval_episodes=1,
                      model_overrides={"normalize_inputs_every": 0, "gain_control_every": 0,
                                       "output_balancing": False, "reward_non_motor": 0.5})
    return RSTDPCartPole(cfg, seed=3)


@neuron_mark
def test_network_encodes_observations_into_the_expected_input_cells(method):
    from rsrp_sim.backends.netpyne.network import StopRun

    net = method.net
    assert {p: len(g) for p, g in net.pop_gids.items() if p != "stim"} == MODEL["populations"]
    assert net.n_plastic == 40 * 25 + 40 * 20
    obs = np.array([0.01, -0.2, 0.03, 0.4])
    units = method.encoder.active_units(obs)
    net.set_rates(method.encoder.rates(obs))
    spikes = []

    def ctl(t):
        spikes.append(net.take_spikes())
        if t >= 390:
            raise StopRun

    net.run(ctl, 1000)
    gids = np.concatenate([g for _, g in spikes])
    es = net.pop_gids["ES"]
    counts = np.array([(gids == g).sum() for g in es])
    assert set(np.flatnonzero(counts)) == set(units)
    assert all(18 <= counts[u] <= 22 for u in units)  # 50 Hz regular trains for ~400 ms


@neuron_mark
@pytest.mark.parametrize("r", [1.0, -1.0])
def test_closed_loop_rewards_move_the_acting_half(method, monkeypatch, r):
    from rsrp_sim.backends.netpyne import rstdp_cartpole

    monkeypatch.setattr(rstdp_cartpole, "decide", lambda left, right: rstdp_io.LEFT)  # always push left
    monkeypatch.setattr(method.critic, "reward", lambda *a, **k: r)
    st0 = method.init_state()
    st, rec = method.step(st0)
    assert rec["episodes"] == 3 and rec["env_steps"] > 3 and rec["eval_score"] >= 1
    dw = st["weights"] - st0["weights"]
    g = method.net.group
    # each synapse moves in steps of 0.04 x its reward share: 1 (acting half), -0.8 (other), 0.5 (ES->EA)
    for group, share in ((0, 1.0), (1, -0.8), (2, 0.5)):
        k = dw[g == group] / (0.04 * share * abs(r))
        assert np.allclose(k, np.round(k), atol=1e-6), group
    # causal (Hebbian) pairings dominate: the rewarded half gains when r > 0 and loses when r < 0
    assert np.sign(dw[g == 0].sum()) == np.sign(r) and np.sign(dw[g == 1].sum()) == -np.sign(r)
    assert np.sign(dw[g == 2].sum()) == np.sign(r)
    assert (dw[g == 0] != 0).sum() > 10


# ---------------------------------------------------------------------------------------------- protocol
def test_rstdp_config_errors_are_one_line():
    pytest.importorskip("neuron")
    pytest.importorskip("netpyne")
    from rsrp_sim.protocols.cartpole import PROTOCOL

    with pytest.raises(UserError, match="rstdp supports env CartPole-v1"):
        PROTOCOL.build_config("rstdp", "netpyne", "cpu", {"env": "Acrobot-v1"})
    with pytest.raises(UserError, match="episodes_per_iteration must be at least 1"):
        PROTOCOL.build_config("rstdp", "netpyne", "cpu", {"episodes_per_iteration": 0})
    with pytest.raises(UserError, match="unknown back-end for method rstdp 'jax'"):
        PROTOCOL.build_config("rstdp", "jax", "cpu", {})
    with pytest.raises(UserError, match="unknown key of model rstdp_cartpole 'stpd'"):
        PROTOCOL.build_config("rstdp", "netpyne", "cpu", {"model_overrides": {"stpd.RLhebbwt": 0.1}})
    with pytest.raises(UserError, match="not an R-STDP CartPole model"):
        PROTOCOL.build_config("rstdp", "netpyne", "cpu", {"model": "conn_snn"})
    cfg = PROTOCOL.build_config("rstdp", "netpyne", "paper", {})
    assert cfg.episodes == 9000 and cfg.env == "CartPole-v1"
    cfg = PROTOCOL.build_config("rstdp", "netpyne", "cpu", {"model_overrides": {"stdp.RLhebbwt": 0.08}})
    assert cfg.episodes == 200 and cfg.model_overrides == {"stdp.RLhebbwt": 0.08}


@neuron_mark
def test_resume_continues_exactly(nrn, tmp_path):
    from rsrp_sim.protocols.cartpole import PROTOCOL
    from rsrp_sim.infra.records import read_metrics

    over = {"episodes": 4, "episodes_per_iteration": 2, "eval_episodes": 1}
    _, full = PROTOCOL.run("rstdp", "netpyne", "cpu", seed=5, out=tmp_path / "a", overrides=over, progress=False)
    _, part = PROTOCOL.run("rstdp", "netpyne", "cpu", seed=5, out=tmp_path / "b", overrides=over, progress=False,
                           stop_after=1)
    assert part["status"] == "interrupted" and part["iterations_done"] == 1
    _, rest = PROTOCOL.run(out=tmp_path / "b", resume=True, progress=False)
    assert rest["status"] == "completed" and full["status"] == "completed"
    cols = ("iteration", "env_steps", "train_score", "eval_score", "episodes", "median21", "w_motor_mean")
    a, b = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    assert [[r[c] for c in cols] for r in a] == [[r[c] for c in cols] for r in b]
    with np.load(tmp_path / "a" / "checkpoint.npz") as za, np.load(tmp_path / "b" / "checkpoint.npz") as zb:
        key = next(k for k in za.files if "weights" in k)
        assert np.array_equal(za[key], zb[key])
    for f in ("learning_curve.png", "raster.png", "weights.png"):
        assert (tmp_path / "a" / "plots" / f).stat().st_size > 1000
    # `rsrp-sim compare` overlays it with a JAX method's run (same metrics columns)
    from rsrp_sim.analysis import compare
    from rsrp_sim.infra.records import RunDir

    jax_run = RunDir.create(tmp_path / "jax", {"protocol": "cartpole", "method": "rsrp", "backend": "jax",
                                               "preset": "cpu", "seed": 0, "config": {"env": "CartPole-v1"}})
    for i in (1, 2):
        jax_run.append_metrics({"iteration": i, "env_steps": 5000 * i, "wall_s": 3.0 * i, "train_score": 20.0 * i,
                                "eval_score": 30.0 * i})
    groups = compare.group_runs([compare.load_run(p) for p in compare.expand([tmp_path / "a", tmp_path / "jax"])])
    assert set(groups) == {"rstdp [netpyne]", "rsrp [jax]"}
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "jax"), "--out", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").stat().st_size > 1000


@neuron_mark
@pytest.mark.slow
def test_cpu_preset_learns(nrn, tmp_path):
    """The cpu preset's last 50 training episodes average at least twice an untrained network's ~23 steps."""
    from rsrp_sim.protocols.cartpole import PROTOCOL
    from rsrp_sim.infra.records import read_metrics

    _, s = PROTOCOL.run("rstdp", "netpyne", "cpu", seed=0, out=tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert s["status"] == "completed" and rows[-1]["episodes"] == 200
    assert rows[0]["mean50"] < 46 <= rows[-1]["mean50"], [r["mean50"] for r in rows]
    assert s["mean50"] == pytest.approx(rows[-1]["mean50"])
