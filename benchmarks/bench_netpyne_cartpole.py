"""Throughput of the R-STDP CartPole closed loop on NEURON/NetPyNE; prints one JSON object.

    python benchmarks/bench_netpyne_cartpole.py [--episodes 100] [--seed 0] [--save]

Measures training blocks of the `rstdp` method (plasticity, rewards and homeostasis on; no evaluation
episodes): simulated seconds per wall-clock second, environment steps per second, and the share of
the wall time NEURON spends integrating (the rest is the Python side of the loop: spike read-out,
gymnasium, critic, reward scatter, input rates).  The network build (and the one-off mechanism
compilation) is timed separately.  --save writes benchmarks/results/netpyne_cartpole.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import machine, timed_psolve, write


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100, help="training episodes to time (default 100)")
    p.add_argument("--per-block", type=int, default=25, help="episodes per iteration (one simulation each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help="also write benchmarks/results/netpyne_cartpole.json")
    args = p.parse_args(argv)

    from rsrp_sim.backends.netpyne import mechanisms

    t0 = time.perf_counter()
    mechanisms.load()
    t_mech = time.perf_counter() - t0

    from netpyne import sim

    from rsrp_sim.backends.netpyne.rstdp_cartpole import RSTDPCartPole, RSTDPConfig

    cfg = RSTDPConfig(episodes=args.episodes, episodes_per_iteration=args.per_block, eval_episodes=0)
    t0 = time.perf_counter()
    method = RSTDPCartPole(cfg, args.seed)
    state = method.init_state()
    t_build = time.perf_counter() - t0

    wall = 0.0
    steps = episodes = 0
    rows = []
    with timed_psolve(sim) as psolve_s:  # NEURON's integration inside runSimWithIntervalFunc
        while episodes < args.episodes:
            t = time.perf_counter()
            state, rec = method.step(state)
            wall += time.perf_counter() - t
            rows.append(rec)
            episodes = rec["episodes"]
            steps = rec["env_steps"]
    sim_s = sum(r["sim_s"] for r in rows)
    out = {
        "benchmark": "netpyne_cartpole_closed_loop",
        "episodes": episodes,
        "env_steps": steps,
        "wall_s": round(wall, 3),
        "simulated_s": round(sim_s, 3),
        "sim_s_per_wall_s": round(sim_s / wall, 3),
        "env_steps_per_s": round(steps / wall, 1),
        "neuron_integration_share": round(psolve_s[0] / wall, 3),
        "mean_episode_length": round(steps / max(episodes, 1), 2),
        "build_s": round(t_build, 3),
        "mechanisms_load_s": round(t_mech, 3),
        "cells": method.net.n_cells,
        "plastic_synapses": method.net.n_plastic,
        "seed": args.seed,
        "machine": machine(("neuron", "netpyne", "numpy")),  # its load average: other work slows this
    }
    print(write(out, Path(__file__).resolve().parent / "results" / "netpyne_cartpole.json" if args.save else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
