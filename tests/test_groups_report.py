"""Multi-seed groups, ablations, compare and report (issue 8)."""
import csv
import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from rsrp_sim.analysis import report
from rsrp_sim.analysis.compare import expand, group_runs, load_run, mean_ci, table
from rsrp_sim.protocols import ablations
from rsrp_sim.protocols.cartpole import PROTOCOL
from rsrp_sim.protocols.groups import overrides_to_args, parse_seeds
from rsrp_sim.infra.config import parse_overrides
from rsrp_sim.infra.records import RunDir

TINY = ["pop_size=32", "eval_size=2", "chunk_size=32", "model.n_neurons=32", "generations=2"]


def synthetic_run(path, protocol, method, seed, evals, backend="jax", steps_per_it=1000, config=None):
    rd = RunDir.create(path, {"protocol": protocol, "method": method, "backend": backend, "preset": "cpu",
                              "seed": seed, "config": {"env": "CartPole-v1", **(config or {})},
                              "versions": {"python": "3.11", "jax": "0.10.2"}})
    for i, e in enumerate(evals, 1):
        rd.append_metrics({"iteration": i, "env_steps": i * steps_per_it, "wall_s": 0.5 * i,
                           "train_score": e / 2, "eval_score": e})
    return rd


def test_mean_ci_against_scipy_free_formula():
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and h == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert mean_ci([7.0]) == (7.0, 0.0) and math.isnan(mean_ci([])[0])


def test_report_on_synthetic_runs(tmp_path, capsys):
    finals = {"rsrp": [500, 480, 460], "es": [300, 350], "rstdp": [60]}
    for method, vals in finals.items():
        for seed, final in enumerate(vals):
            evals = list(np.linspace(10, final, 8))
            synthetic_run(tmp_path / "runs" / method / f"s{seed}", "cartpole", method, seed, evals,
                          backend="netpyne" if method == "rstdp" else "jax")
    out = tmp_path / "rep"
    doc = report.build([tmp_path / "runs"], out)
    (sec,) = doc["sections"]
    rows = {r["group"]: r for r in sec["table"]}
    assert set(rows) == {"rsrp [jax]", "es [jax]", "rstdp [netpyne]"}
    assert rows["rsrp [jax]"]["seeds"] == 3
    assert rows["rsrp [jax]"]["final_mean"] == pytest.approx(np.mean(finals["rsrp"]))
    assert rows["es [jax]"]["best_mean"] == pytest.approx(325.0)
    assert rows["rstdp [netpyne]"]["final_ci95"] == 0.0
    html = (out / "index.html").read_text()
    assert "cartpole.png" in html and "rstdp [netpyne]" in html and "0.10.2" in html and "<table>" in html
    img = Image.open(out / "cartpole.png")
    assert img.size[0] > 1200 and img.size[1] > 350
    assert np.asarray(img.convert("L")).std() > 10  # not a blank image
    assert json.loads((out / "report.json").read_text())["sections"][0]["figure"] == "cartpole.png"


def test_compare_groups_by_config_key(tmp_path):
    for shaping in ("raw", "centered_rank"):
        for seed in (0, 1):
            synthetic_run(tmp_path / shaping / f"s{seed}", "cartpole", "rsrp", seed, [1, 2, 3 + seed],
                          config={"shaping": shaping})
    runs = [load_run(p) for p in expand([tmp_path])]
    groups = group_runs(runs, by="shaping")
    assert sorted(groups) == ["shaping=centered_rank", "shaping=raw"]
    rows = {r["group"]: r for r in table(groups)}
    assert rows["shaping=raw"]["final_mean"] == pytest.approx(3.5) and rows["shaping=raw"]["seeds"] == 2
    # mean over iterations: seed 0 -> mean(1, 2, 3) = 2, seed 1 -> mean(1, 2, 4) = 7/3
    assert rows["shaping=raw"]["curve_mean"] == pytest.approx((2 + 7 / 3) / 2)
    # iterations without an evaluation (NaN) are left out of best and curve mean
    synthetic_run(tmp_path / "sparse", "cartpole", "rsrp", 0, [1, float("nan"), 5])
    (row,) = table(group_runs([load_run(tmp_path / "sparse")]))
    assert (row["best_mean"], row["curve_mean"], row["final_mean"]) == (5, 3, 5)


