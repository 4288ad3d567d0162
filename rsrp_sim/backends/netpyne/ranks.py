"""NEURON's ParallelContext over the MPI ranks of a run (``mpiexec -n N``, ``srun``, ``rsrp-sim launch --mpi N``).

:func:`context` returns the ParallelContext for this back-end's networks.  In a run of several MPI
ranks (:func:`rsrp_sim.infra.distributed.start_ranks` joined the MPI job through mpi4py) NEURON is
attached to the same MPI first (``h.nrnmpi_init()``: NEURON's wheel loads the MPI library that is
already in the process); otherwise NEURON stays serial (``nhost() == 1``) and MPI is never touched.

:func:`load_mechanisms` compiles the NMODL on rank 0 alone (the others wait for its outcome), so N
ranks starting on a fresh cache do not run N compilers at once.

The collectives here (:func:`allgather`, :func:`broadcast`) are NEURON's own (``py_allgather``,
``py_broadcast``): every rank must call them in the same order.  Their wall time is added to
:data:`COMM`, which the benchmarks and records read as the communication share together with
``pc.wait_time()`` (waiting in the spike exchange, load imbalance included).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time

from ...infra import distributed
from ...infra.errors import UserError
from . import mechanisms

_attached = False
_pc = None
COMM = {"s": 0.0, "calls": 0}  #: wall seconds and calls spent in this module's collectives


def context():
    """The ParallelContext; attached to the run's MPI ranks when there are several."""
    global _attached
    cluster = distributed.start_ranks()  # joins an MPI job this process was started in (once); else one rank
    if cluster.num_processes > 1 and not _attached:
        with _quiet_stdout():  # (NEURON says "numprocs=N" on rank 0 when it attaches, at import or here)
            from neuron import h

            h.nrnmpi_init()
        _attached = True
    from neuron import h

    global _pc
    if _pc is None:  # one object: NEURON keeps the timings (wait_time, step_time) per ParallelContext object
        _pc = h.ParallelContext()
    pc = _pc
    if int(pc.nhost()) != cluster.num_processes:
        raise UserError(f"NEURON sees {int(pc.nhost())} rank(s) but MPI started {cluster.num_processes}: NEURON could "
                        f"not use the MPI library mpi4py loaded; set MPI_LIB_NRN_PATH to that libmpi.so")
    return pc


@contextlib.contextmanager
def _quiet_stdout():
    """The process's file descriptor 1 (C-level prints included) sent to /dev/null for a moment."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def load_mechanisms(pc) -> None:
    """:func:`mechanisms.load`, compiled by rank 0 first when there are several ranks."""
    if int(pc.nhost()) > 1:
        error = None
        if int(pc.id()) == 0:
            try:
                mechanisms.build()
            except UserError as e:
                error = str(e)
        error = broadcast(pc, error)
        if error is not None:
            raise UserError(error)
    mechanisms.load()


def allgather(pc, obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if int(pc.nhost()) == 1:
        return [obj]
    t0 = time.perf_counter()
    out = list(pc.py_allgather(obj))
    COMM["s"] += time.perf_counter() - t0
    COMM["calls"] += 1
    return out


def broadcast(pc, obj, root: int = 0):
    """Rank ``root``'s ``obj`` on every rank."""
    if int(pc.nhost()) == 1:
        return obj
    t0 = time.perf_counter()
    out = pc.py_broadcast(obj, root)
    COMM["s"] += time.perf_counter() - t0
    COMM["calls"] += 1
    return out


def block(n: int, nhost: int, rank: int) -> tuple[int, int]:
    """The contiguous index range ``[lo, hi)`` of ``n`` items that ``rank`` of ``nhost`` owns (sizes differ
    by at most one)."""
    return rank * n // nhost, (rank + 1) * n // nhost
