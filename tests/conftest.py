import os
import shutil

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


def _has_gpu() -> bool:
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    gpu = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu is None:
                gpu = _has_gpu() and shutil.which("nvidia-smi") is not None
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="needs a GPU (none visible to JAX / no nvidia-smi)"))
