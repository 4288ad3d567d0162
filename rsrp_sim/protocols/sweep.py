"""Sweeps on Optuna: many runs of one method over a search space, one run folder per trial.

    rsrp-sim sweep PROTOCOL --method M --space 'lr=loguniform(0.01,0.3)' --space 'pop_size=choice(256,512)'
                   --trials N [--sampler random|tpe|grid] [--storage URL] [--out DIR] [--workers K]
                   [--pruner none|median] [--objective COLUMN:final|best|mean] [--direction maximize|minimize]
                   [--seed trial|S] [--sampler-seed S] [--sweep-preset reference] [--preset cpu|paper]
                   [--backend B] [--study NAME] [key=value ...]

Search space (``--space``, repeatable): ``KEY=uniform(LOW,HIGH)``, ``KEY=loguniform(LOW,HIGH)``,
``KEY=int(LOW,HIGH)`` (both ends included) or ``KEY=choice(A,B,...)``; ``KEY`` is any config key of
the method (``--list-keys``), ``model.X`` for a model constant.  The trailing ``key=value``
overrides apply to every trial.  ``--sweep-preset reference`` is the published CartPole sweep:
``lr`` drawn from {0.01, 0.05, 0.1, 0.15, 0.2} by random search, each trial's seed its number.

The sweep folder (``--out``, default ``runs/<protocol>/sweep_<method>_<backend>``) holds
``sweep.yaml`` (what was asked), ``study.db`` (the Optuna study, SQLite, unless ``--storage``
names another), ``trials/NNNN/`` (one ordinary run folder per trial, with its config.yaml,
metrics.csv, summary.json, plots), and the results: ``trials.csv``, ``best.json``,
``plots/objective.png``, ``plots/params.png``, ``plots/best_curves.png`` and ``index.html``.

Continuing and sharing:

* re-running the same command continues the sweep: finished trials are kept, a trial that was
  interrupted (Ctrl-C, SIGTERM, a killed worker) is run again as a new Optuna trial with the same
  values that resumes the same run folder from its checkpoint, and ``--trials N`` is the total, so a
  larger N adds trials;
* ``--workers K`` runs K worker processes on this machine on the same study;
* several machines share one sweep through one storage URL: ``postgresql://USER:PASS@HOST/DB``,
  ``mysql+pymysql://USER:PASS@HOST/DB``, or ``journal:PATH`` (Optuna's journal file, on a disk every
  machine mounts); each machine runs the same command (same ``--study`` name, default the sweep
  folder's name) and writes its trials' run folders into its own sweep folder.  A worker that dies
  without a word is noticed by the database's heartbeat (30 s, after 120 s of silence) or, on
  the same machine, by its process id, and its trial is run again.

Objective: ``--objective COLUMN:REDUCER`` over the trial's metrics.csv, the reducer ``final`` (the
last value), ``best`` or ``mean`` over the iterations that have a value (default
``eval_score:final``); the direction is the protocol's (scores: maximize).  ``--pruner median``
stops a trial whose objective so far is worse than the median of the earlier trials at the same
iteration (Optuna's MedianPruner, after 3 finished trials and from the second iteration on).
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..infra import assets
from ..infra import config as configlib
from ..infra.errors import UserError, unknown
from ..infra.records import atomic_write_bytes, json_bytes, read_metrics

SPACE_FORMS = "KEY=uniform(LOW,HIGH), KEY=loguniform(LOW,HIGH), KEY=int(LOW,HIGH), KEY=choice(A,B,...)"
SAMPLERS = ("random", "tpe", "grid")
REDUCERS = ("final", "best", "mean")
PRUNERS = ("none", "median")
DEFINITION = "sweep.yaml"
TABLE = "trials.csv"
STUDY_DB = "study.db"
HEARTBEAT_S, GRACE_S = 30, 120
#: the keys of sweep.yaml that must match when a sweep is continued
SAME = ("protocol", "method", "backend", "preset", "space", "sampler", "sampler_seed", "seed", "objective",
        "direction", "pruner", "overrides")
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------- the search space
@dataclasses.dataclass(frozen=True)
class Dist:
    """One swept key's distribution: ``kind`` in uniform, loguniform, int, choice."""

    kind: str
    args: tuple

    def suggest(self, trial, name: str):
        if self.kind == "uniform":
            return trial.suggest_float(name, self.args[0], self.args[1])
        if self.kind == "loguniform":
            return trial.suggest_float(name, self.args[0], self.args[1], log=True)
        if self.kind == "int":
            return trial.suggest_int(name, self.args[0], self.args[1])
        return trial.suggest_categorical(name, list(self.args))

    def grid(self, name: str) -> list:
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int":
            return list(range(self.args[0], self.args[1] + 1))
        raise UserError(f"--sampler grid needs choice(...) or int(...) for every key; {name} is {self.text()}")

    def first(self):
        """A value inside the distribution (for checking the key before the sweep starts)."""
        return self.args[0]

    def text(self) -> str:
        return f"{self.kind}({', '.join(_show(a) for a in self.args)})"


