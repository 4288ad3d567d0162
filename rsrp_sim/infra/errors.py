"""The one exception type for bad user input.

A :class:`UserError` is printed by the command line as one line (``rsrp-sim: error: ...``) with
exit status 2, never as a traceback.  Its message names the problem and what is allowed.
"""
from __future__ import annotations

import difflib


class UserError(ValueError):
    """Bad input from the user (unknown name, wrong type, missing file, existing run folder...)."""


def unknown(what: str, value, allowed) -> UserError:
    """``unknown method 'rsrpp' (did you mean 'rsrp'?); allowed: rsrp, es``."""
    allowed = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown {what} {value!r}{hint}; allowed: {', '.join(allowed)}")
