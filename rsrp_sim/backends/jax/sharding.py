"""Spreading a population over every visible JAX device.

Population members are independent, so a chunk's member axis (the leading axis of its sampled
networks, neuron states and environment states) is split across devices with ``jax.sharding``;
XLA's partitioner then runs each device's share and gathers only the small reductions (fitness,
gradient sums).  With one device (or a member count the devices do not divide) nothing is
annotated, so results on one device are exactly those of the unsharded code; random numbers do not
depend on the sharding (JAX's partitionable threefry), so several devices give the same samples.
A custom call (the fused spike kernel) is opaque to XLA's partitioner, so :func:`map_members` runs
such a function per device on its share of the members (``shard_map``).
"""
from __future__ import annotations

import functools

import jax

try:  # public name in jax 0.10; keep working if it moves
    from jax.core import Tracer
except ImportError:  # pragma: no cover
    from jax._src.core import Tracer


@functools.lru_cache(maxsize=None)
def _mesh():
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()), ("members",))


def device_count() -> int:
    return jax.device_count()


def member_sharding(n: int):
    """A sharding of an ``n``-member leading axis over all devices, or ``None`` (one device, or
    ``n`` not divisible by the device count)."""
    d = jax.device_count()
    if d <= 1 or n % d:
        return None
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(_mesh(), PartitionSpec("members"))


def shard_members(tree, n: int):
    """Split every leaf whose leading axis has length ``n`` over the devices (a sharding constraint
    inside ``jit``, a transfer outside); other leaves (scalars, population sums) are left as they are."""
    sh = member_sharding(n)
    if sh is None:
        return tree

    def one(x):
        if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n:
            if isinstance(x, Tracer):
                return jax.lax.with_sharding_constraint(x, sh)
            return jax.device_put(x, sh)
        return x

    return jax.tree_util.tree_map(one, tree)


def map_members(fn, n: int, n_batched: int):
    """``fn(*batched, *shared)`` with each device running it on its own members.

    The first ``n_batched`` arguments have the member axis (length ``n``) first and are split over
    the devices; the others are given whole to every device; every output has the member axis.
    With one device, or ``n`` not divisible by the device count, ``fn`` itself is returned.
    """
    if member_sharding(n) is None:
        return fn
    from jax.sharding import PartitionSpec as P

    def call(*args):
        specs = tuple(P("members") if i < n_batched else P() for i in range(len(args)))
        return jax.shard_map(fn, mesh=_mesh(), in_specs=specs, out_specs=P("members"), check_vma=False)(*args)

    return call
