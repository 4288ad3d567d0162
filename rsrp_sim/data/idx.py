"""Reader and writer for IDX files, the format of MNIST (and Fashion-MNIST, EMNIST, KMNIST...).

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``DD`` the number
of dimensions), ``DD`` big-endian uint32 dimension sizes, then the elements in C order, big-endian.
Files may be gzip-compressed (detected from the content, not the name).  Every problem (missing,
truncated, corrupt, wrong type or shape) is a one-line :class:`~rsrp_sim.errors.UserError`.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..infra.errors import UserError

#: IDX element type code -> big-endian NumPy dtype
TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path) -> bytes:
    """The file's content, decompressed when it is gzip; one-line errors for unreadable files."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"file {path} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise UserError(f"{path} is a truncated gzip file (compressed stream ends early); "
                        f"download it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise UserError(f"{path} is a corrupt gzip file ({e}); download it again") from None


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into an array of the stored shape (native byte order)."""
    if len(data) < 4:
        raise UserError(f"{name} is not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in TYPES:
        raise UserError(f"{name} is not an IDX file: magic number {data[:4].hex()} (expected 0000 then a type "
                        f"code {', '.join(f'{c:02x}' for c in TYPES)} and the number of dimensions)")
    if ndim < 1:
        raise UserError(f"{name} is not a valid IDX file: it declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{name} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(TYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise UserError(f"{name} is truncated: header promises shape {tuple(dims)} ({expected} data bytes), "
                        f"file has {got}")
    if got > expected:
        raise UserError(f"{name} is corrupt: {got - expected} bytes beyond the shape {tuple(dims)} its header "
                        f"declares")
    arr = np.frombuffer(data, dtype=dtype, offset=header, count=int(np.prod(dims, dtype=np.int64)))
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip)."""
    return parse_idx(read_bytes(path), str(path))


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: name ends in .gz)."""
    path = Path(path)
    a = np.asarray(array)
    code = next((c for c, t in TYPES.items() if np.dtype(t).newbyteorder("=") == a.dtype.newbyteorder("=")),
                None)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {a.dtype}; allowed: uint8, int8, int16, int32, float32, float64")
    if a.ndim < 1 or a.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {a.ndim}")
    data = struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    data += np.ascontiguousarray(a, dtype=TYPES[code]).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def find(folder, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (also the ``stem.idx3-ubyte`` spelling with a dot)."""
    folder = Path(folder)
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_pair(images_path, labels_path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 and labels (N,) int32 from two IDX files, cross-checked."""
    x = read_idx(images_path)
    y = read_idx(labels_path)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise UserError(f"{images_path} must hold uint8 images of shape (N, H, W) or (N, H, W, C), "
                        f"got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UserError(f"{labels_path} must hold integer labels of shape (N,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(f"{labels_path} has labels outside 0..{n_classes - 1} (min {y.min()}, max {y.max()})")
    if x.ndim == 3:
        x = x[..., None]
    return x, y.astype(np.int32)
