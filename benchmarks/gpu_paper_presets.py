"""GPU timings of the paper presets with the population engine (JSON; run on a machine with GPUs).

    python benchmarks/gpu_paper_presets.py --mnist-dir DIR [--budget-s 120] [--out benchmarks/results]

For each of CartPole (pop 10112 + 128, N 256), Humanoid (Brax, pop 10112 + 128) and MNIST (pop 20480,
784-64-10, chunks of 4096): generations for ``--budget-s`` seconds after the first (which compiles),
on every visible GPU of this process (the member axis is split over them), then seconds per
generation, env steps (or training examples) per second and the eval scores.  Several processes
(one per GPU) are started the usual way: ``rsrp-sim launch --local N -- python benchmarks/...`` or
``srun``.  ``--mnist-dir``: a folder of MNIST IDX files (the 10,000 t10k images are enough).
Writes ``<out>/paper_presets_<gpu>.json``; skips Humanoid without Brax.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def time_preset(protocol: str, method: str, overrides: dict, budget_s: float) -> dict:
    from rsrp_sim.protocols import get

    proto = get(protocol)
    cls = proto.method_class(proto.method(method), "jax")
    cfg = proto.build_config(method, "jax", "paper", overrides)
    m = cls(cfg, 0)
    state = m.init_state()
    t0 = time.perf_counter()
    state, rec = m.step(state)
    first = time.perf_counter() - t0
    rows, t_start = [], time.perf_counter()
    while time.perf_counter() - t_start < budget_s:
        t = time.perf_counter()
        state, rec = m.step(state)
        rows.append({"seconds": time.perf_counter() - t, "eval_score": rec.get("eval_score"),
                     "steps": rec.get("env_steps", rec.get("examples"))})
    n = max(len(rows), 1)
    per_gen = sum(r["seconds"] for r in rows) / n
    steps = (rows[-1]["steps"] - rows[0]["steps"]) / max(sum(r["seconds"] for r in rows[1:]), 1e-9) if len(rows) > 1 else None
    return {"protocol": protocol, "method": method, "first_generation_s": first, "generations": len(rows),
            "seconds_per_generation": per_gen, "steps_per_s": steps, "evals": [r["eval_score"] for r in rows]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", default=None)
    p.add_argument("--budget-s", type=float, default=120.0)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    from rsrp_sim.infra import distributed

    distributed.initialize()
    import jax

    gpu = jax.devices()[0].device_kind.replace(" ", "_").lower()
    doc = {"benchmark": "gpu_paper_presets", "devices": [str(d) for d in jax.devices()],
           "processes": jax.process_count(), "runs": []}
    doc["runs"].append(time_preset("cartpole", "rsrp", {}, args.budget_s))
    try:
        import brax  # noqa: F401
        doc["runs"].append(time_preset("humanoid", "rsrp", {}, args.budget_s))
    except ImportError:
        doc["humanoid"] = "skipped: Brax is not installed"
    if args.mnist_dir:
        doc["runs"].append(time_preset("mnist", "rsrp", {"data_dir": args.mnist_dir}, args.budget_s))
    if distributed.is_writer():
        out = Path(args.out) / f"paper_presets_{gpu}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    sys.exit(main())
