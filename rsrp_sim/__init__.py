"""rsrp_sim: Reward-Optimized Stochastic Release Plasticity (RSRP) for spiking networks.

The rule lives in :mod:`rsrp_sim.rule` and :mod:`rsrp_sim.shaping`; model constants in
``rsrp_sim/models/*.yaml``; back-ends in :mod:`rsrp_sim.backends` (``jax``, ``brian2``, ``netpyne``);
protocols (``python -m rsrp_sim.protocols.<name>``) in :mod:`rsrp_sim.protocols`.
"""
__version__ = "0.1.0"
