"""Run folders: ``config.yaml``, ``metrics.csv``, ``summary.json``, ``checkpoint.npz``, ``plots/``.

* Nothing in an existing run folder is overwritten unless the run is resumed.
* One writer at a time: a run folder is locked (``.lock``, an OS lock held while the process writes;
  the file keeps the pid of the last writer).  A second writer gets one line naming the holder's pid.
* The checkpoint, the summary and ``config.yaml`` are written to a temporary file in the same folder
  and renamed over the old one, so an interruption at any moment leaves either the old or the new
  file, never a torn one; temporary files left by a killed process are removed when the folder is
  next opened.  Every file gets the same mode (0666 less the umask).
* ``metrics.csv`` is appended one whole row per write.  A torn last row (a process killed while
  writing it) is recognised by its missing line end and dropped on resume, with the rows after the
  checkpoint's iteration; any other damage is one line naming the file and the line.
* Every JSON file is strict JSON: a missing or non-finite number is ``null``.
* Any ``OSError`` while writing becomes a :class:`~rsrp_sim.infra.errors.WriteError` (one line:
  the disk is full, the folder is not writable, ...).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import DISK_FULL, FolderBusy, UserError, WriteError

__all__ = ["STANDARD_FIELDS", "CONFIG", "METRICS", "SUMMARY", "CHECKPOINT", "LOCK", "PLOTS", "NOT_WRITABLE", "FULL",
           "file_mode", "writing", "atomic_write_bytes", "clean_temp_files", "jsonable", "json_bytes", "FolderLock",
           "flatten_state", "unflatten_state", "check_meta", "MetricsError", "parse_metrics", "read_metrics", "RunDir",
           "read_summary", "NullRunDir", "safe_name", "inside"]

#: the columns every metrics.csv starts with (in this order, those a method records)
STANDARD_FIELDS = ("iteration", "env_steps", "examples", "wall_s", "train_score", "eval_score")
CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.npz"
LOCK = ".lock"
PLOTS = "plots"
#: what to do when a run folder cannot be written
NOT_WRITABLE = "the folder is not writable: choose another --out"
#: ... and when that was for want of space
FULL = "free space or choose another --out"
#: the temporary files atomic_write_bytes makes for the records (.<name>.<8 random characters>.tmp)
_TEMP = re.compile(r"^\.(config\.yaml|metrics\.csv|summary\.json|checkpoint\.npz|table\.csv|group\.yaml"
                   r"|ablation\.yaml|[^/]+\.png)\.[A-Za-z0-9_]{8}\.tmp$")


# ----------------------------------------------------------------------------- writing files
def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode every file of a run folder gets: 0666 less the umask (as ``open()`` would give)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def writing(path: Any, hint: str = "") -> Iterator[Any]:
    """Turn an ``OSError`` raised inside into a one-line :class:`WriteError` about ``path``."""
    try:
        yield
    except OSError as e:
        raise WriteError(path, e, FULL if hint == NOT_WRITABLE and e.errno in DISK_FULL else hint) from e


def atomic_write_bytes(path: Path, data: bytes, hint: str = "") -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it (never a torn file)."""
    path = Path(path)
    with writing(path, hint):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_write_bytes` left in ``folder`` (a killed process)."""
    removed = []
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if _TEMP.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def read_yaml(path: Path) -> Any:
    """A YAML record file's content; a damaged or unreadable file is a one-line :class:`UserError`."""
    try:
        return yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror})") from None


def jsonable(v: Any) -> Any:
    """``v`` with NumPy scalars as Python numbers, paths as strings and non-finite floats as None."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def json_bytes(doc: Any) -> bytes:
    """Strict JSON (``null`` for NaN and infinities), indented, with a final newline."""
    return (json.dumps(jsonable(doc), indent=2, allow_nan=False, default=str) + "\n").encode()


# ----------------------------------------------------------------------------- one writer per folder
class FolderLock:
    """An exclusive OS lock (``flock``) on ``folder/.lock``, held until :meth:`release` (or exit).

    The file holds the pid of the process that holds (or last held) the lock; it stays in the folder,
    so that no two processes can ever lock two different files of one folder.
    """

    def __init__(self, folder: Any, what: str = "run folder", hint: str = NOT_WRITABLE) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        with writing(self.path, hint):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusy(f"{what} {self.folder} is in use by another process (pid {holder}); wait for "
                                 f"it to finish (or stop it), then try again") from None
            raise WriteError(self.path, e, "cannot lock it") from e
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            raise WriteError(self.path, e, hint) from e
        self._fd: int | None = fd

    @staticmethod
    def _holder(fd: Any) -> str:
        try:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text if text.isdigit() else "unknown"

    def release(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


# ----------------------------------------------------------------------------- checkpoints
def flatten_state(state: Any) -> dict[str, np.ndarray]:
    """A state pytree (dicts, tuples, optax states, arrays, scalars) as named NumPy arrays."""
    import jax

    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def unflatten_state(arrays: dict[str, np.ndarray], template: Any) -> Any:
    """Inverse of :func:`flatten_state` given a template state of the same structure."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out: list[Any] = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise UserError(f"checkpoint does not match this method's state: missing {name}")
        value = arrays[name]
        if np.shape(value) != np.shape(leaf):
            raise UserError(f"checkpoint does not match this method's state: {name} has shape "
                            f"{np.shape(value)}, expected {np.shape(leaf)}")
        try:
            if isinstance(leaf, jax.Array):
                out.append(jnp.asarray(value, dtype=leaf.dtype))
            elif isinstance(leaf, np.ndarray) or isinstance(leaf, np.generic):
                out.append(np.asarray(value, dtype=np.asarray(leaf).dtype).reshape(np.shape(leaf))
                           if isinstance(leaf, np.ndarray) else np.asarray(value, dtype=leaf.dtype)[()])
            else:
                out.append(type(leaf)(value.item()))
        except (TypeError, ValueError) as e:
            raise UserError(f"checkpoint does not match this method's state: {name} holds {value.dtype} "
                            f"values ({e})") from None
    return jax.tree_util.tree_unflatten(treedef, out)


def check_meta(meta: Any, path: Any) -> dict[str, Any]:
    """A checkpoint's metadata: a mapping with ``iteration`` (int >= 0) and ``wall_s`` (finite, >= 0)."""
    if not isinstance(meta, dict):
        raise UserError(f"checkpoint {path} has malformed metadata (a {type(meta).__name__}, expected a "
                        f"mapping); restore it or start a new run")
    it, wall = meta.get("iteration"), meta.get("wall_s")
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise UserError(f"checkpoint {path} has an invalid iteration {it!r} (an integer >= 0 is needed); "
                        f"restore it or start a new run")
    if not isinstance(wall, (int, float)) or isinstance(wall, bool) or not math.isfinite(wall) or wall < 0:
        raise UserError(f"checkpoint {path} has an invalid wall_s {wall!r} (a number >= 0 is needed); "
                        f"restore it or start a new run")
    return meta


# ----------------------------------------------------------------------------- metrics.csv
class MetricsError(UserError):
    """``metrics.csv`` is damaged (other than a torn last row)."""


def parse_metrics(path: Any) -> tuple[list[dict[str, Any]], list[str] | None, bool]:
    """``(rows, columns, torn)`` of ``metrics.csv``: numbers parsed; a torn last row is left out.

    Rows must number the iterations 1, 2, 3 ... in order; any other damage raises
    :class:`MetricsError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return [], None, False
    damaged = "restore it from a copy or start a new run"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise MetricsError(f"{path} line {line} is not text (a damaged file); {damaged}") from None
    except OSError as e:
        raise MetricsError(f"cannot read {path} ({e.strerror})") from None
    lines = text.split("\n")
    torn = lines[-1] != ""
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines[:-1]]  # a torn last line is dropped
    if not lines:
        return [], None, torn
    columns = next(csv.reader([lines[0]]), [])
    if "iteration" not in columns:
        raise MetricsError(f"{path} line 1 is not a metrics header (no iteration column); {damaged}")
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if len(fields) != len(columns):
            raise MetricsError(f"{path} line {n} has {len(fields)} fields, the header {len(columns)}; {damaged}")
        row = {k: _num(v) for k, v in zip(columns, fields)}
        if row["iteration"] != len(rows) + 1:
            raise MetricsError(f"{path} line {n}: iteration {row['iteration']!r} where {len(rows) + 1} was "
                               f"expected; {damaged}")
        for k in STANDARD_FIELDS:
            if isinstance(row.get(k), str):
                raise MetricsError(f"{path} line {n}: {k} {row[k]!r} is not a number; {damaged}")
        rows.append(row)
    return rows, columns, torn


