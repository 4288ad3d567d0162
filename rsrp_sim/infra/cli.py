"""What every command line of the package shares: one-line argument errors and one place that turns
an exception into one line on stderr and an exit status (:func:`guard`; see :mod:`.errors` for the
statuses).  ``--debug`` prints the traceback as well."""
from __future__ import annotations

import argparse
import sys
import traceback

from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, UserError, one_line, os_error_message

DEBUG_HELP = "on an error, print the traceback as well as the one-line message"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n")


def _say(message: str, code: int):
    print(f"error: {message}", file=sys.stderr)


def guard(fn, debug: bool = False, say=_say) -> int:
    """Call ``fn()`` (which returns an exit status); any exception becomes one line and a status.

    ``say(message, status)`` prints the line (a run over MPI ranks also stops every rank there).
    """
    def fail(message: str, code: int) -> int:
        if debug:
            traceback.print_exc()
        say(one_line(message), code)
        return code

    try:
        return fn()
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except UserError as e:
        return fail(str(e), getattr(e, "exit_code", EXIT_USAGE))
    except OSError as e:  # a writer outside the records' own (they raise WriteError)
        return fail(os_error_message(e, writing=False), EXIT_USAGE)
    except MemoryError:
        return fail("out of memory; use a smaller configuration (pop_size, chunk_size, model.n_neurons ...)",
                    EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback with --debug
        return fail(f"unexpected {type(e).__name__}: {e} (an internal error; rerun with --debug to see the "
                    f"traceback)", EXIT_INTERNAL)


def run_command(parser: argparse.ArgumentParser, argv, fn, intermixed: bool = False, say=_say) -> int:
    """Parse ``argv`` with ``parser`` and run ``fn(args)`` under :func:`guard`; ``--help`` and argument
    errors return their exit status (0 and 2).  ``intermixed``: options may follow positionals."""
    try:
        args = (parser.parse_intermixed_args if intermixed else parser.parse_args)(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return guard(lambda: fn(args), debug=getattr(args, "debug", False), say=say)
