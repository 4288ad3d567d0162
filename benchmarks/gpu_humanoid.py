"""GPU evidence for the Humanoid protocol: the paper preset of RSRP for as many generations as a time
budget allows, then PPO-LSTM (paper preset) for the same wall-clock.  Records generations/minute,
env steps/s and the return curves as JSON (rewritten after every iteration, so a run cut short
still leaves its data).

    bash benchmarks/gpu_setup.sh install        # offline GPU box: the Brax wheels from wheelhouse/
    python benchmarks/gpu_humanoid.py --budget-s 200 --out benchmarks/results

Writes ``<out>/humanoid_gpu.json``.  ``wall_s`` includes compilation (the first iteration);
``generations_per_minute`` and ``env_steps_per_s`` are over the iterations after the first.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CURVE_KEYS = ("iteration", "env_steps", "wall_s", "train_score", "eval_score", "env_steps_per_s")


def run_for(method: str, budget_s: float, overrides: dict, doc: dict, path: Path, deadline: float,
            preset: str = "paper", seed: int = 0) -> dict:
    """Iterate until ``budget_s`` of this method's wall-clock, or until the next iteration would end
    after ``deadline`` (a ``time.perf_counter()`` value)."""
    from rsrp_sim.protocols.humanoid import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method(method), "jax")
    cfg = PROTOCOL.build_config(method, "jax", preset, overrides)
    t0 = time.perf_counter()
    m = cls(cfg, seed)
    state = m.init_state()
    out = {"method": method, "preset": preset, "overrides": overrides, "budget_s": budget_s, "curve": []}
    doc[method] = out
    last = 0.0
    while True:
        ts = time.perf_counter()
        state, rec = m.step(state)
        now = time.perf_counter()
        last = now - ts
        rec["wall_s"] = now - t0
        out["curve"].append({k: rec.get(k) for k in CURVE_KEYS})
        c = out["curve"]
        out["iterations"] = len(c)
        out["wall_s"] = round(rec["wall_s"], 2)
        out["first_iteration_s"] = round(c[0]["wall_s"], 2)
        if len(c) > 1:
            span = c[-1]["wall_s"] - c[0]["wall_s"]
            out["iterations_per_minute"] = round(60 * (len(c) - 1) / span, 3)
            out["env_steps_per_s"] = round((c[-1]["env_steps"] - c[0]["env_steps"]) / span, 1)
        out["best_eval_score"] = max(r["eval_score"] for r in c)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{method} it {rec['iteration']} wall {rec['wall_s']:.1f}s eval {rec['eval_score']:.1f} "
              f"train {rec['train_score']:.1f} steps/s {rec['env_steps_per_s']:.0f}", flush=True)
        if rec["wall_s"] + last > budget_s or now + last > deadline:
            return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=200.0, help="wall-clock for RSRP (PPO-LSTM gets RSRP's)")
    ap.add_argument("--deadline-s", type=float, default=430.0,
                    help="stop starting iterations that would end later than this after start-up")
    ap.add_argument("--ppo-updates-per-iteration", type=int, default=25,
                    help="updates between PPO evaluations (paper preset: 100), for a finer curve")
    ap.add_argument("--preset", default="paper", help="paper (GPU); cpu only to try the script out")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    import jax
    from importlib import metadata

    path = Path(args.out) / ("humanoid_gpu.json" if args.preset == "paper" else f"humanoid_{args.preset}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": f"humanoid_{args.preset}_preset_equal_wall_clock", "devices": [str(d) for d in jax.devices()],
           "python": platform.python_version(),
           "versions": {p: metadata.version(p) for p in ("jax", "jaxlib", "brax", "mujoco", "flax", "optax")}}
    deadline = time.perf_counter() + args.deadline_s
    rsrp = run_for("rsrp", args.budget_s, {}, doc, path, deadline, args.preset)
    run_for("ppo-lstm", rsrp["wall_s"], {"updates_per_iteration": args.ppo_updates_per_iteration}, doc, path,
            deadline, args.preset)
    if args.preset == "paper":
        doc["note"] = ("rsrp: pop 10240 (128 eval), N 256, episode 1000, lr 0.15; ppo-lstm: 2048 envs x 16 steps, "
                       "LSTM 128, for the same wall-clock as rsrp (compilation included in both)")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "curve"} if isinstance(v, dict) else v
                      for k, v in doc.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
