"""``rsrp-sim export-nwb RUN [--out FILE]``: a run's recorded spikes as a Neurodata Without Borders file.

A completed run keeps the spikes of its final evaluation in ``recordings/*.npz``
(:mod:`rsrp_sim.infra.recordings`): the deterministic network's CartPole episodes (JAX and Brian2
back-ends, ``record_episodes=``), the frozen R-STDP network's test episodes (``record_episodes=``)
and the Diehl & Cook network's first test presentations (``record_examples=``).  The NWB file
(written with pynwb) holds:

* the **Units** table: one row per neuron with its ``spike_times`` (s), ``obs_intervals`` (the
  recorded time), ``population`` and ``cell_type`` (excitatory / inhibitory ...), and any other
  per-neuron column the method recorded (``gid``, ``assigned_class`` ...);
* the **trials** table: one row per episode or presentation (``start_time``, ``stop_time`` and the
  recorded columns: ``steps``, ``return``, ``label``, ``prediction`` ...);
* the metadata: the run's config as ``protocol`` (YAML), the model's constants as ``notes`` (JSON),
  the description of what was recorded as ``session_description``; the subject is the simulated
  network (made when the run started, sex ``U``, no species), the Units ``resolution`` the
  simulation's time step.

Several recordings of one run follow each other in time (each offset by the ones before); a
``recording`` column in both tables names each one's source.  After writing, the file is checked
with nwbinspector and its findings counted.  Read it with ``pynwb.NWBHDF5IO(path).read()``; the
tutorial ``examples/nwb_rsrp_vs_stdp.py`` goes on from there to Neo and Elephant.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..infra import recordings as recordlib
from ..infra.errors import UserError

GAP_S = 1.0  # time between two recordings of one run in the file


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def _column(values) -> list:
    v = np.asarray(values)
    if v.dtype.kind in "US":
        return [str(x) for x in v]
    return [_py(x) for x in v]


def export(run_dir, out=None) -> Path:
    """Write the NWB file of run folder ``run_dir`` (default ``<run>/<run name>.nwb``); returns its path."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a run folder (no config.yaml)")
    recs = recordlib.load_all(run)
    if not recs:
        raise UserError(f"{run} has no recorded spikes (no recordings/*.npz): a completed run records them at the "
                        f"end (record_episodes= for CartPole and rstdp, record_examples= for stdp-dc)")
    try:
        from pynwb import NWBHDF5IO, NWBFile
        from pynwb.file import Subject
        from pynwb.misc import Units
    except ImportError:
        raise UserError("export-nwb needs pynwb; install it with pip install -c constraints.txt -e '.[nwb]'") from None
    doc = yaml.safe_load((run / "config.yaml").read_text()) or {}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    names = list(recs)
    many = len(names) > 1
    start = _dt.datetime.fromtimestamp((run / "config.yaml").stat().st_mtime, tz=_dt.UTC)
    title = f"{doc.get('protocol')} {doc.get('method')} [{doc.get('backend')}] seed {doc.get('seed')}"
    nwb = NWBFile(
        session_description=f"{title}: " + " | ".join(recs[n].description for n in names),
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"rsrp_sim:{run.resolve()}:{start.isoformat()}")),
        session_start_time=start,
        session_id=run.name,
        experiment_description=(f"Simulation with rsrp_sim {doc.get('versions', {}).get('rsrp_sim', '')}: "
                                f"{title}, task {doc.get('task')}; final status {summary.get('status')}"),
        keywords=["spiking neural network", "simulation", str(doc.get("method")), str(doc.get("protocol"))],
        protocol=yaml.safe_dump(doc.get("config", {}), sort_keys=False),
        notes=json.dumps({n: recs[n].constants for n in names}, default=str),
        source_script="rsrp_sim", source_script_file_name="rsrp_sim/analysis/nwb.py",
        # the subject is the simulated network: made when the run started, of no sex (U: unknown), no species
        subject=Subject(subject_id=f"{doc.get('method')}-{doc.get('backend')}-seed{doc.get('seed')}",
                        description=f"a simulated spiking network ({title}), not an animal",
                        date_of_birth=start, sex="U"),
    )
    res = [r.resolution for r in recs.values() if r.resolution]
    nwb.units = Units(name="units", description="neurons of the simulated network and their spikes",
                      resolution=float(min(res)) if res else -1.0)
    unit_cols = sorted({c for r in recs.values() for c in r.units})
    trial_cols = sorted({c for r in recs.values() for c in r.intervals} - {"start_time", "stop_time"})
    descriptions = {"population": "the neuron's population in the model", "cell_type": "excitatory or inhibitory",
                    "gid": "the cell's id in the simulator", "neuron": "the neuron's index in the network",
                    "assigned_class": "the class the neuron was labelled with (-1: none, or not a labelled neuron)",
                    "steps": "environment steps of the episode", "return": "the episode's return",
                    "terminated": "the episode ended by a failure (not by the time limit)",
                    "label": "the presented example's class", "prediction": "the network's predicted class",
                    "presentations": "times the example was shown (again at a higher intensity while it evoked "
                                     "too few spikes)", "recording": "the run's recording this row comes from"}
    for c in unit_cols:
        nwb.add_unit_column(c, descriptions.get(c, c))
    if many:
        nwb.add_unit_column("recording", descriptions["recording"])
    for c in trial_cols:
        nwb.add_trial_column(c, descriptions.get(c, c))
    if many:
        nwb.add_trial_column("recording", descriptions["recording"])
    offset = 0.0
    for name in names:
        r = recs[name]
        cols = {c: _column(v) for c, v in r.units.items()}
        for i, times in enumerate(r.unit_spike_times()):
            extra = {c: cols[c][i] if c in cols else _missing(recs, c) for c in unit_cols}
            if many:
                extra["recording"] = name
            nwb.add_unit(spike_times=times + offset, obs_intervals=[[offset, offset + r.duration]], **extra)
        icol = {c: _column(v) for c, v in r.intervals.items()}
        for k in range(r.n_intervals):
            extra = {c: icol[c][k] if c in icol else _missing_interval(recs, c) for c in trial_cols}
            if many:
                extra["recording"] = name
            nwb.add_trial(start_time=float(r.intervals["start_time"][k]) + offset,
                          stop_time=float(r.intervals["stop_time"][k]) + offset, **extra)
        offset += r.duration + GAP_S
    path = Path(out) if out is not None else run / f"{run.name}.nwb"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    tmp.replace(path)
    return path


