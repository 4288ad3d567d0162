"""Throughput and memory of the RSRP classification population on the JAX back-end (prints JSON).

One case per process (so each peak memory is its own): the trainer's full generation (sample the
population, logits on a shared minibatch of 64, rewards, shaping, gradient, update; no validation)
at the cpu preset's shape (MNIST MLP 784-64-10, pop 1024 in one chunk) and at the paper's shapes
(pop 20480 MLP, pop 8192 binary CNN) evaluated in chunks.  Data: the real MNIST test files when
``--data-dir`` (or ``$RSRP_SIM_DATA``) has them, else random images of MNIST's shape.

    python benchmarks/bench_classification.py [--quick] [--data-dir DIR]
                                              [--out benchmarks/results/classification_<platform>.json]
    python benchmarks/bench_classification.py --cases paper,paper-cnn --chunk 8192     # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, write

#: name -> (net, pop_size, default chunk_size)
CASES = {
    "cpu": ("mlp", 1024, 1024),
    "paper": ("mlp", 20480, 4096),
    "cpu-cnn": ("cnn", 256, 256),
    "paper-cnn": ("cnn", 8192, 1024),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_device_mb():
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def synthetic_mnist(folder: Path):
    import numpy as np

    from rsrp_sim.data.idx import write_idx

    rng = np.random.default_rng(0)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 10000).astype(np.uint8))


def run_case(name: str, gens: int, chunk: int | None, data_dir: str | None) -> dict:
    import jax

    from rsrp_sim.protocols import get

    net, pop, default_chunk = CASES[name]
    chunk = chunk or default_chunk
    source = "real MNIST"
    tmp = None
    if not data_dir:
        tmp = tempfile.TemporaryDirectory()
        synthetic_mnist(Path(tmp.name))
        data_dir, source = tmp.name, "random images of MNIST's shape"
    proto = get("mnist")
    cls = proto.method_class(proto.method("rsrp"), "jax")
    cfg = proto.build_config("rsrp", "jax", "cpu", {"data_dir": data_dir, "net": net, "pop_size": pop,
                                                    "chunk_size": chunk, "generations": 10**6, "eval_every": 10**6})
    m = cls(cfg, 0)
    state = m.init_state()
    t0 = time.perf_counter()
    state, _ = m.step(state)
    jax.block_until_ready(state["search"].p)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(gens):
        state, rec = m.step(state)
    jax.block_until_ready(state["search"].p)
    dt = (time.perf_counter() - t0) / gens
    spec = m.evaluator.spec
    return {"case": name, "net": spec.describe(), "n_synapses": spec.n_params(), "pop_size": pop,
            "chunk_size": m.layout.chunk, "chunks": m.layout.n_chunks, "batch_size": cfg.batch_size,
            "generations_timed": gens, "s_per_generation": dt, "generations_per_s": 1.0 / dt, "networks_per_s": pop / dt,
            "first_generation_s (incl. compile)": first, "peak_rss_mb": peak_rss_mb(),
            "peak_device_mb": peak_device_mb(), "data": source, "train_score": rec["train_score"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help=f"comma-separated, from {', '.join(CASES)} "
                                                 f"(default cpu,paper; --quick: cpu,paper with 1 generation)")
    p.add_argument("--generations", type=int, default=None, help="timed generations per case (default 5; "
                                                                  "paper shapes on CPU: 2)")
    p.add_argument("--chunk", type=int, default=None, help="chunk size for every case (default per case)")
    p.add_argument("--data-dir", default=os.environ.get("RSRP_SIM_DATA"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = p.parse_args()
    if args.case:
        name, gens, chunk = args.case.split(":")
        print(json.dumps(run_case(name, int(gens), int(chunk) or None, args.data_dir)))
        return
    import jax

    gpu = any(d.platform == "gpu" for d in jax.devices())
    cases = (args.cases or "cpu,paper").split(",")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    results = []
    for c in cases:
        if c not in CASES:
            sys.exit(f"error: unknown case {c!r}; allowed: {', '.join(CASES)}")
        gens = args.generations or (1 if args.quick else 5 if gpu or not c.startswith("paper") else 2)
        cmd = [sys.executable, __file__, "--case", f"{c}:{gens}:{args.chunk or 0}"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            results.append({"case": c, "error": (out.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    doc = {"benchmark": "classification", "machine": {**machine(), "devices": [str(d) for d in jax.devices()]},
           "results": results}
    print(write(doc, args.out))


if __name__ == "__main__":
    main()
