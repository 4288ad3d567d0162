"""Sweeps on Optuna (rsrp-sim sweep): trials are run folders, re-running continues, workers share a
study, interrupted trials resume, the reference preset, pruning, one-line errors."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from rsrp_sim.infra.records import read_metrics  # noqa: E402
from rsrp_sim.protocols import sweep  # noqa: E402
from rsrp_sim.protocols.base import Protocol  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["pop_size=32", "eval_size=2", "chunk_size=32", "model.n_neurons=32", "generations=2"]


def cli(capsys, *args):
    code = sweep.main(["cartpole", "--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def table(folder):
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def study(folder):
    d = yaml.safe_load((folder / "sweep.yaml").read_text())
    return optuna.load_study(study_name=d["study"], storage=f"sqlite:///{folder / 'study.db'}")


def test_space_forms_and_objective():
    assert sweep.parse_dist("lr=loguniform(0.01,0.3)") == ("lr", sweep.Dist("loguniform", (0.01, 0.3)))
    assert sweep.parse_dist("pop_size=choice(256, 512)") == ("pop_size", sweep.Dist("choice", (256, 512)))
    assert sweep.parse_dist("model.n_neurons=int(16,64)") == ("model.n_neurons", sweep.Dist("int", (16, 64)))
    assert sweep.parse_dist("shaping=choice(raw, centered_rank)")[1].args == ("raw", "centered_rank")
    assert sweep.parse_dist("sigma=uniform(0, 1)")[1] == sweep.Dist("uniform", (0.0, 1.0))
    assert sweep.parse_objective("eval_score:best") == {"column": "eval_score", "reducer": "best"}
    assert sweep.parse_objective("train_score") == {"column": "train_score", "reducer": "final"}
    vals = [1.0, None, float("nan"), 3.0, 2.0]
    assert [sweep.reduce_values(vals, r, "maximize") for r in ("final", "best", "mean")] == [2.0, 3.0, 2.0]
    assert sweep.reduce_values(vals, "best", "minimize") == 1.0 and sweep.reduce_values([None], "final", "x") is None


FORMS = "allowed forms: KEY=uniform(LOW,HIGH), KEY=loguniform(LOW,HIGH), KEY=int(LOW,HIGH), KEY=choice(A,B,...)"


@pytest.mark.parametrize("args,message", [
    (["--space", "lrr=uniform(0.1,0.2)"], "unknown key in --space 'lrr' (did you mean 'lr'?); allowed: "),
    (["--space", "lr=logunif(0.01,0.3)"], "malformed --space 'lr=logunif(0.01,0.3)' (unknown distribution 'logunif'); "
                                          + FORMS),
    (["--space", "lr=uniform(0.3)"], "malformed --space 'lr=uniform(0.3)' (uniform needs two arguments, LOW and HIGH)"),
    (["--space", "lr=uniform(0.3,0.1)"], "(LOW must be below HIGH); " + FORMS),
    (["--space", "lr=loguniform(0,1)"], "(loguniform needs LOW > 0)"),
    (["--space", "model.n_neurons=int(8,9.5)"], "(int needs integer LOW and HIGH)"),
    (["--space", "lr=choice()"], "(choice needs at least one value)"),
    (["--space", "lr"], "malformed --space 'lr' (not KEY=DISTRIBUTION(ARGS)); " + FORMS),
    (["--space", "checkpoint_every=choice(1,many)"], "checkpoint_every must be int, got 'many'"),
    (["--space", "lr=uniform(0.1,0.2)", "lr=0.1"], "lr is both swept (--space) and fixed (key=value); give it once"),
    (["--space", "lr=uniform(0.1,0.2)", "--sampler", "grid"], "--sampler grid needs choice(...) or int(...)"),
    (["--space", "lr=uniform(0.1,0.2)", "--objective", "eval_score:median"],
     "unknown objective reducer 'median' (did you mean 'mean'?); allowed: final, best, mean"),
    ([], "nothing to sweep: give --space KEY=DISTRIBUTION (allowed forms: "),
    (["--space", "lr=uniform(0.1,0.2)", "--storage", "postgresql://rsrp@127.0.0.1:1/none"],
     "cannot reach the sweep storage postgresql://rsrp@127.0.0.1:1/none: "),
    (["--space", "lr=uniform(0.1,0.2)", "--storage", "mysql+pymysql://rsrp:secret@127.0.0.1:1/none"],
     "cannot reach the sweep storage mysql+pymysql://rsrp:***@127.0.0.1:1/none: "),
    (["--space", "lr=uniform(0.1,0.2)", "--storage", "sqlite:////no-such-folder/x/study.db"],
     "cannot reach the sweep storage sqlite:////no-such-folder/x/study.db: (sqlite3.OperationalError) unable to open"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "sw"
    code, _, err = cli(capsys, "--out", str(out), *args, *TINY)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert "secret" not in err
    assert not out.exists()


def test_unreachable_server_names_the_refusal(capsys, tmp_path):
    pytest.importorskip("psycopg")
    code, _, err = cli(capsys, "--out", str(tmp_path / "sw"), "--space", "lr=uniform(0.1,0.2)",
                       "--storage", "postgresql://rsrp@127.0.0.1:1/none", *TINY)
    assert code == 2 and "Connection refused" in err and err.count("\n") == 1


def check_trial_folders(folder, rows):
    """Each row's run folder is an ordinary run with the row's values, seed and objective."""
    for r in rows:
        run = folder / r["run_dir"]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["seed"] == int(r["seed"]) == int(r["trial"])  # seed = trial number
        assert cfg["config"]["lr"] == pytest.approx(float(r["lr"]))
        assert cfg["config"]["pop_size"] == 32 and cfg["config"]["model_overrides"]["n_neurons"] == 32
        metrics = read_metrics(run / "metrics.csv")
        assert float(r["value"]) == metrics[-1]["eval_score"]  # eval_score:final


def test_three_trials_then_rerunning_continues_and_grows(capsys, tmp_path):
    out = tmp_path / "sw"
    args = ["--out", str(out), "--method", "rsrp", "--space", "lr=loguniform(0.02,0.3)", "--trials", "3",
            "--sampler", "random", *TINY]
    code, stdout, _ = cli(capsys, *args)
    assert code == 0, stdout
    rows = table(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    check_trial_folders(out, rows)
    assert len(set(r["lr"] for r in rows)) == 3
    st = study(out)
    assert len(st.trials) == 3
    for t, r in zip(st.trials, rows):  # the learning curve is kept as the trial's intermediate values
        evals = [m["eval_score"] for m in read_metrics(out / r["run_dir"] / "metrics.csv")]
        assert [t.intermediate_values[i] for i in sorted(t.intermediate_values)] == evals
    best = json.loads((out / "best.json").read_text())["best"]
    assert best["value"] == max(float(r["value"]) for r in rows)
    assert f"best trial {best['trial']}: eval_score (final) {best['value']:.4g}" in stdout
    assert "3/3 trials (3 complete)" in stdout
    for fig in ("objective.png", "params.png", "best_curves.png"):
        assert (out / "plots" / fig).stat().st_size > 5000
    html = (out / "index.html").read_text()
    assert f"Best trial <b>{best['trial']}</b>" in html and html.count("<tr>") == 4
    stamps = {r["run_dir"]: (out / r["run_dir"] / "metrics.csv").stat().st_mtime_ns for r in rows}

    code, stdout, _ = cli(capsys, *args)  # the same command again: nothing to do
    assert code == 0 and "3/3 trials" in stdout
    assert table(out) == rows and len(study(out).trials) == 3
    assert stamps == {r["run_dir"]: (out / r["run_dir"] / "metrics.csv").stat().st_mtime_ns for r in rows}

    code, stdout, _ = cli(capsys, *[a if a != "3" else "4" for a in args])  # --trials 4: one more
    assert code == 0 and "4/4 trials (4 complete)" in stdout
    rows4 = table(out)
    assert rows4[:3] == rows and rows4[3]["trial"] == "3" and len(study(out).trials) == 4
    check_trial_folders(out, rows4)

    code, _, err = cli(capsys, *[a if a != "lr=loguniform(0.02,0.3)" else "lr=uniform(0.02,0.3)" for a in args])
    assert code == 2 and "holds a different sweep (space: " in err and err.count("\n") == 1


def test_an_interrupted_trial_is_resumed_not_lost(capsys, tmp_path, monkeypatch):
    real_run = Protocol.run
    calls = []

    def interrupt_first(self, *a, **kw):
        calls.append(kw.get("resume", a[5] if len(a) > 5 else False))
        if len(calls) == 1:
            kw["stop_after"] = 1  # as a Ctrl-C after the first generation would
        return real_run(self, *a, **kw)

    monkeypatch.setattr(Protocol, "run", interrupt_first)
    out = tmp_path / "sw"
    args = ["--out", str(out), "--space", "lr=choice(0.05,0.2)", "--trials", "2", *TINY]
    code, stdout, _ = cli(capsys, *args)
    assert code == 130 and "interrupted; continue with the same command" in stdout
    (row,) = table(out)
    assert row["state"] == "INTERRUPTED" and row["iterations_done"] == "1"
    first = read_metrics(out / "trials/0000/metrics.csv")
    assert [r["iteration"] for r in first] == [1]

    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and "2/2 trials (2 complete)" in stdout
    rows = table(out)
    # the retry is Optuna trial 1 (same values, same run folder); the next new trial is number 2
    assert [r["trial"] for r in rows] == ["0", "2"]
    assert rows[0]["attempts"] == "0 1" and rows[0]["iterations_done"] == "2"
    assert rows[0]["lr"] == row["lr"]
    resumed = read_metrics(out / "trials/0000/metrics.csv")
    assert [r["iteration"] for r in resumed] == [1, 2] and resumed[0] == first[0]
    assert calls[1] is True  # the run folder was resumed from its checkpoint
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0002"]
    states = [t.state.name for t in study(out).trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_duplicates(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "sw"
    code, stdout, err = cli(capsys, "--out", str(out), "--space", "lr=uniform(0.02,0.3)", "--trials", "4",
                            "--workers", "2", "--sampler", "random", *TINY)
    assert code == 0, (stdout, err, [p.read_text()[-2000:] for p in (out / "logs").glob("*.log")])
    rows = table(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"COMPLETE"}
    trials = study(out).trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in trials)
    assert not any(t.user_attrs.get("skipped") for t in trials)
    assert sorted(t.user_attrs["run"] for t in trials) == ["0000", "0001", "0002", "0003"]  # one run each
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers ran trials
    assert len({r["lr"] for r in rows}) == 4
    check_trial_folders(out, rows)
    # the random draws depend on the trial number only: the same values as one worker would draw
    sampler = sweep.make_sampler("random", 0, {"lr": sweep.Dist("uniform", (0.02, 0.3))})
    solo = optuna.create_study(sampler=sampler)
    for t in trials:
        trial = solo.ask()
        assert trial.suggest_float("lr", 0.02, 0.3) == t.params["lr"]


def test_the_reference_preset(capsys, tmp_path):
    ref = sweep.sweep_presets()["reference"]
    assert ref["sampler"] == "random" and ref["seed"] == "trial" and ref["objective"] == "eval_score:final"
    assert sweep.parse_dist(f"lr={ref['space']['lr']}")[1] == sweep.Dist("choice", (0.01, 0.05, 0.1, 0.15, 0.2))
    assert list(ref["space"]) == ["lr"]
    out = tmp_path / "ref"
    code, stdout, _ = cli(capsys, "--out", str(out), "--method", "rsrp", "--sweep-preset", "reference",
                          "--trials", "2", *TINY)
    assert code == 0, stdout
    d = yaml.safe_load((out / "sweep.yaml").read_text())
    assert d["sampler"] == "random" and d["seed"] == "trial" and d["space"] == {"lr": "choice(0.01, 0.05, 0.1, 0.15, 0.2)"}
    rows = table(out)
    for r in rows:
        cfg = yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text())
        assert cfg["config"]["lr"] in (0.01, 0.05, 0.1, 0.15, 0.2) and cfg["seed"] == int(r["trial"])


def test_median_pruning_stops_trials_on_the_learning_curve(capsys, tmp_path, monkeypatch):
    # a pruner that prunes at the first report stands in for the median pruner's decision
    monkeypatch.setattr(sweep, "make_pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1e9))
    out = tmp_path / "pr"
    code, stdout, _ = cli(capsys, "--out", str(out), "--space", "lr=choice(0.1,0.2)", "--trials", "2",
                          "--pruner", "median", *TINY)
    assert code == 0 and "2/2 trials (0 complete, 2 pruned)" in stdout
    for r in table(out):
        assert r["state"] == "PRUNED" and r["iterations_done"] == "1"
        s = json.loads((out / r["run_dir"] / "summary.json").read_text())
        assert s["status"] == "pruned"
        assert float(r["value"]) == read_metrics(out / r["run_dir"] / "metrics.csv")[0]["eval_score"]


def test_a_journal_file_storage(capsys, tmp_path):
    journal = tmp_path / "shared" / "sweep.log"
    journal.parent.mkdir()
    out = tmp_path / "sw"
    code, stdout, _ = cli(capsys, "--out", str(out), "--space", "lr=choice(0.1,0.2)", "--trials", "2",
                          "--storage", f"journal:{journal}", *TINY)
    assert code == 0 and "2/2 trials (2 complete)" in stdout
    assert journal.stat().st_size > 0 and not (out / "study.db").exists()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    st = optuna.load_study(study_name="sw", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [t.state.name for t in st.trials] == ["COMPLETE", "COMPLETE"]
    assert np.allclose([t.value for t in st.trials], [float(r["value"]) for r in table(out)])
