"""CIFAR-10 (python-pickle or binary batches in a folder): RSRP and backprop.

    python -m rsrp_sim.protocols.cifar10 --data-dir DIR                 # RSRP MLP 3072-128-64-10, cpu preset
    python -m rsrp_sim.protocols.cifar10 --method bp --data-dir DIR
    python -m rsrp_sim.protocols.cifar10 --preset paper download=true   # pop 16384, momentum lr 0.9 (GPU)
    python -m rsrp_sim.protocols.cifar10 --preset paper-cnn             # binary CNN, pop 8192, lr 5 (GPU)
"""
from __future__ import annotations

import sys

from .classification import make

PROTOCOL = make("cifar10", "CIFAR-10")

if __name__ == "__main__":
    sys.exit(PROTOCOL.main())
