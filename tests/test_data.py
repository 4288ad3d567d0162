"""Data sets: IDX reader/writer, MNIST-format folders (full and test-only), downloads, digits, CIFAR-10."""
import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import rsrp_sim
from rsrp_sim import data
from rsrp_sim.data import cifar10, download, idx
from rsrp_sim.infra.errors import UserError

MNIST_FILES = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
               "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def shared_mnist() -> Path | None:
    """The real MNIST test set: $RSRP_SIM_MNIST, else <repo>/../shared/data/mnist."""
    env = os.environ.get("RSRP_SIM_MNIST")
    p = Path(env) if env else Path(rsrp_sim.__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    return p if all((p / f).is_file() for f in MNIST_FILES) else None


needs_mnist = pytest.mark.skipif(shared_mnist() is None, reason="real MNIST files not found "
                                 "(set RSRP_SIM_MNIST or put them in <repo>/../shared/data/mnist)")


def fake_mnist(folder: Path, n_train=50, n_test=30, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    out = {}
    for kind, n in (("train", n_train), ("t10k", n_test)):
        if n is None:
            continue
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        idx.write_idx(folder / f"{kind}-images-idx3-ubyte{suffix}", x)
        idx.write_idx(folder / f"{kind}-labels-idx1-ubyte{suffix}", y)
        out[kind] = (x, y)
    return out


# ------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = idx.write_idx(tmp_path / name, a)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    b = idx.read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 5)
    np.testing.assert_array_equal(a, b)


def test_idx_header_is_the_mnist_layout(tmp_path):
    path = idx.write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3])  # MNIST images magic 2051
    assert int.from_bytes(raw[4:8], "big") == 3 and int.from_bytes(raw[8:12], "big") == 28
    assert len(raw) == 16 + 3 * 784


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_idx_corrupt_files(tmp_path):
    good = idx.write_idx(tmp_path / "good", np.arange(60, dtype=np.uint8).reshape(3, 4, 5)).read_bytes()
    cases = {
        "truncated": (good[:-7], "truncated"),
        "extra": (good + b"\0\0", "beyond"),
        "magic": (b"\x08\x03\0\0" + good[4:], "not an IDX file"),
        "badtype": (b"\0\0\x07\x03" + good[4:], "not an IDX file"),
        "short": (b"\0\0", "shorter than the 4-byte magic"),
        "header": (good[:9], "header"),
        "zerodim": (b"\0\0\x08\0", "0 dimensions"),
    }
    for name, (content, words) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(UserError) as e:
            idx.read_idx(p)
        _one_line(e, str(p), words)
    gz = gzip.compress(good)
    (tmp_path / "trunc.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(UserError) as e:
        idx.read_idx(tmp_path / "trunc.gz")
    _one_line(e, "truncated gzip")
    (tmp_path / "bad.gz").write_bytes(gz[:10] + b"garbage!" * 4 + gz[42:])
    with pytest.raises(UserError) as e:
        idx.read_idx(tmp_path / "bad.gz")
    _one_line(e, "gzip")
    with pytest.raises(UserError) as e:
        idx.read_idx(tmp_path / "missing")
    _one_line(e, "not found")


def test_idx_pair_checks(tmp_path):
    idx.write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8))
    idx.write_idx(tmp_path / "y", np.array([0, 1, 2], np.uint8))
    with pytest.raises(UserError, match="4 images but .* 3 labels"):
        idx.read_pair(tmp_path / "x", tmp_path / "y", 10)
    idx.write_idx(tmp_path / "y", np.array([0, 1, 2, 12], np.uint8))
    with pytest.raises(UserError, match="outside 0..9"):
        idx.read_pair(tmp_path / "x", tmp_path / "y", 10)
    idx.write_idx(tmp_path / "f", np.zeros((4, 2, 2), np.float32))
    with pytest.raises(UserError, match="uint8 images"):
        idx.read_pair(tmp_path / "f", tmp_path / "y", 10)


