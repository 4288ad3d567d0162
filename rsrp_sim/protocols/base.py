"""The protocol layer: one run loop, one command line and one record format for every method.

A :class:`Protocol` owns a task (environment or dataset, score label), its presets
(``protocols/<protocol>.yaml`` at the repository's root) and its methods.  Each :class:`MethodSpec`
names the back-ends that implement it, as ``"module:Class"`` strings imported only when used, so a
missing optional back-end never breaks the others.  A population method (``method=``, e.g. the
engine's RSRP) takes an *evaluator* from each back-end; any other method is a back-end's own
:class:`~rsrp_sim.engine.method.Method`.  Figures are drawn here, from the data methods return.

Command line (every protocol)::

    python -m rsrp_sim.protocols.<name> [--method M] [--backend B] [--preset P] [--seed S]
                                        [--out DIR] [--resume] [--env ID] [--debug] [key=value ...]

Exit statuses (:mod:`rsrp_sim.infra.errors`): 0 done, 2 bad input or environment (one line; nothing
run, nothing on disk changed), 3 the run started and failed (one line; resumable), 130 interrupted
(resumable), 1 an internal error (``--debug`` shows the traceback).  Resuming checks the run's
``config.yaml`` (method, protocol, types) and the checkpoint's metadata, and refuses any edit other
than the iteration count; ``config.yaml`` is rewritten (for a new iteration count) only after the
checkpoint has loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..infra import assets
from ..infra import config as configlib
from ..infra import distributed
from ..infra import recordings as recordlib
from ..infra import tracking
from ..infra.cli import DEBUG_HELP, Parser as _Parser, run_command
from ..infra.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunFailed, UserError, WriteError, unknown
from ..infra.records import CONFIG, NOT_WRITABLE, NullRunDir, RunDir, atomic_write_bytes, unflatten_state, writing
from .groups import MAX_SEED, parse_seeds, run_group

__all__ = ["MethodSpec", "Protocol", "RunFailed", "RunInfo", "StopRun", "summary_line", "check_seed", "EXIT_USAGE",
           "EXIT_FAILED", "EXIT_INTERRUPTED", "RUN_FORMAT", "MAX_SEED"]

#: version of the run-folder format; 2: pop_size counts sampled members only (eval_size on top)
RUN_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A method of a protocol.

    ``backends``: back-end name -> ``"module:Class"``, a :class:`~rsrp_sim.engine.method.Method`,
    or, when ``method`` names an :class:`~rsrp_sim.engine.method.EvaluatedMethod` (a population
    method of the engine), that back-end's evaluator class.  ``defaults``: config values of this
    method that differ from its class's (e.g. ``reservoir: true``).
    """

    name: str
    description: str
    backends: dict[str, str]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    method: str | None = None

    @property
    def default_backend(self) -> str:
        return next(iter(self.backends))


def load_object(target: Any) -> Any:
    """Import ``"module:Name"`` (a class given directly is returned as it is)."""
    if not isinstance(target, str):
        return target
    mod, name = target.split(":")
    return getattr(importlib.import_module(mod), name)


SHORTCUTS = {
    "env": "environment id (shortcut for env=ID)",
    "device": "back-end device, e.g. brian2's runtime, cpp_standalone, cuda_standalone (shortcut for device=NAME)",
}

