"""The per-user cache folder (compiled JAX programs, NEURON mechanisms, datasets, Brian2 builds).

``$RSRP_SIM_CACHE`` if set, else ``$XDG_CACHE_HOME/rsrp_sim``, else ``~/.cache/rsrp_sim``.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = os.environ.get("RSRP_SIM_CACHE")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rsrp_sim"
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