def test_seed_parsing_and_override_round_trip():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5] and parse_seeds("0-1,7") == [0, 1, 7]
    from rsrp_sim.infra.errors import UserError

    for bad in ("a,b", "1,1", ""):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)
    ov = parse_overrides(["lr=0.1", "shaping=raw", "model.n_neurons=32", "baseline_ema=null", "reservoir=true"])
    assert parse_overrides(overrides_to_args(ov)) == ov


def test_seeds_group_cli(tmp_path, capsys):
    out = tmp_path / "g"
    code = PROTOCOL.main(["--quiet", "--seeds", "0,1", "--jobs", "2", "--out", str(out), *TINY])
    text = capsys.readouterr().out
    assert code == 0, text
    assert (out / "s0" / "metrics.csv").exists() and (out / "s1" / "metrics.csv").exists()
    assert (out / "plots" / "compare.png").stat().st_size > 10_000
    with open(out / "table.csv") as f:
        (row,) = list(csv.DictReader(f))
    finals = [load_run(out / f"s{s}")["rows"][-1]["eval_score"] for s in (0, 1)]
    assert int(row["seeds"]) == 2 and float(row["final_mean"]) == pytest.approx(np.mean(finals))
    assert "seed 0" in text and "seed 1" in text
    # the same group again without --resume is refused; with --resume nothing is rerun
    assert PROTOCOL.main(["--quiet", "--seeds", "0,1", "--out", str(out), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    before = (out / "s0" / "metrics.csv").read_text()
    assert PROTOCOL.main(["--quiet", "--seeds", "0,1", "--out", str(out), "--resume"]) == 0
    assert (out / "s0" / "metrics.csv").read_text() == before


def test_ablation_runner_tiny(tmp_path, capsys):
    out = tmp_path / "abl"
    code = ablations.main(["cartpole-reward", "--quiet", "--seeds", "0,1", "--values", "centered_rank,raw",
                           "--out", str(out), *TINY])
    text = capsys.readouterr().out
    assert code == 0, text
    meta = yaml.safe_load((out / "ablation.yaml").read_text())
    assert meta["key"] == "shaping" and meta["values"] == ["centered_rank", "raw"]
    for v in ("centered_rank", "raw"):
        for s in (0, 1):
            cfg = yaml.safe_load((out / v / f"s{s}" / "config.yaml").read_text())
            assert cfg["config"]["shaping"] == v and cfg["seed"] == s and cfg["config"]["pop_size"] == 32
    assert (out / "plots" / "compare.png").stat().st_size > 10_000
    with open(out / "table.csv") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"shaping=centered_rank", "shaping=raw"}
    finals = [load_run(out / "raw" / f"s{s}")["rows"][-1]["eval_score"] for s in (0, 1)]
    assert float(rows["shaping=raw"]["final_mean"]) == pytest.approx(np.mean(finals))
    assert "shaping=raw" in text
    doc = report.build([out], tmp_path / "rep")
    assert [s["title"].split(":")[0] for s in doc["sections"]] == ["Ablation cartpole-reward"]
    # one value of the ablation named on its own also joins the protocol's figure (as `rsrp [jax]`)
    doc = report.build([out, out / "raw"], tmp_path / "rep2")
    (main, abl) = doc["sections"]
    assert main["title"].startswith("CartPole") and [r["group"] for r in main["table"]] == ["rsrp [jax]"]
    assert main["table"][0]["seeds"] == 2 and abl["title"].startswith("Ablation")


@pytest.mark.parametrize("args,message", [
    (["nope"], "unknown ablation 'nope'"),
    (["cartpole-reward", "--values", "sigmoid"], "unknown value of ablation cartpole-reward 'sigmoid'"),
    (["cartpole-reward", "shaping=raw"], "shaping is the swept key of ablation cartpole-reward"),
    (["cartpole-reward", "lr=x"], "lr must be float, got 'x'"),
])
def test_ablation_bad_input(capsys, tmp_path, args, message):
    assert ablations.main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()


def test_band_of_runs_evaluated_once_and_with_gaps():
    from rsrp_sim.analysis.plots import band

    x, mean, _, lo, hi = band([(np.array([4.0]), np.array([0.7])), (np.array([4.0]), np.array([0.8]))])
    assert x.tolist() == [4.0] and mean == pytest.approx([0.75]) and (lo[0], hi[0]) == (0.7, 0.8)
    x, mean, *_ = band([(np.array([1.0, 2.0, 3.0]), np.array([0.0, np.nan, 1.0]))])   # NaN: not evaluated
    assert x.tolist() == [1.0, 3.0] and mean.tolist() == [0.0, 1.0]