def _show(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


_DIST = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


def parse_dist(item: str) -> tuple[str, Dist]:
    """``"lr=loguniform(0.01,0.3)"`` -> ``("lr", Dist("loguniform", (0.01, 0.3)))``; one-line errors."""
    def bad(why: str):
        return UserError(f"malformed --space {item!r} ({why}); allowed forms: {SPACE_FORMS}")

    m = _DIST.match(item)
    if not m:
        raise bad("not KEY=DISTRIBUTION(ARGS)")
    key, kind, body = m.group(1), m.group(2), m.group(3)
    if kind not in ("uniform", "loguniform", "int", "choice"):
        raise bad(f"unknown distribution {kind!r}")
    try:
        args = yaml.safe_load(f"[{body}]")
    except yaml.YAMLError:
        raise bad("its arguments are not a comma-separated list of values") from None
    if not isinstance(args, list) or any(isinstance(a, (list, dict)) for a in args):
        raise bad("its arguments are not a comma-separated list of values")
    if kind == "choice":
        if not args:
            raise bad("choice needs at least one value")
        if len(set(map(repr, args))) != len(args):
            raise bad("choice has a value twice")
        return key, Dist(kind, tuple(args))
    if len(args) != 2:
        raise bad(f"{kind} needs two arguments, LOW and HIGH")
    lo, hi = args
    if kind == "int":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise bad("int needs integer LOW and HIGH")
    elif not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise bad(f"{kind} needs numbers LOW and HIGH")
    if not lo < hi:
        raise bad("LOW must be below HIGH")
    if kind == "loguniform" and lo <= 0:
        raise bad("loguniform needs LOW > 0")
    if kind != "int":
        lo, hi = float(lo), float(hi)
    return key, Dist(kind, (lo, hi))


def parse_space(items) -> dict[str, Dist]:
    space: dict[str, Dist] = {}
    for item in items:
        key, dist = parse_dist(item)
        space[key] = dist
    return space


def space_texts(space: dict[str, Dist]) -> dict[str, str]:
    return {k: d.text() for k, d in space.items()}


def parse_objective(text: str) -> dict[str, str]:
    column, _, reducer = text.partition(":")
    reducer = reducer or "final"
    if not column.strip():
        raise UserError(f"--objective {text!r} needs a metrics column, e.g. eval_score:final")
    if reducer not in REDUCERS:
        raise unknown("objective reducer", reducer, REDUCERS)
    return {"column": column.strip(), "reducer": reducer}


def reduce_values(values, reducer: str, direction: str) -> float | None:
    """The objective from a column's values (None and NaN left out); None when there are none."""
    v = [float(x) for x in values if x is not None and isinstance(x, (int, float)) and math.isfinite(float(x))]
    if not v:
        return None
    if reducer == "final":
        return v[-1]
    if reducer == "best":
        return max(v) if direction == "maximize" else min(v)
    return float(np.mean(v))


def sweep_presets() -> dict[str, Any]:
    return yaml.safe_load(assets.read_text("protocols", "sweeps.yaml"))["presets"]


# ----------------------------------------------------------------------------- storage
def mask_url(url: str) -> str:
    """The storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str):
    """The Optuna storage named by ``url``: an RDB URL (SQLite, PostgreSQL, MySQL, with a heartbeat)
    or ``journal:PATH`` (Optuna's journal file); one line if it cannot be opened."""
    import optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len("journal:"):].removeprefix("//"))
            if not path.parent.is_dir():
                raise FileNotFoundError(f"no folder {path.parent}")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 120}
        elif url.startswith(("postgresql", "mysql")):
            kwargs["connect_args"] = {"connect_timeout": 10}
        import warnings

        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, ImportError) or "Can't load plugin" in reason:
            reason += (" (the database driver is missing: pip install 'psycopg[binary]' for postgresql://, "
                       "PyMySQL for mysql+pymysql://)")
        raise UserError(f"cannot reach the sweep storage {mask_url(url)}: {reason}") from None


