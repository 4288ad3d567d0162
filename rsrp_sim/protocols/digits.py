"""scikit-learn's 8x8 digits (offline everywhere): RSRP and backprop on a 64-64-10 MLP, Diehl & Cook STDP.

    python -m rsrp_sim.protocols.digits                 # RSRP, cpu preset (about a minute)
    python -m rsrp_sim.protocols.digits --method bp
    python -m rsrp_sim.protocols.digits --method stdp-dc  # Diehl & Cook STDP on NEURON (N_e 100, about a minute)
"""
from __future__ import annotations

import sys

from .classification import STDP_DC, make

PROTOCOL = make("digits", "scikit-learn 8x8 digits", extra_methods=(STDP_DC,))

if __name__ == "__main__":
    sys.exit(PROTOCOL.main())
