"""stdp-dc (Diehl & Cook 2015 on NEURON) over MPI ranks: presentations/s and the communication share.

    python benchmarks/bench_diehl_cook_mpi.py [--sizes 400,1600] [--ranks 1,2] [--examples 12] [--save]

For every N_e and rank count: builds the 784-input network split over the ranks (NEURON's
ParallelContext; 1 rank = the plain one-process run) and presents ``--examples`` MNIST training
images as the method does while learning (normalisation, 350 ms + 150 ms rest, repeats on fewer than
5 spikes, STDP and theta on).  Per rank it records the wall time, NEURON's time waiting in the spike
exchange (``pc.wait_time()``: the MPI collective and any load imbalance) and the time in the
per-presentation all-gathers of spike counts; the communication share is their sum over the wall
time.  The final weights, theta and spike counts are hashed: every rank count must give the same.

A one-process run of N_e / 2 cells measures what each of 2 ranks computes; with the exchange cost
it gives the 2-rank time on two cores of their own (``derived_2_free_cores``, derived from those two
measurements, not measured as such).  The serial part (work every rank repeats: the 784 Poisson inputs, the Python side of a presentation)
is measured as the one-rank time per presentation of a network of ``--overhead-n-exc`` cells, and
the cost of one spike exchange as the median extra time of a 1 ms ``psolve`` (two steps, one exchange)
of an idle 2-rank network over a 1-rank one.  The 16-rank figure is an ESTIMATE for one larger
machine with 16 free cores, not a measurement:
``t16 = serial + (t1 - serial) / 16 + exchanges x exchange_cost x log2(16)`` (an all-gather's latency
grows with log2 of the ranks).  The derived figures use the one-process runs' CPU seconds (the wall
time of a core of its own, less sensitive to other work on the machine than wall time).  On a machine shared with other work the multi-rank timings suffer
most: each exchange needs every rank running at once (the load average is recorded).
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

from _common import machine, run_worker, write

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
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(len(x)):
            counts, reps = net.present(x[k] * unit, learning=True)
            shown += reps
            counts_all.append(counts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        mine = {"wall_s": wall, "cpu_s": cpu, "wait_s": float(pc.wait_time()) - wait0, "gather_s": ranks.COMM["s"] - comm0,
                "integrate_s": float(pc.step_time()) - step0}
        mine["other_s"] = wall - mine["wait_s"] - mine["gather_s"] - mine["integrate_s"]  # Python side, barriers
        # (cpu_s: this process's CPU time; with one rank it is the wall time on a core of its own, whatever
        # else runs on the machine; with several it also counts MPI's busy waiting)
        per_rank = ranks.allgather(pc, mine)
        digest = hashlib.sha1(net.weights.tobytes() + net.read_theta().tobytes() +
                              np.asarray(counts_all).tobytes()).hexdigest()
        if net.rank == 0:
            comm = [(r["wait_s"] + r["gather_s"]) / r["wall_s"] for r in per_rank]
            out.append({"n_exc": n_exc, "ranks": net.nhost, "plastic_synapses": n_exc * net.n_in,
                        "lateral_netcons": n_exc * (n_exc - 1), "examples": len(x), "presentations": shown,
                        "wall_s": round(wall, 3), "presentations_per_s": round(shown / wall, 3),
                        "s_per_presentation": round(wall / shown, 4),
                        "cpu_s_per_presentation": round(cpu / shown, 4), "build_s": round(t_build, 2),
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


def latency_worker(intervals: int) -> int:
    """Per-interval times of 1 ms psolves of an idle network (one silent cell per rank, connected across
    ranks with a 1 ms delay: one spike exchange per interval)."""
    import numpy as np
    from neuron import h

    from rsrp_sim.backends.netpyne import ranks

    pc = ranks.context()
    h.load_file("stdrun.hoc")
    h.CVode().active(0)
    h.dt = 0.5
    rank, nhost = int(pc.id()), int(pc.nhost())
    cell = h.IntFire1()
    pc.set_gid2node(rank, rank)
    pc.cell(rank, h.NetCon(cell, None))
    nc = pc.gid_connect((rank + 1) % nhost, cell)
    nc.delay = 1.0
    pc.set_maxstep(10)
    h.finitialize()
    ts = np.empty(intervals)
    pc.barrier()
    for k in range(intervals):
        t0 = time.perf_counter()
        pc.psolve(h.t + 1.0)
        ts[k] = time.perf_counter() - t0
    if rank == 0:
        print("RESULT " + json.dumps([{"ranks": nhost, "median_us": round(float(np.median(ts)) * 1e6, 2),
                                       "mean_us": round(float(ts.mean()) * 1e6, 2),
                                       "p90_us": round(float(np.percentile(ts, 90)) * 1e6, 2)}]), flush=True)
    return 0


def run_ranks(n: int, argv: list[str]) -> list[dict]:
    return run_worker(__file__, n, argv)


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
    p.add_argument("--latency", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--save", action="store_true", help="also write benchmarks/results/diehl_cook_mpi_cpu.json")
    args = p.parse_args(argv)
    if args.worker:
        return latency_worker(args.latency) if args.latency else worker(args)
    common = ["--examples", str(args.examples), "--seed", str(args.seed)] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    results = []
    for n in (int(s) for s in args.ranks.split(",")):
        results += run_ranks(n, ["--sizes", args.sizes, *common])
    sizes = [int(s) for s in args.sizes.split(",")]
    # one process with half the cells: what each of 2 ranks computes, without sharing the cores with the other
    halves = {r["n_exc"]: r for r in run_ranks(1, ["--sizes", ",".join(str(n // 2) for n in sizes), *common])}
    overhead = run_ranks(1, ["--sizes", str(args.overhead_n_exc), *common])[0]
    serial = overhead["cpu_s_per_presentation"]
    latency = {n: run_ranks(n, ["--latency", "3000"])[0] for n in (1, 2)}
    exchange_s = max(latency[2]["median_us"] - latency[1]["median_us"], 0.0) * 1e-6
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
                row["measured_wait_s_per_exchange_2_ranks"] = round(
                    two["communication_share_mean"] * two["wall_s"] / max(two["spike_exchanges"], 1), 7)
            t1 = one["cpu_s_per_presentation"]  # (CPU seconds: a core of its own, whatever the machine's load)
            exchanges = one["spike_exchanges"] / one["presentations"]
            half = halves.get(n_exc // 2)
            if half is not None:  # DERIVED from measurements: 2 ranks on 2 cores of their own
                t2 = half["cpu_s_per_presentation"] + exchanges * exchange_s
                row["derived_2_free_cores"] = {
                    "presentations_per_s": round(1 / t2, 3), "speedup": round(t1 / t2, 3),
                    "communication_share": round(exchanges * exchange_s / t2, 4),
                    "from": f"one process with N_e = {n_exc // 2} ({half['cpu_s_per_presentation']} CPU s per "
                            f"presentation; N_e = {n_exc}: {t1}) + {exchanges:g} exchanges x {exchange_s:.3g} s"}
            comm16 = exchanges * exchange_s * math.log2(16)
            t16 = serial + max(t1 - serial, 0.0) / 16 + comm16
            estimates.append({"n_exc": n_exc, "ESTIMATE": True, "ranks": 16,
                              "presentations_per_s": round(1 / t16, 2), "speedup_over_1_rank": round(t1 / t16, 2),
                              "communication_share": round(comm16 / t16, 3),
                              "from": {"t1_s": t1, "serial_s": serial, "exchange_s_2_ranks": exchange_s,
                                       "exchanges_per_presentation": exchanges}})
        summary.append(row)
    doc = {
        "benchmark": "diehl_cook_mpi",
        "what": "stdp-dc training presentations per second over MPI ranks (NEURON ParallelContext + Open MPI on one "
                "machine); communication share = (spike-exchange wait + count all-gathers) / wall, mean over ranks",
        "summary": summary,
        "results": results,
        "half_networks_one_process": list(halves.values()),
        "serial_part": {"n_exc": args.overhead_n_exc, "s_per_presentation": serial,
                        "what": "one rank, the work every rank repeats (inputs, Python side)"},
        "spike_exchange": {"per_1ms_psolve_idle_network": latency, "exchange_s_2_ranks": exchange_s,
                           "what": "median extra time of one exchange (2 ranks over 1), idle network"},
        "estimate_16_ranks_one_larger_machine": {
            "ESTIMATE": "not measured: 16 free cores assumed; t16 = serial + (t1 - serial)/16 + exchanges x "
                        "exchange_s_2_ranks x log2(16)",
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
