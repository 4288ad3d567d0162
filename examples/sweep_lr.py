"""Tutorial: a learning-rate sweep on Optuna, continued, then its best trial.

    python examples/sweep_lr.py [TRIALS] [GENERATIONS]

The same as the command line

    rsrp-sim sweep cartpole --method rsrp --space 'lr=loguniform(0.01,0.3)' --trials N \\
        --out runs/sweep_tutorial generations=G pop_size=64 eval_size=8 chunk_size=64 model.n_neurons=32

Each trial is an ordinary run folder under ``runs/sweep_tutorial/trials/`` (its seed is the trial
number); the study lives in ``study.db`` (SQLite) in the sweep folder, so running the same command
again continues it, and a larger ``--trials`` adds trials.  The sweep folder ends with
``trials.csv``, ``best.json``, ``index.html`` and figures of the objective per trial and against the
learning rate.  Share one sweep between machines with ``--storage postgresql://...`` or
``--storage journal:/shared/disk/sweep.log`` and the same command on each.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rsrp_sim.__main__ import main as rsrp_sim

OUT = Path("runs") / "sweep_tutorial"


def main(trials: int = 3, generations: int = 3) -> dict:
    args = ["sweep", "cartpole", "--method", "rsrp", "--space", "lr=loguniform(0.01,0.3)", "--trials", str(trials),
            "--out", str(OUT), f"generations={generations}", "pop_size=64", "eval_size=8", "chunk_size=64",
            "model.n_neurons=32"]
    code = rsrp_sim(args)
    if code != 0:
        raise SystemExit(code)
    rsrp_sim(args[:args.index("--trials") + 1] + [str(trials + 1)] + args[args.index("--trials") + 2:])  # one more
    best = json.loads((OUT / "best.json").read_text())
    print("best trial:", best)
    return best


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
