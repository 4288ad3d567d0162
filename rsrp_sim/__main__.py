"""``python -m rsrp_sim`` / ``rsrp-sim``: the toolkit's command line.

``rsrp-sim`` with no arguments lists the subcommands, the protocols, their methods and back-ends;
``rsrp-sim SUBCOMMAND --help`` explains one subcommand.

Exit statuses: 0 done, 2 bad input or environment, 3 a run that started and failed (resumable),
130 interrupted (resumable), 1 an internal error; every error is one line (``--debug``: traceback).
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .infra.cli import guard
from .infra.errors import UserError

__all__ = ["SUBCOMMANDS", "main"]


class Subcommand(NamedTuple):
    usage: str  #: the arguments after the subcommand's name
    help: str  #: one line
    module: str  #: the module whose ``main(argv)`` runs it ('' for the built-ins)


SUBCOMMANDS: dict[str, Subcommand] = {
    "list": Subcommand("", "protocols, their methods and back-ends (also: no arguments)", ""),
    "run": Subcommand("PROTOCOL [ARGS...]",
                      "run a protocol (same as python -m rsrp_sim.protocols.PROTOCOL ARGS...)", ""),
    "compare": Subcommand("RUN_DIR... [--x iteration,env_steps,wall_s] [--by KEY] [--out FILE]",
                          "learning curves and a table of finished runs or run groups", "rsrp_sim.analysis.compare"),
    "report": Subcommand("RUN_GROUPS... --out DIR", "the paper's figures of run groups, with an index.html",
                         "rsrp_sim.analysis.report"),
    "ablations": Subcommand("[NAME] [--seeds 0,1,2] [--jobs N]",
                            "the published ablations (reward shaping, E/I, ...): list them, or run one",
                            "rsrp_sim.protocols.ablations"),
    "sweep": Subcommand("PROTOCOL --method M --space KEY=DIST ... --trials N",
                        "an Optuna hyper-parameter sweep (SQLite or a shared database)", "rsrp_sim.protocols.sweep"),
    "launch": Subcommand("--local N | --mpi N -- COMMAND",
                         "one run over N processes (jax.distributed) or N MPI ranks (NEURON methods)",
                         "rsrp_sim.protocols.launch"),
    "export-nwb": Subcommand("RUN [--out FILE]", "a run's recorded spikes as an NWB file", "rsrp_sim.analysis.nwb"),
}


def usage() -> str:
    """The subcommands, one line each."""
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: rsrp-sim SUBCOMMAND [ARGS...]   (rsrp-sim SUBCOMMAND --help for its options)", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.help}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


def cmd_list() -> int:
    from .protocols import PROTOCOLS, get

    print(usage())
    print("\nprotocols (rsrp-sim run PROTOCOL --method M, or python -m rsrp_sim.protocols.PROTOCOL):")
    for name in PROTOCOLS:
        proto = get(name)
        print(f"  {name}: {proto.description}")
        print(f"    python -m {proto.module} --method M [--preset {'|'.join(proto.presets)}]")
        for m in proto.methods.values():
            print(f"    {m.name:<16} [{', '.join(m.backends)}]  {m.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("list", "ls"):
        try:
            return cmd_list()
        except BrokenPipeError:  # `rsrp-sim | head`: the reader has gone, nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    return guard(lambda: _dispatch(args[0], args[1:]), debug="--debug" in args)


def _dispatch(cmd: str, rest: list[str]) -> int:
    if cmd in ("-h", "--help", "help"):
        print(usage())
        return 0
    if cmd == "run":
        if not rest or rest[0] in ("-h", "--help"):
            if rest:
                print(f"usage: rsrp-sim run {SUBCOMMANDS['run'].usage}\n\n{SUBCOMMANDS['run'].help}; "
                      "protocols: rsrp-sim list")
                return 0
            raise UserError("run needs a protocol name; see `rsrp-sim list`")
        from .protocols import get

        return get(rest[0]).main(rest[1:])
    sub = SUBCOMMANDS.get(cmd)
    if sub is None or not sub.module:
        raise UserError(f"unknown command {cmd!r}; allowed: {', '.join(SUBCOMMANDS)} (rsrp-sim --help)")
    entry: Callable[[list[str]], int] = importlib.import_module(sub.module).main
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
