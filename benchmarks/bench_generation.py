"""Seconds per RSRP generation on CartPole and where they go (prints JSON).

Breakdown of one generation: ``rollout`` (the evaluator's closed-loop simulations: sampled chunks
and the deterministic networks), ``shaping_update`` (everything else of the generation: sampling
the members, the finite check, shaping, the chunked gradient, the optimiser step, the statistics)
and ``records`` (one metrics row, one checkpoint, the summary, as the protocol loop writes them).
Also the first generation in a fresh process with JAX's persistent compilation cache off
(``cold_first_generation_s``) and on (``warm_first_generation_s``).

Shapes: the cpu preset's 256 sampled + 16 deterministic networks of 128 neurons, and 1008 + 16 of
256 neurons.  The first generations of an untrained population are timed, which both
implementations compute identically (the same members, the same episodes).

``--baseline REV`` measures the same in a git worktree of revision REV (e.g. the commit before the
population engine) in the same run, so "before" and "after" share the machine's conditions.

    python benchmarks/bench_generation.py [--baseline 086671d] [--generations 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, write

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((256, 16, 128), (1008, 16, 256))

CHILD = r"""
import json, pathlib, sys, tempfile, time
import jax
mode, pop, n_eval, neurons, gens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t_start = time.perf_counter()
import rsrp_sim
engine = (pathlib.Path(rsrp_sim.__file__).parent / "engine").is_dir()  # False: a revision before the engine
if engine:
    from rsrp_sim.infra.records import RunDir
else:
    from rsrp_sim.records import RunDir
from rsrp_sim.protocols.cartpole import PROTOCOL
# before the engine, pop_size counted the deterministic networks too
ov = {"pop_size": pop if engine else pop + n_eval, "eval_size": n_eval, "chunk_size": pop,
      "model_overrides": {"n_neurons": neurons}}
cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
m = cls(PROTOCOL.build_config("rsrp", "jax", "cpu", ov), 0)
state = m.init_state()
spent = {"rollout": 0.0}

def timed(fn):
    def run(*a, **k):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*a, **k))
        spent["rollout"] += time.perf_counter() - t
        return out
    return run

if engine:
    ev = m.evaluator
    ev.evaluate, ev.evaluate_deterministic = timed(ev.evaluate), timed(ev.evaluate_deterministic)
else:
    m._train_fn, m._eval_fn = timed(m._train_fn), timed(m._eval_fn)
rd = RunDir.create(pathlib.Path(tempfile.mkdtemp()) / "run", {"bench": True})
t = time.perf_counter()
state, rec = m.step(state)
first = time.perf_counter() - t
rows = []
for g in range(gens):
    spent["rollout"] = 0.0
    t = time.perf_counter()
    state, rec = m.step(state)
    total = time.perf_counter() - t
    t = time.perf_counter()
    rec["wall_s"] = total
    rd.append_metrics(rec)
    rd.save_checkpoint(state, {"iteration": g + 2, "wall_s": total})
    rd.write_summary({"iteration": g + 2})
    records = time.perf_counter() - t
    rows.append({"total_s": total, "rollout_s": spent["rollout"], "shaping_update_s": total - spent["rollout"],
                 "records_s": records, "env_steps": rec["env_steps"], "eval_score": rec["eval_score"]})
print("RESULT" + json.dumps({"engine": engine, "first_generation_s": first, "process_to_first_s": time.perf_counter() - t_start,
                             "generations": rows}))
"""


def run_child(pythonpath: str, pop: int, n_eval: int, neurons: int, gens: int, cache: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", RSRP_SIM_JAX_CACHE="1" if cache else "0")
    p = subprocess.run([sys.executable, "-c", CHILD, "x", str(pop), str(n_eval), str(neurons), str(gens)],
                       env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.split("RESULT", 1)[1])


def measure(pythonpath: str, gens: int) -> list[dict]:
    out = []
    for pop, n_eval, neurons in SHAPES:
        cold = run_child(pythonpath, pop, n_eval, neurons, 0, cache=False)
        run_child(pythonpath, pop, n_eval, neurons, 0, cache=True)  # fill the persistent cache
        warm = run_child(pythonpath, pop, n_eval, neurons, gens, cache=True)
        rows = warm["generations"]

        def mean(key):
            return sum(r[key] for r in rows) / len(rows)

        out.append({"pop_size": pop, "eval_size": n_eval, "n_neurons": neurons, "engine": warm["engine"],
                    "cold_first_generation_s": cold["first_generation_s"],
                    "warm_first_generation_s": warm["first_generation_s"],
                    "seconds_per_generation": mean("total_s"),
                    "breakdown_s": {k: mean(k + "_s") for k in ("rollout", "shaping_update", "records")},
                    "outside_rollout_fraction": (mean("shaping_update_s") + mean("records_s")) /
                                                (mean("total_s") + mean("records_s")),
                    "generations": rows})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=None, help="git revision to measure beside this checkout")
    p.add_argument("--generations", type=int, default=3, help="timed generations after the first (default 3)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    doc = {"benchmark": "bench_generation", "machine": machine(), "after": measure(str(ROOT), args.generations)}
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
                           check=True)
            try:
                doc["before"] = measure(str(tree), args.generations)
                doc["baseline"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                                 capture_output=True, text=True).stdout.strip()
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        for a, b in zip(doc["after"], doc["before"]):
            a["speedup_over_baseline"] = b["seconds_per_generation"] / a["seconds_per_generation"]
            a["cold_first_generation_speedup"] = b["cold_first_generation_s"] / a["cold_first_generation_s"]
            a["same_numbers_as_baseline"] = [r["eval_score"] for r in a["generations"]] == \
                [r["eval_score"] for r in b["generations"]]
    doc["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(write(doc, args.out))


if __name__ == "__main__":
    sys.exit(main())