# ------------------------------------------------------------------------------------------ MNIST folders
def test_mnist_full_folder_splits(tmp_path):
    arrays = fake_mnist(tmp_path, n_train=50, n_test=30, gz=False)
    ds = data.load("mnist", tmp_path, val_size=10)
    assert ds.sizes() == {"train": 40, "val": 10, "test": 30}
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k"][0])  # official test untouched
    # train + val is a partition of the training files, deterministic and independent of the run
    both = np.concatenate([ds.x_train, ds.x_val])[..., 0].reshape(50, -1)
    orig = arrays["train"][0].reshape(50, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, orig))
    again = data.load("mnist", tmp_path, val_size=10)
    np.testing.assert_array_equal(again.x_val, ds.x_val)
    other = data.load("mnist", tmp_path, val_size=10, split_seed=1)
    assert not np.array_equal(other.y_val, ds.y_val) or not np.array_equal(other.x_val, ds.x_val)
    assert ds.shape == (28, 28, 1) and ds.n_features == 784
    x = ds.normalize(np.array([[0, 255]], np.uint8))
    np.testing.assert_allclose(x, [[-0.1307 / 0.3081, (1 - 0.1307) / 0.3081]], rtol=1e-6)


def test_mnist_test_only_folder(tmp_path):
    arrays = fake_mnist(tmp_path, n_train=None, n_test=100)
    ds = data.load("mnist", tmp_path, val_size=15, test_size=20)
    assert ds.sizes() == {"train": 65, "val": 15, "test": 20}
    assert "no separate training set" in ds.source
    all_x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])[..., 0].reshape(100, -1)
    assert sorted(map(bytes, all_x)) == sorted(map(bytes, arrays["t10k"][0].reshape(100, -1)))


def test_mnist_lookup_order(tmp_path, monkeypatch):
    root = tmp_path / "root"
    fake_mnist(root / "mnist", n_train=None, n_test=40)  # found in the per-data-set sub-folder
    monkeypatch.setenv(data.ENV_VAR, str(root))
    assert data.load("mnist", val_size=5, test_size=5).sizes()["train"] == 30
    monkeypatch.delenv(data.ENV_VAR)
    monkeypatch.delenv("RSRP_SIM_CACHE", raising=False)  # it would move the cache (and the data folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "rsrp_sim" / "data"
    with pytest.raises(UserError) as e:
        data.load("mnist")
    _one_line(e, "no MNIST-format files", "--data-dir", "download=true")


def test_mnist_incomplete_folders(tmp_path):
    fake_mnist(tmp_path, n_train=20, n_test=None)
    with pytest.raises(UserError, match="no test files"):
        data.load("mnist", tmp_path)
    fake_mnist(tmp_path, n_train=None, n_test=20)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte"):
        data.load("mnist", tmp_path)
    with pytest.raises(UserError, match="cannot hold out"):
        fake_mnist(tmp_path / "small", n_train=None, n_test=10)
        data.load("mnist", tmp_path / "small", val_size=5, test_size=5)


def test_download_offline_gives_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(data.info("mnist"), "mirrors", ["http://127.0.0.1:9/mnist/"])
    with pytest.raises(UserError) as e:
        data.load("mnist", tmp_path, download=True)
    _one_line(e, "could not download MNIST", "no network", "--data-dir")
    assert not any(tmp_path.rglob("*.part")) and not any(tmp_path.rglob("*.gz"))


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (mirror / name).write_bytes(b"not mnist")
    monkeypatch.setitem(data.info("mnist"), "mirrors", [mirror.as_uri() + "/"])
    with pytest.raises(UserError) as e:
        data.load("mnist", tmp_path / "data", download=True)
    _one_line(e, "checksum")
    assert not list((tmp_path / "data").rglob("*.gz"))


@needs_mnist
def test_download_from_a_mirror_verifies_checksums(tmp_path, monkeypatch):
    # a file:// mirror that has only the official test files: they download and pass their MD5s,
    # the training files are missing there, so the error names them
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_FILES:
        shutil.copy(shared_mnist() / name, mirror / name)
    monkeypatch.setitem(data.info("mnist"), "mirrors", [mirror.as_uri()])
    target = tmp_path / "data"
    p = download.fetch("t10k-labels-idx1-ubyte.gz", [mirror.as_uri()], target,
                       MNIST_FILES["t10k-labels-idx1-ubyte.gz"], "MNIST")
    assert download.md5(p) == MNIST_FILES["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist", target, download=True)


