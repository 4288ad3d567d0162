"""MNIST and any other data set in MNIST's IDX layout (Fashion-MNIST, KMNIST...) in a folder.

The folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``).  With only the two ``t10k`` files it is a
test-only data set (see :func:`rsrp_sim.data.assemble`).  ``download=True`` fetches missing files of
the real MNIST and checks their MD5 checksums.
"""
from __future__ import annotations

from pathlib import Path

from . import candidates, info
from .download import fetch
from .idx import find, read_pair
from ..infra.errors import UserError


def _locate(root: Path):
    files = info("mnist")["files"]
    for folder in candidates(root, "mnist"):
        found = {k: find(folder, stem) for k, stem in files.items()}
        if found["test_images"] or found["train_images"]:
            return folder, found
    return None, None


def load_mnist(root: Path, download: bool = False):
    """``(train or None, test, source)`` with ``train``/``test`` = (images, labels)."""
    meta = info("mnist")
    folder, found = _locate(root)
    if download and (folder is None or not all(found.values())):
        folder = folder or root / "mnist"
        for key, stem in meta["files"].items():
            if not (found or {}).get(key):
                fetch(stem + ".gz", meta["mirrors"], folder, meta["md5"].get(stem + ".gz"), "MNIST")
        folder, found = _locate(folder)
    if folder is None:
        looked = ", ".join(str(c) for c in candidates(root, "mnist"))
        raise UserError(f"no MNIST-format files (t10k-images-idx3-ubyte[.gz] ...) in {looked}; pass "
                        f"--data-dir DIR, set $RSRP_SIM_DATA, or add download=true")
    names = meta["files"]

    def pair(kind):
        img, lab = found[f"{kind}_images"], found[f"{kind}_labels"]
        if img is None or lab is None:
            missing = names[f"{kind}_images"] if img is None else names[f"{kind}_labels"]
            raise UserError(f"{folder} has {kind} {'labels' if img is None else 'images'} but no "
                            f"{missing}[.gz]")
        return read_pair(img, lab, meta["classes"])

    if found["test_images"] is None and found["test_labels"] is None:
        raise UserError(f"{folder} has training files but no test files ({names['test_images']}[.gz], "
                        f"{names['test_labels']}[.gz])")
    test = pair("test")
    train = None
    if found["train_images"] or found["train_labels"]:
        train = pair("train")
        if train[0].shape[1:] != test[0].shape[1:]:
            raise UserError(f"{folder}: training images {train[0].shape[1:]} and test images "
                            f"{test[0].shape[1:]} differ in shape")
    return train, test, f"IDX files in {folder}"
