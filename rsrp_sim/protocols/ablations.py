"""Ablations: named sweeps over one config key, run over seeds, with one figure and one table.

    python -m rsrp_sim.protocols.ablations                       # list the ablations
    python -m rsrp_sim.protocols.ablations cartpole-reward --seeds 0,1,2 [--preset cpu] [--jobs 2]
                                           [--out DIR] [--resume] [--values raw,baseline] [key=value ...]

Folder layout: ``DIR/ablation.yaml``, ``DIR/<value>/s<seed>/`` (ordinary run folders),
``DIR/plots/compare.png`` (mean and min..max band over seeds per value, by iteration, steps and
wall-clock) and ``DIR/table.csv`` (final and best eval score, mean ± 95 % CI per value).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import yaml

from ..infra import assets
from ..infra import config as configlib
from ..infra.cli import DEBUG_HELP, Parser, run_command
from ..infra.errors import EXIT_INTERRUPTED, UserError, unknown
from ..infra.records import NOT_WRITABLE, FolderLock, atomic_write_bytes, inside, read_yaml, safe_name, writing
from . import get
from .groups import _remove_unstarted, check_seeds, parse_seeds, run_group, write_group_outputs

META = "ablation.yaml"


def catalogue() -> dict:
    return yaml.safe_load(assets.read_text("protocols", "ablations.yaml"))


def run_ablation(name: str, seeds, preset="cpu", out=None, resume=False, overrides=None, jobs=1, values=None,
                 progress=True):
    """Run every value of the named sweep over ``seeds``; returns ``(folder, table rows, interrupted)``."""
    cat = catalogue()
    if name not in cat:
        raise unknown("ablation", name, cat)
    spec = cat[name]
    protocol = get(spec["protocol"])
    key = spec["key"]
    by_text = {str(v): v for v in spec["values"]}
    for v in values or []:
        if str(v) not in by_text:
            raise unknown(f"value of ablation {name}", v, by_text)
    chosen = list(spec["values"]) if values is None else [by_text[str(v)] for v in values]
    overrides = {**(spec.get("overrides") or {}), **(overrides or {})}
    if key in overrides:
        raise UserError(f"{key} is the swept key of ablation {name}; it cannot be overridden")
    slugs = {}
    for v in spec["values"]:
        slugs.setdefault(_slug(v), []).append(v)
    clash = [vs for vs in slugs.values() if len(vs) > 1]
    if clash:
        raise UserError(f"ablation {name}: values {clash[0]} would share one folder name; rename them")
    if resume:
        if out is None:
            raise UserError("--resume needs --out DIR naming the ablation folder to continue")
        folder = Path(out)
        if not (folder / META).is_file():
            raise UserError(f"{folder} is not an ablation folder (no {META})")
        lock = FolderLock(folder, "ablation folder")
        try:
            meta = read_yaml(folder / META)
            seeds, preset, chosen, overrides = _check_meta(folder, meta, name, by_text)
        except BaseException:
            lock.release()
            raise
    else:
        for v in chosen:  # validate every configuration before anything runs
            backend = spec.get("backend") or protocol.method(spec["method"]).default_backend
            protocol.build_config(spec["method"], backend, preset, {**overrides, key: v})
        seeds = check_seeds(list(seeds), "--seeds")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(out) if out is not None else Path("runs") / "ablations" / f"{stamp}_{name}"
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UserError(f"ablation folder {folder} already exists; pass --resume or choose another --out")
        created = [p for p in [folder, *folder.parents] if not p.exists()]
        with writing(folder, NOT_WRITABLE):
            folder.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(folder, "ablation folder")
        meta = {"ablation": name, **spec, "values": chosen, "seeds": seeds, "preset": preset, "overrides": overrides}
        try:
            atomic_write_bytes(folder / META, yaml.safe_dump(meta, sort_keys=False).encode(), NOT_WRITABLE)
        except BaseException:
            _remove_unstarted(folder, created, lock, META)
            raise
    try:
        for v in chosen:
            sub = inside(folder, _slug(v))
            again = resume and sub.exists()
            _, summaries, table = run_group(protocol, spec["method"], spec.get("backend"), preset, seeds, sub, again,
                                            {} if again else {**overrides, key: v}, jobs=jobs, progress=progress)
            if table is None:
                return folder, None, True
        _, rows = write_group_outputs(folder, protocol, by=key)
        return folder, rows, False
    except BaseException:
        if not resume:  # none of its values started: no folder left behind
            _remove_unstarted(folder, created, lock, META)
        raise
    finally:
        lock.release()


def _check_meta(folder: Path, meta, name: str, by_text: dict):
    """``ablation.yaml`` checked before resuming: ``(seeds, preset, values, overrides)``."""
    where, fix = folder / META, "restore it or start a new ablation"
    if not isinstance(meta, dict):
        raise UserError(f"{where} is not an ablation record (a {type(meta).__name__}); {fix}")
    if meta.get("ablation") != name:
        raise UserError(f"{folder} is an ablation folder of {meta.get('ablation')!r}, not {name}")
    if not isinstance(meta.get("preset"), str) or not isinstance(meta.get("overrides", {}), dict):
        raise UserError(f"{where}: preset must be a string and overrides a mapping; {fix}")
    values = meta.get("values")
    if not isinstance(values, list) or not values or any(str(v) not in by_text for v in values):
        raise UserError(f"{where}: values must be a list of the sweep's values ({', '.join(by_text)}), got "
                        f"{values!r}; {fix}")
    try:
        seeds = check_seeds(meta.get("seeds"), str(where))
    except UserError as e:
        raise UserError(f"{e}; {fix}") from None
    return seeds, meta["preset"], [by_text[str(v)] for v in values], dict(meta.get("overrides") or {})


def _slug(v) -> str:
    """The folder name of a swept value (a file name: no path separators or ``..``)."""
    return safe_name(str(v).replace(":", "-"))


def main(argv=None) -> int:
    p = Parser(prog="python -m rsrp_sim.protocols.ablations", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="ablation name (omit to list them)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--values", default=None, help="a subset of the sweep's values, comma-separated")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return run_command(p, argv, _main, intermixed=True)


def _main(args) -> int:
    from ..analysis.compare import format_table

    if args.name is None:
        for name, spec in catalogue().items():
            print(f"{name:<20} {spec['protocol']}/{spec['method']}: {spec['key']} in {spec['values']}  "
                  f"- {spec['description']}")
        return 0
    values = None if args.values is None else [v.strip() for v in args.values.split(",")]
    folder, rows, interrupted = run_ablation(args.name, parse_seeds(args.seeds), args.preset, args.out,
                                             args.resume, configlib.parse_overrides(args.overrides),
                                             args.jobs, values, progress=not args.quiet)
    if interrupted:
        print(f"interrupted; continue with: python -m rsrp_sim.protocols.ablations {args.name} --out {folder} --resume")
        return EXIT_INTERRUPTED
    print(format_table(rows))
    print(f"ablation: {folder} (plots/compare.png, table.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
