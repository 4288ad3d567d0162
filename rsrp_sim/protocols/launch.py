"""``rsrp-sim launch --local N -- COMMAND``: one run in N processes on this machine (jax.distributed);
``rsrp-sim launch --mpi N -- COMMAND``: one run over N MPI ranks on this machine (``mpiexec -n N``).

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

``--mpi N`` is for the methods whose simulator splits one run over MPI ranks itself (the NEURON
methods, e.g. ``mnist --method stdp-dc``): it runs ``mpiexec -n N COMMAND`` (Open MPI: with
``--oversubscribe``, as ``--local`` starts N processes whatever the core count, and
``--allow-run-as-root`` when run as root).  Rank 0 writes the run folder and prints.  Ctrl-C is passed
to every rank as SIGUSR1 (they stop after the same iteration; the run stays resumable); a second
Ctrl-C stops mpiexec at once.  A rank that fails says why in one line and stops the others; a rank
that dies without a word (a signal) is named by the launcher in one line, in place of Open MPI's
notices.  Without mpiexec on PATH, one line says what to install.
"""
from __future__ import annotations

import argparse
import codecs
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from ..infra.errors import UserError
from . import PROTOCOLS

__all__ = ["EXIT_INTERRUPTED", "free_port", "command", "launch", "MPI_INSTALL", "mpiexec_command", "launch_mpi", "main"]

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


MPI_INSTALL = ("install Open MPI (e.g. apt-get install openmpi-bin libopenmpi-dev) and mpi4py "
               "(pip install -c constraints.txt -e '.[mpi]')")
#: Open MPI frames each notice of its own between two lines of dashes
_OMPI_RULE = "-" * 74


def mpiexec_command(n: int, cmd: list[str], mpiexec: str | None = None) -> list[str]:
    """``mpiexec -n N`` with the options one machine needs, then ``cmd``."""
    mpiexec = mpiexec or shutil.which("mpiexec") or shutil.which("mpirun")
    if mpiexec is None:
        raise UserError(f"--mpi needs mpiexec on PATH; {MPI_INSTALL}")
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot run {mpiexec} --version ({e}); {MPI_INSTALL}") from None
    out = [mpiexec, "-n", str(n)]
    if "Open MPI" in version or "OpenRTE" in version:
        out += ["--oversubscribe"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            out += ["--allow-run-as-root"]
    return out + cmd


class _OmpiNotices:
    """Passes mpiexec's stderr through, except Open MPI's own framed notices (and its internal error-log
    lines), which it turns into at most one line naming the rank that died; a rank that reported its own
    error (MPI_Abort) or ranks that were interrupted together need no line."""

    def __init__(self, n: int, out: Any) -> None:
        self.n, self.out = n, out
        self.block: list[str] | None = None
        self.said = False

    def feed_line(self, line: str) -> None:
        bare = line.rstrip("\r\n")
        if bare == _OMPI_RULE:
            if self.block is None:
                self.block = []
            else:
                self.summarise(self.block)
                self.block = None
            return
        if self.block is not None:
            self.block.append(bare)
        elif "ORTE_ERROR_LOG" not in bare:
            self.out.write(line)
            self.out.flush()

    def summarise(self, block: list[str]) -> None:
        text = " ".join(x.strip() for x in block)
        if self.said or "MPI_ABORT was invoked" in text or "Primary job" in text:
            return
        m = re.search(r"process rank (\d+) .*exited on signal (\d+) \(([^)]*)\)", text)
        if m:
            line = (f"launch: MPI rank {m.group(1)} of {self.n} was killed by signal {m.group(2)} ({m.group(3)}); "
                    f"mpiexec stopped the other ranks")
        else:
            m = re.search(r"Process name: \[\[\d+,\d+\],(\d+)\].*Exit code: +(\d+)", text)
            if m and int(m.group(2)) == EXIT_INTERRUPTED:
                return
            if m:
                line = (f"launch: MPI rank {m.group(1)} of {self.n} exited with status {m.group(2)}; mpiexec stopped "
                        f"the other ranks")
            else:  # another notice (e.g. a start-up problem): say it, on one line
                line = f"launch: mpiexec: {text}"
        self.said = True
        self.out.write(line + "\n")
        self.out.flush()

    def pump(self, stream):
        """Copy ``stream`` (bytes) line by line; partial lines (progress bars) are written at once."""
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        pending = ""
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            pending += decode(chunk)
            while "\n" in pending:
                line, pending = pending.split("\n", 1)
                self.feed_line(line + "\n")
            if pending and self.block is None and not pending.startswith("-"):
                self.out.write(pending)
                self.out.flush()
                pending = ""
        pending += decode(b"", final=True)
        if pending:
            self.feed_line(pending)
        if self.block:
            self.summarise(self.block)


def launch_mpi(n: int, words: list[str], mpiexec: str | None = None) -> int:
    """Run ``words`` over ``n`` MPI ranks on this machine (see the module docstring); the exit status."""
    if n < 1:
        raise UserError(f"--mpi must be at least 1, got {n}")
    cmd = command(words)
    if cmd[0] == sys.executable:
        import importlib.util

        if importlib.util.find_spec("mpi4py") is None:
            raise UserError(f"--mpi needs mpi4py in {sys.executable}; {MPI_INSTALL}")
    full = mpiexec_command(n, cmd, mpiexec)
    try:
        proc = subprocess.Popen(full, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise UserError(f"cannot start {full[0]!r}: {e.strerror}") from None
    notices = _OmpiNotices(n, sys.stderr)
    pump = threading.Thread(target=notices.pump, args=(proc.stderr,), daemon=True)
    pump.start()
    interrupts = 0

    def forward(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if proc.poll() is None:  # first: every rank stops after this iteration; then: mpiexec stops them now
            proc.send_signal(signal.SIGUSR1 if interrupts == 1 else signal.SIGINT)

    old = signal.signal(signal.SIGINT, forward)
    try:
        while proc.poll() is None:
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, old)
    pump.join(timeout=10)
    return _code(proc.returncode)


def main(argv: Any = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = []
    if "--" in argv:
        k = argv.index("--")
        argv, words = argv[:k], argv[k + 1:]
    p = argparse.ArgumentParser(prog="rsrp-sim launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--local", type=int, metavar="N", help="processes to start on this machine (jax.distributed)")
    how.add_argument("--mpi", type=int, metavar="N", help="MPI ranks to start on this machine (mpiexec -n N; the "
                                                          "NEURON methods)")
    p.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                   help="CPU devices each process sees (default 1)")
    p.add_argument("--port", type=int, default=None, help="the coordinator's port (default: a free one)")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="seconds the other processes get to stop after one failed (default 30)")
    args = p.parse_args(argv)
    if args.mpi is not None:
        return launch_mpi(args.mpi, words)
    return launch(args.local, words, args.port, args.devices_per_process, args.grace)
