"""The Brian2 back-end: the RSRP synapse model, ConnSNN populations, devices, closed-loop CartPole.

    from rsrp_sim.backends.brian2 import RSRPSynapses, RSRPLearner

Importing this package imports Brian2 with its caches and temporary files kept out of the source
tree (:mod:`.devices`).
"""
from .devices import DEVICES, TARGETS, cache_dir, import_brian2  # noqa: F401
from .synapse import MODES, RSRPLearner, RSRPSynapses  # noqa: F401
