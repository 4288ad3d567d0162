"""Spike recordings of a run's evaluation and their NWB export (rsrp-sim export-nwb): pynwb reads
back the same spike times and units as the run's own records, nwbinspector has no critical finding."""
import json

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("nwbinspector")

from rsrp_sim.__main__ import main as rsrp_main  # noqa: E402
from rsrp_sim.analysis import nwb  # noqa: E402
from rsrp_sim.infra import recordings  # noqa: E402
from rsrp_sim.protocols import get  # noqa: E402

TINY = {"pop_size": 32, "eval_size": 2, "chunk_size": 32, "model_overrides": {"n_neurons": 32}, "generations": 2}


def round_trip(run_dir, name):
    """Export, read back and compare with the run's recording ``name``; returns (recording, nwb file path)."""
    rec = recordings.load_all(run_dir)[name]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["recordings"][name] == rec.brief()
    path = nwb.export(run_dir)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        units = f.units
        assert len(units) == rec.n_units
        per_unit = rec.unit_spike_times()
        for i in range(rec.n_units):
            assert np.array_equal(np.asarray(units.get_unit_spike_times(i)), per_unit[i])
        assert sum(len(units.get_unit_spike_times(i)) for i in range(len(units))) == len(rec.spike_times)
        for col in ("population", "cell_type"):
            assert [str(v) for v in units[col][:]] == [str(v) for v in rec.units[col]]
        assert units.resolution == pytest.approx(rec.resolution)
        trials = f.trials
        assert len(trials) == rec.n_intervals
        for col, values in rec.intervals.items():
            assert np.allclose(np.asarray(trials[col][:], float), np.asarray(values, float)), col
        assert json.loads(f.notes)[name] == json.loads(json.dumps(rec.constants, default=str))
        assert "lr" in f.protocol or "episodes" in f.protocol or "examples" in f.protocol
    critical = [m for m in nwb.inspect(path) if m.importance.name == "CRITICAL"]
    assert critical == [], [m.message for m in critical]
    return rec, path


