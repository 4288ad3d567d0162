"""Processes and devices: starting ``jax.distributed``, the global member mesh, the one writer.

A population's member axis is split over every device of every process (one global
``jax.sharding.Mesh`` with the axis ``members``).  Members are independent, so only the per-member
fitness (gathered to every process before shaping) and the gradient sums (reduced across devices)
cross devices; random draws are made on the global arrays with JAX's partitionable threefry, so they
do not depend on the number of devices or processes.  With one device nothing is annotated, and the
numbers are exactly those of the unsharded code.

Starting several processes (``jax.distributed``, JAX's multi-controller runtime):

* explicitly: ``--coordinator HOST:PORT --num-processes N --process-id I`` on the protocol's command
  line (JAX's own names), or the variables ``RSRP_SIM_COORDINATOR``, ``RSRP_SIM_NUM_PROCESSES``,
  ``RSRP_SIM_PROCESS_ID`` (what ``rsrp-sim launch --local N`` sets for the processes it starts);
* under SLURM (``srun``, ``SLURM_NTASKS`` > 1) or Open MPI (``mpirun``, ``OMPI_COMM_WORLD_SIZE`` > 1):
  ``jax.distributed.initialize()``'s own cluster detection.

On CPUs the collectives go through gloo.  Process 0 is the writer: it alone writes the run folder.

A method whose simulator spreads one run over MPI ranks itself (NEURON's ParallelContext: the
``mpi_ranks`` methods) starts no ``jax.distributed``: :func:`start_ranks` joins the MPI job the
process was started in (``mpiexec``/``mpirun``/``srun``, ``rsrp-sim launch --mpi N``) through mpi4py,
and the helpers below (writer, broadcast, barrier, Ctrl-C agreement) then go through MPI; rank 0 is
the writer.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import sys
import threading
from typing import Any

from .errors import UserError

__all__ = ["Cluster", "initialize", "start_ranks", "abort", "mpi_comm", "mpi_launch_size", "process_index",
           "process_count", "is_writer", "mesh", "member_sharding", "shard_members", "replicate", "host",
           "broadcast_from_writer", "barrier", "InterruptAgreement", "LOST_PROCESS_ERRORS", "lost_process_message",
           "check_layout"]

ENV = ("RSRP_SIM_COORDINATOR", "RSRP_SIM_NUM_PROCESSES", "RSRP_SIM_PROCESS_ID")
#: seconds a process waits for the coordinator (all processes) at start-up
INIT_TIMEOUT_S = int(os.environ.get("RSRP_SIM_INIT_TIMEOUT", "60"))
#: seconds without a heartbeat after which the coordinator declares a process dead and stops the others
HEARTBEAT_TIMEOUT_S = int(os.environ.get("RSRP_SIM_HEARTBEAT_TIMEOUT", "20"))

_started: Cluster | None = None
_comm = None  # mpi4py's COMM_WORLD after start_ranks() in a job of several MPI ranks
#: environment variables that give the number of MPI ranks a launcher started (Open MPI, MPICH/Intel MPI, srun)
MPI_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
MPI_INSTALL_HINT = ("install Open MPI (e.g. apt-get install openmpi-bin libopenmpi-dev) and mpi4py "
                    "(pip install -c constraints.txt -e '.[mpi]')")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process was started: the coordinator, the number of processes, this one's index."""

    coordinator: str | None
    num_processes: int
    process_id: int
    detected: str  # "single", "explicit", "slurm", "openmpi", "mpi" (ranks of an mpi_ranks method)


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an integer, got {value!r}") from None