def read_metrics(path: Any) -> list[dict[str, Any]]:
    """``metrics.csv`` as a list of dicts with numbers parsed (a torn last row left out)."""
    return parse_metrics(path)[0]


def _num(v: str) -> Any:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _fmt(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return repr(v)
    return v


def _csv_lines(rows: Any) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue().encode()


def _rows_bytes(columns: Any, rows: Any) -> bytes:
    if columns is None:  # nothing but a torn header
        return b""
    return _csv_lines([columns] + [[_fmt(r.get(k, "")) for k in columns] for r in rows])


# ----------------------------------------------------------------------------- the run folder
class RunDir:
    """One run's folder, locked for this process from :meth:`create` / :meth:`open` to :meth:`close`."""

    #: whether this object writes (False: a process other than the writer of a multi-process run)
    writes = True

    def __init__(self, path: Path, config: dict[str, Any], lock: FolderLock | None = None) -> None:
        self.path = Path(path)
        self.config = config
        self._lock = lock
        self._columns: list[str] | None = None
        self._created: list[Path] = []  # folders this process created (removed by discard())

    # ------------------------------------------------------------------ create / open / close
    @classmethod
    def create(cls, path: Any, config: dict[str, Any]) -> RunDir:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"run folder {path} already exists; pass --resume to continue it "
                            f"or choose another --out")
        created = [p for p in [path, *path.parents] if not p.exists()]
        with writing(path, NOT_WRITABLE):
            path.mkdir(parents=True, exist_ok=True)
        rd = cls(path, config)
        rd._created = created
        try:
            rd._lock = FolderLock(path)
        except BaseException:
            for p in created:
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise
        if any(p.name != LOCK for p in path.iterdir()):  # another process got here first: leave it alone
            rd.close()
            raise UserError(f"run folder {path} already exists; pass --resume to continue it "
                            f"or choose another --out")
        try:
            with writing(path / PLOTS, NOT_WRITABLE):
                (path / PLOTS).mkdir(exist_ok=True)
            atomic_write_bytes(path / CONFIG, yaml.safe_dump(config, sort_keys=False).encode(), NOT_WRITABLE)
        except BaseException:
            rd.discard()
            raise
        return rd

    @classmethod
    def open(cls, path: Any) -> RunDir:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise UserError(f"{path} is not a run folder (no {CONFIG}); nothing to resume")
        lock = FolderLock(path)
        try:
            clean_temp_files(path)
            clean_temp_files(path / PLOTS)
            config = read_yaml(path / CONFIG)
            with writing(path / PLOTS, NOT_WRITABLE):
                (path / PLOTS).mkdir(exist_ok=True)
        except BaseException:
            lock.release()
            raise
        return cls(path, config, lock)

    def close(self) -> None:
        """Release the folder's lock (another process may write it from now on)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def discard(self, also: Any = ()) -> None:
        """Remove what :meth:`create` and a run that never completed an iteration wrote (a run that
        never started leaves no folder behind), and the sub-folders named in ``also`` (a tracker's);
        files anyone else put there are kept."""
        for name in (CONFIG, METRICS, SUMMARY, CHECKPOINT):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        for name in also:
            if (self.path / name).is_dir() and not (self.path / name).is_symlink():
                shutil.rmtree(self.path / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            clean_temp_files(self.path)
            clean_temp_files(self.path / PLOTS)
            (self.path / PLOTS).rmdir()
        with contextlib.suppress(OSError):
            if {p.name for p in self.path.iterdir()} <= {LOCK}:
                (self.path / LOCK).unlink()
        self.close()
        for p in self._created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def prepare_metrics(self, iterations: int) -> None:
        """On resume: keep rows 1..``iterations`` (the checkpoint's), drop a torn last row and the rows
        written after the checkpoint; refuse a file that lacks rows the checkpoint has."""
        rows, columns, torn = parse_metrics(self.metrics_path)
        if len(rows) < iterations:
            raise MetricsError(f"{self.metrics_path} has {len(rows)} rows but the checkpoint is at iteration "
                               f"{iterations}; restore metrics.csv or start a new run")
        self._columns = columns
        if torn or len(rows) > iterations:
            atomic_write_bytes(self.metrics_path, _rows_bytes(columns, rows[:iterations]), NOT_WRITABLE)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row (the header first in a new file), as one write."""
        new = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        lines = []
        if self._columns is None or new:
            if new:
                std = [k for k in STANDARD_FIELDS if k in row]
                self._columns = std + [k for k in row if k not in std]
                lines.append(self._columns)
            else:
                self._columns = parse_metrics(self.metrics_path)[1]
        lines.append([_fmt(row.get(k, "")) for k in self._columns])  # type: ignore[union-attr]  # has a header
        data = _csv_lines(lines)
        with writing(self.metrics_path, NOT_WRITABLE):
            fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
            try:
                while data:  # a short write (no room for the rest) is followed by the write that fails
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)

    def truncate_metrics(self, iterations: int) -> None:
        """Drop rows beyond ``iterations`` (written after the last checkpoint of a killed run)."""
        rows, columns, torn = parse_metrics(self.metrics_path)
        if len(rows) <= iterations and not torn:
            return
        atomic_write_bytes(self.metrics_path, _rows_bytes(columns, rows[:iterations]), NOT_WRITABLE)

    # ------------------------------------------------------------------ checkpoint / summary
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def save_checkpoint(self, state: Any, meta: dict[str, Any]) -> None:
        arrays: dict[str, Any] = flatten_state(state)
        arrays["__meta__"] = np.asarray(json.dumps(jsonable(meta), allow_nan=False, default=str))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue(), NOT_WRITABLE)

    def load_checkpoint(self, template: Any) -> Any:
        """``(state, meta)`` from ``checkpoint.npz`` (``(None, None)`` without one); a damaged file or
        metadata is a one-line error."""
        arrays, meta = self.read_checkpoint()
        if arrays is None:
            return None, None
        return unflatten_state(arrays, template), meta

    def read_checkpoint(self) -> Any:
        """``(arrays, meta)`` of ``checkpoint.npz`` (``(None, None)`` without one), metadata checked."""
        if not self.checkpoint_path.exists():
            return None, None
        path = self.checkpoint_path
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile / format errors
            raise UserError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from None
        if "__meta__" not in arrays:
            raise UserError(f"checkpoint {path} has no metadata (__meta__); restore it or start a new run")
        try:
            meta = json.loads(str(arrays.pop("__meta__")))
        except ValueError:
            raise UserError(f"checkpoint {path} has malformed metadata (not JSON); restore it or start a new "
                            f"run") from None
        return arrays, check_meta(meta, path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / SUMMARY, json_bytes(summary), NOT_WRITABLE)

    def read_summary(self) -> dict[str, Any]:
        return read_summary(self.path)


