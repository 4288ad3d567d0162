"""Tutorial: RSRP against reward-modulated STDP on one protocol, then one comparison.

    python examples/rsrp_vs_rstdp.py [SEEDS] [GENERATIONS] [EPISODES]

Runs, on CartPole-v1, the RSRP method on a recurrent spiking network (JAX back-end) and the R-STDP
baseline of Hasegan et al. (2022) on NEURON, each over a few seeds (one group folder per method),
then compares them the way ``rsrp-sim compare`` does: the deterministic network's return by
iteration, by environment steps and by wall-clock (``runs/rsrp_vs_rstdp/compare.png``) and a table
of final, best and mean eval scores with 95 % confidence intervals over seeds.  An RSRP generation
evaluates a whole population; an R-STDP iteration is a block of training episodes of one network,
so the environment-steps axis is the fair one.  The R-STDP part needs NEURON (the ``neuron`` extra).
"""
from __future__ import annotations

import sys
from pathlib import Path

from rsrp_sim.analysis.compare import expand, format_table, group_runs, load_run, table
from rsrp_sim.analysis.plots import compare
from rsrp_sim.protocols import get
from rsrp_sim.protocols.groups import run_group

OUT = Path("runs") / "rsrp_vs_rstdp"


def main(seeds: int = 2, generations: int = 10, episodes: int = 60) -> list[dict]:
    cartpole = get("cartpole")
    rsrp = {"generations": generations, "pop_size": 128, "eval_size": 8, "chunk_size": 128,
            "model_overrides": {"n_neurons": 64}}
    rstdp = {"episodes": episodes, "episodes_per_iteration": 20, "eval_episodes": 3}
    for method, ov in (("rsrp", rsrp), ("rstdp", rstdp)):
        run_group(cartpole, method, None, "cpu", list(range(seeds)), OUT / method, False, ov, progress=False)
    runs = [load_run(p) for p in expand([OUT / "rsrp", OUT / "rstdp"])]
    groups = group_runs(runs)
    compare({k: [r["rows"] for r in v] for k, v in groups.items()}, OUT / "compare.png",
            x_keys=("iteration", "env_steps", "wall_s"), title="CartPole-v1: RSRP vs R-STDP",
            score_label="episode return", threshold=475.0)
    rows = table(groups)
    print(format_table(rows))
    print(f"figure: {OUT / 'compare.png'}")
    return rows


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