def _missing(recs, column):
    """The fill value of a unit column that another recording of the run lacks."""
    kinds = {np.asarray(r.units[column]).dtype.kind for r in recs.values() if column in r.units}
    return "" if kinds & set("US") else -1


def _missing_interval(recs, column):
    kinds = {np.asarray(r.intervals[column]).dtype.kind for r in recs.values() if column in r.intervals}
    return "" if kinds & set("US") else (False if kinds == {"b"} else -1)


def inspect(path) -> list[Any]:
    """nwbinspector's findings for ``path`` (a list of its messages)."""
    from nwbinspector import inspect_nwbfile

    return list(inspect_nwbfile(nwbfile_path=str(path)))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv=None) -> int:
    p = _Parser(prog="rsrp-sim export-nwb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a completed run folder with recordings/")
    p.add_argument("--out", default=None, help="the NWB file (default <run>/<run name>.nwb)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    path = export(args.run, args.out)
    recs = recordlib.load_all(args.run)
    findings = inspect(path)
    levels: dict[str, int] = {}
    for f in findings:
        levels[f.importance.name] = levels.get(f.importance.name, 0) + 1
    checked = ", ".join(f"{n} {k.lower().replace('_', ' ')}" for k, n in sorted(levels.items())) or "no findings"
    units = sum(r.n_units for r in recs.values())
    spikes = sum(len(r.spike_times) for r in recs.values())
    trials = sum(r.n_intervals for r in recs.values())
    print(f"{path}: {units} units, {spikes} spikes, {trials} trials ({', '.join(recs)}); nwbinspector: {checked}")
    return 0
