"""Spike recordings of a run's evaluation, as plain arrays in the run folder.

A method returns what it recorded at the end of a run (the deterministic network's CartPole
episodes, the frozen R-STDP network's test episodes, the Diehl & Cook network's test
presentations) as :class:`Recording` objects in
:attr:`rsrp_sim.engine.method.Finished.recordings`; the protocol layer writes each one to
``recordings/<name>.npz`` in the run folder.  ``rsrp-sim export-nwb RUN`` turns them into an NWB
file (:mod:`rsrp_sim.analysis.nwb`).

The file format (NumPy ``.npz``, no pickled objects):

==================  ===========================================================================
``spike_times``     float64 (n_spikes,): time of every spike in seconds from the start of the
                    recording, sorted
``spike_units``     int64 (n_spikes,): the unit (neuron) of each spike, ``0 .. n_units - 1``
``unit/<column>``   one value per unit (n_units,): at least ``population`` and ``cell_type``
                    (strings), and any other column a method adds (e.g. ``gid``)
``interval/<col>``  one value per interval (n_intervals,): ``start_time`` and ``stop_time`` in
                    seconds and any other column (an episode's ``return``, a presentation's
                    ``label`` and ``prediction`` ...)
``meta``            a JSON string: ``description``, ``interval_kind`` (``episode`` or
                    ``presentation``), ``duration`` (s), ``resolution`` (s, the simulation's time
                    step), ``constants`` (the model's constants)
==================  ===========================================================================
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

FOLDER = "recordings"


@dataclasses.dataclass
class Recording:
    """Spikes of one evaluation: every spike's time (s) and unit, per-unit and per-interval columns."""

    spike_times: np.ndarray
    spike_units: np.ndarray
    units: dict[str, np.ndarray]
    intervals: dict[str, np.ndarray]
    description: str
    interval_kind: str = "episode"
    duration: float | None = None
    constants: dict[str, Any] = dataclasses.field(default_factory=dict)
    resolution: float | None = None  # the smallest difference between two spike times (s): the time step

    def __post_init__(self):
        t = np.asarray(self.spike_times, np.float64).ravel()
        u = np.asarray(self.spike_units, np.int64).ravel()
        if t.shape != u.shape:
            raise ValueError(f"spike_times {t.shape} and spike_units {u.shape} differ in length")
        order = np.argsort(t, kind="stable")
        self.spike_times, self.spike_units = t[order], u[order]
        self.units = {k: np.asarray(v) for k, v in self.units.items()}
        self.intervals = {k: np.asarray(v) for k, v in self.intervals.items()}
        for need in ("population", "cell_type"):
            if need not in self.units:
                raise ValueError(f"a recording needs the unit column {need!r}")
        for need in ("start_time", "stop_time"):
            if need not in self.intervals:
                raise ValueError(f"a recording needs the interval column {need!r}")
        n = self.n_units
        if any(len(v) != n for v in self.units.values()):
            raise ValueError("every unit column needs one value per unit")
        if any(len(v) != self.n_intervals for v in self.intervals.values()):
            raise ValueError("every interval column needs one value per interval")
        if len(u) and (u.min() < 0 or u.max() >= n):
            raise ValueError(f"spike_units must lie in 0..{n - 1}")
        if self.duration is None:
            stops = self.intervals["stop_time"]
            self.duration = float(max(stops.max() if len(stops) else 0.0, t.max() if len(t) else 0.0))

    @property
    def n_units(self) -> int:
        return len(self.units["population"])

    @property
    def n_intervals(self) -> int:
        return len(self.intervals["start_time"])

    def unit_spike_times(self) -> list[np.ndarray]:
        """Spike times (s) of each unit, in unit order."""
        return [self.spike_times[self.spike_units == i] for i in range(self.n_units)]

    def counts(self) -> np.ndarray:
        """Spikes per unit."""
        return np.bincount(self.spike_units, minlength=self.n_units)

    def brief(self) -> dict[str, Any]:
        """What the run's summary says about this recording."""
        return {"units": self.n_units, "spikes": int(len(self.spike_times)), "intervals": self.n_intervals,
                "interval_kind": self.interval_kind, "duration_s": self.duration}


def save(path, rec: Recording) -> Path:
    """Write ``rec`` to ``path`` (``.npz``, see the module docstring); atomically."""
    from .records import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"spike_times": rec.spike_times, "spike_units": rec.spike_units}
    arrays.update({f"unit/{k}": _plain(v) for k, v in rec.units.items()})
    arrays.update({f"interval/{k}": _plain(v) for k, v in rec.intervals.items()})
    meta = {"description": rec.description, "interval_kind": rec.interval_kind, "duration": rec.duration,
            "resolution": rec.resolution, "constants": rec.constants}
    arrays["meta"] = np.asarray(json.dumps(meta, default=_json))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load(path) -> Recording:
    """Read a recording written by :func:`save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as e:
        raise UserError(f"recording {path} is unreadable ({type(e).__name__}: {e})") from None
    units = {k[5:]: v for k, v in arrays.items() if k.startswith("unit/")}
    intervals = {k[9:]: v for k, v in arrays.items() if k.startswith("interval/")}
    return Recording(arrays["spike_times"], arrays["spike_units"], units, intervals, meta["description"],
                     meta.get("interval_kind", "episode"), meta.get("duration"), meta.get("constants") or {},
                     meta.get("resolution"))


def load_all(run_dir) -> dict[str, Recording]:
    """Every recording of a run folder, by name (sorted)."""
    folder = Path(run_dir) / FOLDER
    return {p.stem: load(p) for p in sorted(folder.glob("*.npz"))} if folder.is_dir() else {}


def _plain(v):
    v = np.asarray(v)
    return v.astype(str) if v.dtype == object else v


def _json(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    return str(v)
