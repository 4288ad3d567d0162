"""Humanoid (Brax) and the other Brax locomotion tasks: RSRP, RSRP-reservoir, ES, PPO-LSTM
(the settings: :ref:`science-settings`).

    python -m rsrp_sim.protocols.humanoid                          # RSRP, cpu smoke preset (minutes)
    python -m rsrp_sim.protocols.humanoid --method ppo-lstm
    python -m rsrp_sim.protocols.humanoid --preset paper           # pop 10240, N 256, 2000 generations (GPU)
    python -m rsrp_sim.protocols.humanoid --env ant                # hopper, walker2d, halfcheetah, ...
    python -m rsrp_sim.protocols.humanoid --env humanoid:mjx       # another Brax pipeline (default spring)

Needs the ``rl`` extra (Brax; see the README's Humanoid section).  A population is evaluated in
chunks and, when several JAX devices are visible, each chunk is split across them.
"""
from __future__ import annotations

import dataclasses
import sys

from .base import Protocol
from .cartpole import PROTOCOL as _CARTPOLE

#: CartPole's method registry (spiking-network methods and the PPO-LSTM baseline), JAX back-end only:
#: the Brian2 back-end simulates CartPole alone
METHODS = ("rsrp", "rsrp-reservoir", "es", "ppo-lstm")


def _jax_only(name):
    spec = _CARTPOLE.method(name)
    return dataclasses.replace(spec, backends={"jax": spec.backends["jax"]})


PROTOCOL = Protocol(
    name="humanoid",
    description="Brax Humanoid (and other Brax locomotion tasks) with RSRP, ES and PPO-LSTM.",
    module="rsrp_sim.protocols.humanoid",
    methods=[_jax_only(m) for m in METHODS],
)

if __name__ == "__main__":
    sys.exit(PROTOCOL.main())
