"""The extension examples (examples/extend_*.py, named in the README's *Extending*) run and learn."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsrp_sim.infra.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def run_example(tmp_path, name, *args):
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = sorted((tmp_path / "runs").glob("*/*"))
    return p.stdout, [read_metrics(r / "metrics.csv") for r in runs]


def test_a_new_method_cem_learns_cartpole_through_the_engine(tmp_path):
    out, (rows,) = run_example(tmp_path, "extend_method.py", "8")
    evals = [r["eval_score"] for r in rows]
    assert len(rows) == 8 and "cem: eval score" in out
    assert evals[0] < 30 and max(evals) > 3 * evals[0], evals
    assert all(0.0 < r["p_mean"] < 1.0 for r in rows)


def test_a_new_environment_is_checked_registered_and_learned(tmp_path):
    out, (rows,) = run_example(tmp_path, "extend_env.py", "15")
    assert "conformance: {'steps': " in out  # check_env passed (it raises otherwise)
    assert rows[-1]["eval_score"] > rows[0]["eval_score"] + 10, [r["eval_score"] for r in rows]


@pytest.mark.slow
def test_a_new_dataset_is_registered_and_learned_by_rsrp_and_backprop(tmp_path):
    pytest.importorskip("sklearn")
    out, rows = run_example(tmp_path, "extend_dataset.py", "60")
    line = next(l for l in out.splitlines() if l.startswith("iris:"))
    rsrp, bp = (float(w) for w in line.replace(",", "").split() if w.replace(".", "").isdigit())
    assert rsrp >= 0.8 and bp >= 0.8, line
    assert len(rows) == 2


def test_nwb_tutorial_compares_rsrp_with_stdp_through_neo_and_elephant(tmp_path):
    pytest.importorskip("pynwb")
    pytest.importorskip("elephant")
    pytest.importorskip("neuron")
    import json

    import numpy as np

    from rsrp_sim.infra import recordings

    out, _ = run_example(tmp_path, "nwb_rsrp_vs_stdp.py", "2", "2")
    assert "(nwbinspector: 0 critical)" in out and "ISI CV" in out
    stats = json.loads((tmp_path / "runs/nwb_tutorial/stats.json").read_text())
    assert set(stats) == {"RSRP (ConnSNN, JAX)", "R-STDP (NEURON)"}
    for name, folder in (("RSRP (ConnSNN, JAX)", "rsrp"), ("R-STDP (NEURON)", "rstdp")):
        rec = recordings.load_all(tmp_path / "runs/nwb_tutorial" / folder)["episodes"]
        counts = rec.counts()
        t_stop = rec.intervals["stop_time"][-1]
        s = stats[name]["all"]
        # Elephant's rates from the NWB file = the run's own spike counts over the recorded time
        assert s["neurons"] == rec.n_units and s["spikes"] == len(rec.spike_times)
        assert np.allclose(s["rates"], counts / t_stop)
        # ISI CV (std / mean of the intervals) of every neuron with at least 3 spikes
        cvs = [np.std(np.diff(t)) / np.mean(np.diff(t)) for t in rec.unit_spike_times() if len(t) >= 3]
        assert np.allclose(s["cvs"], cvs)
        assert f"{name:<22} all" in out
    assert (tmp_path / "runs/nwb_tutorial/rates_cv.png").stat().st_size > 5000


def test_rsrp_against_rstdp_tutorial_compares_both_methods(tmp_path):
    pytest.importorskip("neuron")
    out, _ = run_example(tmp_path, "rsrp_vs_rstdp.py", "1", "3", "40")
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if "[" in line and "]" in line}
    assert "rsrp [jax]" in lines and "rstdp [netpyne]" in lines, out
    assert (tmp_path / "runs" / "rsrp_vs_rstdp" / "compare.png").stat().st_size > 10_000
    for method in ("rsrp", "rstdp"):
        rows = read_metrics(next((tmp_path / "runs" / "rsrp_vs_rstdp" / method).glob("s*")) / "metrics.csv")
        assert rows and all(r["eval_score"] > 0 for r in rows)


def test_distributed_tutorial_gets_the_same_numbers_three_ways(tmp_path):
    out, _ = run_example(tmp_path, "distributed_cartpole.py", "2")
    assert "the same numbers in all three: True" in out


def test_sweep_tutorial_runs_continues_and_names_the_best_trial(tmp_path):
    pytest.importorskip("optuna")
    import json

    out, _ = run_example(tmp_path, "sweep_lr.py", "2", "2")
    best = json.loads((tmp_path / "runs" / "sweep_tutorial" / "best.json").read_text())
    assert best["trials"] == 3 and best["states"]["COMPLETE"] == 3  # two, then one more on the re-run
    assert 0.01 <= best["best"]["params"]["lr"] <= 0.3
    assert len(list((tmp_path / "runs" / "sweep_tutorial" / "trials").iterdir())) == 3
