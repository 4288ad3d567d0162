"""``rsrp-sim launch --local N -- COMMAND``: one run in N processes on this machine (jax.distributed).

    rsrp-sim launch --local 2 -- python -m rsrp_sim.protocols.cartpole --seed 0
    rsrp-sim launch --local 2 -- cartpole --method es         # a protocol name: python -m rsrp_sim.protocols.cartpole
    rsrp-sim launch --local 2 --devices-per-process 2 -- digits   # 4 CPU devices in all

Starts N copies of COMMAND with ``RSRP_SIM_COORDINATOR=127.0.0.1:PORT``, ``RSRP_SIM_NUM_PROCESSES=N``
and ``RSRP_SIM_PROCESS_ID=i`` (what the protocols' ``--coordinator --num-processes --process-id``
would say), on the CPU unless ``JAX_PLATFORMS`` says otherwise; process 0 writes the run folder and
prints.  Ctrl-C is forwarded to every process (they stop after the same iteration; the run stays
resumable; a second Ctrl-C stops at once).  When a process fails, the launcher says which in one
line and stops the others after ``--grace`` seconds at the latest; its exit status is the first
failing process's.  On a cluster, start the processes with the cluster's own launcher instead
(``srun``, ``mpirun``): the protocols detect SLURM and Open MPI by themselves.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from ..infra.errors import UserError
from . import PROTOCOLS

EXIT_INTERRUPTED = 130


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(words: list[str]) -> list[str]:
    """The command each process runs: a protocol name expands to ``python -m rsrp_sim.protocols.NAME``;
    ``python``/``python3`` become this interpreter."""
    if not words:
        raise UserError("launch needs a command after --, e.g. rsrp-sim launch --local 2 -- cartpole --seed 0")
    if words[0] in PROTOCOLS:
        return [sys.executable, "-m", PROTOCOLS[words[0]], *words[1:]]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    return list(words)


def _code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc  # killed by signal s: 128 + s, as shells report it


def launch(n: int, words: list[str], port: int | None = None, devices_per_process: int = 1,
           grace_s: float = 30.0, poll_s: float = 0.1) -> int:
    """Run ``words`` in ``n`` processes (see the module docstring); returns the exit status."""
    if n < 1:
        raise UserError(f"--local must be at least 1, got {n}")
    if devices_per_process < 1:
        raise UserError(f"--devices-per-process must be at least 1, got {devices_per_process}")
    cmd = command(words)
    port = port or free_port()
    procs = []
    for i in range(n):
        env = dict(os.environ, RSRP_SIM_COORDINATOR=f"127.0.0.1:{port}", RSRP_SIM_NUM_PROCESSES=str(n),
                   RSRP_SIM_PROCESS_ID=str(i))
        env.setdefault("JAX_PLATFORMS", "cpu")
        if devices_per_process > 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={devices_per_process}").strip()
        try:
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        except OSError as e:
            for p in procs:
                p.kill()
            raise UserError(f"cannot start {cmd[0]!r}: {e.strerror}") from None
    interrupts = 0

    def forward(signum, frame):
        nonlocal interrupts
        interrupts += 1
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    old = signal.signal(signal.SIGINT, forward)
    first_failure, deadline = None, None
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                rc = p.poll()
                if rc not in (None, 0) and first_failure is None and not interrupts:
                    first_failure = (i, _code(rc))
                    if any(q.poll() is None for q in procs):
                        print(f"launch: process {i} of {n} exited with status {_code(rc)}; stopping the other "
                              f"processes (at most {grace_s:g} s)", file=sys.stderr, flush=True)
                        deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                time.sleep(2.0)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                deadline = None
            time.sleep(poll_s)
    finally:
        signal.signal(signal.SIGINT, old)
    if first_failure is not None:
        return first_failure[1]
    codes = [_code(p.returncode) for p in procs]
    if interrupts:
        return EXIT_INTERRUPTED if any(c == EXIT_INTERRUPTED for c in codes) or all(c == 0 for c in codes) \
            else next(c for c in codes if c)
    return next((c for c in codes if c), 0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = []
    if "--" in argv:
        k = argv.index("--")
        argv, words = argv[:k], argv[k + 1:]
    p = argparse.ArgumentParser(prog="rsrp-sim launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", type=int, required=True, metavar="N", help="processes to start on this machine")
    p.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                   help="CPU devices each process sees (default 1)")
    p.add_argument("--port", type=int, default=None, help="the coordinator's port (default: a free one)")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="seconds the other processes get to stop after one failed (default 30)")
    args = p.parse_args(argv)
    return launch(args.local, words, args.port, args.devices_per_process, args.grace)
