"""Would the R-STDP CartPole network (280 cells) run faster over MPI ranks?  Prints one JSON object.

    python benchmarks/bench_rstdp_ranks.py [--episodes 40] [--intervals 400] [--save]

Part A (one process, the real closed loop of the ``rstdp`` method, plasticity on): per 50 ms action
interval, the wall time NEURON spends integrating (``psolve``, what ranks could split) and the rest
(the Python side every action needs once, on the rank that steps the environment: spike read-out,
gymnasium, critic, reward, input rates).

Part B (1 and 2 MPI ranks, NEURON's ParallelContext): what being split costs per action interval,
measured on a network that does no work: one silent cell per rank, connected across ranks with the
R-STDP model's smallest delay (NEURON then exchanges spikes once per that delay, 62 times per 50 ms
at 0.8 ms), psolve in 50 ms steps with one broadcast of the observation and reward from rank 0 per
step, as a split closed loop would need.

The best a 2-rank closed loop could do is ``python + integrate / 2 + overhead_2_ranks`` per action
(perfect balance, two free cores, nothing else added: no gathers of spike counts or weights);
``speedup_bound_2_ranks`` compares it with the one-process time, ``speedup_bound_any_number_of_ranks``
is the one-process time over its Python side (which no rank count shortens).  The load average is recorded: on a machine shared with other work the overhead is larger.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import machine, run_worker, timed_psolve, write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def closed_loop(episodes: int, seed: int) -> dict:
    from netpyne import sim

    from rsrp_sim.backends.netpyne.rstdp_cartpole import RSTDPCartPole, RSTDPConfig

    method = RSTDPCartPole(RSTDPConfig(episodes=episodes, episodes_per_iteration=min(episodes, 20), eval_episodes=0),
                           seed)
    state = method.init_state()
    method.net  # (built here, not timed below)
    wall, steps, load0, rec = 0.0, 0, os.getloadavg()[0], {}
    with timed_psolve(sim) as psolve_s:
        while steps == 0 or rec["episodes"] < episodes:
            t = time.perf_counter()
            state, rec = method.step(state)
            wall += time.perf_counter() - t
            steps = rec["env_steps"]
    model = method.model
    delays = [min(model["delay_ms"]), min(model["delay_ga2_ms"]), min(model["stim_delay_ms"]), 1.0]
    return {"episodes": int(rec["episodes"]), "actions": int(steps), "wall_s": round(wall, 3),
            "ms_per_action": round(1000 * wall / steps, 4),
            "integrate_ms_per_action": round(1000 * psolve_s[0] / steps, 4),
            "python_ms_per_action": round(1000 * (wall - psolve_s[0]) / steps, 4),
            "cells": method.net.n_cells, "plastic_synapses": method.net.n_plastic,
            "min_delay_ms": min(delays), "action_ms": float(model["action_ms"]), "dt_ms": float(model["dt"]),
            "load_average_1min_before": round(load0, 2), "load_average_1min_after": round(os.getloadavg()[0], 2)}


def overhead_worker(intervals: int, min_delay: float, action_ms: float, dt: float) -> int:
    """Part B on each rank: the cost of being split, per action interval, with no work to split."""
    from neuron import h

    from rsrp_sim.backends.netpyne import ranks

    pc = ranks.context()
    ranks.load_mechanisms(pc)
    h.load_file("stdrun.hoc")
    h.CVode().active(0)
    h.dt = dt
    rank, nhost = int(pc.id()), int(pc.nhost())
    cell = h.IntFire1()  # never fires: only the exchange machinery runs
    pc.set_gid2node(rank, rank)
    pc.cell(rank, h.NetCon(cell, None))
    ncs = [pc.gid_connect((rank + 1) % nhost, cell)] if nhost > 1 else []
    for nc in ncs:
        nc.delay, nc.weight[0] = min_delay, 0.0
    pc.set_maxstep(10)
    h.finitialize()
    obs = [0.01, -0.02, 0.03, -0.04, 1.0]
    pc.barrier()
    t0 = time.perf_counter()
    for k in range(intervals):
        pc.psolve(h.t + action_ms)
        obs = pc.py_broadcast(obs, 0) if nhost > 1 else obs
    wall = time.perf_counter() - t0
    if rank == 0:
        print("RESULT " + json.dumps({"ranks": nhost, "intervals": intervals,
                                      "overhead_ms_per_action": round(1000 * wall / intervals, 4),
                                      "wait_ms_per_action": round(1000 * float(pc.wait_time()) / intervals, 4),
                                      "exchanges_per_action": round(action_ms / min_delay, 2) if nhost > 1 else 0,
                                      "load_average_1min": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


def overhead(n: int, args, loop: dict) -> dict:
    return run_worker(__file__, n, ["--intervals", str(args.intervals), "--min-delay", str(loop["min_delay_ms"]),
                                    "--action-ms", str(loop["action_ms"]), "--dt", str(loop["dt_ms"])])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=40, help="closed-loop training episodes timed (default 40)")
    p.add_argument("--intervals", type=int, default=400, help="50 ms intervals of the overhead runs (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help="also write benchmarks/results/rstdp_ranks_cpu.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--min-delay", type=float, default=0.8, help=argparse.SUPPRESS)
    p.add_argument("--action-ms", type=float, default=50.0, help=argparse.SUPPRESS)
    p.add_argument("--dt", type=float, default=0.6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return overhead_worker(args.intervals, args.min_delay, args.action_ms, args.dt)
    loop = closed_loop(args.episodes, args.seed)
    one, two = overhead(1, args, loop), overhead(2, args, loop)
    added = two["overhead_ms_per_action"] - one["overhead_ms_per_action"]
    t1 = loop["ms_per_action"]
    best2 = loop["python_ms_per_action"] + loop["integrate_ms_per_action"] / 2 + added
    doc = {
        "benchmark": "rstdp_ranks",
        "what": "whether the R-STDP CartPole network gains from MPI ranks: the one-process closed loop split into "
                "integration (what ranks could share) and the Python side, and the measured cost of being split "
                "per 50 ms action (spike exchange every minimum delay + one broadcast)",
        "closed_loop_one_process": loop,
        "split_overhead": {"1_rank": one, "2_ranks": two, "added_ms_per_action_2_ranks": round(added, 4)},
        "best_case_ms_per_action_2_ranks": round(best2, 4),
        "speedup_bound_2_ranks": round(t1 / best2, 3),
        "speedup_bound_2_ranks_without_overhead": round(
            t1 / (loop["python_ms_per_action"] + loop["integrate_ms_per_action"] / 2), 3),
        "speedup_bound_any_number_of_ranks": round(t1 / loop["python_ms_per_action"], 3),
        "python_share_one_process": round(loop["python_ms_per_action"] / t1, 3),
        "machine": machine(("neuron", "netpyne", "mpi4py", "numpy")),
        "command": "python benchmarks/bench_rstdp_ranks.py " + " ".join(sys.argv[1:]),
    }
    print(write(doc, HERE / "results" / "rstdp_ranks_cpu.json" if args.save else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
