"""Generations per second of RSRP on CartPole in 1 and 2 processes, and the communication share (JSON).

Three layouts of the same run (the cpu preset's 256 + 16 networks of 128 neurons; the numbers are
identical in all three): one process with one CPU device, one process with two CPU devices (XLA
splits the population in-process), and two processes with one device each (jax.distributed, gloo
collectives over 127.0.0.1, started by ``rsrp-sim launch --local 2``).  The communication share is
the time of the run's collectives -- the fitness all-gather, the gathered block sums of the
gradient, the observation sums -- measured on their own at the run's sizes, over the generation's
time.  On a 2-core machine the point is correctness and overhead, not speed-up: two processes share
the same two cores.

    python benchmarks/bench_distributed.py [--generations 4] [--out benchmarks/results/distributed_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, write

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
from rsrp_sim.infra import distributed
distributed.initialize()
import jax, jax.numpy as jnp, numpy as np
from rsrp_sim.protocols.cartpole import PROTOCOL
gens = int(sys.argv[1])
cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
m = cls(PROTOCOL.build_config("rsrp", "jax", "cpu", {}), 0)
state = m.init_state()
state, _ = m.step(state)  # compiles
times, evals = [], []
for _ in range(gens):
    t = time.perf_counter()
    state, rec = m.step(state)
    times.append(time.perf_counter() - t)
    evals.append(rec["eval_score"])
# the collectives alone, at this run's sizes
lay = m.layout
n_params = sum(int(np.prod(s)) for s in m.const.param_shapes().values())
blocks = lay.blocks(lay.chunk)
gather = jax.jit(lambda x: distributed.replicate(x))
fit = distributed.shard_members(jnp.zeros(lay.chunk, jnp.float32), lay.chunk)
part = distributed.shard_members(jnp.zeros((blocks, n_params), jnp.float32), blocks) if blocks % jax.device_count() == 0 else jnp.zeros((blocks, n_params))
jax.block_until_ready((gather(fit), gather(part)))
reps = 20
t = time.perf_counter()
for _ in range(reps):
    jax.block_until_ready((gather(fit), gather(part)))
comm = (time.perf_counter() - t) / reps * (lay.n_chunks + 1)  # per chunk and for the update
if distributed.is_writer():
    print("RESULT" + json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                                 "seconds_per_generation": float(np.mean(times)), "evals": evals,
                                 "collectives_s_per_generation": comm, "n_params": n_params, "blocks": blocks}))
"""


def run(layout: str, gens: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    env.pop("XLA_FLAGS", None)
    script = [sys.executable, "-c", CHILD, str(gens)]
    if layout == "1x2":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    if layout == "2x1":
        script = [sys.executable, "-m", "rsrp_sim", "launch", "--local", "2", "--", *script]
    t0 = time.perf_counter()
    p = subprocess.run(script, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"{layout} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.split("RESULT", 1)[1].splitlines()[0])
    out.update(layout=layout, process_wall_s=time.perf_counter() - t0,
               generations_per_s=1.0 / out["seconds_per_generation"],
               communication_share=out["collectives_s_per_generation"] / out["seconds_per_generation"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    doc = {"benchmark": "bench_distributed", "machine": machine(),
           "runs": [run(layout, args.generations) for layout in ("1x1", "1x2", "2x1")]}
    doc["same_numbers"] = len({json.dumps(r["evals"]) for r in doc["runs"]}) == 1
    doc["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(write(doc, args.out))


if __name__ == "__main__":
    sys.exit(main())
