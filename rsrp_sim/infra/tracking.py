"""Experiment tracking: a run's per-iteration records in TensorBoard or Weights & Biases.

Every method of every protocol has the config key ``logger`` (default ``none``)::

    logger=tensorboard   event files in <run>/tensorboard/: each numeric metrics.csv column as a
                         scalar (step = iteration; empty and NaN cells are left out) and the
                         method's histograms each iteration (RSRP: the release probabilities ``p``,
                         all synapses and each group; ES: the mean weights).
                         View with ``tensorboard --logdir runs/``.
    logger=wandb         a W&B run in <run>/wandb/ with the same scalars, histograms, the config
                         and the final summary.  Offline (nothing leaves the machine, no login)
                         unless W&B is configured: ``WANDB_MODE`` is respected as set; otherwise
                         the run is online only when an API key is present (``WANDB_API_KEY`` or
                         ``wandb login``'s entry in ~/.netrc).  Upload an offline run later with
                         ``wandb sync <run>/wandb/offline-run-*``.  ``WANDB_PROJECT`` names the
                         project (default ``rsrp_sim-<protocol>``).
    logger=none          neither.

A resumed run continues the same records: TensorBoard drops the events past the checkpoint
(``purge_step``), W&B continues the run with the id kept in ``<run>/wandb/run_id``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import netrc
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import compose
from .errors import UserError

LOGGERS = ("none", "tensorboard", "wandb")
#: the packages each logger needs (all in the ``tracking`` extra)
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}
P_BINS = np.linspace(0.0, 1.0, 41)


@dataclasses.dataclass
class TrackingKeys:
    """The config key the protocol layer adds to every method's configuration."""

    logger: Literal["none", "tensorboard", "wandb"] = "none"  # experiment tracker of the run's records

    def validate(self):
        parent = getattr(super(), "validate", None)
        if parent is not None:
            parent()
        need = PACKAGES.get(self.logger)
        if need and importlib.util.find_spec(need) is None:
            raise UserError(f"logger={self.logger} needs the package {need}; install it with "
                            f"pip install -c constraints.txt -e '.[tracking]'")


def with_logger_key(method_cls: type) -> type:
    """``method_cls`` whose ``Config`` also has the :class:`TrackingKeys` (one class per method class)."""
    cfg = method_cls.Config
    if any(f.name == "logger" for f in dataclasses.fields(cfg)):
        return method_cls
    made = method_cls.__dict__.get("_with_logger_key")
    if made is None:
        config = compose(cfg.__name__, TrackingKeys, cfg)
        config.__module__ = cfg.__module__
        made = type(method_cls.__name__, (method_cls,), {"Config": config, "__module__": method_cls.__module__,
                                                         "__qualname__": method_cls.__qualname__})
        method_cls._with_logger_key = made
    return made


