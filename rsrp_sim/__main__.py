"""``python -m rsrp_sim`` / ``rsrp-sim``: list protocols and methods, run, compare runs.

    rsrp-sim                          list protocols, their methods and back-ends
    rsrp-sim run cartpole [ARGS...]   same as python -m rsrp_sim.protocols.cartpole ARGS...
    rsrp-sim compare RUN_DIR... [--x iteration,env_steps,wall_s] [--by KEY] [--out FILE]
    rsrp-sim report RUN_GROUPS... --out DIR   figures in the paper's form + index.html
    rsrp-sim launch --local N -- COMMAND      one run in N processes on this machine (jax.distributed)
    rsrp-sim launch --mpi N -- COMMAND        one run over N MPI ranks on this machine (mpiexec; NEURON methods)
    rsrp-sim sweep PROTOCOL --method M --space KEY=DIST ... --trials N [...]   Optuna sweep (--help)
    rsrp-sim export-nwb RUN [--out FILE]      the run's recorded spikes as an NWB file

Exit statuses: 0 done, 2 bad input or environment, 3 a run that started and failed (resumable),
130 interrupted (resumable), 1 an internal error; every error is one line (``--debug``: traceback).
"""
from __future__ import annotations

import sys

from .infra.cli import guard
from .infra.errors import UserError

USAGE = __doc__


def cmd_list() -> int:
    from .protocols import PROTOCOLS, get

    for name in PROTOCOLS:
        proto = get(name)
        print(f"{name}: {proto.description}")
        print(f"    python -m {proto.module} --method M [--preset {'|'.join(proto.presets)}]")
        for m in proto.methods.values():
            print(f"    {m.name:<16} [{', '.join(m.backends)}]  {m.description}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("list", "ls"):
        return cmd_list()
    return guard(lambda: _dispatch(argv[0], argv[1:]), debug="--debug" in argv)


def _dispatch(cmd: str, rest: list[str]) -> int:
    if cmd in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if cmd == "run":
        if not rest:
            raise UserError("run needs a protocol name; see `rsrp-sim list`")
        from .protocols import get

        return get(rest[0]).main(rest[1:])
    if cmd == "compare":
        from .analysis.compare import main as compare_main

        return compare_main(rest)
    if cmd == "report":
        from .analysis.report import main as report_main

        return report_main(rest)
    if cmd == "launch":
        from .protocols.launch import main as launch_main

        return launch_main(rest)
    if cmd == "sweep":
        from .protocols.sweep import main as sweep_main

        return sweep_main(rest)
    if cmd == "export-nwb":
        from .analysis.nwb import main as nwb_main

        return nwb_main(rest)
    raise UserError(f"unknown command {cmd!r}; allowed: list, run, compare, report, launch, sweep, export-nwb")


if __name__ == "__main__":
    sys.exit(main())
