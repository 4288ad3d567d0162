"""Experiment tracking (logger=tensorboard|wandb|none): the event files and the offline W&B log hold
the run's metrics.csv values and the release-probability histograms; none writes neither."""
import math

import numpy as np
import pytest

from rsrp_sim.infra import config as configlib
from rsrp_sim.infra import tracking
from rsrp_sim.infra.errors import UserError
from rsrp_sim.infra.records import read_metrics
from rsrp_sim.protocols import PROTOCOLS, get
from rsrp_sim.protocols.cartpole import PROTOCOL

TINY = {"pop_size": 32, "eval_size": 2, "chunk_size": 32, "model_overrides": {"n_neurons": 32}, "generations": 3,
        "record_episodes": 0}


def run(tmp_path, name, **extra):
    return PROTOCOL.run("rsrp", "jax", "cpu", 0, tmp_path / name, overrides={**TINY, **extra}, progress=False)


def final_p(run_dir) -> np.ndarray:
    """The release probabilities of the final state, from the checkpoint (named like the state's pytree)."""
    with np.load(run_dir / "checkpoint.npz") as z:
        keys = sorted(k for k in z.files if ".p[" in k)
        return np.concatenate([z[k].ravel() for k in keys])


def assert_same_scalars(rows, logged):
    """Every finite numeric metrics.csv value is logged at its iteration, and nothing else."""
    for col in rows[0]:
        if col == "iteration":
            continue
        want = [(r["iteration"], float(r[col])) for r in rows
                if isinstance(r[col], (int, float)) and math.isfinite(float(r[col]))]
        got = logged.get(col, [])
        assert [s for s, _ in got] == [s for s, _ in want], col
        assert np.allclose([v for _, v in got], [v for _, v in want], rtol=1e-6), col


def test_tensorboard_events_hold_the_metrics_and_the_p_histogram(tmp_path):
    rd, s = run(tmp_path, "tb", logger="tensorboard")
    rows = read_metrics(rd.metrics_path)
    scalars, hists = tracking.read_tensorboard(rd.path)
    assert_same_scalars(rows, scalars)
    assert "eval_score" in scalars and "train_score" in scalars and "iteration" not in scalars
    assert {"p", "p/in", "p/h", "p/out"} <= set(hists)
    p = final_p(rd.path)
    for tag in ("p", "p/in", "p/h", "p/out"):
        assert [step for step, _ in hists[tag]] == [1, 2, 3], tag
    step, h = hists["p"][-1]
    assert h.num == p.size and sum(h.bucket) == p.size
    assert h.sum == pytest.approx(float(p.astype(np.float64).sum()), rel=1e-6)
    assert h.min == pytest.approx(float(p.min())) and h.max == pytest.approx(float(p.max()))
    assert hists["p/in"][-1][1].num + hists["p/h"][-1][1].num + hists["p/out"][-1][1].num == p.size
    assert not (rd.path / "wandb").exists()


def test_tensorboard_after_resume_has_each_iteration_once(tmp_path):
    rd, _ = PROTOCOL.run("rsrp", "jax", "cpu", 0, tmp_path / "r", overrides={**TINY, "logger": "tensorboard"},
                         progress=False, stop_after=2)
    rd, s = PROTOCOL.run(out=tmp_path / "r", resume=True, progress=False)
    assert s["status"] == "completed"
    scalars, hists = tracking.read_tensorboard(rd.path)
    assert_same_scalars(read_metrics(rd.metrics_path), scalars)
    assert [step for step, _ in hists["p"]] == [1, 2, 3]


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    """A user who never configured W&B: no mode, no key, an empty ~/.netrc."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    return home


def test_wandb_runs_offline_and_its_log_holds_the_history(tmp_path, no_wandb_account):
    pytest.importorskip("wandb")
    assert tracking.wandb_mode() == "offline"
    rd, s = run(tmp_path, "wb", logger="wandb")
    assert len(list((rd.path / "wandb").glob("offline-run-*"))) == 1
    history = tracking.read_wandb_offline(rd.path)
    rows = read_metrics(rd.metrics_path)
    assert [h["_step"] for h in history] == [r["iteration"] for r in rows] == [1, 2, 3]
    logged = {}
    for h in history:
        for k, v in h.items():
            if isinstance(v, (int, float)) and not k.startswith("_"):
                logged.setdefault(k, []).append((h["_step"], float(v)))
    logged = {k: v for k, v in logged.items() if "/" not in k}  # the histograms' fields
    assert_same_scalars(rows, logged)
    p = final_p(rd.path)
    assert sum(history[-1]["p/values"]) == p.size
    counts, _ = np.histogram(p.astype(np.float64), bins=tracking.P_BINS)
    assert history[-1]["p/values"] == counts.tolist()
    assert not (rd.path / "tensorboard").exists()


def test_wandb_mode_follows_the_users_configuration(monkeypatch, no_wandb_account):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(UserError, match="WANDB_MODE=online but W&B has no API key here"):
        tracking.wandb_mode()
    monkeypatch.delenv("WANDB_MODE")
    (no_wandb_account / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    assert tracking.wandb_mode() == "online"  # `wandb login` was run: the user's own setting
    (no_wandb_account / ".netrc").write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    assert tracking.wandb_mode() == "online"


def test_logger_none_writes_neither_and_every_method_has_the_key(tmp_path):
    rd, s = run(tmp_path, "plain")
    assert rd.config["config"]["logger"] == "none"
    assert not (rd.path / "tensorboard").exists() and not (rd.path / "wandb").exists()
    checked = 0
    for name in PROTOCOLS:
        proto = get(name)
        for spec in proto.methods.values():
            for backend in spec.backends:
                try:
                    cls = proto.method_class(spec, backend)
                except UserError:  # an optional back-end not installed here
                    continue
                keys = [line.split(" ")[0] for line in configlib.describe(cls.Config)]
                assert "logger" in keys, (name, spec.name, backend)
                checked += 1
    assert checked >= 12


def test_a_bad_logger_is_one_line(capsys, tmp_path):
    code = PROTOCOL.main(["--quiet", "--out", str(tmp_path / "r"), "logger=tb"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "unknown value for logger 'tb'; allowed: none, tensorboard, wandb" in err
    assert not (tmp_path / "r").exists()
