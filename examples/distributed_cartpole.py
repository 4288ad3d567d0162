"""Tutorial: one run over two processes (jax.distributed), the same numbers as one process.

    python examples/distributed_cartpole.py [GENERATIONS]

Runs RSRP on CartPole-v1 three ways -- one process with one CPU device, one process with two devices
(XLA splits the population inside the process), two processes with one device each, started like
``rsrp-sim launch --local 2 -- cartpole ...`` -- and checks that the three metrics.csv files hold the
same numbers, bit for bit: members are drawn on the global arrays, rewards are gathered, and the
sums over members are made in fixed blocks that any device count dividing them splits the same way.
On a cluster the same command runs under ``srun`` (see the distributed-run tutorial).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

OUT = Path("runs") / "distributed_tutorial"
ARGS = ["--quiet", "pop_size=64", "eval_size=8", "chunk_size=64", "model.n_neurons=32"]


def metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_s", "env_steps_per_s")} for row in csv.DictReader(f)]


def main(generations: int = 3) -> bool:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    env.pop("XLA_FLAGS", None)
    common = [*ARGS, f"generations={generations}"]
    layouts = {
        "one_process": ([sys.executable, "-m", "rsrp_sim.protocols.cartpole"], {}),
        "two_devices": ([sys.executable, "-m", "rsrp_sim.protocols.cartpole"],
                        {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
        "two_processes": ([sys.executable, "-m", "rsrp_sim", "launch", "--local", "2", "--", "cartpole"], {}),
    }
    results = {}
    for name, (cmd, extra) in layouts.items():
        folder = OUT / name
        subprocess.run([*cmd, "--out", str(folder), *common], env={**env, **extra}, check=True)
        results[name] = metrics(folder)
        print(f"{name:14s} eval scores {[r['eval_score'] for r in results[name]]}")
    same = results["one_process"] == results["two_devices"] == results["two_processes"]
    print("the same numbers in all three:", same)
    return same


if __name__ == "__main__":
    sys.exit(0 if main(*(int(a) for a in sys.argv[1:2])) else 1)
