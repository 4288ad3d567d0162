"""Throughput and memory of ConnSNN populations on the JAX back-end (prints JSON).

Cases (each in its own process so peak memory is its own):
  * network only: one environment step (33 substeps) of a vmapped population, random inputs, with
    the ``dense`` (float32 matmul), ``bitpack`` (popcount in XLA) and ``fused`` (one kernel for all
    substeps) spike steps, at (1024, 256), (10240, 256) (no dense: minutes) and (272, 128);
  * closed loop: one CartPole generation chunk (every network plays until its first episode ends)
    through the evaluator's jitted rollout, at the cpu preset's shape and at (1024, 256);
  * generation: seconds per generation of the CartPole cpu preset (RSRP, 256 + 16 networks of
    128 neurons) with ``bitpack`` and ``fused``: the same generations (identical numbers), timed
    after the first (which compiles).

Speed-ups are ratios within this one run; the load average says how busy the machine was.

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
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        carry, y, nsp = step(nets, carry, obs)
        jax.block_until_ready(carry)
        times.append(time.perf_counter() - t0)
        spikes += nsp
    dt = sorted(times)[len(times) // 2]  # the median: robust to other work on a shared machine
    return {"case": "network", "pop": pop, "n_neurons": n, "substeps": c.substeps, "spike_impl": snn.spike_impl,
            "ms_per_env_step": dt * 1e3, "ms_min": min(times) * 1e3, "env_steps_per_s": pop / dt,
            "compile_s": compile_s, "spikes_checksum": int(spikes.sum()), "peak_rss_mb": peak_rss_mb()}


def _method(overrides: dict):
    from rsrp_sim.protocols.cartpole import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
    return cls(PROTOCOL.build_config("rsrp", "jax", "cpu", overrides), 0)


def case_rollout(pop: int, n: int, impl: str) -> dict:
    import jax
    import numpy as np

    from rsrp_sim.engine.population import Members

    m = _method({"pop_size": pop, "eval_size": 2, "chunk_size": pop, "generations": 1, "spike_impl": impl,
                 "model_overrides": {"n_neurons": n}})
    ev = m.evaluator
    state = m.init_state()
    p = state["search"].p
    key = jax.random.PRNGKey(1)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + v.shape) < v
             for i, (k, v) in enumerate(p.items())}
    members = Members(batched=masks, shared={}, n=pop)
    mean, scale = np.zeros(4, np.float32), np.ones(4, np.float32)
    args = (members, jax.random.PRNGKey(2), None, mean, scale)
    t0 = time.perf_counter()
    jax.block_until_ready(ev._train_fn(*args))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(ev._train_fn(*args))
    dt = time.perf_counter() - t0
    steps = int(out["steps"]) * pop
    return {"case": "closed_loop_chunk", "pop": pop, "n_neurons": n, "spike_impl": ev.snn.spike_impl,
            "loop_steps": int(out["steps"]), "env_steps": steps, "seconds": dt, "env_steps_per_s": steps / dt,
            "compile_s": compile_s, "fitness_checksum": float(np.asarray(out["fitness"]).sum()),
            "peak_rss_mb": peak_rss_mb()}


def case_generation(impl: str, gens: int) -> dict:
    """The CartPole cpu preset (RSRP): generations 2 .. gens + 1 timed (the first compiles)."""
    m = _method({"spike_impl": impl})
    state = m.init_state()
    t0 = time.perf_counter()
    state, rec = m.step(state)
    first = time.perf_counter() - t0
    rows = []
    for _ in range(gens):
        t0 = time.perf_counter()
        state, rec = m.step(state)
        rows.append({"seconds": time.perf_counter() - t0, "env_steps": rec["env_steps"],
                     "train_score": rec["train_score"], "eval_score": rec["eval_score"]})
    return {"case": "generation", "preset": "cpu", "spike_impl": m.evaluator.snn.spike_impl,
            "pop_size": m.config.pop_size, "eval_size": m.config.eval_size,
            "n_neurons": m.const.n_neurons, "first_generation_s": first,
            "seconds_per_generation": sum(r["seconds"] for r in rows) / len(rows), "generations": rows,
            "peak_rss_mb": peak_rss_mb()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, skip the (1024, 256) closed loop")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = p.parse_args()
    if args.case:
        kind, *rest = args.case.split(":")
        if kind == "network":
            res = case_network(int(rest[0]), int(rest[1]), rest[2], int(rest[3]))
        elif kind == "rollout":
            res = case_rollout(int(rest[0]), int(rest[1]), rest[2])
        else:
            res = case_generation(rest[0], int(rest[1]))
        print(json.dumps(res))
        return
    import jax

    reps = 3 if args.quick else 10
    impls = ("dense", "bitpack", "fused")
    cases = [f"network:1024:256:{i}:{reps}" for i in impls]
    cases += [f"network:10240:256:{i}:{max(2, reps // 3)}" for i in ("bitpack", "fused")]
    cases += [f"network:272:128:{i}:{reps}" for i in impls]
    cases += [f"rollout:256:128:{i}:0" for i in impls]
    cases += [f"generation:{i}:{2 if args.quick else 4}" for i in ("bitpack", "fused")]
    if not args.quick:
        cases += [f"rollout:1024:256:{i}:0" for i in ("bitpack", "fused")]
    results = []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for c in cases:
        out = subprocess.run([sys.executable, __file__, "--case", c], capture_output=True, text=True, env=env)
        if out.returncode:
            results.append({"case": c, "error": out.stderr.strip().splitlines()[-1]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    net = {}
    for x in results:
        if x.get("case") == "network":
            net.setdefault(f"{x['pop']}x{x['n_neurons']}", {})[x["spike_impl"]] = x
    ms = {shape: {impl: round(r["ms_per_env_step"], 2) for impl, r in rows.items()} for shape, rows in net.items()}
    over_bitpack = {shape: rows["bitpack"]["ms_per_env_step"] / rows["fused"]["ms_per_env_step"]
                    for shape, rows in net.items() if {"bitpack", "fused"} <= set(rows)}
    bitpack_over_dense = {shape: rows["dense"]["ms_per_env_step"] / rows["bitpack"]["ms_per_env_step"]
                          for shape, rows in net.items() if {"bitpack", "dense"} <= set(rows)}
    for shape, rows in net.items():  # every path must produce the same spikes
        sums = {impl: r["spikes_checksum"] for impl, r in rows.items()}
        assert len(set(sums.values())) == 1, f"spike paths disagree at {shape}: {sums}"
    gen = {x["spike_impl"]: x for x in results if x.get("case") == "generation"}
    generation = {}
    if {"bitpack", "fused"} <= set(gen):
        generation = {"seconds_per_generation": {k: gen[k]["seconds_per_generation"] for k in ("bitpack", "fused")},
                      "speedup_fused_over_bitpack": gen["bitpack"]["seconds_per_generation"] /
                      gen["fused"]["seconds_per_generation"],
                      "same_numbers": [{k: v for k, v in r.items() if k != "seconds"} for r in gen["bitpack"]["generations"]]
                      == [{k: v for k, v in r.items() if k != "seconds"} for r in gen["fused"]["generations"]]}
    doc = {"benchmark": "connsnn", "machine": {**machine(), "devices": [str(d) for d in jax.devices()]},
           "ms_per_env_step": ms, "speedup_fused_over_bitpack": over_bitpack,
           "speedup_bitpack_over_dense": bitpack_over_dense, "cartpole_cpu_generation": generation,
           "results": results}
    doc["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(write(doc, args.out))


if __name__ == "__main__":
    main()