# ----------------------------------------------------------------------------- samplers
def _trial_seeded_random(seed: int):
    """Random search whose draws for trial k depend only on (seed, k, key): the same values
    whatever the number of workers or the order they ask in."""
    import optuna

    class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):
            ss = np.random.SeedSequence([int(seed), int(trial.number), zlib.crc32(param_name.encode())])
            self._rng = _Rng(np.random.RandomState(int(ss.generate_state(1)[0])))
            return super().sample_independent(study, trial, param_name, param_distribution)

    return TrialSeededRandomSampler(seed)


class _Rng:
    def __init__(self, rng):
        self.rng = rng


def make_sampler(name: str, seed: int, space: dict[str, Dist], worker: int = 0):
    import optuna

    if name == "random":
        return _trial_seeded_random(seed)
    if name == "tpe":
        ss = np.random.SeedSequence([int(seed), int(worker)])
        return optuna.samplers.TPESampler(seed=int(ss.generate_state(1)[0]), constant_liar=True)
    if name == "grid":
        return optuna.samplers.GridSampler({k: d.grid(k) for k, d in space.items()}, seed=int(seed))
    raise unknown("sampler", name, SAMPLERS)


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def grid_size(space: dict[str, Dist]) -> int:
    n = 1
    for k, d in space.items():
        n *= len(d.grid(k))
    return n


