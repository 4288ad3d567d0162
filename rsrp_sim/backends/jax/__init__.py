"""The JAX back-end: vectorised spiking populations (jit + vmap), chunked for bounded memory."""
