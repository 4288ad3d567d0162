"""Seconds per CartPole generation: Brian2 (runtime-cython, cpp_standalone, cuda_standalone) vs JAX.

Every back-end runs the same population (``--pop`` networks of ``--neurons`` neurons, ``--eval`` of
them deterministic) from the same release probabilities and observation normaliser.  By default
those come from ``--pretrain`` JAX generations, so the networks balance the pole and a generation
is the full workload (episodes of up to 500 steps); ``--pretrain 0`` starts from p = 0.5 (short
episodes).  Each back-end is built (compile time reported separately: the standalone build, or the
first generation minus a steady one for the runtime-cython and JAX back-ends, whose code is
compiled on first use), then ``--generations`` generations are timed, each from that same state.
cuda_standalone runs only where ``nvidia-smi`` lists a GPU (``--cuda-codegen`` generates its code
anyway).  Prints JSON (and writes it to ``--out``).

    python benchmarks/bench_brian2_cartpole.py [--pop 272 --eval 16 --neurons 128 --generations 3]
        [--backends jax,runtime-cython,cpp_standalone,cuda_standalone] [--out benchmarks/results/X.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = ("jax", "runtime-cython", "cpp_standalone", "cuda_standalone")


def overrides(args, **extra):
    return {"pop_size": args.pop, "eval_size": args.eval, "chunk_size": args.chunk or args.pop,
            "model_overrides": {"n_neurons": args.neurons}, "generations": max(args.generations, 1), **extra}


def pretrained(args):
    """JAX-trained p (flattened as the Brian2 learner keeps it) and normaliser, and the time it took."""
    from rsrp_sim.protocols.cartpole import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
    m = cls(PROTOCOL.build_config("rsrp", "jax", "cpu", overrides(args)), args.seed)
    state = m.init_state()
    t0 = time.perf_counter()
    evals = []
    for _ in range(args.pretrain):
        state, rec = m.step(state)
        evals.append(rec["eval_score"])
    p = {k: np.asarray(v, np.float32) for k, v in state["params"].items()}
    norm = {k: np.asarray(v) for k, v in state["norm"].items()}
    return p, norm, {"generations": args.pretrain, "eval_scores": evals, "wall_s": time.perf_counter() - t0}


def time_method(method, state, generations):
    t0 = time.perf_counter()
    _, first = method.step(state)
    first_s = time.perf_counter() - t0
    times, recs = [], []
    for _ in range(generations):
        t0 = time.perf_counter()
        _, rec = method.step(state)          # always from the same state: the same workload
        times.append(time.perf_counter() - t0)
        recs.append(rec)
    med = statistics.median(times)
    return {"first_generation_s": first_s, "generation_s": times, "generation_s_median": med,
            "env_steps_per_generation": recs[-1]["env_steps"] - int(state["env_steps"]),
            "eval_score": recs[-1]["eval_score"], "train_score": recs[-1]["train_score"],
            "spikes_per_ms": recs[-1]["spikes_per_ms"]}


def run_jax(args, p, norm):
    import jax.numpy as jnp

    from rsrp_sim.protocols.cartpole import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
    m = cls(PROTOCOL.build_config("rsrp", "jax", "cpu", overrides(args)), args.seed)
    state = m.init_state()
    if p is not None:
        params = {k: jnp.asarray(v) for k, v in p.items()}
        state = dict(state, params=params, opt=m.opt.init(params), norm=norm)
    out = time_method(m, state, args.generations)
    out["compile_s"] = max(out["first_generation_s"] - out["generation_s_median"], 0.0)
    out["compile_note"] = "jit: first generation minus a steady one"
    return out


def run_brian2(args, device, p, norm, build_root):
    from rsrp_sim.protocols.cartpole import PROTOCOL

    extra = {"device": "runtime", "target": "cython"} if device == "runtime-cython" else \
        {"device": device, "build_dir": str(Path(build_root) / device)}
    cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "brian2")
    t0 = time.perf_counter()
    m = cls(PROTOCOL.build_config("rsrp", "brian2", "cpu", overrides(args, **extra)), args.seed)
    setup_s = time.perf_counter() - t0
    state = m.init_state()
    if p is not None:
        flat = {k: v.ravel() for k, v in p.items()}
        state = dict(state, p=flat, opt=m.learner.opt.init(flat), norm=norm)
    out = time_method(m, state, args.generations)
    out["setup_s"] = setup_s
    if device == "runtime-cython":
        out["compile_s"] = max(out["first_generation_s"] - out["generation_s_median"], 0.0)
        out["compile_note"] = "cython: first generation minus a steady one (extensions cached under ~/.cache)"
    else:
        out["compile_s"] = m.sim.compile_s
        out["compile_note"] = "make of the standalone project (once; generations re-run the binary)"
        out["binary_mtime_ns"] = os.stat(Path(build_root) / device / "main").st_mtime_ns
        m.sim.close()
    return out


def cuda_codegen(args, build_root):
    """Generate (not compile) the cuda_standalone project: seconds and file count."""
    from rsrp_sim.backends.brian2.rl import StandaloneSim
    from rsrp_sim.core.models import SNNConstants

    const = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": args.neurons})
    d = Path(build_root) / "cuda_codegen"
    t0 = time.perf_counter()
    StandaloneSim(const, args.chunk or args.pop, 500, "cuda_standalone", build_dir=str(d), compile=False)
    return {"codegen_s": time.perf_counter() - t0, "files": len(list((d / "code_objects").glob("*.cu")))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pop", type=int, default=272)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--neurons", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=0, help="copies per Brian2 network / JAX chunk (0: the population)")
    ap.add_argument("--generations", type=int, default=3, help="timed generations per back-end")
    ap.add_argument("--pretrain", type=int, default=12, help="JAX generations giving the common starting p")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--cuda-codegen", action="store_true", help="also time cuda_standalone code generation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from rsrp_sim.backends.brian2 import devices

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"unknown back-end {b!r}; allowed: {', '.join(BACKENDS)}")
    gpu = devices.has_gpu()
    report = {"benchmark": "brian2_cartpole", "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "gpu": gpu,
              "config": {k: getattr(args, k) for k in ("pop", "eval", "neurons", "chunk", "generations", "pretrain",
                                                       "seed")},
              "results": {}}
    try:
        import importlib.metadata as md

        report["versions"] = {k: md.version(k) for k in ("Brian2", "jax", "numpy") if _installed(md, k)}
    except Exception:
        pass
    p, norm = None, None
    if args.pretrain:
        p, norm, report["pretrain"] = pretrained(args)
    with tempfile.TemporaryDirectory(prefix="bench_brian2_") as root:
        for b in backends:
            if b == "cuda_standalone" and not gpu:
                report["results"][b] = {"skipped": "no GPU (nvidia-smi lists none)"}
                continue
            try:
                res = run_jax(args, p, norm) if b == "jax" else run_brian2(args, b, p, norm, root)
            except Exception as e:  # a failing back-end must not hide the others' numbers
                res = {"error": f"{type(e).__name__}: {e}"}
            report["results"][b] = res
            print(f"{b}: {json.dumps(res)}", file=sys.stderr)
            write(report, args.out)          # after every back-end: a time-out keeps what was measured
        if args.cuda_codegen:
            report["cuda_codegen"] = cuda_codegen(args, root)
    print(write(report, args.out))


def _installed(md, name):
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