# ----------------------------------------------------------------------------- trackers
class Tracker:
    """What the run loop calls: :meth:`log` once per iteration, :meth:`close` at the end."""

    def log(self, record: dict[str, Any], histograms: dict[str, np.ndarray]):
        raise NotImplementedError

    def close(self, summary: dict[str, Any]):
        pass


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numeric fields except ``iteration`` (the step), NaN and empty ones left out."""
    out = {}
    for k, v in record.items():
        if k == "iteration" or v is None or isinstance(v, (bool, str)):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _bins(values: np.ndarray):
    v = np.asarray(values, np.float64)
    if v.size and v.min() >= 0.0 and v.max() <= 1.0:
        return P_BINS  # probabilities: the same bins as the p histogram figure
    return "auto"


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, start: int, resume: bool):
        from tensorboardX import SummaryWriter

        # one event file per (re)start, named by its first iteration (two starts within one second
        # would otherwise get the same file name)
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / "tensorboard"), purge_step=start + 1 if resume else None,
                                    flush_secs=30, filename_suffix=f".from{start + 1}")

    def log(self, record, histograms):
        step = int(record["iteration"])
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, step)
        for name, values in histograms.items():
            values = np.asarray(values, np.float64).ravel()
            if values.size:
                self.writer.add_histogram(name, values, step, bins=_bins(values))
        self.writer.flush()

    def close(self, summary):
        self.writer.close()


def wandb_mode() -> str:
    """``WANDB_MODE`` if set (online only with an API key), else online with an API key, else offline."""
    mode = os.environ.get("WANDB_MODE", "").strip()
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    if mode:
        if mode in ("online", "run") and not _wandb_key():
            raise UserError("WANDB_MODE=online but W&B has no API key here (WANDB_API_KEY or `wandb login`); "
                            "log in, or set WANDB_MODE=offline")
        return mode
    return "online" if _wandb_key() else "offline"


def _wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, doc: dict[str, Any], resume: bool):
        mode = wandb_mode()
        import wandb

        folder = Path(run_dir) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        if resume and id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:8]
            id_file.write_text(run_id + "\n")
        config = {**doc.get("config", {}), **{k: doc.get(k) for k in ("protocol", "method", "backend", "preset",
                                                                       "seed", "task")}}
        settings = wandb.Settings(console="off", silent=True, save_code=False, x_disable_stats=True,
                                  x_save_requirements=False, disable_git=True)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or f"rsrp_sim-{doc.get('protocol', 'run')}",
                                  name=Path(run_dir).name, id=run_id, resume="allow", dir=str(run_dir),
                                  config=config, mode=mode, settings=settings, reinit="create_new")
        except Exception as e:  # wandb's own errors (a bad setting, no service): one line
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"W&B could not start a run (mode {mode}): {first}") from None
        self.wandb = wandb

    def log(self, record, histograms):
        values: dict[str, Any] = dict(scalars(record))
        for name, v in histograms.items():
            v = np.asarray(v, np.float64).ravel()
            if v.size:
                values[name] = self.wandb.Histogram(np_histogram=np.histogram(v, bins=_bins(v)))
        self.run.log(values, step=int(record["iteration"]))

    def close(self, summary):
        keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and v is not None}
        self.run.summary.update(keep)
        self.run.finish()
        # finish() may return before W&B's service has written the whole log; teardown waits for it,
        # so that the run folder is complete when the run ends (e.g. for `wandb sync` right after)
        self.wandb.teardown()


def open_tracker(kind: str, run_dir, doc: dict[str, Any], start: int = 0, resume: bool = False) -> Tracker | None:
    """The tracker for ``logger=kind`` (None for ``none``)."""
    if kind in (None, "none"):
        return None
    if kind == "tensorboard":
        return TensorBoardTracker(Path(run_dir), start, resume)
    if kind == "wandb":
        return WandbTracker(Path(run_dir), doc, resume)
    raise UserError(f"unknown logger {kind!r}; allowed: {', '.join(LOGGERS)}")


# ----------------------------------------------------------------------------- reading back
def read_tensorboard(run_dir) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, Any]]]]:
    """``(scalars, histograms)`` of a run's TensorBoard event files: tag -> [(step, value)] and
    tag -> [(step, HistogramValue)] (TensorBoard's own event reader; the ``tensorboard`` package)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    sc = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    hi = {t: [(e.step, e.histogram_value) for e in acc.Histograms(t)] for t in tags["histograms"]}
    return sc, hi


def read_wandb_offline(run_dir) -> list[dict[str, Any]]:
    """The history rows (one per logged step, ``_step`` included) of a run's offline W&B log(s).

    Reads W&B's transaction log (``<run>/wandb/offline-run-*/run-*.wandb``: a 7-byte header, then
    LevelDB-log framed protobuf records) without any network or login.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        if data[:4] != b":W&B":
            raise UserError(f"{path} is not a W&B transaction log")
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:  # block trailer
                pos += left
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk = data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind == 0 and length == 0:
                continue
            if kind in (1, 2):  # FULL, FIRST
                pending = chunk
            else:  # MIDDLE, LAST
                pending += chunk
            if kind in (1, 4):
                rec = pb.Record()
                rec.ParseFromString(pending)
                if rec.WhichOneof("record_type") == "history":
                    row = {}
                    for item in rec.history.item:
                        key = item.key or "/".join(item.nested_key)
                        row[key] = json.loads(item.value_json)
                    rows.append(row)
    return rows