def plan(coordinator: Any = None, num_processes: Any = None, process_id: Any = None, environ: Any = None) -> Cluster:
    """What :func:`initialize` would start, from the arguments, else the environment (checked)."""
    env = os.environ if environ is None else environ
    if coordinator is None and num_processes is None and process_id is None and env.get(ENV[0]):
        coordinator, num_processes, process_id = (env.get(k) for k in ENV)
    if coordinator is not None or num_processes is not None or process_id is not None:
        if coordinator is None or num_processes is None or process_id is None:
            raise UserError("--coordinator, --num-processes and --process-id go together (JAX's multi-process "
                            "start-up); give all three, or none")
        n, i = _int("--num-processes", num_processes), _int("--process-id", process_id)
        if n < 1:
            raise UserError(f"--num-processes must be at least 1, got {n}")
        if not 0 <= i < n:
            raise UserError(f"--process-id must be in 0..{n - 1} for --num-processes {n}, got {i}")
        if not re.fullmatch(r"[\w.\-\[\]:]+:\d+", str(coordinator)):
            raise UserError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
        return Cluster(str(coordinator), n, i, "explicit")
    if _int("SLURM_NTASKS", env.get("SLURM_NTASKS", "1")) > 1:
        return Cluster(None, _int("SLURM_NTASKS", env["SLURM_NTASKS"]),
                       _int("SLURM_PROCID", env.get("SLURM_PROCID", 0)), "slurm")
    if _int("OMPI_COMM_WORLD_SIZE", env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return Cluster(None, _int("OMPI_COMM_WORLD_SIZE", env["OMPI_COMM_WORLD_SIZE"]),
                       _int("OMPI_COMM_WORLD_RANK", env.get("OMPI_COMM_WORLD_RANK", 0)), "openmpi")
    return Cluster(None, 1, 0, "single")


def initialize(coordinator: Any = None, num_processes: Any = None, process_id: Any = None) -> Cluster:
    """Start ``jax.distributed`` when this run has several processes (see the module docstring).

    Call before anything touches a JAX device.  One process: nothing happens.  A coordinator that
    cannot be reached within ``RSRP_SIM_INIT_TIMEOUT`` seconds (60) is a one-line error.
    """
    global _started
    cluster = plan(coordinator, num_processes, process_id)
    if cluster.num_processes == 1 or _started is not None:
        _started = _started or cluster
        return _started
    import jax

    if (os.environ.get("JAX_PLATFORMS") or "cpu").split(",")[0] in ("cpu", ""):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's own time-out ends the process with a C++ abort and a stack of lines; a watchdog says it
    # in one line first (and exits with status 2), a little before JAX would
    kw: dict[str, Any] = dict(initialization_timeout=INIT_TIMEOUT_S + 30, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    if cluster.detected == "explicit":
        kw.update(coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
                  process_id=cluster.process_id)
    where = cluster.coordinator or f"the {cluster.detected} cluster's coordinator"
    message = (f"process {cluster.process_id} of {cluster.num_processes} could not join {where} within "
               f"{INIT_TIMEOUT_S} s; check the address and that every process was started")
    done = threading.Event()

    def watchdog():
        if not done.wait(INIT_TIMEOUT_S):
            print(f"error: {message}", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        jax.distributed.initialize(**kw)
    except Exception as e:  # the cluster could not be detected, or the address is malformed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{message} ({first[:160]})") from None
    finally:
        done.set()
    _started = cluster
    return cluster


def mpi_launch_size(environ: Any = None) -> int:
    """How many MPI ranks the launcher that started this process started (1: none)."""
    env = os.environ if environ is None else environ
    for name in MPI_SIZE_ENV:
        if env.get(name):
            return _int(name, env[name])
    return 1


def start_ranks() -> Cluster:
    """Join the MPI job this process was started in (several ranks: through mpi4py), for a method whose
    simulator splits one run over the MPI ranks itself; no ``jax.distributed`` is started.  Alone (no
    MPI launcher, or one rank) nothing happens.  Idempotent.  A rank that fails afterwards stops the
    others (:func:`abort`; an uncaught exception does the same after its traceback)."""
    global _started, _comm
    if _started is not None:
        if _started.detected not in ("mpi", "single"):
            raise UserError("this method runs over MPI ranks (mpiexec -n N ...), not over jax.distributed "
                            "processes; start it with mpiexec, srun or rsrp-sim launch --mpi N")
        return _started
    n = mpi_launch_size()
    if n == 1:
        _started = Cluster(None, 1, 0, "single")
        return _started
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise UserError(f"this process is one of {n} MPI ranks but mpi4py is not usable ({e}); "
                        f"{MPI_INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    if comm.size != n:
        raise UserError(f"the MPI launcher started {n} ranks but mpi4py's MPI sees {comm.size}: mpi4py uses another "
                        f"MPI library than the launcher's (check mpiexec --version and MPI_Get_library_version)")
    _comm = comm
    _started = Cluster(None, comm.size, comm.rank, "mpi")
    previous = sys.excepthook

    def excepthook(kind, value, tb):  # a bug on one rank: its traceback, then every rank stops
        previous(kind, value, tb)
        abort(1)

    sys.excepthook = excepthook
    # SIGUSR1 (a Ctrl-C that rsrp-sim launch --mpi passes on) outside a run's iterations: every rank stops now;
    # during them InterruptAgreement takes it and the ranks stop together after the current iteration
    signal.signal(signal.SIGUSR1, lambda signum, frame: abort(130))
    return _started


def abort(code: int) -> None:
    """End every rank of the MPI job now with exit status ``code`` (several ranks), else ``sys.exit``."""
    if _comm is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        _comm.Abort(int(code))
    sys.exit(int(code))


def mpi_comm() -> Any:
    """mpi4py's communicator of the ranks (None unless :func:`start_ranks` joined several)."""
    return _comm


def process_index() -> int:
    if _comm is not None:
        return _comm.rank
    import jax

    return jax.process_index()


def process_count() -> int:
    if _started is not None and _started.detected in ("mpi", "single"):
        return _started.num_processes
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes the run folder (process 0, MPI rank 0)."""
    return _started is None or _started.num_processes == 1 or process_index() == 0


@functools.cache
def mesh() -> Any:
    """The global device mesh of the member axis (every device of every process)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()), ("members",))


def device_count() -> int:
    if _started is not None and _started.detected == "mpi":
        return _started.num_processes  # (one simulator per rank)
    import jax

    return jax.device_count()


def member_sharding(n: int) -> Any:
    """A sharding of an ``n``-member leading axis over all devices, or ``None`` (one device, or
    ``n`` not divisible by the device count: then the computation is replicated)."""
    d = device_count()
    if d <= 1 or n % d:
        return None
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh(), PartitionSpec("members"))


def _is_tracer(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def shard_members(tree: Any, n: int) -> Any:
    """Split every leaf whose leading axis has length ``n`` over the devices (a sharding constraint
    inside ``jit``, a transfer outside); other leaves (scalars, population sums) are left as they are."""
    sh = member_sharding(n)
    if sh is None:
        return tree
    import jax

    def one(x):
        if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n:
            return jax.lax.with_sharding_constraint(x, sh) if _is_tracer(x) else jax.device_put(x, sh)
        return x

    return jax.tree_util.tree_map(one, tree)


def replicate(tree: Any) -> Any:
    """Every leaf complete on every device (inside ``jit``: the results the host reads, gathered)."""
    if device_count() <= 1:
        return tree
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    full = NamedSharding(mesh(), PartitionSpec())
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, full) if _is_tracer(x) else jax.device_put(x, full), tree)


