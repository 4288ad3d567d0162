"""The NEURON/NetPyNE back-end: our NMODL mechanisms (``mod/``, compiled on first use into a per-user
cache by :mod:`.mechanisms`) and the R-STDP CartPole baseline (:mod:`.rstdp_cartpole`).

Mechanisms (``mod/``):
    DeflIF   event-driven integrate-and-fire artificial cell: AMPA/NMDA/GABA-like exponentially
             decaying deflections, after-hyperpolarisation, relative refractoriness, depolarisation block
    RLSTDP   reward-modulated STDP on one NetCon weight: Hebbian/anti-Hebbian eligibility windows,
             eligibility duration, reward_punish(r), weight bounds, reset_eligibility()
    RateGen  spike source with a rate that can change during a run; regular or Poisson
"""
