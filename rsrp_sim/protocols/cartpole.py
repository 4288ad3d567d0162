"""CartPole-v1 (and other JAX-native control tasks via --env): RSRP, RSRP-reservoir, ES, PPO-LSTM, R-STDP.

    python -m rsrp_sim.protocols.cartpole                      # RSRP, cpu preset
    python -m rsrp_sim.protocols.cartpole --method es
    python -m rsrp_sim.protocols.cartpole --method ppo-lstm    # the recurrent PPO baseline
    python -m rsrp_sim.protocols.cartpole --preset paper       # pop 10240, N 256, 100 generations
    python -m rsrp_sim.protocols.cartpole --env Acrobot-v1 generations=30
    python -m rsrp_sim.protocols.cartpole --method rstdp       # R-STDP baseline on NEURON/NetPyNE
    python -m rsrp_sim.protocols.cartpole --backend brian2 --device cpp_standalone
    python -m rsrp_sim.protocols.cartpole --method rsrp-online --backend brian2 --device cpp_standalone
"""
from __future__ import annotations

import sys

from .base import MethodSpec, Protocol

ENGINE_RL = "rsrp_sim.engine.rl"
JAX_ROLLOUTS = "rsrp_sim.backends.jax.rl:SNNRollouts"
BRIAN2_CHUNKS = "rsrp_sim.backends.brian2.rl:CartPoleChunks"
NETPYNE_RSTDP = "rsrp_sim.backends.netpyne.rstdp_cartpole"

PROTOCOL = Protocol(
    name="cartpole",
    description="CartPole-v1 with RSRP on a recurrent spiking network.",
    module="rsrp_sim.protocols.cartpole",
    methods=[
        MethodSpec("rsrp", "RSRP on ConnSNN: release probability per synapse, natural gradient",
                   {"jax": JAX_ROLLOUTS, "brian2": BRIAN2_CHUNKS}, method=f"{ENGINE_RL}:RSRPMethod"),
        MethodSpec("rsrp-reservoir", "RSRP with the recurrent mask frozen (drawn from the seed)",
                   {"jax": JAX_ROLLOUTS, "brian2": BRIAN2_CHUNKS}, defaults={"reservoir": True},
                   method=f"{ENGINE_RL}:RSRPMethod"),
        MethodSpec("rsrp-online", "RSRP online: one network learning across episodes inside one Brian2 run",
                   {"brian2": "rsrp_sim.backends.brian2.online:OnlineCartPole"}),
        MethodSpec("es", "antithetic Gaussian ES on DenseSNN (real weights)",
                   {"jax": JAX_ROLLOUTS}, method=f"{ENGINE_RL}:ESMethod"),
        MethodSpec("ppo-lstm", "PPO with an LSTM policy (the published RL baseline)",
                   {"jax": "rsrp_sim.backends.jax.ppo:PPOLSTM"}),
        MethodSpec("rstdp", "reward-modulated STDP (Hasegan et al. 2022 model, one network learning online)",
                   {"netpyne": f"{NETPYNE_RSTDP}:RSTDPCartPole"}),
    ],
)

if __name__ == "__main__":
    sys.exit(PROTOCOL.main())
