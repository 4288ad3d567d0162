"""GPU evidence for the fused spike step (the Pallas kernel): bit identity on the GPU, then speed.

One script, a few minutes on one GPU; the JSON is rewritten after every part, so a run cut short
still leaves what it measured.

1. ``identity``: spike rasters and state bits of ``fused`` (Pallas, GPU) against ``bitpack`` and
   ``dense`` on the GPU and against ``bitpack`` on the CPU, for three network shapes.
2. ``pairing``: which multiply-add pairing of the Pallas kernel gives the GPU ``bitpack`` path's
   state bits (XLA's GPU compiler pairs them its own way; the kernel's default pairing is the one
   XLA's CPU compiler uses).  If the default is not among the matches, set
   ``rsrp_sim.backends.jax.kernels.gpu.DEFAULT_PATTERN`` to a match.
3. ``network``: ms per environment step of one population step at (10240, 256), bitpack vs fused,
   and the kernel with 1, 2, 4 and 8 warps per network.
4. ``cartpole_paper``: the CartPole paper preset (10112 + 128 networks of 256 neurons) with bitpack
   and fused: env steps/s over the generations after the first (which compiles), same numbers?

    bash benchmarks/gpu_setup.sh install      # an offline GPU box: what rsrp_sim needs beside jax
    python benchmarks/gpu_kernels.py [--generations 4] [--budget-s 420] [--out benchmarks/results]

About five minutes on an H100/H200.  Writes ``<out>/gpu_kernels_<device>.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402


def _bits(tree):
    import numpy as np

    return {k: np.asarray(v).view(np.uint8).tobytes() for k, v in tree.items()}


def simulate(snn, masks, key, inputs, device=None):
    """States after the steps, the outputs, and the raster of every substep."""
    import jax
    import numpy as np

    ctx = jax.default_device(device) if device is not None else _null()
    with ctx:
        net = snn.prepare(masks)
        carry = snn.init_carry(key)
        step = jax.jit(snn.step)
        ys = []
        for x in inputs:
            carry, y, _ = step(net, carry, x)
            ys.append(np.asarray(y))
        raster = np.asarray(jax.jit(snn.simulate_spikes)(net, snn.init_carry(key), inputs))
    return _bits(carry), np.array(ys).tobytes(), raster


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


SHAPES = ((256, 0.5, 0.5, 1.0), (128, 0.5, 0.5, 2.0), (70, 0.8, 0.3, 3.0))


def cpu_device():
    """JAX's CPU device beside the GPU, or None (e.g. JAX_PLATFORMS=cuda)."""
    import jax

    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return None


def part_identity(doc):
    import jax

    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    rows = []
    cpu = cpu_device()
    for n, ratio, density, gain in SHAPES:
        c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n, "excitatory_ratio": ratio})
        key = jax.random.PRNGKey(7)
        masks = {k: jax.random.uniform(jax.random.fold_in(key, i), s) < density
                 for i, (k, s) in enumerate(c.param_shapes().items())}
        inputs = gain * jax.random.normal(jax.random.fold_in(key, 1), (40, 4))
        fused = SNN(c, "fused")
        res = {"fused": simulate(fused, masks, key, inputs), "bitpack": simulate(SNN(c, "bitpack"), masks, key, inputs),
               "dense": simulate(SNN(c, "dense"), masks, key, inputs)}
        if cpu is not None:
            res["bitpack_cpu"] = simulate(SNN(c, "bitpack"), masks, key, inputs, device=cpu)
        row = {"n_neurons": n, "excitatory_ratio": ratio, "fused_is": fused.spike_impl,
               "spikes": int(res["bitpack"][2].sum())}
        for other in [k for k in ("bitpack", "dense", "bitpack_cpu") if k in res]:
            row[f"spikes_equal_{other}"] = bool((res["fused"][2] == res[other][2]).all())
            row[f"states_equal_{other}"] = res["fused"][0] == res[other][0]
            row[f"outputs_equal_{other}"] = res["fused"][1] == res[other][1]
        if "bitpack_cpu" in res:
            row["gpu_bitpack_states_equal_cpu_bitpack"] = res["bitpack"][0] == res["bitpack_cpu"][0]
        rows.append(row)
    doc["identity"] = rows


SMOKE = {"on": False}  # --cpu-smoke: check this script on a CPU (Pallas interpreter, small sizes)


def part_pairing(doc):
    import functools

    import jax

    from rsrp_sim.backends.jax.kernels import gpu
    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    n, ratio, density, gain = SHAPES[2]
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n, "excitatory_ratio": ratio})
    key = jax.random.PRNGKey(7)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), s) < density
             for i, (k, s) in enumerate(c.param_shapes().items())}
    inputs = gain * jax.random.normal(jax.random.fold_in(key, 1), (20, 4))
    if SMOKE["on"]:
        inputs = inputs[:2]
    ref = simulate(SNN(c, "bitpack"), masks, key, inputs)
    cpu = cpu_device()
    ref_cpu = simulate(SNN(c, "bitpack"), masks, key, inputs, device=cpu) if cpu is not None else None
    matches, matches_cpu = [], []
    for pattern in itertools.product(*gpu.PATTERN_CHOICES):
        snn = SNN(c, "fused")
        snn.kernel = functools.partial(gpu.lif_substeps, c, pattern=pattern, interpret=SMOKE["on"])
        got = simulate(snn, masks, key, inputs[:2] if SMOKE["on"] else inputs)
        if got[0] == ref[0]:
            matches.append(list(pattern))
        if ref_cpu is not None and got[0] == ref_cpu[0]:
            matches_cpu.append(list(pattern))
    doc["pairing"] = {"default": list(gpu.DEFAULT_PATTERN), "matching_gpu_bitpack": matches,
                      "matching_cpu_bitpack": matches_cpu}