def test_jax_cartpole_episodes_round_trip(tmp_path, capsys):
    rd, s = get("cartpole").run("rsrp", "jax", "cpu", 0, tmp_path / "run", overrides={**TINY, "record_episodes": 2},
                                progress=False)
    rec, path = round_trip(rd.path, "episodes")
    assert rec.n_units == 32 and rec.n_intervals == 2 and len(rec.spike_times) > 0
    assert list(rec.units["cell_type"]).count("excitatory") == 16  # Dale: the first half excitatory
    steps = rec.intervals["steps"]
    assert np.all((steps >= 1) & (steps <= 500)) and np.array_equal(rec.intervals["return"], steps)  # +1 a step
    dt = 0.5e-3
    assert rec.duration == pytest.approx(steps.sum() * 33 * dt)
    assert rec.spike_times.max() <= rec.duration + 1e-9
    ticks = rec.spike_times / dt  # every spike ends a 0.5 ms substep
    assert np.allclose(ticks, np.round(ticks), atol=1e-6)
    # the command line: one line naming the file and what it holds
    assert rsrp_main(["export-nwb", str(rd.path), "--out", str(tmp_path / "x.nwb")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'x.nwb'}: 32 units, {len(rec.spike_times)} spikes, 2 trials (episodes)")
    assert "critical" not in line


def test_no_recording_is_one_line(tmp_path, capsys):
    rd, _ = get("cartpole").run("rsrp", "jax", "cpu", 0, tmp_path / "run", overrides={**TINY, "record_episodes": 0},
                                progress=False)
    assert not (rd.path / "recordings").exists()
    assert rsrp_main(["export-nwb", str(rd.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no recorded spikes (no recordings/*.npz)" in err
    assert rsrp_main(["export-nwb", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_recording_files_keep_every_column(tmp_path):
    rec = recordings.Recording(np.array([0.3, 0.1, 0.2]), np.array([1, 0, 1]),
                               {"population": np.array(["a", "b"]), "cell_type": np.array(["excitatory", "inhibitory"]),
                                "gid": np.array([7, 9])},
                               {"start_time": np.array([0.0]), "stop_time": np.array([0.5]), "label": np.array([3])},
                               "two cells", "presentation", resolution=1e-4, constants={"tau": 10.0})
    assert list(rec.spike_times) == [0.1, 0.2, 0.3] and list(rec.spike_units) == [0, 1, 1]  # sorted by time
    back = recordings.load(recordings.save(tmp_path / "r.npz", rec))
    assert np.array_equal(back.spike_times, rec.spike_times) and np.array_equal(back.spike_units, rec.spike_units)
    assert list(back.units["gid"]) == [7, 9] and list(back.units["population"]) == ["a", "b"]
    assert back.intervals["label"].tolist() == [3] and back.constants == {"tau": 10.0}
    assert (back.duration, back.resolution, back.interval_kind) == (0.5, 1e-4, "presentation")
    assert [list(t) for t in back.unit_spike_times()] == [[0.1], [0.2, 0.3]]
    with pytest.raises(ValueError, match="spike_units must lie in 0..1"):
        recordings.Recording(np.array([0.1]), np.array([2]), rec.units, rec.intervals, "bad")


@pytest.fixture(scope="module")
def nrn():
    pytest.importorskip("neuron")
    pytest.importorskip("netpyne")
    from rsrp_sim.backends.netpyne import mechanisms
    from rsrp_sim.infra.errors import UserError

    try:
        return mechanisms.load()
    except UserError as e:
        pytest.skip(f"NEURON mechanisms unavailable: {e}")


@pytest.mark.neuron
def test_rstdp_test_episodes_round_trip(nrn, tmp_path):
    rd, s = get("cartpole").run("rstdp", "netpyne", "cpu", 0, tmp_path / "rstdp", progress=False, overrides={
        "episodes": 2, "episodes_per_iteration": 2, "eval_episodes": 1, "record_episodes": 2})
    rec, _ = round_trip(rd.path, "episodes")
    assert rec.n_units == 200 and rec.n_intervals == 2
    assert set(rec.units["population"]) == {"ES", "EA", "IA", "IAL", "EM", "IM", "IML"}
    assert set(rec.units["cell_type"]) == {"excitatory", "inhibitory", "inhibitory (low threshold)"}
    # one action per 50 ms: an episode of n steps lasts n x 50 ms
    dur = rec.intervals["stop_time"] - rec.intervals["start_time"]
    assert np.allclose(dur, rec.intervals["steps"] * 0.05, atol=0.051)
    assert len(rec.spike_times) > 100 and (rd.path / "plots" / "raster.png").is_file()


@pytest.mark.neuron
def test_diehl_cook_test_presentations_round_trip(nrn, tmp_path):
    rd, s = get("digits").run("stdp-dc", "netpyne", "cpu", 0, tmp_path / "dc", progress=False, overrides={
        "n_exc": 10, "examples": 10, "examples_per_iteration": 10, "label_window": 10, "val_size": 10,
        "test_size": 20, "record_examples": 5})
    rec, _ = round_trip(rd.path, "test")
    assert rec.n_units == 20 and rec.n_intervals == 5
    assert list(rec.units["population"]) == ["Ae"] * 10 + ["Ai"] * 10
    from rsrp_sim import data as datalib
    from rsrp_sim.backends.netpyne.dc_readout import predict

    ds = datalib.load("digits", None, False, 10, 20, 0)
    assert rec.intervals["label"].tolist() == ds.y_test[:5].tolist()  # the first test presentations
    reps = rec.intervals["presentations"]
    dur = rec.intervals["stop_time"] - rec.intervals["start_time"]
    assert np.allclose(dur, reps * 0.5)  # 350 ms image + 150 ms rest per presentation
    # the recorded spikes are the ones the network was scored on: each presentation's prediction
    # follows from the excitatory spike counts of its last 350 ms image window
    assigned = rec.units["assigned_class"][:10]
    counts = np.zeros((5, 10))
    for k in range(5):
        t0 = rec.intervals["stop_time"][k] - 0.5
        sel = (rec.spike_times > t0 - 1e-9) & (rec.spike_times <= t0 + 0.35 + 1e-9) & (rec.spike_units < 10)
        counts[k] = np.bincount(rec.spike_units[sel], minlength=10)
    assert predict(counts, assigned, 10).tolist() == rec.intervals["prediction"].tolist()
    assert counts.sum() > 0


@pytest.mark.brian2
@pytest.mark.slow
def test_brian2_cartpole_episodes_round_trip(tmp_path):
    pytest.importorskip("brian2")
    rd, s = get("cartpole").run("rsrp", "brian2", "cpu", 0, tmp_path / "b2", progress=False, overrides={
        "pop_size": 8, "eval_size": 2, "chunk_size": 8, "model_overrides": {"n_neurons": 16}, "generations": 1,
        "target": "numpy", "record_episodes": 2})
    rec, _ = round_trip(rd.path, "episodes")
    assert rec.n_units == 16 and rec.n_intervals == 2 and len(rec.spike_times) > 0
    steps = rec.intervals["steps"]
    assert np.array_equal(rec.intervals["return"], steps)
    assert rec.spike_times.max() <= steps.sum() * 33 * 0.5e-3 + 1e-9
    ticks = rec.spike_times / 0.5e-3
    assert np.allclose(ticks, np.round(ticks), atol=1e-6)
