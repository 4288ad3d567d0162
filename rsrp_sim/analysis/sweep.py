"""The results of a sweep folder: figures and ``index.html`` from ``sweep.yaml`` and ``trials.csv``.

Reads only the sweep folder (the table the sweep wrote and each trial's run folder), so it works
on any copy of it.  Written into the folder:

``plots/objective.png``        the objective of every trial and the best value so far
``plots/params.png``           the objective against each swept key (one panel per key)
``plots/best_curves.png``      the learning curves (objective column) of the best trials
``index.html``                 the best trial, the table of trials and the figures
"""
from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Any

import yaml

from . import plots
from ..infra.errors import UserError
from ..infra.records import _num, read_metrics

DEFINITION = "sweep.yaml"
TABLE = "trials.csv"
N_BEST_CURVES = 5


def load(folder) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(definition, trials)`` of a sweep folder; each trial a dict of its table row with the
    swept values gathered under ``params``."""
    folder = Path(folder)
    if not (folder / DEFINITION).is_file():
        raise UserError(f"{folder} is not a sweep folder (no {DEFINITION})")
    definition = yaml.safe_load((folder / DEFINITION).read_text())
    keys = list(definition.get("space", {}))
    trials = []
    if (folder / TABLE).is_file():
        with open(folder / TABLE, newline="") as f:
            for row in csv.DictReader(f):
                t = {k: (v if k in ("state", "run_dir", "error") else _num(v)) for k, v in row.items()}
                t["params"] = {k: _num(row[k]) if row.get(k) not in (None, "") else None for k in keys}
                trials.append(t)
    return definition, trials


def ranked(trials, direction: str) -> list[dict[str, Any]]:
    """Complete trials with a finite value, best first."""
    done = [t for t in trials if t.get("state") == "COMPLETE" and t.get("value") is not None
            and math.isfinite(float(t["value"]))]
    return sorted(done, key=lambda t: float(t["value"]), reverse=direction == "maximize")


def _label(t, keys) -> str:
    vals = ", ".join(f"{k}={_fmt(t['params'].get(k))}" for k in keys)
    return f"trial {t['trial']}: {vals}" if vals else f"trial {t['trial']}"


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(folder) -> dict[str, Any]:
    """Draw the figures and write ``index.html``; returns ``{"best": trial or None, "figures": [...]}``."""
    folder = Path(folder)
    definition, trials = load(folder)
    keys = list(definition.get("space", {}))
    obj = definition["objective"]
    label = f"{obj['column']} ({obj['reducer']})"
    direction = definition.get("direction", "maximize")
    title = f"{definition['protocol']} {definition['method']} [{definition['backend']}]: {folder.name}"
    figures = []
    figures.append(plots.sweep_objective(trials, folder / "plots" / "objective.png", label, direction, title))
    log_keys = [k for k, v in definition.get("space", {}).items() if str(v).startswith("loguniform")]
    if keys:
        figures.append(plots.sweep_params(trials, keys, folder / "plots" / "params.png", label, log_keys, title))
    best = ranked(trials, direction)
    curves = {}
    steps = "env_steps"
    for t in best[:N_BEST_CURVES]:
        run = folder / str(t.get("run_dir") or "")
        rows = read_metrics(run / "metrics.csv") if run.is_dir() else []
        if rows:
            curves[_label(t, keys)] = [rows]
            cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
            steps = (cfg.get("labels") or {}).get("steps", steps)
    if curves:
        figures.append(plots.compare(curves, folder / "plots" / "best_curves.png", x_keys=("iteration", steps),
                                     y_key=obj["column"], title=f"best {len(curves)} trials: {title}",
                                     score_label=obj["column"]))
    (folder / "index.html").write_text(_html(definition, trials, best[0] if best else None, keys, label,
                                             [Path(f).relative_to(folder) for f in figures]))
    return {"best": best[0] if best else None, "figures": figures}


def _html(definition, trials, best, keys, label, figures) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>rsrp_sim sweep</title>",
             "<style>body{font-family:sans-serif;max-width:1500px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}img{max-width:100%}pre{background:#f6f6f6;padding:.5em;font-size:85%}</style>"
             "</head><body>",
             f"<h1>Sweep: {e(definition['protocol'])} {e(definition['method'])} [{e(definition['backend'])}]</h1>"]
    if best is not None:
        values = ", ".join(f"{k}={_fmt(best['params'].get(k))}" for k in keys)
        parts.append(f"<p>Best trial <b>{best['trial']}</b>: {e(label)} = <b>{_fmt(best['value'])}</b> with "
                     f"{e(values)} (seed {best.get('seed')}, run folder {e(str(best.get('run_dir')))})</p>")
    else:
        parts.append("<p>No trial has completed yet.</p>")
    for f in figures:
        parts.append(f"<img src='{e(str(f))}' alt='{e(str(f))}'>")
    cols = ["trial", "state", "value", *keys, "seed", "iterations_done", "wall_s", "run_dir", "error"]
    parts.append("<h2>Trials</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
    for t in trials:
        cells = []
        for c in cols:
            v = t["params"].get(c) if c in keys else t.get(c)
            cells.append(f"<td>{e(_fmt(v)) if v not in (None, '') else ''}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append(f"<h2>Definition</h2><pre>{e(yaml.safe_dump(definition, sort_keys=False))}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
