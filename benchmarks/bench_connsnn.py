"""Throughput and memory of ConnSNN populations on the JAX back-end (prints JSON).

Cases (each in its own process so peak memory is its own):
  * network only: one environment step (33 substeps) of a vmapped population, random inputs,
    ``bitpack`` (popcount) vs ``dense`` (float32 matmul) spike product;
  * closed loop: one CartPole generation chunk (every network plays until its first episode ends)
    through the trainer's jitted rollout, at the cpu preset's shape and at (1024, 256).

    python benchmarks/bench_connsnn.py [--quick] [--out benchmarks/results/connsnn_<platform>.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, write


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def case_network(pop: int, n: int, impl: str, reps: int) -> dict:
    import jax

    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n})
    snn = SNN(c, impl)
    key = jax.random.PRNGKey(0)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + s) < 0.5
             for i, (k, s) in enumerate(c.param_shapes().items())}
    nets = jax.jit(jax.vmap(snn.prepare))(masks)
    carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
    obs = jax.random.normal(key, (pop, 4))
    step = jax.jit(jax.vmap(snn.step))
    t0 = time.perf_counter()
    out = step(nets, carry, obs)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    spikes = 0
    t0 = time.perf_counter()
    for _ in range(reps):
        carry, y, nsp = step(nets, carry, obs)
        spikes += nsp
    jax.block_until_ready(carry)
    dt = (time.perf_counter() - t0) / reps
    return {"case": "network", "pop": pop, "n_neurons": n, "substeps": c.substeps, "spike_impl": impl,
            "ms_per_env_step": dt * 1e3, "env_steps_per_s": pop / dt, "compile_s": compile_s,
            "spikes_checksum": int(spikes.sum()), "peak_rss_mb": peak_rss_mb()}


def case_rollout(pop: int, n: int, impl: str) -> dict:
    import jax

    from rsrp_sim.backends.jax.rl import RSRPConfig, RSRPTrainer

    cfg = RSRPConfig(pop_size=pop + 2, eval_size=2, chunk_size=pop, generations=1, spike_impl=impl,
                     model_overrides={"n_neurons": n})
    m = RSRPTrainer(cfg, 0)
    state = m.init_state()
    mean, scale = m._norm_arrays(state["norm"])
    args = (state["params"], state["extra"], jax.random.PRNGKey(1), None, mean, scale)
    t0 = time.perf_counter()
    jax.block_until_ready(m._train_fn(*args))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(m._train_fn(*args))
    dt = time.perf_counter() - t0
    steps = int(out["steps"]) * pop
    return {"case": "closed_loop_chunk", "pop": pop, "n_neurons": n, "spike_impl": impl, "loop_steps": int(out["steps"]),
            "env_steps": steps, "seconds": dt, "env_steps_per_s": steps / dt, "compile_s": compile_s,
            "peak_rss_mb": peak_rss_mb()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, skip the (1024, 256) closed loop")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = p.parse_args()
    if args.case:
        kind, pop, n, impl, reps = args.case.split(":")
        res = case_network(int(pop), int(n), impl, int(reps)) if kind == "network" else \
            case_rollout(int(pop), int(n), impl)
        print(json.dumps(res))
        return
    import jax

    reps = 3 if args.quick else 10
    cases = [f"network:1024:256:{i}:{reps}" for i in ("bitpack", "dense")]
    cases += [f"network:272:128:{i}:{reps}" for i in ("bitpack", "dense")]
    cases += [f"rollout:256:128:{i}:0" for i in ("bitpack", "dense")]
    if not args.quick:
        cases += ["rollout:1024:256:bitpack:0"]
    results = []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for c in cases:
        out = subprocess.run([sys.executable, __file__, "--case", c], capture_output=True, text=True, env=env)
        if out.returncode:
            results.append({"case": c, "error": out.stderr.strip().splitlines()[-1]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    speedup = {}
    for pop, n in ((1024, 256), (272, 128)):
        r = {x["spike_impl"]: x for x in results if x.get("case") == "network" and x["pop"] == pop}
        if "bitpack" in r and "dense" in r:
            speedup[f"network_{pop}x{n}"] = r["dense"]["ms_per_env_step"] / r["bitpack"]["ms_per_env_step"]
            assert r["dense"]["spikes_checksum"] == r["bitpack"]["spikes_checksum"], "paths disagree"
    doc = {"benchmark": "connsnn", "machine": {**machine(), "devices": [str(d) for d in jax.devices()]},
           "results": results, "speedup_bitpack_over_dense": speedup}
    print(write(doc, args.out))


if __name__ == "__main__":
    main()
