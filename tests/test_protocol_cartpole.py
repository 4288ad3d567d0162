"""The protocol layer on CartPole: CLI errors, records, resume, interruption, compare, --env."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from rsrp_sim.protocols.cartpole import PROTOCOL
from rsrp_sim.infra.records import read_metrics

TINY = ["pop_size=32", "eval_size=2", "chunk_size=32", "model.n_neurons=32"]
ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = PROTOCOL.main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["--method", "rsrpp"], "unknown method for protocol cartpole 'rsrpp' (did you mean 'rsrp'?); allowed: rsrp, "),
    (["--preset", "huge"], "unknown preset 'huge'; allowed: cpu, paper"),
    (["--backend", "torch"], "unknown back-end for method rsrp 'torch'; allowed: jax"),
    (["--env", "CartPole-v0"], "unknown env 'CartPole-v0' (did you mean 'CartPole-v1'?)"),
    (["generation=3"], "unknown key in override 'generation' (did you mean 'generations'?); allowed: "),
    (["lr=fast"], "lr must be float, got 'fast'"),
    (["generations=2.5"], "generations must be int, got 2.5"),
    (["shaping=rank"], "unknown value for shaping 'rank'; allowed: centered_rank, raw, baseline, sigmoid"),
    (["pop_size=1", "eval_size=2"], "pop_size must be at least 2 sampled members, got 1"),
    (["--method", "es", "pop_size=5", "eval_size=2"], "es needs an even pop_size (antithetic pairs), got pop_size=5"),
    (["model.n_neurons=1"], "model.n_neurons must be at least 2, got 1"),
    (["model.tau=3"], "unknown key of model conn_snn 'tau'"),
    (["--method", "es", "model=conn_snn"], "es needs a model with real-valued weights"),
    (["lr"], "override 'lr' is not of the form key=value"),
    (["--resume"], "--resume needs --out RUN_DIR"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, "--out", str(tmp_path / "run"), *args) if "--resume" not in args else \
        run_cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert not (tmp_path / "run").exists()  # nothing created


def test_existing_run_folder_is_not_overwritten(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    code, _, err = run_cli(capsys, "--out", str(run), *TINY, "generations=1")
    assert code == 2 and "run folder" in err and "already exists; pass --resume" in err
    assert [p.name for p in run.iterdir()] == ["notes.txt"] and (run / "notes.txt").read_text() == "precious"
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "nothing"), "--resume")
    assert code == 2 and "is not a run folder" in err


def test_run_records_and_resume_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    PROTOCOL.run("rsrp", preset="cpu", seed=3, out=full, overrides=_ov("generations=4"), progress=False)
    part = tmp_path / "part"
    rd, s = PROTOCOL.run("rsrp", preset="cpu", seed=3, out=part, overrides=_ov("generations=4"), progress=False,
                         stop_after=2)
    assert s["status"] == "interrupted" and s["iterations_done"] == 2
    assert not [p for p in part.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    rd, s = PROTOCOL.run(out=part, resume=True, progress=False)
    assert s["status"] == "completed" and s["iterations_done"] == 4
    a, b = read_metrics(full / "metrics.csv"), read_metrics(part / "metrics.csv")
    assert [r["iteration"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ra:
            if k != "wall_s" and not k.endswith("_per_s"):  # timings differ; everything else is exact
                assert ra[k] == rb[k], (k, ra[k], rb[k])
    assert b[-1]["wall_s"] > b[1]["wall_s"]  # wall clock continues from the checkpoint
    cfg = yaml.safe_load((full / "config.yaml").read_text())
    assert cfg["method"] == "rsrp" and cfg["config"]["pop_size"] == 32 and cfg["seed"] == 3
    assert cfg["config"]["model_overrides"] == {"n_neurons": 32} and "jax" in cfg["versions"]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["iterations_done"] == 4 and summary["best_eval_score"] == max(r["eval_score"] for r in a)
    assert (full / "plots" / "learning_curve.png").stat().st_size > 10_000
    assert (full / "plots" / "p_histogram.png").exists()
    # the standard columns come first
    assert list(a[0])[:5] == ["iteration", "env_steps", "wall_s", "train_score", "eval_score"]
    assert all(0 < r["p_mean"] < 1 for r in a) and a[-1]["env_steps"] > a[0]["env_steps"] > 0


def test_resume_can_extend_but_not_change_the_config(tmp_path, capsys):
    out = tmp_path / "r"
    PROTOCOL.run("rsrp-reservoir", out=out, overrides=_ov("generations=1"), progress=False)
    code, _, err = run_cli(capsys, "--out", str(out), "--resume", "lr=0.5")
    assert code == 2 and "cannot change lr when resuming; only generations= may be given" in err
    code, _, err = run_cli(capsys, "--out", str(out), "--resume", "--method", "es")
    assert code == 2 and "--method es does not match the run being resumed (rsrp-reservoir)" in err
    code, out_text, _ = run_cli(capsys, "--out", str(out), "--resume", "generations=2")
    assert code == 0 and "2/2 iterations" in out_text
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2]


def test_resume_with_fewer_iterations_than_done_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "--out", str(run), "generations=2", *TINY)[0] == 0
    before = (run / "metrics.csv").read_bytes(), (run / "summary.json").read_bytes()
    code, _, err = run_cli(capsys, "--out", str(run), "--resume", "generations=1")
    assert code == 2 and "generations=1 is fewer than the run has done (2 iterations)" in err
    assert ((run / "metrics.csv").read_bytes(), (run / "summary.json").read_bytes()) == before


def test_corrupt_checkpoint_is_reported(tmp_path, capsys):
    out = tmp_path / "r"
    PROTOCOL.run("rsrp", out=out, overrides=_ov("generations=1"), progress=False)
    (out / "checkpoint.npz").write_bytes(b"not a zip file")
    code, _, err = run_cli(capsys, "--out", str(out), "--resume", "generations=2")
    assert code == 2 and "checkpoint" in err and "is unreadable" in err


def test_ctrl_c_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    # far more generations than can finish before the signal (tiny generations take milliseconds)
    cmd = [sys.executable, "-m", "rsrp_sim.protocols.cartpole", "--quiet", "--out", str(out), *TINY,
           "generations=1000000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(out / "metrics.csv")) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop within 60 s of Ctrl-C")
    assert proc.returncode == 130, stderr
    assert "--resume" in stdout
    done = json.loads((out / "summary.json").read_text())
    assert done["status"] == "interrupted" and 2 <= done["iterations_done"] < 1000000
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == done["iterations_done"]
    rd, s = PROTOCOL.run(out=out, resume=True, overrides={"generations": done["iterations_done"] + 1},
                         progress=False)
    assert s["status"] == "completed" and [r["iteration"] for r in read_metrics(out / "metrics.csv")] == \
        list(range(1, done["iterations_done"] + 2))


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "Pendulum-v1"])
@pytest.mark.parametrize("method", ["rsrp", "es"])
def test_other_jax_environments(tmp_path, env_id, method):
    ov = _ov("generations=1", f"env={env_id}", "max_episode_steps=40")
    rd, s = PROTOCOL.run(method, out=tmp_path / "r", overrides=ov, progress=False)
    row = read_metrics(tmp_path / "r" / "metrics.csv")[0]
    # "solved" is the env's gymnasium reward_threshold (Acrobot -100, none for Pendulum); the summary,
    # its line and the learning curve's title name the environment
    assert s["status"] == "completed" and s["solved_threshold"] == {"Acrobot-v1": -100.0, "Pendulum-v1": None}[env_id]
    assert s["task"] == env_id
    from rsrp_sim.protocols.base import summary_line

    assert summary_line(s).startswith(f"cartpole {env_id} {method}/jax seed 0:")
    assert np.isfinite(row["train_score"]) and np.isfinite(row["eval_score"])
    if env_id == "Pendulum-v1":
        assert row["train_score"] < 0  # pendulum rewards are costs
    else:
        assert -40 <= row["train_score"] <= 0  # acrobot: -1 per step until the goal


def test_compare_overlays_runs(tmp_path, capsys):
    from rsrp_sim.__main__ import main

    for seed in (0, 1):
        PROTOCOL.run("rsrp", seed=seed, out=tmp_path / "g" / f"s{seed}", overrides=_ov("generations=2"),
                     progress=False)
    PROTOCOL.run("rsrp-reservoir", out=tmp_path / "res", overrides=_ov("generations=2"), progress=False)
    fig = tmp_path / "cmp.png"
    assert main(["compare", str(tmp_path / "g"), str(tmp_path / "res"), "--out", str(fig)]) == 0
    out = capsys.readouterr().out
    finals = [read_metrics(tmp_path / "g" / f"s{s}" / "metrics.csv")[-1]["eval_score"] for s in (0, 1)]
    line = next(l for l in out.splitlines() if l.startswith("rsrp [jax]"))
    assert line.split()[2] == "2" and float(line.split()[3]) == pytest.approx(np.mean(finals), rel=1e-3)
    assert "rsrp-reservoir [jax]" in out and fig.stat().st_size > 10_000
    assert main(["compare", str(tmp_path / "missing")]) == 2


def test_console_script_and_module_list_protocols():
    exe = Path(sys.executable).with_name("rsrp-sim")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rsrp_sim"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "cartpole" in out.stdout and "rsrp-reservoir" in out.stdout and "es " in out.stdout
    from rsrp_sim.__main__ import SUBCOMMANDS

    lines = out.stdout.splitlines()
    for name, sub in SUBCOMMANDS.items():  # every subcommand, with its one line of help
        assert any(ln.split()[:1] == [name] and sub.help in ln for ln in lines), (name, out.stdout)
    assert {"compare", "report", "ablations", "sweep", "launch"} <= set(SUBCOMMANDS)


def test_options_and_overrides_may_be_mixed(capsys, tmp_path):
    code, _, err = run_cli(capsys, "lr=0.2", "--out", str(tmp_path / "r"), "generations=1", "--seed", "4", *TINY)
    assert code == 0, err
    doc = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert doc["seed"] == 4 and doc["config"]["lr"] == 0.2 and doc["config"]["generations"] == 1


def _ov(*items):
    from rsrp_sim.infra.config import parse_overrides

    return parse_overrides(TINY + list(items))


def test_a_run_folder_of_an_older_format_is_refused_in_one_line(capsys, tmp_path):
    """Before run-folder format 2, pop_size counted the deterministic networks too: such a folder
    cannot be resumed with the same meaning, and the user is told so (nothing is changed)."""
    run = tmp_path / "old"
    assert run_cli(capsys, "--out", str(run), *TINY, "generations=1")[0] == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["format"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = run_cli(capsys, "--out", str(run), "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "written by an older rsrp_sim (run-folder format 1, where pop_size also counted the eval members)" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
