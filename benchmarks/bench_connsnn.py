"""Throughput and memory of ConnSNN populations on the JAX back-end (prints JSON).

Cases (each in its own process so peak memory is its own):
  * network only: one environment step (33 substeps) of a vmapped population, random inputs, with
    the ``dense`` (float32 matmul), ``bitpack`` (popcount in XLA) and ``fused`` (one kernel for all
    substeps) spike steps, at (1024, 256), (10240, 256) (no dense: minutes) and (272, 128);
  * closed loop: one CartPole generation chunk (every network plays until its first episode ends)
    through the evaluator's jitted rollout, at the cpu preset's shape and at (1024, 256);
  * pair: bitpack and fused steps alternated in one process at (1024, 256) and (10240, 256), so
    their ratio is measured under the same conditions;
  * generation: seconds per generation of the CartPole cpu preset (RSRP, 256 + 16 networks of
    128 neurons) with ``bitpack`` and ``fused``, generation by generation in turn: the same
    generations (identical numbers), timed after the first (which compiles).

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


def case_pair(pop: int, n: int, reps: int) -> dict:
    """bitpack and fused steps alternated in one process: their ratio under the same conditions."""
    import jax

    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n})
    key = jax.random.PRNGKey(0)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + s) < 0.5
             for i, (k, s) in enumerate(c.param_shapes().items())}
    obs = jax.random.normal(key, (pop, 4))
    runs = {}
    for impl in ("bitpack", "fused"):
        snn = SNN(c, impl)
        nets = jax.jit(jax.vmap(snn.prepare))(masks)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        step = jax.jit(jax.vmap(snn.step))
        jax.block_until_ready(step(nets, carry, obs))
        runs[impl] = [step, nets, carry, [], 0, snn.spike_impl]
    for _ in range(reps):
        for impl, r in runs.items():
            t0 = time.perf_counter()
            r[2], y, nsp = r[0](r[1], r[2], obs)
            jax.block_until_ready(r[2])
            r[3].append(time.perf_counter() - t0)
            r[4] += int(nsp.sum())
    med = {impl: sorted(r[3])[len(r[3]) // 2] * 1e3 for impl, r in runs.items()}
    assert runs["bitpack"][4] == runs["fused"][4], "paths disagree"
    return {"case": "pair", "pop": pop, "n_neurons": n, "reps": reps, "ran": {k: r[5] for k, r in runs.items()},
            "ms_per_env_step": med, "speedup_fused_over_bitpack": med["bitpack"] / med["fused"],
            "spikes_checksum": runs["fused"][4]}


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


def case_generation(gens: int) -> dict:
    """The CartPole cpu preset (RSRP) with bitpack and with fused, generation by generation in
    turn (the same conditions for both); generations 2 .. gens + 1 timed (the first compiles)."""
    ms = {impl: _method({"spike_impl": impl}) for impl in ("bitpack", "fused")}
    states = {impl: m.init_state() for impl, m in ms.items()}
    out = {impl: {"spike_impl": m.evaluator.snn.spike_impl, "generations": []} for impl, m in ms.items()}
    for g in range(gens + 1):
        for impl, m in ms.items():
            t0 = time.perf_counter()
            states[impl], rec = m.step(states[impl])
            dt = time.perf_counter() - t0
            if g == 0:
                out[impl]["first_generation_s"] = dt
            else:
                out[impl]["generations"].append({"seconds": dt, "env_steps": rec["env_steps"],
                                                 "train_score": rec["train_score"], "eval_score": rec["eval_score"]})
    for impl in out:
        rows = out[impl]["generations"]
        out[impl]["seconds_per_generation"] = sum(r["seconds"] for r in rows) / len(rows)
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in out[i]["generations"]] for i in out]
    m = ms["fused"]
    return {"case": "generation", "preset": "cpu", "pop_size": m.config.pop_size, "eval_size": m.config.eval_size,
            "n_neurons": m.const.n_neurons, **out, "same_numbers": strip[0] == strip[1],
            "speedup_fused_over_bitpack": out["bitpack"]["seconds_per_generation"] /
            out["fused"]["seconds_per_generation"], "peak_rss_mb": peak_rss_mb()}


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
        elif kind == "pair":
            res = case_pair(int(rest[0]), int(rest[1]), int(rest[2]))
        else:
            res = case_generation(int(rest[0]))
        print(json.dumps(res))
        return
    import jax

    load_start = round(os.getloadavg()[0], 2)
    reps = 3 if args.quick else 10
    impls = ("dense", "bitpack", "fused")
    cases = [f"network:1024:256:{i}:{reps}" for i in impls]
    cases += [f"network:10240:256:{i}:{max(2, reps // 3)}" for i in ("bitpack", "fused")]
    cases += [f"network:272:128:{i}:{reps}" for i in impls]
    cases += [f"rollout:256:128:{i}:0" for i in impls]
    cases += [f"pair:{pop}:256:{reps}" for pop in (1024, 10240)]
    cases += [f"generation:{2 if args.quick else 4}"]
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
    alternated = {f"{x['pop']}x{x['n_neurons']}": x["speedup_fused_over_bitpack"] for x in results
                  if x.get("case") == "pair"}
    bitpack_over_dense = {shape: rows["dense"]["ms_per_env_step"] / rows["bitpack"]["ms_per_env_step"]
                          for shape, rows in net.items() if {"bitpack", "dense"} <= set(rows)}
    for shape, rows in net.items():  # every path must produce the same spikes
        sums = {impl: r["spikes_checksum"] for impl, r in rows.items()}
        assert len(set(sums.values())) == 1, f"spike paths disagree at {shape}: {sums}"
    gen = next((x for x in results if x.get("case") == "generation" and "error" not in x), None)
    generation = {}
    if gen:
        generation = {"seconds_per_generation": {k: gen[k]["seconds_per_generation"] for k in ("bitpack", "fused")},
                      "speedup_fused_over_bitpack": gen["speedup_fused_over_bitpack"],
                      "same_numbers": gen["same_numbers"]}
    doc = {"benchmark": "connsnn", "machine": {**machine(), "devices": [str(d) for d in jax.devices()]},
           "ms_per_env_step": ms, "speedup_fused_over_bitpack": over_bitpack,
           "speedup_fused_over_bitpack_alternated": alternated,
           "speedup_bitpack_over_dense": bitpack_over_dense, "cartpole_cpu_generation": generation,
           "results": results}
    doc["machine"]["load_average_1min_start"] = load_start
    doc["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(write(doc, args.out))


if __name__ == "__main__":
    main()
