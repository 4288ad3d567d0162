"""A new data set: a loader, its constants, a registration; then RSRP and backprop learn it.

Fisher's iris (150 flowers, 4 measurements, 3 species; bundled with scikit-learn), as "images" of
shape (1, 4, 1) with the measurements in millimetres (uint8).  There is no official test split, so
the loader returns it as a test-only set and ``rsrp_sim.data`` splits it into train / validation /
held-out test.  The MLP is ``models/mlp.yaml`` (used for any data set without ``models/mlp_<name>.yaml``).

Inside the package this is three files: the loader's module (``rsrp_sim/data/iris.py``), its constants
in ``rsrp_sim/data/datasets.yaml`` and one entry in ``LOADERS`` (``rsrp_sim/data/__init__.py``).  From a
script, ``data.register`` makes it known to this process:

    python examples/extend_dataset.py [generations]
"""
import sys

import numpy as np

from rsrp_sim import data
from rsrp_sim.protocols import get


def load_iris(folder, download=False):
    from sklearn.datasets import load_iris as sk_load

    d = sk_load()
    x = np.round(np.asarray(d.data) * 10).astype(np.uint8).reshape(-1, 1, 4, 1)  # cm -> mm
    return None, (x, np.asarray(d.target, np.int32)), "scikit-learn load_iris() (measurements in mm)"


data.register("iris", load_iris, {"classes": 3, "shape": [1, 4, 1], "scale": 80.0, "mean": 0.5, "std": 0.25,
                                  "val_size": 30, "test_only_size": 30, "test_only_val_size": 30})

if __name__ == "__main__":
    generations = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    digits = get("digits")  # any classification protocol; dataset= picks the data
    common = {"dataset": "iris", "batch_size": 30, "eval_every": 10}
    _, rsrp = digits.run("rsrp", overrides={**common, "pop_size": 256, "chunk_size": 256, "lr": 1.0,
                                            "generations": generations})
    _, bp = digits.run("bp", overrides={**common, "epochs": 100, "lr": 0.01})
    print(f"iris: RSRP test accuracy {rsrp['test_score']:.3f}, backprop {bp['test_score']:.3f}")
