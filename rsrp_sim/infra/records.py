"""Run folders: ``config.yaml``, ``metrics.csv``, ``summary.json``, ``checkpoint.npz``, ``plots/``.

Nothing in an existing run folder is overwritten unless the run is resumed; the checkpoint and the
summary are written to a temporary file in the same folder and renamed over the old one, so an
interruption at any moment leaves either the old or the new file, never a torn one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import UserError

#: the columns every metrics.csv starts with (in this order, those a method records)
STANDARD_FIELDS = ("iteration", "env_steps", "examples", "wall_s", "train_score", "eval_score")
CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.npz"


def atomic_write_bytes(path: Path, data: bytes):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def flatten_state(state) -> dict[str, np.ndarray]:
    """A state pytree (dicts, tuples, optax states, arrays, scalars) as named NumPy arrays."""
    import jax

    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def unflatten_state(arrays: dict[str, np.ndarray], template):
    """Inverse of :func:`flatten_state` given a template state of the same structure."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise UserError(f"checkpoint does not match this method's state: missing {name}")
        value = arrays[name]
        if np.shape(value) != np.shape(leaf):
            raise UserError(f"checkpoint does not match this method's state: {name} has shape "
                            f"{np.shape(value)}, expected {np.shape(leaf)}")
        if isinstance(leaf, jax.Array):
            out.append(jnp.asarray(value, dtype=leaf.dtype))
        elif isinstance(leaf, np.ndarray) or isinstance(leaf, np.generic):
            out.append(np.asarray(value, dtype=np.asarray(leaf).dtype).reshape(np.shape(leaf))
                       if isinstance(leaf, np.ndarray) else np.asarray(value, dtype=leaf.dtype)[()])
        else:
            out.append(type(leaf)(value.item()))
    return jax.tree_util.tree_unflatten(treedef, out)


class RunDir:
    """One run's folder."""

    #: whether this object writes (False: a process other than the writer of a multi-process run)
    writes = True

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = Path(path)
        self.config = config
        self._columns: list[str] | None = None

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path, config: dict[str, Any]) -> "RunDir":
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"run folder {path} already exists; pass --resume to continue it "
                            f"or choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        (path / "plots").mkdir(exist_ok=True)
        atomic_write_bytes(path / CONFIG, yaml.safe_dump(config, sort_keys=False).encode())
        return cls(path, config)

    @classmethod
    def open(cls, path) -> "RunDir":
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise UserError(f"{path} is not a run folder (no {CONFIG}); nothing to resume")
        try:
            config = yaml.safe_load((path / CONFIG).read_text())
        except yaml.YAMLError as e:
            raise UserError(f"{path / CONFIG} is not valid YAML: {str(e).splitlines()[0]}") from None
        (path / "plots").mkdir(exist_ok=True)
        return cls(path, config)

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def append_metrics(self, row: dict[str, Any]):
        new = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        if self._columns is None:
            if new:
                std = [k for k in STANDARD_FIELDS if k in row]
                self._columns = std + [k for k in row if k not in std]
            else:
                with open(self.metrics_path, newline="") as f:
                    self._columns = next(csv.reader(f))
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self._columns)
            w.writerow([_fmt(row.get(k, "")) for k in self._columns])
            f.flush()

    def truncate_metrics(self, iterations: int):
        """Drop rows beyond ``iterations`` (written after the last checkpoint of a killed run)."""
        if not self.metrics_path.exists():
            return
        rows = self.read_metrics()
        keep = [r for r in rows if int(r["iteration"]) <= iterations]
        if len(keep) == len(rows):
            return
        with open(self.metrics_path, newline="") as f:
            columns = next(csv.reader(f))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in keep:
            w.writerow([_fmt(r.get(k, "")) for k in columns])
        atomic_write_bytes(self.metrics_path, buf.getvalue().encode())

    # ------------------------------------------------------------------ checkpoint / summary
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def save_checkpoint(self, state, meta: dict[str, Any]):
        arrays = flatten_state(state)
        arrays["__meta__"] = np.asarray(json.dumps(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self, template):
        if not self.checkpoint_path.exists():
            return None, None
        try:
            with np.load(self.checkpoint_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile / format errors
            raise UserError(f"checkpoint {self.checkpoint_path} is unreadable ({type(e).__name__}: {e})") from None
        meta = json.loads(str(arrays.pop("__meta__")))
        return unflatten_state(arrays, template), meta

    def write_summary(self, summary: dict[str, Any]):
        atomic_write_bytes(self.path / SUMMARY, (json.dumps(summary, indent=2, default=_json) + "\n").encode())

    def read_summary(self) -> dict[str, Any]:
        p = self.path / SUMMARY
        return json.loads(p.read_text()) if p.exists() else {}


def _fmt(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return repr(v)
    return v


def _json(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v))


def read_metrics(path) -> list[dict[str, Any]]:
    """``metrics.csv`` as a list of dicts with numbers parsed."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: _num(v) for k, v in r.items()} for r in rows]


def _num(v: str):
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


class NullRunDir(RunDir):
    """The run folder as the processes other than the writer see it: they read its config (a shared
    filesystem on resume), take the checkpoint's values from the writer, and write nothing."""

    writes = False

    @classmethod
    def open(cls, path) -> "NullRunDir":
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise UserError(f"{path} is not a run folder (no {CONFIG}) as seen from this process; the run "
                            f"folder must be on a filesystem every process can read")
        return cls(path, yaml.safe_load((path / CONFIG).read_text()))

    def read_metrics(self):
        return []

    def append_metrics(self, row):
        pass

    def truncate_metrics(self, iterations: int):
        pass

    def save_checkpoint(self, state, meta):
        pass

    def load_checkpoint(self, template):
        return None, None

    def write_summary(self, summary):
        pass