BACKEND_EXTRAS = {"brian2": "brian2", "netpyne": "neuron", "jax": ""}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("rsrp_sim", "numpy", "jax", "jaxlib", "optax", "gymnasium", "gymnax", "Brian2", "neuron",
                "netpyne"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class Protocol:
    """A task with presets and methods; see the module docstring."""

    def __init__(self, name: str, description: str, methods: list[MethodSpec], module: str,
                 score_label: str = "episode return", steps_label: str = "env_steps",
                 shortcuts: dict[str, str] | None = None, direction: str = "maximize") -> None:
        self.name = name
        #: whether a larger score is better (``maximize``, every protocol's score) or a smaller one (sweeps)
        self.direction = direction
        #: command-line options --NAME VALUE that stand for the override NAME=VALUE (dashes for underscores)
        self.shortcuts = {**SHORTCUTS, **(shortcuts or {})}
        self.description = description
        self.methods = {m.name: m for m in methods}
        self.module = module
        self.score_label = score_label
        self.steps_label = steps_label

    # ------------------------------------------------------------------ presets & config
    def spec(self) -> dict[str, Any]:
        """The protocol's YAML (presets, thresholds)."""
        return yaml.safe_load(assets.read_text("protocols", f"{self.name}.yaml"))

    @property
    def presets(self) -> dict[str, Any]:
        return self.spec()["presets"]

    def add_method(self, spec: MethodSpec) -> None:
        """Register another method (see the README's *Extending*); its presets are
        ``protocols/<protocol>.yaml`` entries named like it, if any."""
        if spec.name in self.methods:
            raise UserError(f"protocol {self.name} already has a method {spec.name!r}")
        self.methods[spec.name] = spec

    def method(self, name: str) -> MethodSpec:
        if name not in self.methods:
            raise unknown(f"method for protocol {self.name}", name, self.methods)
        return self.methods[name]

    def method_class(self, spec: MethodSpec, backend: str) -> Any:
        if backend not in spec.backends:
            raise unknown(f"back-end for method {spec.name}", backend, spec.backends)
        try:
            target = load_object(spec.backends[backend])
        except ImportError as e:
            extra = BACKEND_EXTRAS.get(backend, backend)
            raise UserError(f"back-end {backend!r} is not usable here ({e}); install it with "
                            f"pip install -c constraints.txt -e '.[{extra}]'") from None
        cls = load_object(spec.method).with_evaluator(target) if spec.method else target
        return tracking.with_logger_key(cls)  # every method has the key logger=

    def build_config(self, method: str, backend: str, preset: str, overrides: dict[str, Any]) -> Any:
        spec = self.method(method)
        cls = self.method_class(spec, backend).Config
        presets = self.presets
        if preset not in presets:
            raise unknown("preset", preset, presets)
        p = presets[preset] or {}
        fields = set(configlib.field_types(cls))
        common = {k: v for k, v in (p.get("common") or {}).items() if k in fields}
        return configlib.build(cls, (f"method {method} defaults", spec.defaults),
                               (f"preset {preset}", common), (f"preset {preset}/{method}", p.get(method) or {}),
                               (f"preset {preset}/{method}@{backend}", p.get(f"{method}@{backend}") or {}),
                               ("override", overrides))

    # ------------------------------------------------------------------ running
    def default_out(self, method: str, backend: str, seed: int) -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / self.name / f"{stamp}_{method}_{backend}_s{seed}"

    def run(self, method: str | None = None, backend: str | None = None, preset: str = "cpu", seed: int = 0,
            out: Any = None, resume: bool = False, overrides: dict[str, Any] | None = None, progress: bool = True,
            stop_after: int | None = None, hooks: Any = ()) -> Any:
        """Run (or resume) one method; returns ``(run_dir, summary)``.

        ``stop_after`` stops after that many iterations of this call, as an interruption would
        (the run stays resumable); used by tests and for chunked batch jobs.  ``hooks``: objects
        with ``iteration(record)``, called after each iteration's record is written; one may end
        the run early by raising :class:`StopRun` (e.g. a sweep's pruner).
        """
        overrides = dict(overrides or {})
        writer = distributed.is_writer()
        if resume:
            if out is None:
                raise UserError("--resume needs --out RUN_DIR naming the run folder to continue")
            rd = RunDir.open(out) if writer else NullRunDir.open(out)  # locked until closed: one writer
            try:
                return self._resume(rd, method, backend, overrides, progress, stop_after, hooks)
            finally:
                rd.close()
        seed = check_seed(seed)
        method = method or next(iter(self.methods))
        spec = self.method(method)
        backend = backend or spec.default_backend
        cls = self.method_class(spec, backend)
        _check_processes(cls, method, backend)
        cfg = self.build_config(method, backend, preset, overrides)
        instance = cls(cfg, seed)  # validates everything the method checks before a folder exists
        cfg = instance.config  # as the method resolved it (e.g. spike_impl=auto -> fused): what the run records
        try:
            state = instance.init_state()
            out = Path(out) if out is not None else self.default_out(method, backend, seed)
            doc = {"format": RUN_FORMAT, "protocol": self.name, "method": method, "backend": backend,
                   "preset": preset, "seed": seed, "task": instance.task_name,
                   "labels": {"score": self.score_label, "steps": self.steps_label},
                   "config": configlib.to_dict(cfg), "versions": versions(), "command": " ".join(sys.argv),
                   "processes": distributed.process_count(), "devices": distributed.device_count()}
            rd = RunDir.create(out, doc) if writer else NullRunDir(out, doc)
            try:
                return self._loop(rd, instance, cfg, method, backend, preset, seed, state, 0, 0.0, progress,
                                  stop_after, fresh=True, hooks=hooks)
            finally:
                rd.close()
        finally:
            instance.close()

    def _resume(self, rd: RunDir, method: Any, backend: Any, overrides: Any, progress: Any, stop_after: Any,
                hooks: Any = ()) -> Any:
        saved = check_run_doc(rd.path, rd.config, self.name, self.module)
        for given, key in ((method, "method"), (backend, "backend")):
            if given is not None and given != saved[key]:
                raise UserError(f"--{key} {given} does not match the run being resumed ({saved[key]})")
        method, backend, preset, seed = saved["method"], saved["backend"], saved["preset"], saved["seed"]
        where = rd.path / CONFIG
        if method not in self.methods:
            raise UserError(f"{where} names method {method!r}, which protocol {self.name} does not have "
                            f"(allowed: {', '.join(self.methods)}); restore it or start a new run")
        spec = self.method(method)
        if backend not in spec.backends:
            raise UserError(f"{where} names back-end {backend!r}, which method {method} does not have "
                            f"(allowed: {', '.join(spec.backends)}); restore it or start a new run")
        cls = self.method_class(spec, backend)
        _check_processes(cls, method, backend)
        it_key = cls.iterations_key
        bad = [k for k in overrides if k != it_key]
        if bad:
            raise UserError(f"cannot change {bad[0]} when resuming; only {it_key}= may be given "
                            f"(to extend the run)")
        try:
            recorded = configlib.build(cls.Config, ("config.yaml", saved["config"]))
        except UserError as e:
            raise UserError(f"{where}: {e}; restore it (only {it_key} may change) or start a new run") from None
        cfg = configlib.build(cls.Config, ("config.yaml", saved["config"]), ("override", overrides))
        instance = cls(cfg, seed)
        try:
            state, start, wall = instance.init_state(), 0, 0.0
            arrays, meta = rd.read_checkpoint()
            if arrays is not None:
                check_unchanged(rd, meta, {"method": method, "backend": backend, "seed": seed,
                                           "config": configlib.to_dict(recorded)}, it_key)
                state = unflatten_state(arrays, state)
                start, wall = meta["iteration"], float(meta["wall_s"])
            rd.prepare_metrics(start)  # refuses a metrics.csv that lacks the checkpoint's rows
            if it_key in overrides and start > instance.iterations:
                raise UserError(f"{it_key}={overrides[it_key]} is fewer than the run has done ({start} "
                                f"iterations); give more to extend it, or omit {it_key}= to finish it as it was")
            if overrides and rd.writes:  # only now that the checkpoint has loaded
                rd.config["config"] = configlib.to_dict(cfg)
                atomic_write_bytes(rd.path / CONFIG, yaml.safe_dump(rd.config, sort_keys=False).encode(), NOT_WRITABLE)
            return self._loop(rd, instance, cfg, method, backend, preset, seed, state, start, wall, progress,
                              stop_after, fresh=False, hooks=hooks)
        finally:
            instance.close()

    def _loop(self, rd: RunDir, m: Any, cfg: Any, method: Any, backend: Any, preset: Any, seed: Any, state: Any,
              start: Any, wall: Any, progress: Any, stop_after: Any,
              fresh: bool, hooks: Any = ()) -> Any:
        from tqdm.auto import tqdm

        from ..analysis import plots

        ident = {"method": method, "backend": backend, "seed": seed, "config": configlib.to_dict(cfg)}
        if distributed.process_count() > 1:  # every process continues from the writer's checkpoint
            state, start, wall = distributed.broadcast_from_writer((state, start, wall))
            start, wall = int(start), float(wall)
        rows = rd.read_metrics()
        info = RunInfo(self.name, method, backend, preset, seed, m.task_name, m.solved_threshold, m.iterations)
        try:
            rd.write_summary(self._summary(rd, info, rows, wall, "running"))
            if fresh:  # the configuration the run was made with, for the checks on resume
                rd.save_checkpoint(state, {"iteration": 0, "wall_s": 0.0, **ident})
        except BaseException:
            if fresh:
                rd.discard()  # a run that never started leaves no folder behind
            raise
        committed = (state, start, wall)
        status = "completed"
        failure: Exception | None = None  # a UserError or WriteError (the run failed), or a bug
        unexpected: Exception | None = None  # a bug: re-raised once the folder is saved
        defer = _DeferSigint()
        bar = tqdm(total=info.total, initial=start, desc=f"{self.name} {method}", unit="it",
                   disable=not progress or not rd.writes, dynamic_ncols=True, file=sys.stderr)
        every = max(1, int(getattr(cfg, "checkpoint_every", 1)))
        ctrl_c = distributed.InterruptAgreement()  # several processes stop after the same iteration
        try:
            tracker = (tracking.open_tracker(getattr(cfg, "logger", "none"), rd.path, rd.config, start, not fresh)
                       if rd.writes else None)  # process 0 alone writes
        except BaseException:
            ctrl_c.close()
            bar.close()
            if fresh:
                rd.discard()
            raise
        try:
            it = start
            while it < info.total:
                if stop_after is not None and it - start >= stop_after:
                    status = "interrupted"
                    break
                if ctrl_c.agreed():
                    raise KeyboardInterrupt
                t0 = time.perf_counter()
                new_state, rec = m.step(state)
                wall += time.perf_counter() - t0
                it += 1
                rec["wall_s"] = wall
                rd.append_metrics(rec)
                rows.append(rec)
                state = new_state
                committed = (state, it, wall)
                if it % every == 0 or it == info.total:
                    rd.save_checkpoint(state, {"iteration": it, "wall_s": wall, **ident})
                rd.write_summary(self._summary(rd, info, rows, wall, "running"))
                if tracker is not None:
                    tracker.log(rec, m.histograms(state))
                bar.set_postfix(train=_short(rec.get("train_score")), eval=_short(rec.get("eval_score")),
                                refresh=False)  # drawn once, by update
                bar.update(1)
                for hook in hooks:
                    hook.iteration(rec)
        except KeyboardInterrupt:
            status = "interrupted"
            ctrl_c.close()  # its handler gives way to ...
            defer.start()  # ... this one: from now on until the folder is saved, Ctrl-C cannot tear it
            if rd.writes:
                os.write(2, b"interrupted: saving the run folder (it stays resumable)\n")
        except StopRun as e:  # a hook ended the run early (it stays resumable)
            status = e.status
        except UserError as e:  # the run started and failed (a non-finite reward, the disk full): resumable
            status, failure = "failed", e
        except distributed.LOST_PROCESS_ERRORS as e:  # another process of the run died
            status, failure = "failed", UserError(distributed.lost_process_message(e))
        except Exception as e:  # a bug: the folder is still saved as failed (resumable), then it propagates
            status, failure, unexpected = "failed", e, e
        finally:
            bar.close()
            ctrl_c.close()
        state, it, wall = committed
        if fresh and it == 0 and failure is not None:  # failed before its first iteration: nothing to keep
            if tracker is not None:
                tracker.close(self._summary(rd, info, [], wall, "failed"))
            rd.discard(also=tracking.LOGGERS[1:])  # the trackers' folders (tensorboard/, wandb/)
            if unexpected is not None:
                raise unexpected
            raise RunFailed(f"{_failure_text(failure)} (nothing was recorded; the run folder {rd.path} was "
                            f"removed)")
        with defer:  # a second Ctrl-C cannot tear what is being saved
            failure = _saving(failure, rd.save_checkpoint, state, {"iteration": it, "wall_s": wall, **ident})
            failure = _saving(failure, rd.truncate_metrics, it)
        rows = [r for r in rows if int(r["iteration"]) <= it]  # a Ctrl-C between the row and the commit
        summary = self._summary(rd, info, rows, wall, status)
        try:
            if rows and rd.writes and not _disk_full(failure):
                with writing(rd.path / "plots", NOT_WRITABLE):
                    plots.learning_curve(rows, rd.path / "plots" / "learning_curve.png", info.title, info.threshold,
                                         score_label=self.score_label, steps_field=m.steps_field,
                                         labels=m.curve_labels)
            if status == "completed":
                fin = m.finalize(state)
                with writing(rd.path / "plots", NOT_WRITABLE):
                    for fig in fin.figures if rd.writes else ():
                        plots.draw(fig, rd.path / "plots")
                summary.update(fin.summary)
                with writing(rd.path / recordlib.FOLDER, NOT_WRITABLE):
                    # spikes of the final evaluation
                    for name, recording in fin.recordings.items() if rd.writes else ():
                        recordlib.save(rd.path / recordlib.FOLDER / f"{name}.npz", recording)
                if fin.recordings:
                    summary["recordings"] = {name: r.brief() for name, r in fin.recordings.items()}
        except KeyboardInterrupt:  # during the figures or the final evaluation: resumable, which redoes them
            status = summary["status"] = "interrupted"
        except WriteError as e:
            failure = failure or e
        if failure is not None:
            summary["status"] = "failed"
            summary["error"] = _failure_text(failure)
        with _DeferSigint():
            failure = _saving(failure, rd.write_summary, summary)
        if tracker is not None:
            tracker.close(summary)
        if unexpected is not None:
            raise unexpected
        if failure is not None:
            raise RunFailed(f"{_failure_text(failure)} [run folder {rd.path}; "
                            + ("nothing was lost: free space, then continue with --resume]" if _disk_full(failure)
                               else "after fixing the cause, continue with --resume]"))
        return rd, summary

    def _summary(self, rd: Any, info: RunInfo, rows: Any, wall: Any, status: Any) -> Any:
        evals = [(r["iteration"], r.get("eval_score")) for r in rows if r.get("eval_score") is not None]
        evals = [(i, float(v)) for i, v in evals if not math.isnan(float(v))]
        best_it, best = max(evals, key=lambda t: t[1]) if evals else (None, None)
        last = rows[-1] if rows else {}
        threshold = info.threshold
        solved_at = None
        if threshold is not None:
            solved_at = next((i for i, v in evals if v >= threshold), None)
        return {
            "protocol": self.name, "method": info.method, "backend": info.backend, "preset": info.preset,
            "seed": info.seed, "task": info.task, "status": status,
            "iterations_done": int(last.get("iteration", 0) or 0), "iterations": info.total,
            "best_eval_score": best, "best_iteration": best_it,
            "final_eval_score": last.get("eval_score"), "final_train_score": last.get("train_score"),
            "solved_threshold": threshold, "solved": solved_at is not None if threshold is not None else None,
            "solved_at": solved_at, self.steps_label: last.get(self.steps_label), "wall_s": wall,
            "run_dir": str(rd.path),
        }

    # ------------------------------------------------------------------ command line
    def parser(self) -> argparse.ArgumentParser:
        p = _Parser(prog=f"python -m {self.module}", description=self.description,
                    epilog="Methods: " + "; ".join(f"{m.name} [{', '.join(m.backends)}]: {m.description}"
                                                   for m in self.methods.values()))
        p.add_argument("--method", default=None, help=f"one of {', '.join(self.methods)} (default "
                                                      f"{next(iter(self.methods))})")
        p.add_argument("--backend", default=None, help="simulation back-end (default: the method's first)")
        p.add_argument("--preset", default="cpu", help="cpu (default, minutes on a laptop) or paper")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--seeds", default=None, help="several seeds, e.g. 0,1,2 or 0-4: one run folder per seed "
                                                     "under a group folder, then a comparison over seeds")
        p.add_argument("--jobs", type=int, default=1, help="with --seeds: seeds run in parallel processes")
        p.add_argument("--out", default=None, help="run folder (default runs/<protocol>/<time>_<method>_...)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
        for key, text in self.shortcuts.items():
            p.add_argument("--" + key.replace("_", "-"), dest=key, default=None, help=text)
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="several processes (jax.distributed): the coordinator's address; with --num-processes "
                            "and --process-id (SLURM and Open MPI are detected without them)")
        p.add_argument("--num-processes", default=None, help="several processes: how many")
        p.add_argument("--process-id", default=None, help="several processes: this one's index, 0 .. N-1")
        p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
        p.add_argument("--list-keys", action="store_true", help="print the method's config keys and exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=0.1 "
                                                                          "model.n_neurons=64")
        return p

    def main(self, argv: Any = None) -> int:
        return run_command(self.parser(), argv, self._main, intermixed=True, say=_say_on_ranks)

    def _main(self, args: Any) -> int:
        _start_processes(self._requested_class(args), args)
        overrides = configlib.parse_overrides(args.overrides)
        for shortcut in self.shortcuts:
            if getattr(args, shortcut) is not None:
                overrides[shortcut] = getattr(args, shortcut)
        if args.list_keys:
            spec = self.method(args.method or next(iter(self.methods)))
            cls = self.method_class(spec, args.backend or spec.default_backend)
            print("\n".join(configlib.describe(cls.Config)))
            return 0
        if args.seeds is not None:
            return self._main_group(args, overrides)
        rd, s = self.run(args.method, args.backend, args.preset, args.seed, args.out, args.resume, overrides,
                         progress=not args.quiet)
        if not distributed.is_writer():  # process 0 speaks for the run
            return EXIT_INTERRUPTED if s["status"] == "interrupted" else 0
        print(summary_line(s))
        if s["status"] == "interrupted":
            print(f"interrupted; continue with: python -m {self.module} --out {s['run_dir']} --resume")
            return EXIT_INTERRUPTED
        return 0


    def _requested_class(self, args):
        """The method class the command line names (for --resume: the one in the run folder), or None
        when it cannot be told here (the run then says why)."""
        method, backend = args.method, args.backend
        if args.resume and args.out and args.seeds is None:
            from ..infra.records import CONFIG

            try:
                saved = yaml.safe_load((Path(args.out) / CONFIG).read_text())
                method, backend = saved["method"], saved["backend"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):
                return None
            if not (isinstance(method, str) and isinstance(backend, str)):
                return None  # the resume itself names what is wrong with config.yaml
        try:
            spec = self.method(method or next(iter(self.methods)))
            return self.method_class(spec, backend or spec.default_backend)
        except UserError:
            return None

    def _main_group(self, args: Any, overrides: Any) -> int:
        from ..analysis.compare import format_table

        group, summaries, table = run_group(self, args.method, args.backend, args.preset,
                                                  parse_seeds(args.seeds), args.out, args.resume, overrides,
                                                  jobs=args.jobs, progress=not args.quiet)
        for s in summaries:
            if s.get("status") not in ("missing", "unreadable"):
                print(summary_line(s))
        if table is None:
            print(f"interrupted; continue with: python -m {self.module} --seeds {args.seeds} --out {group} --resume")
            return EXIT_INTERRUPTED
        print(format_table(table))
        print(f"group: {group} (plots/compare.png, table.csv)")
        return 0


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "n/a"


