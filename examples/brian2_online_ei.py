"""Your own Brian2 network learning online with RSRP synapses: one run, no Python between trials.

Poisson inputs drive a small excitatory/inhibitory network of conductance-based LIF neurons (with
units).  The input synapses onto the excitatory neurons are RSRP synapses in spike mode: every
presynaptic spike releases with probability ``p``.  The reward of a trial is the number of spikes
of excitatory neuron 0 minus those of neuron 1, counted by a plain ``Synapses`` onto the reward unit
``S_in.reward``; the update runs inside the model at every trial boundary.  The whole learning run
is ONE ``run()``, on the runtime device or compiled once for cpp_standalone / cuda_standalone.

    python examples/brian2_online_ei.py                              # runtime (numpy), 200 trials
    python examples/brian2_online_ei.py --device cpp_standalone      # one binary run
    python examples/brian2_online_ei.py --device cuda_standalone     # on a GPU (brian2cuda)

It prints the mean reward of the first and last 10 trials and the mean ``p`` onto neurons 0 and 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from rsrp_sim.backends.brian2 import RSRPSynapses, devices
from rsrp_sim.infra.errors import UserError

b2 = devices.import_brian2()
from brian2 import Hz, NeuronGroup, PoissonGroup, StateMonitor, Synapses, ms, mV

EQS = """
dv/dt = (v_rest - v + ge * (E_exc - v) + gi * (E_inh - v)) / tau_m : volt (unless refractory)
dge/dt = -ge / tau_ge : 1
dgi/dt = -gi / tau_gi : 1
"""
CONSTANTS = {"v_rest": -65 * mV, "E_exc": 0 * mV, "E_inh": -80 * mV, "tau_m": 10 * ms, "tau_ge": 5 * ms,
             "tau_gi": 10 * ms, "v_th": -50 * mV, "v_reset": -65 * mV}


def build(n_inputs=40, n_exc=8, n_inh=2, rate=25 * Hz, trial=100 * ms, lr=0.05, weight=0.12, online=True):
    """The network: every object to add to a ``Network``, the plastic synapses, a monitor of the rewards.

    ``online=False`` builds the same network for between-trial learning (:class:`RSRPLearner`): the
    reward is then counted into a unit of its own (``reward_unit.R``), read after each run."""
    inp = PoissonGroup(n_inputs, rates=rate, name="inputs")
    exc = NeuronGroup(n_exc, EQS, threshold="v > v_th", reset="v = v_reset", refractory=2 * ms,
                      method="euler", namespace=CONSTANTS, name="exc")
    inh = NeuronGroup(n_inh, EQS, threshold="v > v_th", reset="v = v_reset", refractory=2 * ms,
                      method="euler", namespace=CONSTANTS, name="inh")
    exc.v = inh.v = CONSTANTS["v_rest"]
    # the plastic input synapses: stochastic release, the update inside the model every trial
    learning = {"online": True, "lr": lr, "trial_duration": trial} if online else {}
    S_in = RSRPSynapses(inp, exc, target_var="ge", mode="spike", weight=weight, name="S_in", **learning)
    S_in.connect()
    S_ei = Synapses(exc, inh, on_pre="ge_post += 0.1", name="S_ei")
    S_ei.connect()
    S_ie = Synapses(inh, exc, on_pre="gi_post += 0.1", name="S_ie")
    S_ie.connect()
    # the reward: spikes of neuron 0 minus spikes of neuron 1, summed into S_in.reward.R during the trial
    unit = S_in.reward if online else NeuronGroup(1, "R : 1", name="reward_unit")
    S_reward = Synapses(exc, unit, "credit : 1", on_pre="R_post += credit", name="S_reward")
    S_reward.connect(i=[0, 1], j=[0, 0])
    S_reward.credit = [1, -1]
    objects = [inp, exc, inh, S_in, S_ei, S_ie, S_reward]
    if not online:
        return objects + [unit], S_in, unit
    # last_R after each boundary = the finished trial's reward
    rewards = StateMonitor(S_in.reward, "last_R", record=0, dt=trial, when="start", order=0, name="rewards")
    return objects + [rewards], S_in, rewards


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="runtime", choices=devices.DEVICES)
    ap.add_argument("--target", default="numpy", choices=devices.TARGETS, help="code generation of runtime")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--trial-ms", type=float, default=100.0)
    ap.add_argument("--inputs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build-dir", default="", help="standalone project folder (default: in the cache)")
    ap.add_argument("--json", action="store_true", help="print the numbers as one JSON line too")
    args = ap.parse_args(argv)

    if args.device == "runtime":
        b2.set_device("runtime")
        b2.prefs.codegen.target = args.target
    else:
        devices.check_toolchain(args.device)  # one line if a compiler or the GPU is missing, before any code
        if args.device == "cuda_standalone":
            devices.cuda_prefs()
        folder = args.build_dir or str(devices.cache_dir() / "examples" / f"online_ei_{args.device}")
        b2.set_device(args.device, directory=folder, build_on_run=True)  # run() builds, compiles, runs once
    b2.seed(args.seed)
    b2.defaultclock.dt = 0.5 * ms
    objects, S_in, rewards = build(n_inputs=args.inputs, trial=args.trial_ms * ms, lr=args.lr)
    net = b2.Network(*objects)
    t0 = time.perf_counter()
    # n trials and the first step of trial n + 1, where trial n's update happens
    net.run(args.trials * args.trial_ms * ms + b2.defaultclock.dt)
    wall = time.perf_counter() - t0
    r = np.asarray(rewards.last_R[0])[1:args.trials + 1]
    p = np.asarray(S_in.p[:])
    post = np.asarray(S_in.j[:])
    out = {"device": args.device, "trials": args.trials, "first10": float(r[:10].mean()),
           "last10": float(r[-10:].mean()), "p0": float(p[post == 0].mean()), "p1": float(p[post == 1].mean()),
           "p_other": float(p[post > 1].mean()), "n_trials": int(S_in.reward.n_trials[0]), "wall_s": wall}
    print(f"mean reward: first 10 trials {out['first10']:.2f}, last 10 trials {out['last10']:.2f}")
    print(f"mean p onto neuron 0: {out['p0']:.3f}, onto neuron 1: {out['p1']:.3f} (started at 0.5)")
    print(f"{out['n_trials']} trials in one run on {args.device}: {wall:.1f} s")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
