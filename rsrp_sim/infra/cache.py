"""The per-user cache folder (compiled JAX programs, NEURON mechanisms, datasets, Brian2 builds).

``$RSRP_SIM_CACHE`` if set, else ``$XDG_CACHE_HOME/rsrp_sim``, else ``~/.cache/rsrp_sim``.
"""
from __future__ import annotations

import os
from pathlib import Path


ENV_VAR = "RSRP_SIM_CACHE"


def cache_base() -> Path:
    """The cache folder (not created)."""
    base = os.environ.get(ENV_VAR)
    if base:
        return Path(base).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "rsrp_sim"


def cache_dir(*parts: str) -> Path:
    """``cache_base() / parts...``, created if needed."""
    path = Path(cache_base(), *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