def read_summary(folder: Any) -> dict[str, Any]:
    """A run folder's ``summary.json`` ({} when there is none); a damaged one is a one-line error."""
    p = Path(folder) / SUMMARY
    if not p.exists():
        return {}
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{p} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise UserError(f"{p} is not a summary (a {type(doc).__name__}, expected a mapping)")
    return doc


class NullRunDir(RunDir):
    """The run folder as the processes other than the writer see it: they read its config (a shared
    filesystem on resume), take the checkpoint's values from the writer, and write nothing (nor lock)."""

    writes = False

    @classmethod
    def open(cls, path: Any) -> NullRunDir:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise UserError(f"{path} is not a run folder (no {CONFIG}) as seen from this process; the run "
                            f"folder must be on a filesystem every process can read")
        try:
            config = yaml.safe_load((path / CONFIG).read_bytes().decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"{path / CONFIG} is not valid YAML: {str(e).splitlines()[0]}") from None
        return cls(path, config)

    def discard(self, also: Any = ()) -> None:
        pass

    def read_metrics(self) -> Any:
        return []

    def prepare_metrics(self, iterations: int) -> None:
        pass

    def append_metrics(self, row: Any) -> None:
        pass

    def truncate_metrics(self, iterations: int) -> None:
        pass

    def save_checkpoint(self, state: Any, meta: Any) -> None:
        pass

    def load_checkpoint(self, template: Any) -> Any:
        return None, None

    def read_checkpoint(self) -> Any:
        return None, None

    def write_summary(self, summary: Any) -> None:
        pass


# ----------------------------------------------------------------------------- names of output files
def safe_name(text: Any, default: str = "unnamed") -> str:
    """``text`` as a file name: letters, digits, ``._-`` and ``=`` kept, anything else (``/``, ``..``
    path parts, spaces, ...) becomes ``-``; never starts with a dot."""
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-", str(text))
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", "-", name)).strip("-.")
    return name[:120] or default


def inside(folder: Any, name: str) -> Path:
    """``folder / name``, refusing a result that would lie outside ``folder``."""
    folder = Path(folder)
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()) or path.resolve() == folder.resolve():
        raise UserError(f"refusing to write {path}: it lies outside {folder}")
    return path
