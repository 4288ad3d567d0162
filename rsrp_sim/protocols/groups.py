"""Multi-seed runs: one run folder per seed under a group folder, sequential or in parallel processes.

    python -m rsrp_sim.protocols.cartpole --method es --seeds 0,1,2 [--jobs 3] [--out DIR]

The group folder holds ``group.yaml`` (what was asked), ``s<seed>/`` run folders and, at the end,
``plots/compare.png`` and ``table.csv`` (final and best eval score, mean ± 95 % CI over seeds).
``--resume`` on a group finishes every seed that is not completed.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..infra.errors import UserError
from ..infra.records import CONFIG, SUMMARY, atomic_write_bytes

GROUP = "group.yaml"


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> list of ints."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers or ranges like 0-4, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must list distinct seeds, got {text!r}")
    return seeds


def overrides_to_args(overrides: dict[str, Any]) -> list[str]:
    """The inverse of :func:`rsrp_sim.config.parse_overrides` (for child processes)."""
    out = []
    for k, v in overrides.items():
        if k == "model_overrides":
            out += [f"model.{mk}={_scalar(mv)}" for mk, mv in v.items()]
        else:
            out.append(f"{k}={_scalar(v)}")
    return out


def _scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip()


def _status(run_dir: Path) -> str | None:
    import json

    p = run_dir / SUMMARY
    return json.loads(p.read_text()).get("status") if p.exists() else None


def run_group(protocol, method, backend, preset, seeds, out, resume, overrides, jobs=1, progress=True):
    """Run one method over several seeds.

    Returns ``(group_dir, [summary per seed], table)``; ``table`` (final/best eval over seeds) is None
    when the group was interrupted.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if resume:
        if out is None:
            raise UserError("--resume needs --out GROUP_DIR naming the group folder to continue")
        group = Path(out)
        if not (group / GROUP).is_file():
            raise UserError(f"{group} is not a multi-seed group folder (no {GROUP}); nothing to resume")
        doc = yaml.safe_load((group / GROUP).read_text())
        method, backend, preset, seeds = doc["method"], doc["backend"], doc["preset"], doc["seeds"]
        overrides = {**doc.get("overrides", {}), **overrides}
    else:
        spec = protocol.method(method or next(iter(protocol.methods)))
        method, backend = spec.name, backend or spec.default_backend
        protocol.build_config(method, backend, preset, overrides)  # validate before anything is written
        group = Path(out) if out is not None else protocol.default_out(method, backend, "-".join(map(str, seeds)))
        if group.exists() and any(group.iterdir()):
            raise UserError(f"group folder {group} already exists; pass --resume to continue it or choose another --out")
        group.mkdir(parents=True, exist_ok=True)
        doc = {"protocol": protocol.name, "method": method, "backend": backend, "preset": preset, "seeds": seeds,
               "overrides": overrides}
        atomic_write_bytes(group / GROUP, yaml.safe_dump(doc, sort_keys=False).encode())

    def plan(seed):
        d = group / f"s{seed}"
        st = _status(d) if (d / CONFIG).exists() else None
        return d, st

    todo = [(s, *plan(s)) for s in seeds]
    todo = [(s, d, st) for s, d, st in todo if st != "completed"]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{protocol.name} {method} seeds",
               unit="seed", disable=not progress, file=sys.stderr)
    interrupted = False
    try:
        if jobs == 1:
            for seed, d, st in todo:
                if st is not None:
                    _, s = protocol.run(out=d, resume=True, progress=progress)
                else:
                    _, s = protocol.run(method, backend, preset, seed, d, False, overrides, progress=progress)
                bar.update(1)
                if s["status"] == "interrupted":
                    interrupted = True
                    break
        else:
            interrupted = _parallel(protocol, method, backend, preset, todo, overrides, jobs, bar)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    summaries = [_summary(group / f"s{s}") for s in seeds]
    table = None if interrupted else write_group_outputs(group, protocol)[1]
    return group, summaries, table


def _summary(d: Path) -> dict:
    import json

    p = d / SUMMARY
    return json.loads(p.read_text()) if p.exists() else {"run_dir": str(d), "status": "missing"}


def _parallel(protocol, method, backend, preset, todo, overrides, jobs, bar) -> bool:
    """Each seed in its own process (``--quiet``); at most ``jobs`` at once."""
    pending = list(todo)
    running: list[tuple[subprocess.Popen, int]] = []
    failed = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                seed, d, st = pending.pop(0)
                cmd = [sys.executable, "-m", protocol.module, "--quiet", "--out", str(d)]
                cmd += ["--resume"] if st is not None else ["--method", method, "--backend", backend, "--preset",
                                                            preset, "--seed", str(seed), *overrides_to_args(overrides)]
                running.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                                seed))
            time.sleep(0.2)
            for proc, seed in list(running):
                if proc.poll() is not None:
                    running.remove((proc, seed))
                    bar.update(1)
                    if proc.returncode != 0:
                        err = (proc.stderr.read() or "").strip().splitlines()
                        failed.append(f"seed {seed}: {err[-1] if err else f'exit status {proc.returncode}'}")
    except KeyboardInterrupt:
        for proc, _ in running:
            proc.send_signal(2)
        for proc, _ in running:
            proc.wait()
        return True
    if failed:
        raise UserError("; ".join(failed))
    return False


def write_group_outputs(group: Path, protocol, by: str | None = None):
    """``plots/compare.png`` and ``table.csv`` for the run folders under ``group``."""
    import csv

    from ..analysis import plots
    from ..analysis.compare import common_threshold, expand, group_runs, load_run, table

    runs = [load_run(p) for p in expand([group])]
    groups = group_runs(runs, by=by)
    x_keys = ("iteration", protocol.steps_label, "wall_s")
    plots.compare({k: [r["rows"] for r in v] for k, v in groups.items()}, group / "plots" / "compare.png",
                  x_keys=x_keys, title=f"{protocol.name}: {group.name}", score_label=protocol.score_label,
                  threshold=common_threshold(runs))
    rows = table(groups)
    with open(group / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return groups, rows
