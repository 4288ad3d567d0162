"""Trials per second of a Brian2 network learning with RSRP: online in ONE standalone run vs one run per trial.

The network is the E/I example (``examples/brian2_online_ei.py``: Poisson inputs -> ``--exc``
excitatory + ``--inh`` inhibitory conductance-based LIF neurons, RSRP input synapses in spike mode,
reward = spikes of neuron 0 minus neuron 1).  Both ways run ``--trials`` trials of ``--trial-ms``
on cpp_standalone, each compiled once (compile time reported apart):

* ``online``: the update inside the model (``online=True``), all trials in one binary run;
* ``per_trial``: the same network with ``online=False`` and :class:`RSRPLearner` (baseline shaping,
  plain SGD): one binary run per trial, the new ``p`` passed with ``run_args``, the reward read
  from the results (what a standalone user had to do before the online mode).

Prints JSON (and writes it to ``--out``); ``speedup`` = online trials/s over per-trial trials/s, each
from the median of ``--repeats`` timed repeats (the two ways alternate with the machine's load).
``--cartpole-iterations N`` (0: skip) also runs ``rsrp-online`` on CartPole (``--cartpole-steps``
environment steps per block, one cpp_standalone run) and records its learning curve.

    python benchmarks/bench_brian2_online.py [--trials 200 --exc 16 --inh 4] [--out benchmarks/results/brian2_online_cpu.json]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def example():
    spec = importlib.util.spec_from_file_location("brian2_online_ei", ROOT / "examples" / "brian2_online_ei.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_online(ex, args, folder):
    from rsrp_sim.backends.brian2 import devices

    b2 = devices.import_brian2()
    dev = devices.activate("cpp_standalone", folder)
    b2.defaultclock.dt = 0.5 * b2.ms
    objects, S, rewards = ex.build(n_inputs=args.inputs, n_exc=args.exc, n_inh=args.inh, trial=args.trial_ms * b2.ms,
                                   lr=args.lr)
    net = b2.Network(*objects)
    net.run(args.trials * args.trial_ms * b2.ms + b2.defaultclock.dt)
    t0 = time.perf_counter()
    devices.build(dev, folder)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):  # each repeat: the whole learning run again, one binary run
        t0 = time.perf_counter()
        dev.run(directory=str(folder), with_output=False)
        times.append(time.perf_counter() - t0)
    run_s = float(np.median(times))
    r = np.asarray(rewards.last_R[0])[1:args.trials + 1]
    return {"compile_s": compile_s, "run_s": run_s, "run_s_repeats": times, "runs": 1,
            "trials_per_s": args.trials / run_s,
            "reward_first10": float(r[:10].mean()), "reward_last10": float(r[-10:].mean()),
            "p_to_neuron0": float(np.asarray(S.p[:])[np.asarray(S.j[:]) == 0].mean())}


def run_per_trial(ex, args, folder):
    from rsrp_sim.backends.brian2 import RSRPLearner, devices

    b2 = devices.import_brian2()
    dev = devices.activate("cpp_standalone", folder)
    b2.defaultclock.dt = 0.5 * b2.ms
    objects, S, unit = ex.build(n_inputs=args.inputs, n_exc=args.exc, n_inh=args.inh, trial=args.trial_ms * b2.ms,
                                online=False)
    net = b2.Network(*objects)
    net.run(args.trial_ms * b2.ms)
    t0 = time.perf_counter()
    devices.build(dev, folder)
    compile_s = time.perf_counter() - t0
    dev.run(directory=str(folder), with_output=False)  # first run: the synapses made by connect() are known
    times, first = [], None
    for _ in range(args.repeats):  # each repeat: a fresh learner from p = 0.5, one binary run per trial
        learner = RSRPLearner(S, lr=args.lr, optimizer="sgd", shaping="baseline", shaping_kw={"ema": 0.9})
        learner.p["syn"][:] = S.p_init  # (a learner starts from the group's p: here the last repeat's)
        curve = []
        t0 = time.perf_counter()
        for _ in range(args.trials):
            learner.new_trial()
            dev.run(directory=str(folder), with_output=False, run_args=learner.run_args(learner.member_values()))
            r = float(unit.R[0])
            curve.append(r)
            learner.end_trial([r])
        times.append(time.perf_counter() - t0)
        if first is None:
            first = (curve, learner.p["syn"].copy())
    run_s = float(np.median(times))
    curve, p = first
    return {"compile_s": compile_s, "run_s": run_s, "run_s_repeats": times, "runs": args.trials,
            "trials_per_s": args.trials / run_s,
            "reward_first10": float(np.mean(curve[:10])), "reward_last10": float(np.mean(curve[-10:])),
            "p_to_neuron0": float(p[np.asarray(S.j[:]) == 0].mean())}


def run_cartpole(args):
    from rsrp_sim.infra.records import read_metrics
    from rsrp_sim.protocols.cartpole import PROTOCOL

    overrides = {"device": "cpp_standalone", "iterations": args.cartpole_iterations,
                 "steps_per_iteration": args.cartpole_steps, "eval_episodes": 2}
    with tempfile.TemporaryDirectory() as tmp:
        rd, summary = PROTOCOL.run("rsrp-online", "brian2", seed=args.cartpole_seed, out=Path(tmp) / "run",
                                   progress=False, overrides=overrides)
        rows = read_metrics(rd.path / "metrics.csv")
    keys = ("iteration", "env_steps", "train_score", "eval_score", "episodes", "episodes_in_block")
    return {"method": "rsrp-online", "backend": "brian2", "seed": args.cartpole_seed, "overrides": overrides,
            "preset": "cpu (model_overrides n_neurons 32)", "compile_s": rows[0].get("compile_s"),
            "sim_run_s": rows[0].get("sim_run_s"), "episodes": summary.get("episodes"),
            "best_eval_score": summary.get("best_eval_score"), "curve": [{k: r.get(k) for k in keys} for r in rows]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--trial-ms", type=float, default=100.0)
    ap.add_argument("--inputs", type=int, default=40)
    ap.add_argument("--exc", type=int, default=16)
    ap.add_argument("--inh", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each way (the median is reported)")
    ap.add_argument("--cartpole-iterations", type=int, default=0)
    ap.add_argument("--cartpole-steps", type=int, default=20000)
    ap.add_argument("--cartpole-seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    ex = example()
    with tempfile.TemporaryDirectory() as tmp:
        online = run_online(ex, args, Path(tmp) / "online")
        per_trial = run_per_trial(ex, args, Path(tmp) / "per_trial")
    doc = {"benchmark": "brian2_online", "date": datetime.date.today().isoformat(),
           "command": "python " + " ".join([sys.argv[0]] + list(argv if argv is not None else sys.argv[1:])),
           "cwd": str(Path.cwd().resolve().relative_to(ROOT)) if Path.cwd().resolve().is_relative_to(ROOT) else "",
           "machine": machine(("Brian2", "numpy")), "device": "cpp_standalone",
           "config": {**vars(args), "neurons": args.exc + args.inh},
           "results": {"online": online, "per_trial": per_trial},
           "speedup": online["trials_per_s"] / per_trial["trials_per_s"]}
    if args.cartpole_iterations:
        doc["cartpole_online"] = run_cartpole(args)
    print(write(doc, args.out or None))


if __name__ == "__main__":
    main()
