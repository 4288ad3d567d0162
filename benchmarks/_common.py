"""What every benchmark script shares: the machine description and writing the JSON document."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path


def machine(packages=("jax", "numpy")) -> dict:
    """Platform, CPUs, the 1-minute load average (other work slows CPU timings) and package versions."""
    versions = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2), "versions": versions}


def write(doc: dict, out=None) -> str:
    """``doc`` as indented JSON; also written to ``out`` (folders created) when given."""
    text = json.dumps(doc, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text


@contextlib.contextmanager
def timed_psolve(sim):
    """Time NEURON's integration inside NetPyNE's run loop: yields a one-item list that holds the
    seconds spent in ``sim.pc.psolve`` while the block runs (``sim``: ``netpyne.sim``)."""
    spent = [0.0]
    real_pc = sim.pc

    class _TimedPC:
        def __getattr__(self, name):
            return getattr(real_pc, name)

        @staticmethod
        def psolve(tstop):
            t = time.perf_counter()
            real_pc.psolve(tstop)
            spent[0] += time.perf_counter() - t

    sim.pc = _TimedPC()
    try:
        yield spent
    finally:
        sim.pc = real_pc


def run_worker(script: str, n: int, args: list[str]):
    """Run ``script --worker ARGS`` in ``n`` MPI ranks (one plain process for ``n == 1``) and return the
    JSON of its ``RESULT`` line (the benchmark's repository and folder on ``PYTHONPATH``)."""
    here = Path(script).resolve().parent
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", *args]
    if n > 1:
        from rsrp_sim.protocols.launch import mpiexec_command

        cmd = mpiexec_command(n, cmd)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"{n} rank(s) failed (exit {p.returncode}): {p.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])
