"""What every benchmark script shares: the machine description and writing the JSON document."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path


def machine(packages=("jax", "numpy")) -> dict:
    """Platform, CPUs, the 1-minute load average (other work slows CPU timings) and package versions."""
    versions = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2), "versions": versions}


def write(doc: dict, out=None) -> str:
    """``doc`` as indented JSON; also written to ``out`` (folders created) when given."""
    text = json.dumps(doc, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text
