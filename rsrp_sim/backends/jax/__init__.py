"""The JAX back-end: vectorised spiking populations (jit + vmap), chunked for bounded memory.

Compiled programs are kept in a persistent cache (``<user cache>/jax``) so a second run with the
same shapes starts in seconds; set ``RSRP_SIM_JAX_CACHE=0`` to turn it off, or configure
``jax_compilation_cache_dir`` yourself before importing rsrp_sim.
"""
import os

import jax


def _enable_compilation_cache():
    if os.environ.get("RSRP_SIM_JAX_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    from ...infra.cache import cache_dir

    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir("jax")))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError):  # read-only home, or an older jax: run without the cache
        pass


_enable_compilation_cache()
