"""Tutorial: from NWB to Neo and Elephant, an RSRP network against an STDP one on CartPole.

    python examples/nwb_rsrp_vs_stdp.py [GENERATIONS] [EPISODES]

1. Two runs on CartPole-v1, each recording the spikes of its final network in test episodes:
   RSRP on the recurrent ConnSNN (JAX back-end; the deterministic network, p > 0.5) and
   reward-modulated STDP (the R-STDP baseline of Hasegan et al. 2022 on NEURON, plasticity frozen).
2. Each run folder is exported to NWB, as ``rsrp-sim export-nwb RUN`` does.
3. pynwb reads the files back; every unit (neuron) becomes a Neo ``SpikeTrain`` (times in s, its
   population and cell type as annotations), over the recorded episodes.
4. Elephant computes each neuron's mean firing rate and the coefficient of variation of its
   inter-spike intervals (ISI CV: 0 for a clock, about 1 for a Poisson process; Softky & Koch 1993),
   and the script prints them per network and population, writes ``stats.json`` and draws
   ``rates_cv.png`` in ``runs/nwb_tutorial/``.

The STDP run needs NEURON and NetPyNE (``pip install -c constraints.txt -e '.[neuron,nwb]'``);
without them only the RSRP network is analysed.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from rsrp_sim.analysis import nwb
from rsrp_sim.protocols import get

OUT = Path("runs") / "nwb_tutorial"


def run_networks(generations: int, episodes: int) -> dict[str, Path]:
    """The two runs (small settings); returns name -> run folder."""
    cartpole = get("cartpole")
    runs = {}
    rd, s = cartpole.run("rsrp", "jax", "cpu", 0, OUT / "rsrp", overrides={
        "generations": generations, "pop_size": 128, "eval_size": 8, "chunk_size": 128,
        "model_overrides": {"n_neurons": 64}, "record_episodes": 2}, progress=False)
    print(f"RSRP: final eval return {s['final_eval_score']:.1f} after {generations} generations -> {rd.path}")
    runs["RSRP (ConnSNN, JAX)"] = rd.path
    if all(importlib.util.find_spec(p) for p in ("neuron", "netpyne")):
        rd, s = cartpole.run("rstdp", "netpyne", "cpu", 0, OUT / "rstdp", overrides={
            "episodes": episodes, "episodes_per_iteration": episodes, "eval_episodes": 1, "record_episodes": 2},
            progress=False)
        print(f"R-STDP: final eval return {s['final_eval_score']:.1f} after {episodes} episodes -> {rd.path}")
        runs["R-STDP (NEURON)"] = rd.path
    else:
        print("R-STDP: skipped (NEURON / NetPyNE not installed)")
    return runs


def spiketrains(path: Path):
    """The NWB file's units as Neo SpikeTrains over the recorded time."""
    import neo
    import quantities as pq
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        units = f.units
        t_stop = max(float(f.trials["stop_time"][-1]), 1e-3)
        trains = []
        for i in range(len(units)):
            times = np.asarray(units.get_unit_spike_times(i), float)
            trains.append(neo.SpikeTrain(times * pq.s, t_start=0.0 * pq.s, t_stop=t_stop * pq.s,
                                         population=str(units["population"][i]),
                                         cell_type=str(units["cell_type"][i])))
    return trains


def statistics(trains) -> dict[str, dict[str, float]]:
    """Per population and cell type (and ``all``): neurons, spikes, mean rate (Hz), mean ISI CV of the
    neurons with at least 3 spikes."""
    import quantities as pq
    from elephant.statistics import cv, isi, mean_firing_rate

    out = {}
    def group(st):
        return f"{st.annotations['population']} {st.annotations['cell_type'][:3]}"

    for pop in sorted({group(st) for st in trains}) + ["all"]:
        sel = [st for st in trains if pop == "all" or group(st) == pop]
        rates = np.array([float(mean_firing_rate(st).rescale(pq.Hz)) for st in sel])
        cvs = np.array([cv(np.asarray(isi(st).rescale(pq.s))) for st in sel if len(st) >= 3])
        out[pop] = {"neurons": len(sel), "spikes": int(sum(len(st) for st in sel)),
                    "rate_hz": float(rates.mean()), "active": int((rates > 0).sum()),
                    "cv_isi": float(cvs.mean()) if len(cvs) else float("nan"), "cv_neurons": int(len(cvs)),
                    "rates": rates.tolist(), "cvs": cvs.tolist()}
    return out


def draw(stats: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for name, s in stats.items():
        axes[0].hist(s["all"]["rates"], bins=30, histtype="step", lw=1.5, label=name)
        if s["all"]["cvs"]:
            axes[1].hist(s["all"]["cvs"], bins=20, histtype="step", lw=1.5, label=name)
    axes[0].set_xlabel("firing rate (Hz)")
    axes[1].set_xlabel("ISI coefficient of variation")
    for ax in axes:
        ax.set_ylabel("neurons")
        ax.legend(fontsize=8)
    fig.suptitle("CartPole test episodes: RSRP vs R-STDP networks (from NWB, via Neo and Elephant)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    generations = int(argv[0]) if argv else 10
    episodes = int(argv[1]) if len(argv) > 1 else 10
    stats = {}
    for name, run in run_networks(generations, episodes).items():
        path = nwb.export(run)  # = rsrp-sim export-nwb RUN
        critical = [f for f in nwb.inspect(path) if f.importance.name == "CRITICAL"]
        print(f"{name}: {path} (nwbinspector: {len(critical)} critical)")
        stats[name] = statistics(spiketrains(path))
    print(f"\n{'network':<22} {'population':<14} {'neurons':>7} {'active':>6} {'rate (Hz)':>9} {'ISI CV':>7}")
    for name, s in stats.items():
        for pop, v in s.items():
            print(f"{name:<22} {pop:<14} {v['neurons']:>7} {v['active']:>6} {v['rate_hz']:>9.2f} {v['cv_isi']:>7.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    draw(stats, OUT / "rates_cv.png")
    print(f"\n{OUT / 'stats.json'}, {OUT / 'rates_cv.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
