"""Throughput of RSRP and PPO-LSTM on Brax Humanoid: env steps/s at the cpu preset (and the paper
preset when a GPU is visible).  Prints JSON; ``--out FILE`` also writes it.

    python benchmarks/bench_humanoid.py                      # cpu preset, rsrp and ppo-lstm
    python benchmarks/bench_humanoid.py --preset paper       # force the paper preset
    python benchmarks/bench_humanoid.py --out benchmarks/results/bench_humanoid_cpu.json

Each method runs one iteration to compile (reported as ``first_iteration_s``), then ``--iterations``
timed ones; ``env_steps_per_s`` counts every environment step taken (training and evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import machine, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench(method: str, preset: str, iterations: int, overrides: dict) -> dict:
    from rsrp_sim.protocols.humanoid import PROTOCOL

    spec = PROTOCOL.method(method)
    cls = PROTOCOL.method_class(spec, "jax")
    cfg = PROTOCOL.build_config(method, "jax", preset, overrides)
    t0 = time.perf_counter()
    m = cls(cfg, 0)
    state = m.init_state()
    state, rec = m.step(state)
    first = time.perf_counter() - t0
    steps0 = rec["env_steps"]
    t1 = time.perf_counter()
    recs = []
    for _ in range(iterations):
        state, rec = m.step(state)
        recs.append(rec)
    dt = time.perf_counter() - t1
    steps = recs[-1]["env_steps"] - steps0
    size = ({"n_envs": cfg.n_envs, "horizon": cfg.horizon, "updates_per_iteration": cfg.updates_per_iteration,
             "lstm": cfg.lstm} if method == "ppo-lstm" else
            {"pop_size": cfg.pop_size, "chunk_size": cfg.chunk_size, "n_neurons": m.const.n_neurons})
    return {"method": method, "preset": preset, "env": cfg.env, "max_episode_steps": cfg.max_episode_steps,
            **size, "first_iteration_s": round(first, 2), "timed_iterations": iterations,
            "seconds_per_iteration": round(dt / iterations, 3), "env_steps": int(steps),
            "env_steps_per_s": round(steps / dt, 1),
            "eval_score_last": recs[-1]["eval_score"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["cpu", "paper", "auto"], default="auto",
                    help="auto: cpu, plus paper when a GPU is visible")
    ap.add_argument("--methods", default="rsrp,ppo-lstm")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--paper-generations-cap", type=int, default=1,
                    help="timed iterations at the paper preset (each is a full 1000-step generation)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import jax

    gpu = any(d.platform == "gpu" for d in jax.devices())
    presets = ["cpu", "paper"] if (args.preset == "auto" and gpu) else (["cpu"] if args.preset == "auto"
                                                                         else [args.preset])
    results = []
    for preset in presets:
        for method in args.methods.split(","):
            its = args.iterations if preset == "cpu" else args.paper_generations_cap
            results.append(bench(method, preset, its, {}))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    out = {"benchmark": "humanoid_throughput", "devices": [str(d) for d in jax.devices()],
           "machine": machine(("jax", "brax", "mujoco", "flax", "optax")), "results": results}
    print(write(out, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
