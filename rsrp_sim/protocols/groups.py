"""Multi-seed runs: one run folder per seed under a group folder, sequential or in parallel processes.

    python -m rsrp_sim.protocols.cartpole --method es --seeds 0,1,2 [--jobs 3] [--out DIR]

The group folder holds ``group.yaml`` (what was asked), ``s<seed>/`` run folders and, at the end,
``plots/compare.png`` and ``table.csv`` (final and best eval score, mean ± 95 % CI over seeds).
``--resume`` on a group finishes every seed that is not completed.  A group holds at most
:data:`MAX_SEEDS` seeds, each an integer in [0, 2**32); the group folder is locked while a process
writes it (as run folders are).
"""
from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ..infra.errors import UserError
from ..infra.records import CONFIG, LOCK, NOT_WRITABLE, FolderLock, atomic_write_bytes, read_summary, read_yaml, writing

GROUP = "group.yaml"
#: the most seeds one group (or one value of an ablation) may have
MAX_SEEDS = 1000
_SEEDS_FORMAT = "comma-separated integers >= 0 or ranges like 0-4"

#: seeds are integers in [0, MAX_SEED)
MAX_SEED = 2**32


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> list of ints (at most :data:`MAX_SEEDS`, each in [0, 2**32))."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not (lo.strip().isdigit() and (not sep or hi.strip().isdigit())):
            if part.lstrip().startswith("-") or "--" in part:
                raise UserError(f"--seeds must be integers >= 0, got {text!r}")
            raise UserError(f"--seeds must be {_SEEDS_FORMAT}, got {text!r}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise UserError(f"--seeds range {part!r} is empty (its end is below its start)")
        if len(seeds) + (b - a + 1) > MAX_SEEDS:
            raise UserError(f"--seeds {text!r} names more than {MAX_SEEDS} seeds, the limit of one group")
        seeds.extend(range(a, b + 1))
    return check_seeds(seeds, f"--seeds {text!r}")


def check_seeds(seeds, what: str) -> list[int]:
    """A list of distinct seeds in [0, 2**32), at most :data:`MAX_SEEDS` of them."""
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{what} must name at least one seed")
    if len(seeds) > MAX_SEEDS:
        raise UserError(f"{what} names {len(seeds)} seeds, more than {MAX_SEEDS}, the limit of one group")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < MAX_SEED:
            raise UserError(f"{what}: seeds must be integers in [0, {MAX_SEED}), got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{what} must list distinct seeds")
    return list(seeds)


def check_group_doc(group: Path, doc, protocol) -> dict[str, Any]:
    """``group.yaml`` checked before resuming (a mapping of this protocol with typed keys)."""
    where = group / GROUP
    fix = "restore it or start a new group"
    if not isinstance(doc, dict):
        raise UserError(f"{where} is not a group record (a {type(doc).__name__}, expected a mapping); {fix}")
    for key, tp in (("protocol", str), ("method", str), ("backend", str), ("preset", str), ("seeds", list)):
        if not isinstance(doc.get(key), tp):
            raise UserError(f"{where}: {key} must be {tp.__name__}, got {doc.get(key)!r}; {fix}")
    if doc["protocol"] != protocol.name:
        raise UserError(f"{group} is a group of protocol {doc['protocol']!r}, not {protocol.name}")
    if doc["method"] not in protocol.methods:
        raise UserError(f"{where} names method {doc['method']!r}, which protocol {protocol.name} does not have; {fix}")
    if not isinstance(doc.get("overrides", {}), dict):
        raise UserError(f"{where}: overrides must be a mapping, got {doc.get('overrides')!r}; {fix}")
    try:
        check_seeds(doc["seeds"], f"{where}")
    except UserError as e:
        raise UserError(f"{e}; {fix}") from None
    return doc


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
    try:
        return read_summary(run_dir).get("status") or "unknown"
    except UserError:
        return "unknown"  # a damaged summary: the run is resumed, which rewrites it


def run_group(protocol, method, backend, preset, seeds, out, resume, overrides, jobs=1, progress=True):
    """Run one method over several seeds.

    Returns ``(group_dir, [summary per seed], table)``; ``table`` (final/best eval over seeds) is None
    when the group was interrupted.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    created: list[Path] = []
    if resume:
        if out is None:
            raise UserError("--resume needs --out GROUP_DIR naming the group folder to continue")
        group = Path(out)
        if not (group / GROUP).is_file():
            raise UserError(f"{group} is not a multi-seed group folder (no {GROUP}); nothing to resume")
        lock = FolderLock(group, "group folder")
        try:
            doc = read_yaml(group / GROUP)
            doc = check_group_doc(group, doc, protocol)
        except BaseException:
            lock.release()
            raise
        method, backend, preset, seeds = doc["method"], doc["backend"], doc["preset"], doc["seeds"]
        overrides = {**(doc.get("overrides") or {}), **overrides}
    else:
        seeds = check_seeds(list(seeds), "--seeds")
        spec = protocol.method(method or next(iter(protocol.methods)))
        method, backend = spec.name, backend or spec.default_backend
        protocol.build_config(method, backend, preset, overrides)  # validate before anything is written
        group = Path(out) if out is not None else protocol.default_out(method, backend, "-".join(map(str, seeds)))
        if group.exists() and (not group.is_dir() or any(group.iterdir())):
            raise UserError(f"group folder {group} already exists; pass --resume to continue it "
                            f"or choose another --out")
        created = [p for p in [group, *group.parents] if not p.exists()]
        with writing(group, NOT_WRITABLE):
            group.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(group, "group folder")
        doc = {"protocol": protocol.name, "method": method, "backend": backend, "preset": preset, "seeds": seeds,
               "overrides": overrides}
        try:
            atomic_write_bytes(group / GROUP, yaml.safe_dump(doc, sort_keys=False).encode(), NOT_WRITABLE)
        except BaseException:
            _remove_unstarted(group, created, lock)
            raise
    try:
        return _run_seeds(protocol, group, method, backend, preset, seeds, resume, overrides, jobs, progress)
    except BaseException:
        if not resume:
            _remove_unstarted(group, created, lock)
        raise
    finally:
        lock.release()


def _remove_unstarted(group: Path, created: list[Path], lock, record: str = GROUP):
    """A new group (or ablation) none of whose runs started leaves no folder behind."""
    if any(p.is_dir() and p.name != "plots" for p in group.iterdir()):
        return
    with contextlib.suppress(OSError):
        (group / record).unlink()
    with contextlib.suppress(OSError):
        if {p.name for p in group.iterdir()} <= {LOCK}:
            (group / LOCK).unlink()
    lock.release()
    for p in created:
        with contextlib.suppress(OSError):
            p.rmdir()


def _run_seeds(protocol, group, method, backend, preset, seeds, resume, overrides, jobs, progress):
    from tqdm.auto import tqdm

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
    try:
        s = read_summary(d)
    except UserError:
        return {"run_dir": str(d), "status": "unreadable"}
    return s or {"run_dir": str(d), "status": "missing"}


def _parallel(protocol, method, backend, preset, todo, overrides, jobs, bar) -> bool:
    """Each seed in its own process (``--quiet``); at most ``jobs`` at once.  A process's stderr goes to
    a temporary file (a pipe read only at the end would block a process that writes a lot)."""
    pending = list(todo)
    running: list[tuple[subprocess.Popen, int, Any]] = []
    failed = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                seed, d, st = pending.pop(0)
                cmd = [sys.executable, "-m", protocol.module, "--quiet", "--out", str(d)]
                cmd += ["--resume"] if st is not None else ["--method", method, "--backend", backend, "--preset",
                                                            preset, "--seed", str(seed), *overrides_to_args(overrides)]
                log = tempfile.TemporaryFile()
                running.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log), seed, log))
            time.sleep(0.2)
            for entry in list(running):
                proc, seed, log = entry
                if proc.poll() is not None:
                    running.remove(entry)
                    bar.update(1)
                    log.seek(0)
                    err = log.read().decode("utf-8", "replace").strip().splitlines()
                    log.close()
                    if proc.returncode != 0:
                        failed.append(f"seed {seed}: {err[-1] if err else f'exit status {proc.returncode}'}")
    except KeyboardInterrupt:
        for proc, _, _ in running:
            proc.send_signal(2)
        for proc, _, log in running:
            proc.wait()
            log.close()
        return True
    if failed:
        raise UserError("; ".join(failed))
    return False


def write_group_outputs(group: Path, protocol, by: str | None = None):
    """``plots/compare.png`` and ``table.csv`` for the run folders under ``group``."""
    from ..analysis import plots
    from ..analysis.compare import common_threshold, expand, group_runs, load_runs, table

    runs = load_runs(expand([group]))
    if not runs:
        raise UserError(f"{group} holds no readable run folders")
    groups = group_runs(runs, by=by)
    x_keys = ("iteration", protocol.steps_label, "wall_s")
    plots.compare({k: [r["rows"] for r in v] for k, v in groups.items()}, group / "plots" / "compare.png",
                  x_keys=x_keys, title=f"{protocol.name}: {group.name}", score_label=protocol.score_label,
                  threshold=common_threshold(runs))
    rows = table(groups)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(group / "table.csv", buf.getvalue().encode(), NOT_WRITABLE)
    return groups, rows
