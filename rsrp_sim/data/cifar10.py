"""CIFAR-10 from the standard python-pickle batches or the binary batches.

Python version (``cifar-10-batches-py/``): ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``,
each a pickled dict with ``data`` (N, 3072) uint8 (1024 red, 1024 green, 1024 blue values, rows of
32) and ``labels``.  They are unpickled with a restricted unpickler that only builds NumPy arrays,
so a tampered file cannot run code, and no larger than the file itself (an array's bytes are in the
file), so a tampered file cannot exhaust the memory either.  Binary version (``cifar-10-batches-bin/``):
``data_batch_1.bin`` ... ``test_batch.bin``, records of 1 label byte + 3072 pixel bytes.
A folder with only the test batch is a test-only data set.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from . import candidates, info
from .download import fetch
from ..infra.errors import UserError

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = "test_batch"
PIXELS = 3072
SUBS = ("", "cifar-10-batches-py", "cifar-10-batches-bin")


class _NumpyOnly(pickle.Unpickler):
    """Builds dicts, lists, numbers, bytes and NumPy arrays of at most ``limit`` bytes, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 store bytes

    def __init__(self, file, limit: int, **kw):
        super().__init__(file, **kw)
        self.limit = int(limit)

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return self._reconstruct(found)
        return found

    def _reconstruct(self, real):
        limit = self.limit

        class Bounded(np.ndarray):  # its __setstate__ (the pickle's BUILD) is checked as well
            def __setstate__(self, state):
                if not isinstance(state, tuple) or len(state) not in (4, 5):
                    raise pickle.UnpicklingError("malformed array state")
                off = len(state) - 4  # (version,) shape, dtype, is_fortran, data
                _check_size(state[off], state[off + 1], limit)
                super().__setstate__(state)

        def reconstruct(cls, shape, dtype):
            if cls is not np.ndarray:
                raise pickle.UnpicklingError(f"refusing to build a {getattr(cls, '__name__', cls)!r}")
            _check_size(shape, dtype, limit)
            return real(Bounded, shape, dtype)

        return reconstruct


def _check_size(shape, dtype, limit: int):
    """Refuse an array whose shape or data type is odd, or whose bytes would exceed ``limit``."""
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise pickle.UnpicklingError(f"malformed array dtype ({e})") from None
    if dt.hasobject:
        raise pickle.UnpicklingError("refusing an array of Python objects")
    n = dt.itemsize
    for k in shape:
        n *= k
    if n > limit:
        raise pickle.UnpicklingError(f"it asks for an array of shape {shape} ({n} bytes), more than the "
                                     f"{limit}-byte file can hold")


def _to_images(flat: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-major rows -> (N, 32, 32, 3)."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def read_pickle_batch(path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    raw = path.read_bytes()
    try:
        d = _NumpyOnly(io.BytesIO(raw), limit=len(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:
        raise UserError(f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a CIFAR-10 python batch (a {type(d).__name__}, expected a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise UserError(f"{path} is not a CIFAR-10 python batch: keys {sorted(d)} lack data/labels")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PIXELS:
        raise UserError(f"{path}: data must be uint8 of shape (N, {PIXELS}), got {x.dtype} {x.shape}")
    if y.shape != (len(x),):
        raise UserError(f"{path}: {len(x)} images but {y.size} labels")
    return _to_images(x), _labels(y, path)


def read_binary_batch(path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    rec = PIXELS + 1
    if raw.size == 0 or raw.size % rec:
        raise UserError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a whole number of "
                        f"{rec}-byte records (truncated?)")
    raw = raw.reshape(-1, rec)
    return _to_images(raw[:, 1:]), _labels(raw[:, 0], path)


def _labels(y, path) -> np.ndarray:
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() > 9)):
        raise UserError(f"{path}: labels must be integers 0..9")
    return y.astype(np.int32)


def _batches(folder: Path):
    """``(kind, {name: path})`` of the batches in ``folder`` (python first, then binary), or None."""
    for kind, suffix in (("python", ""), ("binary", ".bin")):
        found = {n: folder / (n + suffix) for n in TRAIN + [TEST] if (folder / (n + suffix)).is_file()}
        if found:
            return kind, found
    return None, {}


def _locate(root: Path):
    for base in candidates(root, "cifar10"):
        for sub in SUBS:
            folder = base / sub if sub else base
            kind, found = _batches(folder)
            if kind:
                return folder, kind, found
    return None, None, {}


def _download(root: Path) -> None:
    meta = info("cifar10")
    folder = root / "cifar10"
    archive = fetch(meta["archive"], meta["mirrors"], folder, meta["archive_md5"], "CIFAR-10")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"cannot unpack {archive} ({e})") from None


def load_cifar10(root: Path, download: bool = False):
    folder, kind, found = _locate(root)
    if folder is None and download:
        _download(root)
        folder, kind, found = _locate(root)
    if folder is None:
        looked = ", ".join(str(c) for c in candidates(root, "cifar10"))
        raise UserError(f"no CIFAR-10 batches (data_batch_1..5, test_batch, or their .bin versions) in {looked} "
                        f"or their cifar-10-batches-py/-bin sub-folders; pass --data-dir DIR, set $RSRP_SIM_DATA, "
                        f"or add download=true")
    read = read_pickle_batch if kind == "python" else read_binary_batch
    if TEST not in found:
        raise UserError(f"{folder} has CIFAR-10 training batches but no {TEST}")
    test = read(found[TEST])
    train = None
    have = [n for n in TRAIN if n in found]
    if have:
        if len(have) != len(TRAIN):
            missing = ", ".join(n for n in TRAIN if n not in found)
            raise UserError(f"{folder} lacks CIFAR-10 training batches {missing} (all five are needed, or none "
                            f"for a test-only folder)")
        parts = [read(found[n]) for n in TRAIN]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, test, f"CIFAR-10 {kind} batches in {folder}"
