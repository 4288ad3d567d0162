"""RSRP between trials: a population of copies of one network, centred-rank shaping, RSRPLearner.

Every copy is the same small network (Poisson inputs -> two LIF output neurons with units) with
its own RSRP input synapses in spike mode.  After each trial Python ranks the copies' rewards
(spikes of output 0 minus spikes of output 1) and updates one ``p`` per logical synapse, shared by
all copies (the engine's RSRP strategy).  On a standalone device the binary is compiled once and
run once per trial with the new values passed as ``run_args`` (no recompilation).

    python examples/brian2_between_trials.py                          # runtime (numpy)
    python examples/brian2_between_trials.py --device cpp_standalone  # one binary, one run per trial
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from rsrp_sim.backends.brian2 import RSRPLearner, RSRPSynapses, devices
from rsrp_sim.infra.errors import UserError

b2 = devices.import_brian2()
from brian2 import Hz, NeuronGroup, PoissonGroup, SpikeMonitor, ms, mV

EQS = "dv/dt = (v_rest - v + ge * (E_exc - v)) / tau_m : volt\ndge/dt = -ge / tau_ge : 1"
CONSTANTS = {"v_rest": -65 * mV, "E_exc": 0 * mV, "tau_m": 10 * ms, "tau_ge": 5 * ms, "v_th": -50 * mV}


def build(n_copies=16, n_inputs=20, n_out=2, rate=40 * Hz, weight=0.3):
    inp = PoissonGroup(n_copies * n_inputs, rates=rate, name="inputs")
    out = NeuronGroup(n_copies * n_out, EQS, threshold="v > v_th", reset="v = v_rest", method="euler",
                      namespace=CONSTANTS, name="outputs")
    out.v = CONSTANTS["v_rest"]
    S = RSRPSynapses(inp, out, target_var="ge", mode="spike", weight=weight, name="S")
    pre, post = np.divmod(np.arange(n_inputs * n_out), n_out)   # all-to-all inside each copy
    S.connect_copies(pre, post, n_copies, n_inputs, n_out)
    spikes = SpikeMonitor(out, name="spikes")
    return [inp, out, S, spikes], S, out, spikes


def rewards_of(spike_counts, n_copies, n_out=2):
    c = np.asarray(spike_counts, float).reshape(n_copies, n_out)
    return c[:, 0] - c[:, 1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="runtime", choices=("runtime", "cpp_standalone"))
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--copies", type=int, default=16)
    ap.add_argument("--trial-ms", type=float, default=100.0)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build-dir", default="")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n, n_in = args.copies, 20
    standalone = args.device != "runtime"
    if standalone:
        folder = args.build_dir or str(devices.cache_dir() / "examples" / "between_trials")
        dev = devices.activate(args.device, folder)        # build_on_run=False: compiled once below
    else:
        devices.activate("runtime", target="numpy")
        b2.seed(args.seed)  # (on standalone, seed() would repeat the same noise in every run: left out)
    b2.defaultclock.dt = 0.5 * ms
    objects, S, _out, spikes = build(n_copies=n)
    net = b2.Network(*objects)
    learner = RSRPLearner(S, lr=args.lr, optimizer="adam", shaping="centered_rank", seed=args.seed)
    duration = args.trial_ms * ms
    if standalone:
        net.run(duration)
        devices.build(dev, folder)
    else:
        net.store()
    curve, t0 = [], time.perf_counter()
    for _ in range(args.trials):
        if standalone:
            learner.new_trial()
            dev.run(directory=folder, run_args=learner.run_args(learner.member_values()), with_output=False)
            counts = np.bincount(np.asarray(spikes.i[:]), minlength=2 * n)
        else:
            net.restore()           # neurons back to rest; the learned p is kept
            learner.begin_trial()
            before = np.asarray(spikes.count[:]).copy()
            net.run(duration)
            counts = np.asarray(spikes.count[:]) - before
        r = rewards_of(counts, n)
        curve.append(float(r.mean()))
        learner.end_trial(r)
    wall = time.perf_counter() - t0
    p = learner.p["syn"].reshape(n_in, 2)
    res = {"device": args.device, "trials": args.trials, "copies": n, "first5": float(np.mean(curve[:5])),
           "last5": float(np.mean(curve[-5:])), "p0": float(p[:, 0].mean()), "p1": float(p[:, 1].mean()),
           "wall_s": wall, "trials_per_s": args.trials / wall}
    print(f"mean reward of the copies: first 5 trials {res['first5']:.2f}, last 5 trials {res['last5']:.2f}")
    print(f"mean p onto output 0: {res['p0']:.3f}, onto output 1: {res['p1']:.3f} (started at 0.5)")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
