"""``rsrp-sim report RUN_GROUPS... --out DIR``: the paper's figures and an index.html.

For every protocol among the runs, one figure with all its methods on one axis by iteration
(generation / episode block / update), by environment steps (or training examples) and by
wall-clock, mean over seeds with a min..max band, and a table of final and best eval scores (mean
± 95 % CI).  Every ablation folder gets its own figure and table, grouped by the swept key.
``index.html`` holds the figures, the tables, each group's configuration and the package versions.
"""
from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import yaml

from . import plots
from .compare import common_threshold, expand, group_runs, labels, load_run, table
from ..infra.errors import UserError

SECTION_TITLES = {
    "cartpole": "CartPole-v1: return of the deterministic network",
    "humanoid": "Humanoid (Brax): RSRP vs PPO-LSTM",
    "mnist": "MNIST: held-out accuracy",
    "digits": "Digits (8x8): held-out accuracy",
    "cifar10": "CIFAR-10: held-out accuracy",
}


def _section(runs, title, out_png, by=None):
    score, steps = labels(runs)
    threshold = common_threshold(runs)
    groups = group_runs(runs, by=by)
    plots.compare({k: [r["rows"] for r in v] for k, v in groups.items()}, out_png,
                  x_keys=("iteration", steps, "wall_s"), title=title, threshold=threshold, score_label=score)
    configs = {label: v[0]["config"].get("config", {}) for label, v in groups.items()}
    return {"title": title, "figure": out_png.name, "table": table(groups), "configs": configs,
            "runs": [str(r["path"]) for r in runs]}


def build(paths, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    sections, others = [], []
    for p in map(Path, paths):
        if (p / "ablation.yaml").is_file():
            meta = yaml.safe_load((p / "ablation.yaml").read_text())
            runs = [load_run(q) for q in expand([p])]
            title = f"Ablation {meta['ablation']}: {meta['description']}"
            sections.append(_section(runs, title, out / f"ablation_{meta['ablation']}.png", by=meta["key"]))
        else:  # run folders and groups (also one value of an ablation, named on its own)
            others.append(p)
    rest = [load_run(q) for q in dict.fromkeys(expand(others))] if others else []
    by_protocol: dict[str, list] = {}
    for r in rest:
        by_protocol.setdefault(r["config"]["protocol"], []).append(r)
    for name, runs in by_protocol.items():
        sections.insert(len([s for s in sections if not s["title"].startswith("Ablation")]),
                        _section(runs, SECTION_TITLES.get(name, name), out / f"{name}.png"))
    if not sections:
        raise UserError("no runs found in the folders given")
    versions = {}
    for p in expand(paths):
        v = (yaml.safe_load((p / "config.yaml").read_text()) or {}).get("versions", {})
        for k, val in v.items():
            versions.setdefault(k, set()).add(val)
    doc = {"sections": sections, "versions": {k: sorted(v) for k, v in versions.items()}}
    (out / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / "index.html").write_text(_html(doc))
    return doc


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
    p = argparse.ArgumentParser(prog="rsrp-sim report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders, multi-seed groups, ablation folders")
    p.add_argument("--out", required=True, help="report folder (index.html and PNG figures)")
    args = p.parse_args(argv)
    doc = build(args.runs, Path(args.out))
    for s in doc["sections"]:
        print(f"{s['title']}: {s['figure']} ({len(s['runs'])} runs)")
    print(f"report: {Path(args.out) / 'index.html'}")
    return 0
