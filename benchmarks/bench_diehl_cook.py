"""Throughput of the stdp-dc (Diehl & Cook 2015) network on NEURON; prints one JSON object.

    python benchmarks/bench_diehl_cook.py [--sizes 100,400] [--examples 40] [--data-dir DIR] [--save]

For each N_e: builds the 784-input network (timed separately) and presents ``--examples`` MNIST
training images exactly as the method does while learning (weight normalisation, 350 ms + 150 ms
rest, intensity raised and the example repeated on fewer than 5 spikes, STDP and theta on).
Reports presentations per second (each 500 ms of simulated time; repeats count as presentations)
and examples per second.  Without MNIST files (``--data-dir``, $RSRP_SIM_DATA, the user cache, or
../shared/data/mnist) it falls back to digits upscaled to 28x28.  --save writes
benchmarks/results/diehl_cook_cpu.json.  The machine's load average is recorded: other work on the
machine slows this down.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import machine, write


def mnist_like(data_dir, n):
    import numpy as np

    from rsrp_sim import data
    from rsrp_sim.infra.errors import UserError

    for d in ([data_dir] if data_dir else []) + [None, Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]:
        try:
            ds = data.load("mnist", d)
            return ds.x_train[:n].reshape(n, -1), ds.scale, f"mnist ({ds.source.split(';')[0]})"
        except UserError:
            continue
    ds = data.load("digits")
    x = ds.x_train[:n, :, :, 0].astype(float)
    big = np.zeros((n, 28, 28))
    big[:, 2:26, 2:26] = np.kron(x, np.ones((3, 3)))  # 8x8 -> 24x24, centred in 28x28
    return big.reshape(n, -1), ds.scale, "digits upscaled to 28x28 (no MNIST files found)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,400", help="N_e values (default 100,400)")
    p.add_argument("--examples", type=int, default=40, help="training images presented per size (default 40)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help="also write benchmarks/results/diehl_cook_cpu.json")
    args = p.parse_args(argv)

    from rsrp_sim.backends.netpyne import mechanisms

    t0 = time.perf_counter()
    mechanisms.load()
    t_mech = time.perf_counter() - t0

    from rsrp_sim.core import models
    from rsrp_sim.backends.netpyne.dc_network import DCNetwork

    model = models.load("diehl_cook")
    x, scale, source = mnist_like(args.data_dir, args.examples)
    unit = float(model["input"]["rate_full_scale_hz"]) / scale
    period_ms = float(model["input"]["present_ms"]) + float(model["input"]["rest_ms"])
    results = []
    for n_exc in (int(s) for s in args.sizes.split(",")):
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        net = DCNetwork(model, x.shape[1], n_exc, args.seed)
        net.restart((args.seed, 1))
        t_build = time.perf_counter() - t0
        shown, spikes = 0, 0.0
        t0 = time.perf_counter()
        for k in range(len(x)):
            counts, reps = net.present(x[k] * unit, learning=True)
            shown += reps
            spikes += counts.sum()
        wall = time.perf_counter() - t0
        results.append({"n_exc": n_exc, "n_inputs": net.n_in, "plastic_synapses": n_exc * net.n_in,
                        "examples": len(x), "presentations": shown, "wall_s": round(wall, 3),
                        "presentations_per_s": round(shown / wall, 3), "examples_per_s": round(len(x) / wall, 3),
                        "simulated_s_per_wall_s": round(shown * period_ms / 1000 / wall, 3),
                        "mean_spikes_per_presentation": round(spikes / shown, 2), "build_s": round(t_build, 3),
                        "load_average_1min_before": round(load0, 2),
                        "load_average_1min_after": round(os.getloadavg()[0], 2)})
        net.close()
    out = {
        "benchmark": "diehl_cook_presentations",
        "what": f"training presentations ({model['input']['present_ms']:g} ms + {model['input']['rest_ms']:g} ms rest, "
                f"dt {model['dt']:g} ms, STDP and theta on) per second",
        "data": source,
        "results": results,
        "mechanisms_load_s": round(t_mech, 3),
        "seed": args.seed,
        "machine": machine(("neuron", "netpyne", "numpy")),  # its load average: other work slows this
    }
    print(write(out, Path(__file__).resolve().parent / "results" / "diehl_cook_cpu.json" if args.save else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