def host(tree: Any) -> Any:
    """``jax.device_get`` for results that every process holds completely."""
    import jax

    return jax.device_get(tree)


def broadcast_from_writer(tree: Any) -> Any:
    """Process 0's values of ``tree`` on every process (e.g. a checkpoint only the writer read)."""
    if _started is None or _started.num_processes == 1:
        return tree
    if _comm is not None:
        return _comm.bcast(tree, root=0)
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(tree)


def barrier(name: str) -> Any:
    """Wait until every process reaches this point."""
    if _started is None or _started.num_processes == 1:
        return
    if _comm is not None:
        return _comm.barrier()
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _multi() -> bool:
    return _started is not None and _started.num_processes > 1


class InterruptAgreement:
    """Ctrl-C in a run of several processes: the first one only marks this process, and after every
    iteration the processes agree (a tiny all-gather) to stop together after the same iteration, so
    none waits in a collective for the others and the run stays resumable.  A second Ctrl-C stops at
    once.  With one process Ctrl-C is Python's KeyboardInterrupt, as always.  MPI ranks take SIGUSR1
    the same way (what ``rsrp-sim launch --mpi`` sends mpiexec, which passes it on to every rank)."""

    def __init__(self) -> None:
        self.flag = False
        self._old = None
        self._old_usr1 = None
        if _multi():
            self._old = signal.signal(signal.SIGINT, self._handle)
            if _comm is not None:
                self._old_usr1 = signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def agreed(self) -> bool:
        if not _multi():
            return False
        if _comm is not None:
            return any(_comm.allgather(self.flag))
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.asarray(multihost_utils.process_allgather(np.int32(self.flag))).any())

    def close(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        if self._old_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._old_usr1)
            self._old_usr1 = None


def _lost_errors():
    try:
        import jax

        return (jax.errors.JaxRuntimeError,)
    except (ImportError, AttributeError):  # pragma: no cover
        return ()


#: what a collective raises when another process of the run died
LOST_PROCESS_ERRORS = _lost_errors()


def lost_process_message(error: Any) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return (f"process {process_index()}: another process of this run stopped ({first}); every completed "
            f"iteration is in the run folder: start all processes again with --resume")


def check_layout(layout: Any, what: str = "population") -> None:
    """Refuse a population the devices do not divide (one line), so every device holds whole chunks
    and the members' results are gathered, not recomputed; note when the devices do not divide the
    reduction blocks (the numbers may then differ from other device counts in the last bits)."""
    d = device_count()
    if d <= 1:
        return
    for name, n in (("chunk_size (sampled members per chunk)", layout.chunk), ("eval_size", layout.eval_size)):
        if n and n % d:
            raise UserError(f"{name} is {n}, which the {d} devices of this run do not divide; choose a "
                            f"multiple of {d} (the {what} is split over every device)")
    blocks = layout.blocks(layout.chunk)
    if blocks % d:
        import warnings

        warnings.warn(f"{d} devices do not divide the {blocks} reduction blocks: the sums over members, and so "
                      f"the numbers, may differ in the last bits from runs on other device counts", stacklevel=2)
