"""One NEURON network of this back-end per process (R-STDP CartPole or Diehl & Cook): building one
closes the one before, whatever its kind, so their cells, NetCons and event-queue settings never
share a simulation.  A network calls :func:`claim` when built and :func:`release` in its ``close()``;
methods rebuild theirs when ``net.alive`` is False."""
from __future__ import annotations

_current = None


def claim(net):
    """Make ``net`` the process's network, closing the previous one."""
    global _current
    if _current is not None and _current is not net:
        _current.close()
    _current = net
    net.alive = True


def release(net, names) -> bool:
    """Drop ``net``'s NEURON objects (the attributes ``names``); False when it was already closed."""
    global _current
    if not getattr(net, "alive", False):
        return False
    net.alive = False
    for name in names:
        net.__dict__.pop(name, None)
    if _current is net:
        _current = None
    return True


def close_current() -> bool:
    """Close the process's network, if any (before building the next); True when one was closed."""
    if _current is None:
        return False
    _current.close()
    return True
