"""Classification data sets: MNIST-format IDX folders, scikit-learn's 8x8 digits, CIFAR-10.

    from rsrp_sim import data
    ds = data.load("mnist", data_dir="data/mnist")   # or $RSRP_SIM_DATA, or the user cache
    ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test  # uint8 (N, H, W, C), int32 (N,)

Where the files are looked for: ``data_dir`` (the ``--data-dir`` option), else ``$RSRP_SIM_DATA``,
else the user cache's ``data/`` (``$RSRP_SIM_CACHE/data``, else ``$XDG_CACHE_HOME/rsrp_sim/data`` or
``~/.cache/rsrp_sim/data``); in that folder and in its per-data-set sub-folders (``mnist/``,
``MNIST/raw/``, ``cifar10/`` ...).

Splits are deterministic (``split_seed``, independent of the run's seed): the validation split is
taken from the training set and is the one used for model selection during training; the test split
is only used for the final number.  A folder that holds only a test set (e.g. the 10,000 MNIST
``t10k`` files) is accepted on its own: it is split into train / validation / held-out test.
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..infra.errors import UserError, unknown

__all__ = ["ENV_VAR", "LOADERS", "DATASETS", "info_all", "names", "info", "register", "cache_root", "data_root",
           "candidates", "Dataset", "split_indices", "assemble", "load", "EpochBatches"]

ENV_VAR = "RSRP_SIM_DATA"

#: data set name -> its loader, ``"module:function"`` (a module of this package) or a callable.
#: A loader takes ``(folder, download)`` and returns ``(train or None, test, source)``, where
#: ``train``/``test`` are ``(uint8 images (N, H, W, C), int labels (N,))`` and ``source`` says where
#: they came from; ``None`` for ``train`` means a test-only set (it is split three ways).
LOADERS: dict[str, Any] = {"mnist": "mnist:load_mnist", "digits": "digits:load_digits",
                           "cifar10": "cifar10:load_cifar10"}
DATASETS = tuple(LOADERS)  #: the bundled data sets
_REGISTERED: dict[str, dict[str, Any]] = {}


@lru_cache(maxsize=1)
def info_all() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(resources.files(__name__).joinpath("datasets.yaml").read_text())


def names() -> list[str]:
    """Every data set ``load`` accepts (the bundled ones and those registered)."""
    return list(LOADERS)


def info(name: str) -> dict[str, Any]:
    """The data set's constants (``datasets.yaml``, or what :func:`register` was given)."""
    if name not in LOADERS:
        raise unknown("dataset", name, names())
    return _REGISTERED[name] if name in _REGISTERED else info_all()[name]


def register(name: str, loader: Any, constants: dict[str, Any]) -> None:
    """Add a data set: ``loader(folder, download)`` as described at :data:`LOADERS`, and its
    constants as in ``datasets.yaml`` (``classes``, ``shape``, ``scale``, ``mean``, ``std``,
    ``val_size``, ``test_only_size``, ``test_only_val_size``)."""
    missing = {"classes", "shape", "scale", "mean", "std", "val_size", "test_only_size",
               "test_only_val_size"} - set(constants)
    if missing:
        raise UserError(f"data set {name!r} needs the constants {sorted(missing)}")
    LOADERS[name] = loader
    _REGISTERED[name] = dict(constants)


def cache_root() -> Path:
    """The data sets' folder in the user cache (:func:`rsrp_sim.infra.cache.cache_base` / data)."""
    from ..infra.cache import cache_base

    return cache_base() / "data"


def data_root(data_dir: Any = None) -> Path:
    """The folder given, else ``$RSRP_SIM_DATA``, else the user cache."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else cache_root()


def candidates(root: Path, name: str) -> list[Path]:
    """``root`` and the data set's usual sub-folders of it."""
    return [root] + [root / s for s in info(name).get("subdirs", [])]


