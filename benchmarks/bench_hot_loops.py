"""Where the time goes in the other population methods: DenseSNN (ES) and the classification MLP (prints JSON).

Do their hot loops deserve a fused kernel like ConnSNN's?  For each, the achieved float32 rate of
its hot loop is set against what this machine's matrix multiply reaches (the ceiling a kernel
doing the same arithmetic could hope for), and, for DenseSNN, the spike density (the most a
kernel adding only the rows of spiking neurons could save; it would sum in another order, so it
could not give the dense path's bits).

  * DenseSNN: one environment step (33 substeps) of a vmapped population at the ES cpu preset's
    shape (256 networks of 128 neurons) and the paper's chunk (2048 of 256), with the dense path
    and with the real-weight kernel (which this measurement led to); the ConnSNN fused step at the
    same shapes; seconds per ES generation (cpu preset, dense and auto) beside RSRP's.
  * MLP: RSRP on MNIST (cpu preset: 1024 members, 784-64-10, minibatch 64; random images of
    MNIST's shape, which cost the same): seconds per generation and the part spent in the
    members' forward pass.

    python benchmarks/bench_hot_loops.py [--out benchmarks/results/hot_loops_cpu.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from _common import machine, write


def timeit(fn, *args, reps=5):
    import jax

    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return min(ts)


def gemm_peak():
    """GFLOP/s of a large float32 matmul and of a batched one shaped like the MLP's first layer."""
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048))
    t = timeit(jax.jit(lambda x: x @ x), a)
    xb = jax.random.normal(jax.random.PRNGKey(1), (256, 64, 784))
    wb = jax.random.normal(jax.random.PRNGKey(2), (256, 784, 64))
    tb = timeit(jax.jit(lambda x, w: x @ w), xb, wb)
    return {"matmul_2048_gflops": 2 * 2048**3 / t / 1e9, "batched_256x64x784x64_gflops": 2 * 256 * 64 * 784 * 64 / tb / 1e9}


def dense_snn(pop: int, n: int) -> dict:
    import jax
    import numpy as np

    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.core.models import SNNConstants

    out = {"pop": pop, "n_neurons": n}
    key = jax.random.PRNGKey(0)
    obs = jax.random.normal(key, (pop, 4))
    for model, impl in (("dense_snn", "dense"), ("dense_snn", "fused"), ("conn_snn", "fused")):
        c = SNNConstants.from_model(model, 4, 1, {"n_neurons": n})
        snn = SNN(c, impl)
        if model == "dense_snn":
            params = jax.vmap(snn.init_weights)(jax.random.split(key, pop))
        else:
            params = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + s) < 0.5
                      for i, (k, s) in enumerate(c.param_shapes().items())}
        nets = jax.jit(jax.vmap(snn.prepare))(params)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        step = jax.jit(jax.vmap(snn.step))
        for _ in range(3):  # let the activity settle
            carry, _, nsp = step(nets, carry, obs)
        t = timeit(lambda: step(nets, carry, obs)[0], reps=3)
        _, _, nsp = step(nets, carry, obs)
        density = float(np.asarray(nsp).sum()) / (pop * n * c.substeps)
        row = {"ms_per_env_step": t * 1e3, "spike_density": density, "spike_impl": snn.spike_impl}
        if model == "dense_snn":
            flops = 2.0 * n * n * c.substeps * pop + 2.0 * pop * (c.n_in + c.d_act) * n
            row["dense_equivalent_gflops"] = flops / t / 1e9
            row["checksum"] = int(np.asarray(nsp).sum())
        out[f"{model}_{snn.spike_impl}"] = row
    if "dense_snn_fused" in out:
        out["dense_snn_fused_speedup"] = out["dense_snn_dense"]["ms_per_env_step"] / out["dense_snn_fused"]["ms_per_env_step"]
    return out


def generation_seconds(protocol: str, method: str, overrides: dict, gens: int = 3) -> dict:
    import importlib

    proto = importlib.import_module(f"rsrp_sim.protocols.{protocol}").PROTOCOL
    cls = proto.method_class(proto.method(method), "jax")
    m = cls(proto.build_config(method, "jax", "cpu", overrides), 0)
    state = m.init_state()
    state, rec = m.step(state)  # compiles
    spent = {"forward": 0.0}
    ev = getattr(m, "evaluator", None)
    if protocol != "cartpole" and ev is not None:
        import jax

        inner = ev._fitness_fn

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = jax.block_until_ready(inner(*a, **k))
            spent["forward"] += time.perf_counter() - t0
            return out

        ev._fitness_fn = timed
    t0 = time.perf_counter()
    steps0 = rec.get("env_steps", 0)
    for _ in range(gens):
        state, rec = m.step(state)
    t = (time.perf_counter() - t0) / gens
    out = {"protocol": protocol, "method": method, "seconds_per_generation": t}
    if protocol == "cartpole":
        out["env_steps_per_s"] = (rec["env_steps"] - steps0) / (t * gens)
        out["spike_impl"] = m.config.spike_impl
    else:
        out["fitness_eval_fraction"] = spent["forward"] / (t * gens)
        spec = ev.spec
        layers = [int(np.prod(s)) for s in spec.mask_shapes().values()] if hasattr(spec, "mask_shapes") else []
        out["synapses"] = int(sum(layers))
        out["batch_size"] = m.config.batch_size
        out["pop_size"] = m.config.pop_size
        out["forward_gflops"] = 2.0 * out["synapses"] * out["batch_size"] * out["pop_size"] / max(spent["forward"] / gens, 1e-9) / 1e9
    return out


import numpy as np  # noqa: E402  (used in generation_seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import jax

    doc = {"benchmark": "hot_loops", "machine": {**machine(), "devices": [str(d) for d in jax.devices()]}}
    doc["gemm_peak"] = gemm_peak()
    doc["snn_step"] = [dense_snn(256, 128), dense_snn(2048, 256)]
    doc["cartpole_cpu_generation"] = [generation_seconds("cartpole", "es", {"spike_impl": "dense"}),
                                      generation_seconds("cartpole", "es", {"spike_impl": "auto"}),
                                      generation_seconds("cartpole", "rsrp", {"spike_impl": "auto"})]
    import tempfile
    from pathlib import Path

    from bench_classification import synthetic_mnist  # random images of MNIST's shape: same work

    with tempfile.TemporaryDirectory() as tmp:
        synthetic_mnist(Path(tmp))
        doc["mnist_cpu_generation"] = generation_seconds("mnist", "rsrp", {"data_dir": tmp})
    doc["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(write(doc, args.out))


if __name__ == "__main__":
    sys.exit(main())