# ----------------------------------------------------------------------------- a lock for this machine's workers
class _Lock:
    """An exclusive lock on a file in the sweep folder (this machine's workers take turns to
    claim trials); ``release`` may be called more than once."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None

    def acquire(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrialFailed(Exception):
    """A trial that failed for a reason of its own (kept as failed, not run again)."""


class _Skip(Exception):
    """A trial created past the target or twice for one run: closed at once, never run."""


# ----------------------------------------------------------------------------- the sweep
class Sweep:
    """One sweep: its definition (``sweep.yaml``), folder, Optuna storage and study."""

    def __init__(self, protocol, definition: dict[str, Any], folder: Path, storage_url: str, trials: int):
        self.protocol = protocol
        self.d = definition
        self.folder = Path(folder)
        self.storage_url = storage_url
        self.n_trials = int(trials)
        self.space = {k: parse_dist(f"{k}={v}")[1] for k, v in definition["space"].items()}
        if definition["sampler"] == "grid":
            self.n_trials = min(self.n_trials, grid_size(self.space))
        self.host = socket.gethostname()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_args(cls, args) -> Sweep:
        from . import get

        protocol = get(args.protocol)
        preset = {}
        if args.sweep_preset:
            presets = sweep_presets()
            if args.sweep_preset not in presets:
                raise unknown("sweep preset", args.sweep_preset, presets)
            preset = presets[args.sweep_preset]
        space = {k: parse_dist(f"{k}={v}")[1] for k, v in (preset.get("space") or {}).items()}
        space.update(parse_space(args.space or []))
        if not space:
            raise UserError(f"nothing to sweep: give --space KEY=DISTRIBUTION (allowed forms: {SPACE_FORMS}) "
                            f"or --sweep-preset reference")
        spec = protocol.method(args.method or next(iter(protocol.methods)))
        backend = args.backend or spec.default_backend
        overrides = configlib.parse_overrides(args.overrides or [])
        swept = set(space)
        fixed = set(overrides) | {f"model.{k}" for k in overrides.get("model_overrides", {})}
        both = sorted(swept & fixed)
        if both:
            raise UserError(f"{both[0]} is both swept (--space) and fixed (key=value); give it once")
        if "seed" in space:
            raise UserError("the seed is not a config key: use --seed trial (each trial its number) or --seed S")
        fields = configlib.field_types(protocol.method_class(spec, backend).Config)
        for k in space:
            base = "model_overrides" if k.startswith(configlib.MODEL_PREFIX) else k
            if base not in fields:
                e = unknown("key in --space", k, [f for f in fields if f != "model_overrides"] + ["model.<constant>"])
                raise UserError(f"{e}; allowed forms: {SPACE_FORMS}")
        # each value a key can take (the choices, both ends of a range), the other keys at their first
        # value, with the fixed overrides, must give a valid config before anything is written
        first = {k: d.first() for k, d in space.items()}
        for k, d in space.items():
            for v in (d.args if d.kind == "choice" else d.args[:2]):
                point = configlib.parse_overrides([f"{q}={_show(v if q == k else first[q])}" for q in space])
                protocol.build_config(spec.name, backend, args.preset, _merge(overrides, point))
        seed = args.seed if args.seed is not None else str(preset.get("seed", "trial"))
        if seed != "trial":
            try:
                seed = int(seed)
            except ValueError:
                raise UserError(f"--seed must be 'trial' (each trial's seed its number) or an integer, "
                                f"got {seed!r}") from None
        sampler = args.sampler or preset.get("sampler", "tpe")
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        if args.pruner not in PRUNERS:
            raise unknown("pruner", args.pruner, PRUNERS)
        objective = parse_objective(args.objective or preset.get("objective", "eval_score:final"))
        direction = args.direction or protocol.direction
        if direction not in ("maximize", "minimize"):
            raise unknown("direction", direction, ("maximize", "minimize"))
        if args.trials < 1:
            raise UserError(f"--trials must be at least 1, got {args.trials}")
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        folder = Path(args.out) if args.out else Path("runs") / protocol.name / f"sweep_{spec.name}_{backend}"
        definition = {"protocol": protocol.name, "method": spec.name, "backend": backend, "preset": args.preset,
                      "space": space_texts(space), "sampler": sampler, "sampler_seed": int(args.sampler_seed),
                      "seed": seed, "objective": objective, "direction": direction, "pruner": args.pruner,
                      "overrides": overrides, "study": args.study or folder.resolve().name,
                      "storage": mask_url(args.storage) if args.storage else STUDY_DB}
        if sampler == "grid":
            grid_size(space)  # every key must be gridded
        return cls(protocol, definition, folder, args.storage or "", args.trials)

    @property
    def url(self) -> str:
        return self.storage_url or f"sqlite:///{(self.folder / STUDY_DB).resolve()}"

    def prepare(self):
        """Create or check the sweep folder and the study (one-line errors; nothing overwritten)."""
        if self.storage_url:  # a storage elsewhere: reach it before anything is written here
            open_storage(self.url)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / DEFINITION
        if path.is_file():
            old = yaml.safe_load(path.read_text()) or {}
            for key in SAME:
                if old.get(key) != self.d.get(key):
                    raise UserError(f"{self.folder} holds a different sweep ({key}: {old.get(key)!r} there, "
                                    f"{self.d.get(key)!r} now); continue it with its own options or "
                                    f"choose another --out")
            self.d["study"] = old.get("study", self.d["study"])
        elif any(p.name not in (".claim.lock",) for p in self.folder.iterdir()):
            raise UserError(f"{self.folder} exists and is not a sweep folder (no {DEFINITION}); choose another --out")
        study = self.study(create=True)
        saved = study.user_attrs.get("definition")
        mine = {k: self.d[k] for k in SAME}
        if saved is None:
            study.set_user_attr("definition", json.loads(json.dumps(mine)))
        else:
            for key in SAME:
                if saved.get(key) != json.loads(json.dumps(mine))[key]:
                    raise UserError(f"study {self.d['study']!r} in {mask_url(self.url)} belongs to a different sweep "
                                    f"({key}: {saved.get(key)!r} there, {mine[key]!r} here); use another --study")
        self.d["trials"] = self.n_trials
        atomic_write_bytes(path, yaml.safe_dump(self.d, sort_keys=False).encode())
        (self.folder / "trials").mkdir(exist_ok=True)

    def study(self, create: bool = False, worker: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = open_storage(self.url)
        sampler = make_sampler(self.d["sampler"], self.d["sampler_seed"], self.space, worker)
        kwargs = dict(study_name=self.d["study"], storage=storage, sampler=sampler,
                      pruner=make_pruner(self.d["pruner"]))
        try:
            if create:
                return optuna.create_study(direction=self.d["direction"], load_if_exists=True, **kwargs)
            return optuna.load_study(**kwargs)
        except ValueError as e:  # e.g. an existing study with the other direction
            raise UserError(f"study {self.d['study']!r}: {e}") from None

    # ------------------------------------------------------------------ bookkeeping over the study's trials
    def runs(self, study) -> dict[str, list]:
        """Run key -> its Optuna trials (attempts), oldest first; skipped trials left out."""
        out: dict[str, list] = {}
        for t in study.get_trials(deepcopy=False):
            key = t.user_attrs.get("run")
            if key is None or t.user_attrs.get("skipped"):
                continue
            out.setdefault(key, []).append(t)
        return out

    @staticmethod
    def _needs_retry(t) -> bool:
        from optuna.trial import TrialState

        return t.state == TrialState.FAIL and not t.user_attrs.get("error")

    def _fail_stale(self, study):
        """Close this machine's trials whose worker process is gone (and, with a database, those
        whose heartbeat stopped), so that they are run again."""
        import warnings

        import optuna
        from optuna.trial import TrialState

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                optuna.storages.fail_stale_trials(study)
            except ValueError:  # a storage without heartbeats (the journal file)
                pass
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            a = t.user_attrs
            if (a.get("host") == self.host and a.get("pid") and int(a["pid"]) != os.getpid()
                    and not _alive(int(a["pid"]))):
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

    def _requeue(self, study, runs):
        """A new waiting trial with the same values for each run whose last attempt was interrupted."""
        from optuna.trial import TrialState

        for key, attempts in runs.items():
            last = attempts[-1]
            if self._needs_retry(last) and not any(a.state in (TrialState.COMPLETE, TrialState.PRUNED)
                                                   for a in attempts):
                study.enqueue_trial(dict(last.params), user_attrs={"run": key, "retry": True})

    def _remaining(self, study) -> int:
        """Trials still to start: the target minus the runs claimed, plus waiting ones."""
        from optuna.trial import TrialState

        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        return max(0, self.n_trials - len(self.runs(study))) + waiting

    # ------------------------------------------------------------------ the worker
    def work(self, worker: int = 0, progress=None) -> str:
        """Run trials until the target is reached; returns ``completed`` or ``interrupted``."""
        study = self.study(worker=worker)
        lock = _Lock(self.folder / ".claim.lock")
        while True:
            lock.acquire()
            try:
                self._fail_stale(study)
                self._requeue(study, self.runs(study))
                if self._remaining(study) == 0:
                    return "completed"
                study.optimize(lambda trial: self._objective(trial, lock, study), n_trials=1,
                               catch=(TrialFailed, _Skip), gc_after_trial=False)
            except KeyboardInterrupt:
                return "interrupted"
            finally:
                lock.release()
            if progress is not None:
                progress()

    def _claim(self, trial, study) -> tuple[str, dict[str, Any]]:
        """Name the trial's run and draw its values (under this machine's lock)."""
        from optuna.trial import TrialState

        attrs = trial.user_attrs
        runs = self.runs(study)
        if attrs.get("retry"):
            key = attrs["run"]
            others = [t for t in runs.get(key, []) if t.number != trial.number]
            if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in others):
                trial.set_user_attr("skipped", "the run already has an attempt")
                raise _Skip
        else:
            if len([k for k in runs if k != attrs.get("run")]) >= self.n_trials:
                trial.set_user_attr("skipped", "the sweep had its trials already")
                raise _Skip
            key = f"{trial.number:04d}"
            trial.set_user_attr("run", key)
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", os.getpid())
        params = {k: d.suggest(trial, k) for k, d in self.space.items()}
        return key, params

    def _objective(self, trial, lock: _Lock, study):
        from ..infra.errors import UserError as _UE
        from .base import RunFailed

        try:
            key, params = self._claim(trial, study)
        finally:
            lock.release()  # the trial is claimed: other workers may claim theirs
        seed = int(key) if self.d["seed"] == "trial" else int(self.d["seed"])
        trial.set_user_attr("seed", seed)
        folder = self.folder / "trials" / key
        trial.set_user_attr("run_dir", str(folder.relative_to(self.folder)))
        obj = self.d["objective"]
        hook = _Reporter(trial, obj["column"], obj["reducer"], self.d["direction"], self.d["pruner"] != "none")
        resume = (folder / "config.yaml").is_file()
        try:
            if resume:
                hook.replay(read_metrics(folder / "metrics.csv"))
                _, summary = self.protocol.run(out=folder, resume=True, progress=False, hooks=[hook])
            else:
                overrides = _merge(self.d["overrides"], configlib.parse_overrides(
                    [f"{k}={_show(v)}" for k, v in params.items()]))
                _, summary = self.protocol.run(self.d["method"], self.d["backend"], self.d["preset"], seed, folder,
                                               False, overrides, progress=False, hooks=[hook])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except (RunFailed, _UE) as e:
            trial.set_user_attr("error", str(e))
            print(f"trial {key}: failed: {e}", file=sys.stderr)
            raise TrialFailed(str(e)) from None
        except Exception as e:  # a fault inside a back-end: the trial fails, the sweep goes on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            trial.set_user_attr("error", msg)
            print(f"trial {key}: failed: {msg}", file=sys.stderr)
            raise TrialFailed(msg) from None
        status = summary.get("status")
        trial.set_user_attr("status", status)
        if status == "interrupted":
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt
        if status == "pruned":
            import optuna

            raise optuna.TrialPruned(f"pruned at iteration {summary.get('iterations_done')}")
        rows = read_metrics(folder / "metrics.csv")
        value = reduce_values([r.get(obj["column"]) for r in rows], obj["reducer"], self.d["direction"])
        if value is None:
            cols = ", ".join(rows[0]) if rows else "none"
            msg = f"metrics.csv has no value of {obj['column']!r} (columns: {cols})"
            trial.set_user_attr("error", msg)
            raise TrialFailed(msg)
        return value

    # ------------------------------------------------------------------ running and results
    def run(self, workers: int = 1, progress: bool = True) -> tuple[str, dict[str, Any]]:
        """Run the sweep to its target with ``workers`` processes; write the results."""
        from tqdm.auto import tqdm

        self.prepare()
        study = self.study()
        def done():
            return len(self._finished(study))

        bar = tqdm(total=self.n_trials, initial=min(done(), self.n_trials), unit="trial", disable=not progress,
                   desc=f"sweep {self.d['protocol']} {self.d['method']}", dynamic_ncols=True, file=sys.stderr)

        def tick():
            bar.n = min(done(), self.n_trials)
            best = self._best(study)
            if best is not None:
                bar.set_postfix(best=f"{best.value:.4g}")
            bar.refresh()

        try:
            if workers == 1:
                status = self.work(progress=tick)
            else:
                status = self._spawn(workers, tick)
        finally:
            bar.close()
        return status, self.write_results(study)

    def _spawn(self, workers: int, tick) -> str:
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(os.environ, RSRP_SIM_SWEEP_STORAGE=self.url, TQDM_DISABLE="1")
        procs = []
        for i in range(workers):
            with open(logs / f"worker-{i}.log", "ab") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", __name__, "--worker", str(i), str(self.folder)],
                                              stdout=log, stderr=log, env=env))
        interrupted = False
        try:
            while any(p.poll() is None for p in procs):
                time.sleep(1.0)
                tick()
        except KeyboardInterrupt:  # a Ctrl-C reaches the workers too; a signal to this process alone is passed on
            interrupted = True
            deadline = time.time() + 3.0
            while time.time() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.1)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                p.wait()
        tick()
        codes = [p.returncode for p in procs]
        if interrupted or any(c == EXIT_INTERRUPTED for c in codes):
            return "interrupted"
        bad = [(i, c) for i, c in enumerate(codes) if c not in (0, EXIT_INTERRUPTED)]
        if bad:
            i, c = bad[0]
            lines = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()
            raise UserError(f"sweep worker {i} stopped with exit status {c}: {lines[-1] if lines else 'no output'} "
                            f"(log {logs / f'worker-{i}.log'})")
        return "completed"

    def _finished(self, study):
        from optuna.trial import TrialState

        fin = (TrialState.COMPLETE, TrialState.PRUNED)
        return [k for k, ts in self.runs(study).items()
                if any(t.state in fin or (t.state == TrialState.FAIL and t.user_attrs.get("error")) for t in ts)]

    def _best(self, study):
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done:
            return None
        return (max if self.d["direction"] == "maximize" else min)(done, key=lambda t: t.value)

    def table(self, study) -> list[dict[str, Any]]:
        """One row per run (its last attempt's state and value), in run order."""
        from optuna.trial import TrialState

        rows = []
        for key, attempts in sorted(self.runs(study).items()):
            final = next((t for t in attempts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)), attempts[-1])
            folder = self.folder / "trials" / key
            summ = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
            value = final.value if final.state == TrialState.COMPLETE else None
            if final.state == TrialState.PRUNED and final.intermediate_values:
                value = final.intermediate_values[max(final.intermediate_values)]
            state = final.state.name
            if state == "FAIL" and not final.user_attrs.get("error"):
                state = "INTERRUPTED"
            row = {"trial": int(key), "state": state, "value": value}
            for k in self.space:
                row[k] = final.params.get(k, attempts[0].params.get(k))
            row.update({"seed": final.user_attrs.get("seed"), "attempts": " ".join(str(t.number) for t in attempts),
                        "iterations_done": summ.get("iterations_done"), "wall_s": summ.get("wall_s"),
                        "run_dir": final.user_attrs.get("run_dir", f"trials/{key}"),
                        "error": final.user_attrs.get("error", "")})
            rows.append(row)
        return rows

    def write_results(self, study) -> dict[str, Any]:
        import csv
        import io

        from ..analysis import sweep as sweep_report

        rows = self.table(study)
        cols = ["trial", "state", "value", *self.space, "seed", "attempts", "iterations_done", "wall_s", "run_dir",
                "error"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                        for k in cols})
        atomic_write_bytes(self.folder / TABLE, buf.getvalue().encode())
        rep = sweep_report.write_report(self.folder)
        best = rep["best"]
        counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED",
                                                                          "RUNNING", "WAITING")}
        result = {"trials": len(rows), "target": self.n_trials, "states": counts, "objective": self.d["objective"],
                  "direction": self.d["direction"], "folder": str(self.folder),
                  "best": None if best is None else {"trial": best["trial"], "value": best["value"],
                                                     "params": best["params"], "seed": best.get("seed"),
                                                     "run_dir": best.get("run_dir")}}
        atomic_write_bytes(self.folder / "best.json", json_bytes(result))  # strict JSON: a NaN value is null
        return result


