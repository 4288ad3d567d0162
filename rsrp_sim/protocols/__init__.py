"""Protocols: one module per task, each runnable as ``python -m rsrp_sim.protocols.<name>``."""
from __future__ import annotations

import importlib

from ..infra.errors import unknown

#: protocol name -> module defining ``PROTOCOL``
PROTOCOLS = {
    "cartpole": "rsrp_sim.protocols.cartpole",
    "humanoid": "rsrp_sim.protocols.humanoid",
    "mnist": "rsrp_sim.protocols.mnist",
    "digits": "rsrp_sim.protocols.digits",
    "cifar10": "rsrp_sim.protocols.cifar10",
}


def get(name: str):
    """The :class:`~rsrp_sim.protocols.base.Protocol` called ``name``."""
    if name not in PROTOCOLS:
        raise unknown("protocol", name, PROTOCOLS)
    return importlib.import_module(PROTOCOLS[name]).PROTOCOL