def _start_processes(cls, args):
    """Start the run's processes: MPI ranks for a method whose simulator splits the run over them itself
    (``mpi_ranks``, e.g. NEURON's ParallelContext), else jax.distributed when there are several."""
    if cls is not None and getattr(cls, "mpi_ranks", False):
        if distributed.plan(args.coordinator, args.num_processes, args.process_id).detected == "explicit":
            raise UserError("this method splits a run over MPI ranks: start it with mpiexec -n N, srun or "
                            "rsrp-sim launch --mpi N (not --coordinator / rsrp-sim launch --local)")
        if distributed.start_ranks().num_processes > 1 and args.seeds is not None:
            raise UserError("--seeds runs one seed after another in one process; over MPI ranks start one "
                            "mpiexec per seed")
    else:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)


#: seconds a rank other than 0 waits before reporting its error, so that an error every rank hits is said once
RANK_ERROR_DELAY_S = 5.0


def _say_on_ranks(message: str, code: int) -> None:
    """The one error line (for :func:`rsrp_sim.infra.cli.guard`); over several MPI ranks it also stops
    every rank (none may wait in a collective for a rank that left): rank 0 says it and stops the run at
    once, another rank says it (naming itself) after :data:`RANK_ERROR_DELAY_S` unless rank 0 has
    stopped the run by then."""
    comm = distributed.mpi_comm()
    if comm is None:
        print(f"error: {message}", file=sys.stderr)
        return
    if comm.rank != 0:
        time.sleep(RANK_ERROR_DELAY_S)
    print(f"error: {message}" if comm.rank == 0 else f"error: rank {comm.rank} of {comm.size}: {message}",
          file=sys.stderr, flush=True)
    distributed.abort(code)


