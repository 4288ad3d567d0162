"""scikit-learn's bundled 8x8 handwritten digits (1797 images, offline everywhere)."""
from __future__ import annotations

import numpy as np

from ..infra.errors import UserError


def load_digits(root=None, download: bool = False):
    """``(None, all, source)``: digits has no official test split, so it is split like a test-only set
    (bundled with scikit-learn: no folder, nothing to download)."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        raise UserError("the digits data set needs scikit-learn: pip install -c constraints.txt "
                        "-e '.[data]'") from None
    d = sk_load()
    x = np.asarray(d.images, dtype=np.float64)
    if x.min() < 0 or x.max() > 16:
        raise UserError(f"unexpected pixel range of sklearn digits: {x.min()}..{x.max()}")
    return None, (x.astype(np.uint8)[..., None], np.asarray(d.target, np.int32)), "scikit-learn load_digits()"