def _time_step(snn, c, pop, reps):
    import jax
    import numpy as np

    key = jax.random.PRNGKey(0)
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + s) < 0.5
             for i, (k, s) in enumerate(c.param_shapes().items())}
    nets = jax.jit(jax.vmap(snn.prepare))(masks)
    carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
    obs = jax.random.normal(key, (pop, 4))
    step = jax.jit(jax.vmap(snn.step))
    jax.block_until_ready(step(nets, carry, obs))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        carry, y, nsp = step(nets, carry, obs)
        jax.block_until_ready(carry)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3, int(np.asarray(nsp).sum())


def part_network(doc):
    import functools

    from rsrp_sim.backends.jax.kernels import gpu
    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 256})
    pop = 64 if SMOKE["on"] else 10240
    out = {"pop": pop, "n_neurons": 256}
    out["bitpack_ms"], out["bitpack_checksum"] = _time_step(SNN(c, "bitpack"), c, pop, 20)
    for warps in (1, 2, 4, 8):
        snn = SNN(c, "fused")
        snn.kernel = functools.partial(gpu.lif_substeps, c, num_warps=warps, interpret=SMOKE["on"])
        out[f"fused_ms_warps{warps}"], out[f"fused_checksum_warps{warps}"] = _time_step(snn, c, pop, 20)
    out["speedup_fused_over_bitpack"] = out["bitpack_ms"] / out["fused_ms_warps4"]
    doc["network"] = out


def part_cartpole(doc, gens, deadline):
    from rsrp_sim.protocols.cartpole import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
    res = {}
    for impl in ("bitpack", "fused"):
        preset, ov = ("cpu", {"pop_size": 32, "eval_size": 4, "chunk_size": 32}) if SMOKE["on"] else ("paper", {})
        m = cls(PROTOCOL.build_config("rsrp", "jax", preset, dict(ov, spike_impl=impl)), 0)
        state = m.init_state()
        rows, t_first, base = [], None, 0
        for g in range(gens + 1):
            t0 = time.perf_counter()
            state, rec = m.step(state)
            dt = time.perf_counter() - t0
            if g == 0:
                t_first, base = dt, rec["env_steps"]
            else:
                rows.append({"seconds": dt, "env_steps": rec["env_steps"], "train_score": rec["train_score"],
                             "eval_score": rec["eval_score"]})
            if time.perf_counter() + 2 * dt > deadline:
                break
        steps = rows[-1]["env_steps"] - base if rows else 0
        span = sum(r["seconds"] for r in rows)
        res[impl] = {"spike_impl": m.evaluator.snn.spike_impl, "first_generation_s": t_first, "generations": rows,
                     "env_steps_per_s": steps / span if span else None}
        doc["cartpole_paper"] = res
    if "bitpack" in res and "fused" in res:
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
        n = min(len(res["bitpack"]["generations"]), len(res["fused"]["generations"]))
        res["same_numbers"] = strip(res["bitpack"]["generations"][:n]) == strip(res["fused"]["generations"][:n])
        if res["bitpack"]["env_steps_per_s"] and res["fused"]["env_steps_per_s"]:
            res["speedup_fused_over_bitpack"] = res["fused"]["env_steps_per_s"] / res["bitpack"]["env_steps_per_s"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generations", type=int, default=4, help="timed CartPole generations after the first")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new work after this long")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    SMOKE["on"] = args.cpu_smoke
    import jax

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    dev = jax.devices()[0]
    name = getattr(dev, "device_kind", dev.platform).replace(" ", "_").lower()
    path = Path(args.out) / f"gpu_kernels_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from rsrp_sim.backends.jax.kernels import fused_status

    doc = {"benchmark": "gpu_kernels", "machine": {**machine(("jax", "jaxlib", "numpy")),
                                                    "devices": [str(d) for d in jax.devices()],
                                                    "device_kind": getattr(dev, "device_kind", None)},
           "fused_status": list(fused_status()), "errors": {}}
    parts = [("identity", lambda: part_identity(doc)), ("pairing", lambda: part_pairing(doc)),
             ("network", lambda: part_network(doc)),
             ("cartpole_paper", lambda: part_cartpole(doc, args.generations, deadline))]
    for label, fn in parts:
        if time.perf_counter() > deadline:
            doc["errors"][label] = "skipped: out of time"
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # record and go on: a later part may still work
            doc["errors"][label] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        doc.setdefault("part_seconds", {})[label] = round(time.perf_counter() - t0, 1)
        doc["wall_s"] = round(time.perf_counter() - t_start, 1)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{label}: {doc['part_seconds'][label]} s", flush=True)
    print(json.dumps({k: doc.get(k) for k in ("identity", "pairing", "network", "errors")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