@dataclasses.dataclass
class Dataset:
    """Images as uint8 (N, H, W, C) and int32 labels, split three ways; normalisation constants."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    scale: float
    mean: float
    std: float
    source: str  # where it came from and how it was split (for records)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.shape))

    def normalize(self, x: Any, xp: Any = np) -> Any:
        """``(pixel / scale - mean) / std`` as float32 (NumPy or jax.numpy)."""
        return (xp.asarray(x, dtype=xp.float32) / self.scale - self.mean) / self.std

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def split_indices(n: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """A deterministic permutation of ``range(n)`` cut into parts of ``sizes`` (the rest is last)."""
    if sum(sizes) >= n:
        raise UserError(f"cannot hold out {' + '.join(map(str, sizes))} of {n} examples; "
                        f"use smaller val_size / test_size")
    perm = np.random.default_rng(np.random.SeedSequence([20251122, seed])).permutation(n)
    out, lo = [], 0
    for s in sizes:
        out.append(np.sort(perm[lo:lo + s]))
        lo += s
    out.append(np.sort(perm[lo:]))
    return out


def assemble(name: str, train: Any, test: Any, *, val_size: int | None, test_size: int | None, split_seed: int,
             source: str) -> Dataset:
    """Make the three splits from a (train, test) pair; ``train=None`` means a test-only folder."""
    meta = info(name)
    default_val = meta["val_size"] if train is not None else meta["test_only_val_size"]
    val_size = default_val if val_size is None or val_size < 0 else val_size
    if train is None:  # only a test set: hold out a test part, then a validation part, train on the rest
        x, y = test
        test_size = meta["test_only_size"] if test_size is None or test_size < 0 else test_size
        if test_size < 1:
            raise UserError(f"a test-only {name} folder needs test_size >= 1 held-out examples")
        te, va, tr = split_indices(len(y), [test_size, val_size], split_seed)
        source += f"; no separate training set: split {len(tr)} train / {len(va)} val / {len(te)} held-out " \
                  f"test (split_seed {split_seed})"
        parts = (x[tr], y[tr], x[va], y[va], x[te], y[te])
    else:
        (xt, yt), (xs, ys) = train, test
        va, tr = split_indices(len(yt), [val_size], split_seed)
        source += f"; {len(tr)} train / {len(va)} val (split_seed {split_seed}) / {len(ys)} official test"
        parts = (xt[tr], yt[tr], xt[va], yt[va], xs, ys)
    shape = tuple(meta["shape"])
    for arr in parts[::2]:
        if arr.shape[1:] != shape:
            raise UserError(f"{name} images must have shape {shape} (H, W, C), got {arr.shape[1:]}")
    x_train, y_train, x_val, y_val, x_test, y_test = (np.ascontiguousarray(a) for a in parts)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, n_classes=int(meta["classes"]),
                   scale=float(meta["scale"]), mean=float(meta["mean"]), std=float(meta["std"]), source=source)


def load(name: str, data_dir: Any = None, download: bool = False, val_size: int | None = None,
         test_size: int | None = None, split_seed: int = 0) -> Dataset:
    """Load a data set by name (``mnist``, ``digits``, ``cifar10``); see the module docstring.

    ``val_size`` / ``test_size``: ``None`` or negative for the data set's defaults (``datasets.yaml``);
    ``test_size`` only applies to a test-only folder.  ``download``: fetch missing files (MNIST,
    CIFAR-10) into the folder, checking their checksums.
    """
    kw: dict[str, Any] = dict(val_size=val_size, test_size=test_size, split_seed=split_seed)
    if name not in LOADERS:
        raise unknown("dataset", name, names())
    loader = LOADERS[name]
    if isinstance(loader, str):
        import importlib

        module, func = loader.split(":")
        loader = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    train, test, source = loader(data_root(data_dir), download)
    return assemble(name, train, test, source=source, **kw)


class EpochBatches:
    """Minibatch ``index`` of an epoch-wise shuffled, drop-last order of ``n`` examples.

    Deterministic in ``(seed, epoch)``, so any minibatch can be recomputed (resume) without
    replaying the ones before it.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.per_epoch = self.n // self.batch_size
        self._epoch: int | None = None
        self._perm: Any = None

    def __call__(self, index: int) -> np.ndarray:
        epoch, j = divmod(int(index), self.per_epoch)
        if self._epoch != epoch:
            self._perm = np.random.default_rng([self.seed, 7, epoch]).permutation(self.n)
            self._epoch = epoch
        b = self.batch_size
        return self._perm[j * b:(j + 1) * b]
