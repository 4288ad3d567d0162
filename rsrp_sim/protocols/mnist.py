"""MNIST (or any data set in MNIST's IDX layout in a folder): RSRP and backprop.

    python -m rsrp_sim.protocols.mnist --data-dir data/mnist                         # RSRP MLP 784-64-10, cpu preset
    python -m rsrp_sim.protocols.mnist --method bp --data-dir data/mnist
    python -m rsrp_sim.protocols.mnist ei=1:1_input reward=accuracy
    python -m rsrp_sim.protocols.mnist net=cnn --preset paper-cnn                  # binary CNN (GPU)
    python -m rsrp_sim.protocols.mnist --preset paper download=true                # pop 20480, 5000 generations
    python -m rsrp_sim.protocols.mnist --method stdp-dc --data-dir data/mnist               # Diehl & Cook, N_e 100
    mpiexec -n 4 python -m rsrp_sim.protocols.mnist --method stdp-dc --preset paper       # over 4 MPI ranks
"""
from __future__ import annotations

import sys

from .classification import STDP_DC, make

PROTOCOL = make("mnist", "MNIST", " A folder with only the 10k t10k files is split into train/val/held-out test.",
                extra_methods=(STDP_DC,))

if __name__ == "__main__":
    sys.exit(PROTOCOL.main())