def _check_processes(cls: Any, method: str, backend: str) -> None:
    if getattr(cls, "mpi_ranks", False):
        return
    if distributed.process_count() > 1 and not cls.multi_process:
        raise UserError(f"{method} on the {backend} back-end runs in one process; start it without rsrp-sim "
                        f"launch / --num-processes (the population methods on jax split over processes)")


def summary_line(s: dict[str, Any]) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4g}"

    solved = ""
    if s.get("solved_threshold") is not None:
        solved = (f", solved (>= {s['solved_threshold']:g}) at iteration {s['solved_at']}" if s.get("solved")
                  else f", not solved (>= {s['solved_threshold']:g})")
    test = f", test {f(s['test_score'])}" if s.get("test_score") is not None else ""
    task = f" {s['task']}" if s.get("task") and s.get("task") != s["protocol"] else ""
    return (f"{s['protocol']}{task} {s['method']}/{s['backend']} seed {s['seed']}: best eval {f(s['best_eval_score'])} "
            f"(iteration {s['best_iteration']}), final eval {f(s['final_eval_score'])}{test}{solved}; "
            f"{s['iterations_done']}/{s['iterations']} iterations in {s['wall_s']:.1f} s -> {s['run_dir']}")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a run's summary and titles say about it."""

    protocol: str
    method: str
    backend: str
    preset: str
    seed: int
    task: str | None
    threshold: float | None
    total: int

    @property
    def title(self) -> str:
        task = f"{self.task}: " if self.task else f"{self.protocol}: "
        return f"{task}{self.method} ({self.backend}, preset {self.preset}, seed {self.seed})"


