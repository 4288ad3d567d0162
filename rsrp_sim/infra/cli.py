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


def _say(message: str):
    print(f"error: {one_line(message)}", file=sys.stderr)


def guard(fn, debug: bool = False) -> int:
    """Call ``fn()`` (which returns an exit status); any exception becomes one line and a status."""
    try:
        return fn()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _say("interrupted")
        return EXIT_INTERRUPTED
    except UserError as e:
        if debug:
            traceback.print_exc()
        _say(str(e))
        return getattr(e, "exit_code", EXIT_USAGE)
    except OSError as e:  # a writer outside the records' own (they raise WriteError)
        if debug:
            traceback.print_exc()
        _say(os_error_message(e, writing=False))
        return EXIT_USAGE
    except MemoryError:
        if debug:
            traceback.print_exc()
        _say("out of memory; use a smaller configuration (pop_size, chunk_size, model.n_neurons ...)")
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        _say(f"unexpected {type(e).__name__}: {e} (an internal error; rerun with --debug to see the traceback)")
        return EXIT_INTERNAL
