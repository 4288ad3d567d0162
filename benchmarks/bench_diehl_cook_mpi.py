"""stdp-dc (Diehl & Cook 2015 on NEURON) over MPI ranks: presentations/s and the communication share.

    python benchmarks/bench_diehl_cook_mpi.py [--sizes 400,1600] [--ranks 1,2] [--examples 12] [--save]

For every N_e and rank count: builds the 784-input network split over the ranks (NEURON's
ParallelContext; 1 rank = the plain one-process run) and presents ``--examples`` MNIST training
images as the method does while learning (normalisation, 350 ms + 150 ms rest, repeats on fewer than
5 spikes, STDP and theta on).  Per rank it records the wall time, NEURON's time waiting in the spike
exchange (``pc.wait_time()``: the MPI collective and any load imbalance) and the time in the
per-presentation all-gathers of spike counts; the communication share is their sum over the wall
time.  The final weights, theta and spike counts are hashed: every rank count must give the same.

The serial part (work every rank repeats: the 784 Poisson inputs, the Python side of a presentation)
is measured as the one-rank time per presentation of a network of ``--overhead-n-exc`` cells.  The
16-rank figure is an ESTIMATE for one larger machine with 16 free cores, not a measurement:
``t16 = serial + (t1 - serial) / 16 + exchanges x latency16``, with the 2-rank time per spike exchange
scaled by log2(16) / log2(2) (a tree all-gather).  On this 2-core machine shared with other work the
2-rank timings are noisy (the load average is recorded); compare ratios within one run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(args) -> int:
    """One rank count (started by the orchestrator, under mpiexec for several ranks)."""
    import numpy as np

    from bench_diehl_cook import mnist_like
    from rsrp_sim.backends.netpyne import ranks
    from rsrp_sim.backends.netpyne.dc_network import DCNetwork
    from rsrp_sim.core import models

    pc = ranks.context()
    model = models.load("diehl_cook")
    x, scale, source = mnist_like(args.data_dir, args.examples)
    unit = float(model["input"]["rate_full_scale_hz"]) / scale
    exchange_ms = float(model["weights"]["inh_to_exc_delay_ms"])
    out = []
    for n_exc in (int(s) for s in args.sizes.split(",")):
        load0 = os.getloadavg()[0]
        pc.barrier()
        t0 = time.perf_counter()
        net = DCNetwork(model, x.shape[1], n_exc, args.seed)
        net.restart((args.seed, 1))
        pc.barrier()
        t_build = time.perf_counter() - t0
        wait0, comm0, step0 = float(pc.wait_time()), ranks.COMM["s"], float(pc.step_time())
        shown, counts_all = 0, []
        pc.barrier()
        t0 = time.perf_counter()
        for k in range(len(x)):
            counts, reps = net.present(x[k] * unit, learning=True)
            shown += reps
            counts_all.append(counts)
        wall = time.perf_counter() - t0
        mine = {"wall_s": wall, "wait_s": float(pc.wait_time()) - wait0, "gather_s": ranks.COMM["s"] - comm0,
                "integrate_s": float(pc.step_time()) - step0}
        mine["other_s"] = wall - mine["wait_s"] - mine["gather_s"] - mine["integrate_s"]  # Python side, barriers
        per_rank = ranks.allgather(pc, mine)
        digest = hashlib.sha1(net.weights.tobytes() + net.read_theta().tobytes() +
                              np.asarray(counts_all).tobytes()).hexdigest()
        if net.rank == 0:
            comm = [(r["wait_s"] + r["gather_s"]) / r["wall_s"] for r in per_rank]
            out.append({"n_exc": n_exc, "ranks": net.nhost, "plastic_synapses": n_exc * net.n_in,
                        "lateral_netcons": n_exc * (n_exc - 1), "examples": len(x), "presentations": shown,
                        "wall_s": round(wall, 3), "presentations_per_s": round(shown / wall, 3),
                        "s_per_presentation": round(wall / shown, 4), "build_s": round(t_build, 2),
                        "spike_exchanges": int(round(shown * (float(model["input"]["present_ms"]) +
                                                              float(model["input"]["rest_ms"])) / exchange_ms)),
                        "communication_share_mean": round(sum(comm) / len(comm), 4),
                        "communication_share_max": round(max(comm), 4),
                        "per_rank": [{k: round(v, 3) for k, v in r.items()} for r in per_rank],
                        "mean_spikes_per_presentation": round(float(np.sum(counts_all)) / len(x), 2),
                        "result_sha1": digest[:16], "load_average_1min_before": round(load0, 2),
                        "load_average_1min_after": round(os.getloadavg()[0], 2), "data": source})
        net.close()
    if int(pc.id()) == 0:
        print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_ranks(n: int, argv: list[str]) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *argv]
    if n > 1:
        from rsrp_sim.protocols.launch import mpiexec_command

        cmd = mpiexec_command(n, cmd)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"{n} rank(s) failed (exit {p.returncode}): {p.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="400,1600", help="N_e values (default 400,1600)")
    p.add_argument("--ranks", default="1,2", help="rank counts (default 1,2)")
    p.add_argument("--examples", type=int, default=12, help="training images per size (default 12)")
    p.add_argument("--overhead-n-exc", type=int, default=2, help="N_e of the one-rank run that measures the "
                                                                  "serial part (default 2)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", action="store_true", help="also write benchmarks/results/diehl_cook_mpi_cpu.json")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    common = ["--examples", str(args.examples), "--seed", str(args.seed)] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    results = []
    for n in (int(s) for s in args.ranks.split(",")):
        results += run_ranks(n, ["--sizes", args.sizes, *common])
    overhead = run_ranks(1, ["--sizes", str(args.overhead_n_exc), *common])[0]
    serial = overhead["s_per_presentation"]
    sizes = [int(s) for s in args.sizes.split(",")]
    by = {(r["n_exc"], r["ranks"]): r for r in results}
    summary, estimates = [], []
    for n_exc in sizes:
        one = by.get((n_exc, 1))
        row = {"n_exc": n_exc}
        for r in sorted(k[1] for k in by if k[0] == n_exc):
            row[f"presentations_per_s_{r}_ranks"] = by[(n_exc, r)]["presentations_per_s"]
            row[f"communication_share_{r}_ranks"] = by[(n_exc, r)]["communication_share_mean"]
        if one is not None:
            row["identical_results_over_rank_counts"] = len({by[k]["result_sha1"] for k in by if k[0] == n_exc}) == 1
            two = by.get((n_exc, 2))
            if two is not None:
                row["speedup_2_ranks"] = round(two["presentations_per_s"] / one["presentations_per_s"], 3)
                t1 = one["s_per_presentation"]
                per_exchange = (two["communication_share_mean"] * two["wall_s"]) / max(two["spike_exchanges"], 1)
                exchanges = two["spike_exchanges"] / two["presentations"]
                t16 = serial + max(t1 - serial, 0.0) / 16 + exchanges * per_exchange * math.log2(16)
                estimates.append({"n_exc": n_exc, "ESTIMATE": True, "ranks": 16,
                                  "presentations_per_s": round(1 / t16, 2), "speedup_over_1_rank": round(t1 / t16, 2),
                                  "communication_share": round(exchanges * per_exchange * math.log2(16) / t16, 3),
                                  "from": {"t1_s": t1, "serial_s": serial,
                                           "comm_s_per_exchange_2_ranks": round(per_exchange, 7),
                                           "exchanges_per_presentation": exchanges}})
        summary.append(row)
    doc = {
        "benchmark": "diehl_cook_mpi",
        "what": "stdp-dc training presentations per second over MPI ranks (NEURON ParallelContext + Open MPI on one "
                "machine); communication share = (spike-exchange wait + count all-gathers) / wall, mean over ranks",
        "summary": summary,
        "results": results,
        "serial_part": {"n_exc": args.overhead_n_exc, "s_per_presentation": serial,
                        "what": "one rank, the work every rank repeats (inputs, Python side)"},
        "estimate_16_ranks_one_larger_machine": {
            "ESTIMATE": "not measured: 16 free cores assumed; t16 = serial + (t1 - serial)/16 + exchanges x "
                        "(2-rank time per exchange) x log2(16)",
            "values": estimates},
        "machine": machine(("neuron", "mpi4py", "numpy")),
        "mpi": subprocess.run(["mpiexec", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        if any((Path(d) / "mpiexec").exists() for d in os.environ.get("PATH", "").split(os.pathsep)) else None,
        "command": "python benchmarks/bench_diehl_cook_mpi.py " + " ".join(sys.argv[1:]),
    }
    print(write(doc, HERE / "results" / "diehl_cook_mpi_cpu.json" if args.save else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
