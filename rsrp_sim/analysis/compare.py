"""``rsrp-sim compare RUN...``: overlay runs by iteration, env steps and wall-clock.

Runs are grouped by method and back-end (and protocol, when several are given); each group is drawn
as its mean over seeds with a min..max band, and a table gives final and best eval scores with 95 %
confidence intervals over seeds.  A folder that holds run folders (a multi-seed group) is expanded.
A run folder that cannot be read (a damaged ``config.yaml``, ``metrics.csv`` or ``summary.json``) is
skipped with one warning line; an existing ``--out`` file is kept unless ``--force``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..infra.cli import DEBUG_HELP, Parser, run_command
from ..infra.errors import UserError
from ..infra.records import CONFIG, METRICS, read_metrics, read_summary, read_yaml


__all__ = ["expand", "load_run", "load_runs", "columns", "common_threshold", "labels", "label_of", "group_runs",
           "mean_ci", "table", "format_table", "main"]


def expand(paths: Any) -> list[Path]:
    """Run folders named, or found up to three levels below the folders named (groups, ablations)."""
    out = []
    for p in map(Path, paths):
        if (p / CONFIG).is_file():
            out.append(p)
        elif p.is_dir():
            subs = sorted(q.parent for pattern in ("*/", "*/*/", "*/*/*/") for q in p.glob(pattern + CONFIG))
            if not subs:
                raise UserError(f"{p} holds no run folders (no {CONFIG} in it or its sub-folders)")
            out.extend(subs)
        else:
            raise UserError(f"run folder {p} does not exist")
    return out


def load_run(path: Path) -> dict[str, Any]:
    """A run folder's ``config.yaml``, ``metrics.csv`` rows and ``summary.json`` (a damaged one is a
    one-line :class:`UserError`)."""
    path = Path(path)
    cfg = read_yaml(path / CONFIG)
    if not isinstance(cfg, dict):
        raise UserError(f"{path / CONFIG} is not a run record")
    for key, tp in (("protocol", str), ("method", str), ("backend", str), ("config", dict)):
        if not isinstance(cfg.get(key), tp):
            raise UserError(f"{path / CONFIG}: {key} must be {tp.__name__}, got {cfg.get(key)!r}")
    rows = read_metrics(path / METRICS)
    summary = read_summary(path)
    return {"path": path, "config": cfg, "rows": rows, "summary": summary}


def load_runs(paths: Any, warn: Any = None) -> list[dict[str, Any]]:
    """:func:`load_run` of each folder; one that cannot be read is skipped with one warning line."""
    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    runs = []
    for p in paths:
        try:
            runs.append(load_run(p))
        except UserError as e:
            warn(f"skipping {p}: {e}")
    return runs


def columns(runs: Any) -> list[str]:
    """The metrics columns every run has (in the first run's order)."""
    if not runs:
        return []
    common = set.intersection(*[set(k for row in r["rows"] for k in row) for r in runs])
    first = [k for row in runs[0]["rows"] for k in row]
    return list(dict.fromkeys(k for k in first if k in common))


def common_threshold(runs: Any) -> float | None:
    """The "solved" score the runs share (from their summaries), or None."""
    values = {v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
              for v in (r["summary"].get("solved_threshold") for r in runs)}
    return values.pop() if len(values) == 1 else None


def labels(runs: Any) -> tuple[str, str]:
    """``(score label, steps column)`` the runs' protocol recorded (``eval score`` / ``env_steps`` if none)."""
    found = {tuple((r["config"].get("labels") or {}).get(k) for k in ("score", "steps")) for r in runs}
    if len(found) == 1:
        score, steps = found.pop()
        if score and steps:
            return score, steps
    steps = "examples" if any(r["rows"] and "examples" in r["rows"][0] for r in runs) else "env_steps"
    return "eval score", steps


def label_of(run: Any, multi_protocol: bool, by: str | None = None) -> str:
    """``method [backend]``; with ``by`` the value of that config key (``shaping=raw``)."""
    c = run["config"]
    if by is not None:
        return f"{by}={c['config'].get(by)}"
    label = f"{c['method']} [{c['backend']}]"
    return f"{c['protocol']}: {label}" if multi_protocol else label


def group_runs(runs: Any, by: str | None = None) -> dict[str, list]:
    """Runs grouped by method and back-end, or by the value of config key ``by``."""
    multi = len({r["config"]["protocol"] for r in runs}) > 1
    groups: dict[str, list] = {}
    for r in runs:
        groups.setdefault(label_of(r, multi, by), []).append(r)
    return groups


def _number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def mean_ci(values: Any) -> tuple[float, float]:
    """Mean and half-width of the 95 % t confidence interval (0 for one value)."""
    v = np.asarray([x for x in values if _number(x) and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), 0.0
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def table(groups: Any, y_key: str = "eval_score") -> list[dict[str, Any]]:
    """Per group: final, best and mean-over-iterations score (the area under the learning curve
    divided by its length: higher when learning is faster and steadier), mean ± 95 % CI over seeds."""
    out = []
    for label, runs in groups.items():
        finals = [r["rows"][-1].get(y_key) for r in runs if r["rows"]]
        scores = [[v for v in (x.get(y_key) for x in r["rows"]) if _number(v) and np.isfinite(v)]
                  for r in runs if r["rows"]]   # NaN: not evaluated at that iteration
        fm, fh = mean_ci(finals)
        bm, bh = mean_ci([max(s, default=None) for s in scores])
        am, ah = mean_ci([float(np.mean(s)) if s else None for s in scores])
        out.append({"group": label, "seeds": len(runs), "final_mean": fm, "final_ci95": fh,
                    "best_mean": bm, "best_ci95": bh, "curve_mean": am, "curve_ci95": ah,
                    "iterations": int(np.mean([r["rows"][-1]["iteration"] for r in runs if r["rows"]] or [0]))})
    return out


def format_table(rows: Any) -> str:
    head = (f"{'group':<34} {'seeds':>5} {'final (mean ± 95% CI)':>24} {'best (mean ± 95% CI)':>24} "
            f"{'curve mean (± 95% CI)':>24}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['group']:<34} {r['seeds']:>5} " + " ".join(
            f"{r[k + '_mean']:>14.4g} ± {r[k + '_ci95']:<7.3g}" for k in ("final", "best", "curve")))
    return "\n".join(lines)


def main(argv: Any = None) -> int:
    p = Parser(prog="rsrp-sim compare", description=__doc__)
    p.add_argument("runs", nargs="+", help="run folders, or folders of run folders")
    p.add_argument("--x", default=None,
                   help="comma-separated x axes: iteration, env_steps (or examples), wall_s "
                        "(default iteration,<env_steps or examples>,wall_s)")
    p.add_argument("--y", default="eval_score", help="metrics column to plot (default eval_score)")
    p.add_argument("--out", default="compare.png", help="figure file (default compare.png)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--by", default=None, help="group by this config key (e.g. shaping) instead of method")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return run_command(p, argv, _main)


def _main(args: Any) -> int:
    from . import plots

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a figure file (e.g. {out / 'compare.png'})")
    runs = load_runs(expand(args.runs))
    if not runs:
        raise UserError("no readable run folders among those given")
    if args.x is None:  # classification runs count training examples instead of environment steps
        args.x = f"iteration,{labels(runs)[1]},wall_s"
    x_keys = tuple(k.strip() for k in args.x.split(",") if k.strip())
    known = {"iteration", "env_steps", "examples", "wall_s"}
    for k in x_keys:
        if k not in known:
            raise UserError(f"unknown x axis {k!r}; allowed: {', '.join(sorted(known))}")
    have = columns(runs)
    if args.y not in have:
        raise UserError(f"unknown column {args.y!r} for --y; the runs' metrics columns: {', '.join(have) or 'none'}")
    groups = group_runs(runs, by=args.by)
    protos = {r["config"]["protocol"] for r in runs}
    threshold = common_threshold(runs)
    path = plots.compare({k: [r["rows"] for r in v] for k, v in groups.items()}, out, x_keys=x_keys,
                         y_key=args.y, title=" / ".join(sorted(protos)), threshold=threshold,
                         score_label=args.y.replace("_", " "))
    print(format_table(table(groups, args.y)))
    print(f"figure: {path}")
    return 0