@needs_mnist
def test_real_mnist_test_set_is_a_dataset_on_its_own():
    folder = shared_mnist()
    for name, md5 in MNIST_FILES.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5
    ds = data.load("mnist", folder)
    assert ds.sizes() == {"train": 7000, "val": 1000, "test": 2000}
    assert ds.x_train.dtype == np.uint8 and ds.shape == (28, 28, 1)
    counts = np.bincount(ds.y_train, minlength=10)
    assert counts.min() > 500  # every class well represented in the deterministic split
    x = ds.normalize(ds.x_train[:2000])
    assert abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1  # the SPEC's normalisation


def test_digits():
    ds = data.load("digits")
    assert ds.sizes() == {"train": 1257, "val": 180, "test": 360}
    assert ds.shape == (8, 8, 1) and ds.x_train.max() == 16
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert np.array_equal(data.load("digits").y_test, ds.y_test)


# ------------------------------------------------------------------------------------------ CIFAR-10
def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def write_cifar_python(folder: Path, n=6, test_only=False):
    folder.mkdir(parents=True, exist_ok=True)
    names = ["test_batch"] + ([] if test_only else [f"data_batch_{i}" for i in range(1, 6)])
    out = {}
    for i, name in enumerate(names):
        x, y = _cifar_arrays(n, i)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": x,
                         b"filenames": [b"f"] * n}, f, protocol=2)
        out[name] = (x, y)
    return out


def write_cifar_binary(folder: Path, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]):
        x, y = _cifar_arrays(n, i)
        rec = np.concatenate([y[:, None].astype(np.uint8), x], axis=1)
        (folder / f"{name}.bin").write_bytes(rec.tobytes())
        out[name] = (x, y)
    return out


@pytest.mark.parametrize("kind", ["python", "binary"])
def test_cifar10_batches(tmp_path, kind):
    if kind == "python":
        arrays = write_cifar_python(tmp_path / "cifar-10-batches-py")
    else:
        arrays = write_cifar_binary(tmp_path / "cifar-10-batches-bin")
    ds = data.load("cifar10", tmp_path, val_size=5)
    assert ds.sizes() == {"train": 25, "val": 5, "test": 6}
    assert ds.shape == (32, 32, 3)
    x, y = arrays["test_batch"]
    np.testing.assert_array_equal(ds.y_test, y)
    # channel-major rows: the first 1024 values are the red plane, row by row
    np.testing.assert_array_equal(ds.x_test[0, :, :, 0].ravel(), x[0, :1024])
    np.testing.assert_array_equal(ds.x_test[0, 0, :, 2], x[0, 2048:2080])
    np.testing.assert_allclose(ds.normalize(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def test_cifar10_python_and_binary_agree(tmp_path):
    write_cifar_python(tmp_path / "a" / "cifar-10-batches-py")
    write_cifar_binary(tmp_path / "b")
    a, b = data.load("cifar10", tmp_path / "a", val_size=3), data.load("cifar10", tmp_path / "b", val_size=3)
    for k in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_cifar10_errors(tmp_path):
    write_cifar_python(tmp_path / "t", test_only=True, n=40)
    assert data.load("cifar10", tmp_path / "t", val_size=5, test_size=10).sizes() == \
        {"train": 25, "val": 5, "test": 10}
    write_cifar_python(tmp_path / "p")
    (tmp_path / "p" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks CIFAR-10 training batches data_batch_3"):
        data.load("cifar10", tmp_path / "p")
    write_cifar_binary(tmp_path / "b")
    raw = (tmp_path / "b" / "test_batch.bin").read_bytes()
    (tmp_path / "b" / "test_batch.bin").write_bytes(raw[:-100])
    with pytest.raises(UserError, match="truncated"):
        data.load("cifar10", tmp_path / "b")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "test_batch").write_bytes(pickle.dumps(os.system))  # code, not data
    with pytest.raises(UserError, match="not a readable CIFAR-10 python batch"):
        cifar10.read_pickle_batch(tmp_path / "e" / "test_batch")
    with pytest.raises(UserError, match="no CIFAR-10 batches"):
        data.load("cifar10", tmp_path / "nothing")
    with pytest.raises(UserError, match="unknown dataset"):
        data.load("svhn")
