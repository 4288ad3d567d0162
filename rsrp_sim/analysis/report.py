"""``rsrp-sim report RUN_GROUPS... --out DIR``: the paper's figures and an index.html.

For every protocol among the runs, one figure with all its methods on one axis by iteration
(generation / episode block / update), by environment steps (or training examples) and by
wall-clock, mean over seeds with a min..max band, and a table of final and best eval scores (mean
± 95 % CI).  Every ablation folder gets its own figure and table, grouped by the swept key.
``index.html`` holds the figures, the tables, each group's configuration and the package versions.

Every file is written inside ``--out`` under a sanitised name (a name from a run's records never
becomes a path); files that exist are kept unless ``--force``.  A run folder that cannot be read is
skipped with one warning line.
"""
from __future__ import annotations

import argparse
import html
from pathlib import Path

import yaml

from . import plots
from .compare import common_threshold, expand, group_runs, labels, load_runs, table
from ..infra.cli import DEBUG_HELP, Parser, run_command
from ..infra.errors import UserError
from ..infra.records import NOT_WRITABLE, atomic_write_bytes, inside, json_bytes, safe_name, writing

SECTION_TITLES = {
    "cartpole": "CartPole-v1: return of the deterministic network",
    "humanoid": "Humanoid (Brax): RSRP vs PPO-LSTM",
    "mnist": "MNIST: held-out accuracy",
    "digits": "Digits (8x8): held-out accuracy",
    "cifar10": "CIFAR-10: held-out accuracy",
}


def _section(runs, title, figure: str, by=None):
    score, steps = labels(runs)
    groups = group_runs(runs, by=by)
    configs = {label: v[0]["config"].get("config", {}) for label, v in groups.items()}
    return {"title": title, "figure": figure, "table": table(groups), "configs": configs,
            "runs": [str(r["path"]) for r in runs], "_draw": (groups, steps, score, common_threshold(runs))}


def _unique(name: str, used: set) -> str:
    stem, n = name, 2
    while name in used:
        name = f"{stem}-{n}"
        n += 1
    used.add(name)
    return name


def build(paths, out: Path, force: bool = False) -> dict:
    out = Path(out)
    for name in ("index.html", "report.json"):  # before reading any run
        if (out / name).exists() and not force:
            raise UserError(f"{out / name} already exists; pass --force to overwrite the report in {out} or choose "
                            f"another --out")
    sections, others, used = [], [], {"index", "report"}
    for p in map(Path, paths):
        meta_file = p / "ablation.yaml"
        if meta_file.is_file():
            try:
                meta = yaml.safe_load(meta_file.read_bytes().decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                meta = None
            if not isinstance(meta, dict) or not isinstance(meta.get("key"), str):
                _warn(f"skipping {p}: {meta_file} is not a valid ablation record")
                continue
            runs = load_runs(expand([p]), _warn)
            if not runs:
                _warn(f"skipping {p}: no readable run folders")
                continue
            name = str(meta.get("ablation", p.name))
            title = f"Ablation {name}: {meta.get('description', '')}"
            figure = _unique(f"ablation_{safe_name(name)}", used) + ".png"
            sections.append(_section(runs, title, figure, by=meta["key"]))
        else:  # run folders and groups (also one value of an ablation, named on its own)
            others.append(p)
    rest = load_runs(list(dict.fromkeys(expand(others))), _warn) if others else []
    by_protocol: dict[str, list] = {}
    for r in rest:
        by_protocol.setdefault(r["config"]["protocol"], []).append(r)
    for name, runs in by_protocol.items():
        figure = _unique(safe_name(name), used) + ".png"
        sections.insert(len([s for s in sections if not s["title"].startswith("Ablation")]),
                        _section(runs, SECTION_TITLES.get(name, name), figure))
    if not sections:
        raise UserError("no readable runs found in the folders given")
    targets = [inside(out, name) for name in ["report.json", "index.html"] + [s["figure"] for s in sections]]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists; pass --force to overwrite the report in {out} or choose "
                        f"another --out")
    with writing(out, NOT_WRITABLE):
        out.mkdir(parents=True, exist_ok=True)
    for s in sections:
        groups, steps, score, threshold = s.pop("_draw")
        plots.compare({k: [r["rows"] for r in v] for k, v in groups.items()}, inside(out, s["figure"]),
                      x_keys=("iteration", steps, "wall_s"), title=s["title"], threshold=threshold,
                      score_label=score)
    versions = {}
    for r in [r for s in sections for r in s["runs"]]:
        try:
            v = (yaml.safe_load((Path(r) / "config.yaml").read_text()) or {}).get("versions", {})
        except (yaml.YAMLError, OSError, UnicodeDecodeError, AttributeError):
            continue
        for k, val in (v.items() if isinstance(v, dict) else ()):
            versions.setdefault(str(k), set()).add(str(val))
    doc = {"sections": sections, "versions": {k: sorted(v) for k, v in versions.items()}}
    atomic_write_bytes(inside(out, "report.json"), json_bytes(doc), NOT_WRITABLE)
    atomic_write_bytes(inside(out, "index.html"), _html(doc).encode(), NOT_WRITABLE)
    return doc


def _warn(text: str):
    import sys

    print(f"warning: {text}", file=sys.stderr)


def _fmt(v):
    return "n/a" if v is None or v != v else f"{v:.4g}"


def _html(doc) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>rsrp_sim report</title>",
             "<style>body{font-family:sans-serif;max-width:1700px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th:first-child,td:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:.5em;font-size:85%}</style></head><body>",
             "<h1>rsrp_sim report</h1>"]
    for s in doc["sections"]:
        parts.append(f"<h2>{e(s['title'])}</h2><img src='{e(s['figure'])}' alt='{e(s['title'])}'>")
        parts.append("<table><tr><th>group</th><th>seeds</th><th>final eval (mean ± 95% CI)</th>"
                     "<th>best eval (mean ± 95% CI)</th><th>mean eval over iterations (± 95% CI)</th>"
                     "<th>iterations</th></tr>")
        for r in s["table"]:
            cells = "".join(f"<td>{_fmt(r[k + '_mean'])} ± {_fmt(r[k + '_ci95'])}</td>"
                            for k in ("final", "best", "curve"))
            parts.append(f"<tr><td>{e(r['group'])}</td><td>{r['seeds']}</td>{cells}<td>{r['iterations']}</td></tr>")
        parts.append("</table>")
        for label, cfg in s["configs"].items():
            parts.append(f"<details><summary>config of {e(label)}</summary><pre>"
                         f"{e(yaml.safe_dump(cfg, sort_keys=False))}</pre></details>")
        parts.append(f"<details><summary>{len(s['runs'])} run folders</summary><pre>"
                     f"{e(chr(10).join(s['runs']))}</pre></details>")
    parts.append("<h2>Versions</h2><table><tr><th>package</th><th>version(s)</th></tr>")
    for k, v in doc["versions"].items():
        parts.append(f"<tr><td>{e(k)}</td><td>{e(', '.join(map(str, v)))}</td></tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = Parser(prog="rsrp-sim report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders, multi-seed groups, ablation folders")
    p.add_argument("--out", required=True, help="report folder (index.html and PNG figures)")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing report in --out")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return run_command(p, argv, _main)


def _main(args) -> int:
    doc = build(args.runs, Path(args.out), force=args.force)
    for s in doc["sections"]:
        print(f"{s['title']}: {s['figure']} ({len(s['runs'])} runs)")
    print(f"report: {Path(args.out) / 'index.html'}")
    return 0