class StopRun(Exception):
    """Raised by a run hook to end a run early; ``status`` goes into the summary (e.g. ``pruned``)."""

    def __init__(self, status: str = "stopped", message: str = "") -> None:
        super().__init__(message or status)
        self.status = status


def check_seed(seed: Any) -> int:
    """``seed`` as an int in [0, :data:`MAX_SEED`); anything else is a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise UserError(f"--seed must be an integer in [0, {MAX_SEED}), got {seed!r}")
    return seed


_RUN_KEYS = {"protocol": str, "method": str, "backend": str, "preset": str, "seed": int, "config": dict}


def check_run_doc(path: Path, doc: Any, protocol: str, module: str) -> dict[str, Any]:
    """A run folder's ``config.yaml`` checked before resuming: a mapping of this format, of this
    protocol, with every key of the right type."""
    where = Path(path) / CONFIG
    if not isinstance(doc, dict):
        raise UserError(f"{where} is not a run record (a {type(doc).__name__}, expected a mapping); restore it "
                        f"or start a new run")
    if doc.get("format") != RUN_FORMAT:
        raise UserError(f"{path} was written by an older rsrp_sim (run-folder format "
                        f"{doc.get('format', 1)}, where pop_size also counted the eval members); "
                        f"this version cannot resume it: start a new run")
    for key, tp in _RUN_KEYS.items():
        if key not in doc:
            raise UserError(f"{where} lacks the key {key!r}; restore it or start a new run")
        value = doc[key]
        if not isinstance(value, tp) or isinstance(value, bool):
            raise UserError(f"{where}: {key} must be {tp.__name__}, got {value!r}; restore it or start a new run")
    if doc["protocol"] != protocol:
        other = "".join(c for c in doc["protocol"] if c.isalnum() or c in "_-") or "?"
        raise UserError(f"{path} is a run of protocol {doc['protocol']!r}, not {protocol}; resume it with "
                        f"python -m {module.rsplit('.', 1)[0]}.{other} --out {path} --resume")
    try:
        check_seed(doc["seed"])
    except UserError as e:
        raise UserError(f"{where}: {e}; restore it or start a new run") from None
    return doc


def _normal(v):
    return json.loads(json.dumps(v, default=str))


def check_unchanged(rd: RunDir, meta: dict, recorded: dict, it_key: str) -> None:
    """Refuse a ``config.yaml`` edited since the checkpoint was written (other than ``it_key``)."""
    where = rd.path / CONFIG
    for key in ("method", "backend", "seed"):
        if key in meta and meta[key] != recorded[key]:
            raise UserError(f"{where} was edited: {key} is {recorded[key]!r} but the checkpoint was made with "
                            f"{meta[key]!r}; restore it (only {it_key} may change when resuming) or start a new run")
    then, now = meta.get("config"), _normal(recorded["config"])
    if not isinstance(then, dict):
        return  # a checkpoint written before the configuration was recorded in it
    for key in sorted(set(then) & set(now)):
        if key == it_key:
            continue
        a, b = then[key], now[key]
        if key == "model_overrides" and isinstance(a, dict) and isinstance(b, dict):
            changed = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
            if changed:
                k = changed[0]
                raise UserError(f"{where} was edited: model.{k} is {b.get(k, '<unset>')!r} but the checkpoint "
                                f"was made with {a.get(k, '<unset>')!r}; restore it (only {it_key} may change "
                                f"when resuming) or start a new run")
        elif a != b:
            raise UserError(f"{where} was edited: {key} is {b!r} but the checkpoint was made with {a!r}; "
                            f"restore it (only {it_key} may change when resuming) or start a new run")


class _DeferSigint:
    """While active, Ctrl-C does not interrupt (what is being saved stays whole); it says so once.

    :meth:`start` activates it (e.g. inside the handler of the first Ctrl-C); leaving the ``with``
    block restores the previous handler.  Only in the main thread (where signals are handled).
    """

    def __init__(self):
        self._old, self._said = None, False

    def start(self):
        if self._old is None and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame):
        if not self._said:
            self._said = True
            os.write(2, b"still saving the run folder; one moment\n")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        return False


def _saving(failure, fn, *args):
    """``fn(*args)``; a write error becomes the run's failure unless it already has one."""
    try:
        fn(*args)
    except WriteError as e:
        return failure or e
    return failure


def _disk_full(failure: Any) -> bool:
    return isinstance(failure, WriteError) and failure.disk_full


def _failure_text(failure: Any) -> str:
    return failure.reason if isinstance(failure, WriteError) else str(failure)
