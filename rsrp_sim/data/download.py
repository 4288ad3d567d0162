"""Fetch a file from a list of mirrors into a folder, checking its MD5; one-line errors offline."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..infra.errors import UserError

TIMEOUT_S = 30


def md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(filename: str, mirrors: list[str], folder, checksum: str | None, what: str) -> Path:
    """Download ``filename`` from the first mirror that answers into ``folder``; verify ``checksum``.

    The file is written to a temporary name and renamed only after its checksum matched, so a
    failed or interrupted download never leaves a half file under the real name.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {folder} ({e.strerror or e}); pass --data-dir") from None
    target = folder / filename
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                while block := resp.read(1 << 20):
                    out.write(block)
            got = md5(tmp)
            if checksum and got != checksum:
                errors.append(f"{url}: checksum {got} != {checksum}")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"{url}: {reason}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    bad_sum = any("checksum" in e for e in errors)
    hint = ("the downloaded file did not match its checksum" if bad_sum
            else "no network here?")
    raise UserError(f"could not download {what} file {filename} ({hint}; tried {'; '.join(errors)}); "
                    f"put the files in {folder} yourself or pass --data-dir DIR")