def _merge(fixed: dict[str, Any], swept: dict[str, Any]) -> dict[str, Any]:
    out = {**fixed, **swept}
    model = {**fixed.get("model_overrides", {}), **swept.get("model_overrides", {})}
    if model:
        out["model_overrides"] = model
    return out


class _Reporter:
    """Run hook of a trial: reports the objective so far each iteration (Optuna's intermediate
    values: the learning curve); with a pruner, ends an unpromising run (status ``pruned``)."""

    def __init__(self, trial, column: str, reducer: str, direction: str, prune: bool):
        self.trial, self.column, self.reducer, self.direction, self.prune = trial, column, reducer, direction, prune
        self.values: dict[int, Any] = {}

    def replay(self, rows):
        for r in rows:
            self._report(r)

    def _report(self, record) -> bool:
        it = int(record["iteration"])
        self.values[it] = record.get(self.column)
        now = reduce_values([self.values[i] for i in sorted(self.values) if i <= it], self.reducer, self.direction)
        if now is None:
            return False
        self.trial.report(now, it)
        return True

    def iteration(self, record):
        from .base import StopRun

        if self._report(record) and self.prune and self.trial.should_prune():
            raise StopRun("pruned", f"pruned at iteration {record['iteration']}")


# ----------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    from .base import _Parser

    p = _Parser(prog="rsrp-sim sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocol", help="cartpole, humanoid, mnist, digits, cifar10")
    p.add_argument("--method", default=None, help="the protocol's method (default: its first)")
    p.add_argument("--backend", default=None, help="simulation back-end (default: the method's first)")
    p.add_argument("--preset", default="cpu", help="the protocol's preset every trial starts from (cpu, paper)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=DIST", help=f"a swept key: {SPACE_FORMS}")
    p.add_argument("--trials", type=int, default=10,
                   help="trials in total (re-running with a larger number adds trials)")
    p.add_argument("--sampler", default=None, help="random, tpe (default) or grid")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the sampler's draws")
    p.add_argument("--seed", default=None, help="each trial's run seed: 'trial' (its number, default) or an integer")
    p.add_argument("--sweep-preset", default=None, help="a sweep preset of protocols/sweeps.yaml, e.g. reference")
    p.add_argument("--objective", default=None, help="COLUMN:REDUCER over metrics.csv, reducer final (default), "
                                                     "best or mean; default eval_score:final")
    p.add_argument("--direction", default=None, help="maximize (the protocols' scores) or minimize")
    p.add_argument("--pruner", default="none", help="none (default) or median (stop trials below the median curve)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by workers and machines "
                        "(default: sqlite in the sweep folder); journal:PATH for a journal file")
    p.add_argument("--study", default=None, help="study name in the storage (default: the sweep folder's name)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--out", default=None, help="sweep folder (default runs/<protocol>/sweep_<method>_<backend>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    return p


def summary_line(d: dict[str, Any], result: dict[str, Any]) -> str:
    st = result["states"]
    parts = [f"{st['COMPLETE']} complete"] + [f"{st[s]} {s.lower()}" for s in ("PRUNED", "FAIL", "INTERRUPTED")
                                             if st.get(s)]
    obj = f"{d['objective']['column']} ({d['objective']['reducer']})"
    best = result["best"]
    if best is None:
        b = "no completed trial yet"
    else:
        vals = ", ".join(f"{k}={_show(v)}" for k, v in best["params"].items())
        b = f"best trial {best['trial']}: {obj} {best['value']:.4g} with {vals} (seed {best['seed']})"
    return (f"sweep {d['protocol']} {d['method']}/{d['backend']}: {result['trials']}/{result['target']} trials "
            f"({', '.join(parts)}); {b} -> {result['folder']} (trials.csv, index.html)")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1:])
    try:
        args = parser().parse_intermixed_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        sweep = Sweep.from_args(args)
        status, result = sweep.run(args.workers, progress=not args.quiet)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(sweep.d, result))
    if status == "interrupted":
        print("interrupted; continue with the same command")
        return EXIT_INTERRUPTED
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(argv) -> int:
    """A worker process of ``--workers K``: ``--worker I FOLDER`` (storage URL from the environment)."""
    index, folder = int(argv[0]), Path(argv[1])
    signal.signal(signal.SIGTERM, _interrupt)  # e.g. a batch system's pre-emption: like Ctrl-C
    try:
        from . import get

        d = yaml.safe_load((folder / DEFINITION).read_text())
        sweep = Sweep(get(d["protocol"]), d, folder, os.environ.get("RSRP_SIM_SWEEP_STORAGE", ""), d["trials"])
        status = sweep.work(worker=index)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return EXIT_INTERRUPTED if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
