"""Simulation back-ends.  They never import each other; each implements rsrp_sim.method.Method."""
