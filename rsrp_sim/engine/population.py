"""The population engine: search strategies as ask/tell over a typed state, and ONE generation loop.

A *strategy* owns the distribution over networks and its update (like evosax's strategies or
optax's transformations, written on JAX arrays and jitted here):

``init(key)``                          the first state (a frozen dataclass registered as a pytree)
``ask(state, key, n)``                 ``n`` members, regenerable from ``key`` (so a chunk need not keep them)
``deterministic(state)``               the one deterministic network (RSRP: ``p > 0.5``; ES: the mean)
``tell(state, fitness, ...)``          shape the rewards, estimate the gradient, update (one batch)

Strategies here: :class:`RSRP` (trial release ``z - p``, or spike release with the eligibility
``e / max(n, 1)``; a ``frozen`` subset of the masks, drawn once from the run's seed, gives
RSRP-reservoir) and :class:`ES` (antithetic Gaussian perturbations of real weights).

An *evaluator* is what a back-end supplies: ``evaluate(members, key, context, chunk) ->
EvalResult`` (fitness per member, plus spike-mode eligibilities and extras) and
``evaluate_deterministic(net, key, n, context)``.  :func:`generation` is the one loop::

    for every chunk:  members = ask(...); result = evaluator.evaluate(members, ...)
    one finite check of the rewards (NonFiniteReward names the generation and the members)
    shaping (rsrp_sim.core.shaping) over the whole population
    for every chunk:  gradient sums (rsrp_sim.core.rule), members regenerated from the chunk's key
    one optimiser step; the deterministic network is evaluated on ``eval_size`` episodes

The keys mean the same everywhere (:class:`Layout`): ``pop_size`` sampled members, ``eval_size``
deterministic members on top, ``chunk_size`` sampled members per chunk.  Random keys: a
generation splits its key into ``(next, train, eval)``; chunk ``i`` uses ``fold_in(train, i)``,
whose ``fold_in(., 0)`` draws the members and ``fold_in(., 1)`` drives the evaluation.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import math
import time
from typing import Any, ClassVar, Literal, Optional, TypeVar, dataclass_transform

import jax
import jax.numpy as jnp
import numpy as np

from ..infra.config import ConfigBase
from ..infra.distributed import replicate, shard_members
from ..infra.errors import UserError
from ..core import rule
from ..core import shaping as shaping_lib

__all__ = ["REDUCTION_BLOCKS", "equal_blocks", "PopulationKeys", "RSRPKeys", "ESKeys", "Layout", "Members",
           "EvalResult", "ChunkInfo", "GenerationResult", "NonFiniteReward", "Strategy", "RSRP", "RSRPState", "ES",
           "ESState", "generation", "p_metrics", "pytree_dataclass"]


_C = TypeVar("_C")


@dataclass_transform(frozen_default=True)
def pytree_dataclass(cls: type[_C]) -> type[_C]:
    """A frozen dataclass registered as a JAX pytree (every field is data)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


#: default of ``reduction_blocks``: populations split over 1, 2, 4, 8 or 16 devices give the same numbers
REDUCTION_BLOCKS = 16


def equal_blocks(n: int, at_most: int = REDUCTION_BLOCKS) -> int:
    """The number of equal blocks sums over ``n`` members are made in: the largest divisor of ``n``
    dividing ``at_most`` (``reduction_blocks``).  Blocks are fixed by the population, not by the
    devices, so any device count dividing the block count gives the same sums, bit for bit."""
    return math.gcd(int(n), int(at_most)) if at_most > 1 else 1


# ----------------------------------------------------------------------------- population layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """How a population is cut into chunks.

    ``pop_size`` sampled members (they enter the gradient), ``eval_size`` deterministic members on
    top (scored, not learned from), ``chunk_size`` sampled members evaluated at once; every chunk
    has the same size (the last one is padded: padding members are evaluated and ignored).
    ``multiple``: the chunk is rounded up to a multiple of it (ES: antithetic pairs).
    """

    pop_size: int
    eval_size: int = 0
    chunk_size: int = 0  # 0: the whole population in one chunk
    multiple: int = 1
    reduction_blocks: int = 1

    def __post_init__(self):
        if self.pop_size < 1:
            raise UserError(f"pop_size must be at least 1, got {self.pop_size}")
        if self.eval_size < 0:
            raise UserError(f"eval_size must be >= 0, got {self.eval_size}")
        if self.chunk_size < 0:
            raise UserError(f"chunk_size must be >= 0, got {self.chunk_size}")

    @property
    def chunk(self) -> int:
        c = min(self.chunk_size or self.pop_size, self.pop_size)
        return -(-c // self.multiple) * self.multiple

    @property
    def n_chunks(self) -> int:
        return -(-self.pop_size // self.chunk)

    @property
    def padding(self) -> int:
        """Unused member slots of the last chunk."""
        return self.n_chunks * self.chunk - self.pop_size

    def valid(self, i: int) -> int:
        """Sampled members that chunk ``i`` really holds."""
        return min(self.chunk, self.pop_size - i * self.chunk)

    def blocks(self, n: int) -> int:
        """How many equal blocks sums over ``n`` members are made in (see :func:`equal_blocks`)."""
        return equal_blocks(n, self.reduction_blocks)

    @property
    def packed_capacity(self) -> int:
        """Slots per call of an evaluator that evaluates the deterministic members in the last
        chunk (in its padding, and in extra slots when the padding is too small)."""
        return self.chunk + max(0, self.eval_size - self.padding)


@dataclasses.dataclass(frozen=True)
class ChunkInfo:
    """Where a chunk sits in the population: index, first member, sampled members it holds."""

    index: int
    offset: int
    valid: int
    last: bool


def _members_flatten(m):
    return (m.batched, m.shared), m.n


def _members_unflatten(n, children):
    return Members(children[0], children[1], n)


@dataclasses.dataclass(frozen=True)
class Members:
    """``n`` networks: ``batched`` leaves have a leading member axis, ``shared`` leaves are common
    to every member (a frozen reservoir; spike release's probabilities)."""

    batched: dict
    shared: dict
    n: int

    def network(self, k: int) -> dict:
        """Member ``k``'s parameters as one dict (NumPy or JAX)."""
        return {**{name: v[k] for name, v in self.batched.items()}, **self.shared}


jax.tree_util.register_pytree_node(Members, _members_flatten, _members_unflatten)


@dataclasses.dataclass
class EvalResult:
    """What an evaluation returns.

    ``fitness`` (n,) one raw reward per member; ``eligibility`` (spike release only) ``{group:
    (e, n_spikes)}`` with a member axis; ``extras``: anything else the task records (episodes,
    steps, spikes, observation sums), in the evaluator's own form; ``deterministic``: the
    result of the deterministic members when the evaluator evaluated them in the same call.
    """

    fitness: Any
    eligibility: Optional[dict] = None
    extras: dict = dataclasses.field(default_factory=dict)
    deterministic: Optional[EvalResult] = None


class NonFiniteReward(UserError):
    """A NaN or infinite reward: the run stops (and stays resumable from its last checkpoint)."""


# ----------------------------------------------------------------------------- the keys
@dataclasses.dataclass
class PopulationKeys(ConfigBase):
    """Population size, chunking and reward shaping (one meaning in every protocol and back-end)."""

    pop_size: int = 10112  # sampled members per generation (they enter the gradient)
    eval_size: int = 128  # deterministic (p > 0.5 / mean) members on top, scored only
    chunk_size: int = 10112  # sampled members evaluated at once (bounds memory)
    shaping: Literal["centered_rank", "raw", "baseline", "sigmoid"] = "centered_rank"
    ties: Literal["average", "index"] = "average"
    unit_variance: bool = False
    baseline_ema: Optional[float] = None  # None: previous generation's mean
    rank_chunks: int = 1  # ranking scope: 1 = whole population
    # members are summed in this many equal blocks (at most; a divisor of the chunk): any number of
    # devices dividing it gives the same numbers; 1 = one plain sum per chunk
    reduction_blocks: int = REDUCTION_BLOCKS

    def validate(self) -> None:
        super().validate()
        self.require_at_least(1, "chunk_size", "rank_chunks", "reduction_blocks")
        self.require(self.pop_size >= 2, f"pop_size must be at least 2 sampled members, got {self.pop_size}")
        self.require(self.eval_size >= 0, f"eval_size must be >= 0, got {self.eval_size}")
        self.require(self.baseline_ema is None or 0.0 <= self.baseline_ema < 1.0,
                     f"baseline_ema must be in [0, 1), got {self.baseline_ema}")
        self.require(self.pop_size % self.rank_chunks == 0,
                     f"rank_chunks={self.rank_chunks} must divide pop_size={self.pop_size}")

    def transform(self) -> shaping_lib.Transform:
        return shaping_lib.Transform(self.shaping, self.ties, self.unit_variance, self.rank_chunks,
                                     self.baseline_ema)

    def layout(self, multiple: int = 1) -> Layout:
        return Layout(self.pop_size, self.eval_size, self.chunk_size, multiple, self.reduction_blocks)


@dataclasses.dataclass
class RSRPKeys(ConfigBase):
    """The RSRP strategy's keys."""

    lr: float = 0.15
    optimizer: Literal["adam", "adamw", "sgd", "momentum"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    eps: float = rule.EPS
    p_init: float = rule.P_INIT
    release_mode: Literal["trial", "spike"] = "trial"  # release drawn once per trial / at every spike
    sampler: Literal["uniform", "threefry"] = "uniform"

    def validate(self) -> None:
        super().validate()
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        self.require(0.0 < self.eps < 0.5, f"eps must be in (0, 0.5), got {self.eps}")
        self.require(self.eps <= self.p_init <= 1 - self.eps, f"p_init must be in [eps, 1-eps], got {self.p_init}")

    def strategy(self, shapes: dict, transform: Any, frozen: Any = (), release: Any = None) -> RSRP:
        return RSRP(shapes, lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay,
                    momentum=self.momentum, eps=self.eps, p_init=self.p_init,
                    release=self.release_mode if release is None else release, frozen=frozen,
                    sampler=self.sampler, shaping=transform, reduction_blocks=getattr(self, "reduction_blocks", 1))


@dataclasses.dataclass
class ESKeys(ConfigBase):
    """The ES strategy's keys (the EC/RSRP papers' baseline)."""

    sigma: float = 0.3
    lr: float = 0.15
    optimizer: Literal["adam", "adamw", "sgd", "momentum"] = "adamw"
    weight_decay: float = 0.1
    momentum: float = 0.9

    def validate(self) -> None:
        super().validate()
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        self.require(self.sigma > 0, f"sigma must be > 0, got {self.sigma}")

    def strategy(self, shapes: dict, transform: Any, init_std: float = 1.0) -> ES:
        return ES(shapes, sigma=self.sigma, lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay,
                  momentum=self.momentum, init_std=init_std, shaping=transform,
                  reduction_blocks=getattr(self, "reduction_blocks", 1))


# ----------------------------------------------------------------------------- strategies
class Strategy(abc.ABC):
    """Search distribution + update (see the module docstring).

    Subclasses implement :meth:`init`, :meth:`ask`, :meth:`deterministic`, :meth:`gradient_terms`,
    :meth:`finish_gradient`, :meth:`apply` and :meth:`metrics`; the engine jits them.
    ``shaping`` is the reward transform (:class:`rsrp_sim.core.shaping.Transform`).
    """

    #: chunk sizes must be a multiple of this (ES: 2, antithetic pairs)
    multiple: ClassVar[int] = 1
    #: whether members' eligibilities (spike release) are needed for the gradient
    needs_eligibility: bool = False

    def __init__(self, shaping: shaping_lib.Transform, reduction_blocks: int = 1) -> None:
        self.shaping = shaping
        self.reduction_blocks = int(reduction_blocks)

    def blocks(self, n: int) -> int:
        """Blocks the gradient sums of ``n`` members are made in (fixed by ``n``, not by the devices)."""
        return equal_blocks(n // self.multiple, self.reduction_blocks)

    # ---- to implement
    @abc.abstractmethod
    def init(self, key: Any) -> Any: ...

    @abc.abstractmethod
    def ask(self, state: Any, key: Any, n: int) -> Members: ...

    @abc.abstractmethod
    def deterministic(self, state: Any) -> dict: ...

    @abc.abstractmethod
    def gradient_terms(self, state: Any, key: Any, n: int, shaped: Any, members: Members | None = None,
                       eligibility: dict | None = None) -> Any:
        """Sums over one chunk of ``n`` members (members regenerated from ``key`` unless given), as
        block sums (a leading axis of ``self.blocks(n)``; :func:`rsrp_sim.core.rule.block_sums`)."""

    @abc.abstractmethod
    def finish_gradient(self, state: Any, sums: Any, n: int) -> Any:
        """The population estimate from the (block) sums of ``n`` sampled members; the blocks are
        added in order here, after every device has them all."""

    @abc.abstractmethod
    def apply(self, state: Any, grad: Any) -> Any:
        """The optimiser step (inside ``jit``); returns the new state."""

    def metrics(self, state: Any) -> dict:
        return {}

    def histograms(self, state: Any) -> dict:
        """Named arrays whose distribution is worth following over a run (host NumPy)."""
        return {}

    # ---- shared
    @functools.cached_property
    def jitted(self) -> Any:
        """The jitted pieces the engine calls (one compilation per strategy and shape).

        Members come out with their member axis split over every device of every process
        (:func:`rsrp_sim.infra.distributed.shard_members`); everything the host reads or carries
        to the next generation comes out complete on every device (``replicate``).  With one device
        both are no-ops.
        """
        def ask(state, key, n):
            m = self.ask(state, key, n)
            return Members(shard_members(m.batched, n), m.shared, n)

        def whole(fn):
            return lambda *args: replicate(fn(*args))

        ns = type("Jitted", (), {})()
        ns.ask = jax.jit(ask, static_argnums=2)
        ns.deterministic = jax.jit(whole(self.deterministic))
        ns.terms = jax.jit(whole(self.gradient_terms), static_argnums=2)
        ns.finish = jax.jit(whole(self.finish_gradient), static_argnums=2)
        ns.apply = jax.jit(whole(self.apply))
        return ns

    def shape(self, state: Any, fitness: Any) -> Any:
        """Shaped rewards (host NumPy) and the state with the transform's new statistics."""
        shaped, sh = self.shaping(np.asarray(fitness, np.float32), state.shaping)
        return np.asarray(shaped, np.float32), dataclasses.replace(state, shaping=_shaping_leaves(sh))

    def tell(self, state: Any, fitness: Any, key: Any = None, members: Members | None = None,
             eligibility: dict | None = None) -> Any:
        """One batch of evaluated members: shape, estimate, update.  Returns ``(state, grad)``.

        The batch is ``members`` (or regenerated from ``key``); ``eligibility`` for spike release.
        """
        f = np.asarray(fitness, np.float32).ravel()
        check_finite(f)
        shaped, state_shaped = self.shape(state, f)
        sums = self.gradient_terms(state, key, len(f), jnp.asarray(shaped), members, eligibility)
        grad = self.finish_gradient(state, sums, len(f))
        new = self.jitted.apply(state, grad)
        return dataclasses.replace(new, shaping=state_shaped.shaping), grad


def _shaping_leaves(state: dict) -> dict:
    return {k: np.float64(v) for k, v in state.items()}


@pytree_dataclass
class RSRPState:
    """RSRP: release probabilities of the learned groups, the optimiser's state, the frozen masks
    (RSRP-reservoir) and the reward transform's statistics."""

    p: dict
    opt: Any
    frozen: dict
    shaping: dict


class RSRP(Strategy):
    """RSRP over named groups of Bernoulli synapses.

    ``shapes``: ``{group: shape}`` of every mask; ``frozen``: groups drawn once as Bernoulli(0.5)
    from the initial key and never learned (RSRP-reservoir).  ``release``: ``trial`` (members are
    release patterns ``z ~ B(p)``; gradient ``mean R~ (z - p)``) or ``spike`` (members carry ``p``
    itself, the simulation releases at every spike and returns eligibilities; gradient ``mean R~
    e / max(n, 1)``), for all groups or as ``{group: mode}``.  ``sampler``: ``uniform``
    (``jax.random``) or ``threefry`` (the faster :func:`rsrp_sim.core.rule.sample_release_fast`;
    same distribution, other stream).  ``ask`` also takes a ``numpy.random.Generator`` as its key
    (NumPy release patterns, drawn group by group in sorted order).
    """

    RELEASE = ("trial", "spike")
    SAMPLERS = ("uniform", "threefry")

    def __init__(self, shapes: dict, *, lr: float, optimizer: str = "adam", weight_decay: float = 0.0,
                 momentum: float = 0.9, eps: float = rule.EPS, p_init: float = rule.P_INIT,
                 release: str | dict[str, str] = "trial", frozen: Any = (), sampler: str = "uniform",
                 shaping: shaping_lib.Transform | None = None, reduction_blocks: int = 1) -> None:
        super().__init__(shaping or shaping_lib.Transform(), reduction_blocks)
        if sampler not in self.SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; allowed: {', '.join(self.SAMPLERS)}")
        unknown_frozen = set(frozen) - set(shapes)
        if unknown_frozen:
            raise UserError(f"frozen groups {sorted(unknown_frozen)} are not among {sorted(shapes)}")
        self.shapes = {k: tuple(s) for k, s in shapes.items()}
        self.frozen = tuple(sorted(frozen))
        self.learned = [k for k in self.shapes if k not in self.frozen]
        if not self.learned:
            raise UserError("every synapse group is frozen: nothing to learn")
        modes = release if isinstance(release, dict) else {k: release for k in self.learned}
        for k in self.learned:
            if modes.get(k) not in self.RELEASE:
                raise UserError(f"unknown release mode {modes.get(k)!r} for group {k!r}; allowed: "
                                f"{', '.join(self.RELEASE)}")
        self.modes = {k: modes[k] for k in self.learned}
        self.spike_groups = [k for k in self.learned if self.modes[k] == "spike"]
        self.sampler, self.eps, self.p_init = sampler, float(eps), float(p_init)
        self.needs_eligibility = bool(self.spike_groups)
        self.opt = rule.make_optimizer(optimizer, lr, momentum=momentum, weight_decay=weight_decay)

    def init(self, key: Any) -> RSRPState:
        p = {k: jnp.asarray(rule.init_p(self.shapes[k], self.p_init)) for k in self.learned}
        frozen = {k: jax.random.bernoulli(jax.random.fold_in(key, 1 + i), 0.5, self.shapes[k])
                  for i, k in enumerate(self.frozen)}
        return RSRPState(p=p, opt=self.opt.init(p), frozen=frozen,
                         shaping=_shaping_leaves(shaping_lib.init_state()))

    def _sample(self, key, p, n):
        if isinstance(key, np.random.Generator):
            return rule.sample_release(key, np.asarray(p), n=n)
        if self.sampler == "threefry":
            return rule.sample_release_fast(key, p, n=n)
        return rule.sample_release(key, p, n=n)

    def _patterns(self, state, key, n):
        trial = [k for k in sorted(state.p) if self.modes[k] == "trial"]
        if isinstance(key, np.random.Generator):
            return {k: self._sample(key, state.p[k], n) for k in trial}
        return {k: self._sample(jax.random.fold_in(key, i), state.p[k], n) for i, k in enumerate(trial)}

    def ask(self, state: Any, key: Any, n: Any) -> Any:
        # trial groups: one release pattern per member; spike groups: every member releases with
        # probability p at each presynaptic spike, so members share p
        shared = {**{k: state.p[k] for k in self.spike_groups}, **state.frozen}
        return Members(self._patterns(state, key, n), shared, n)

    def deterministic(self, state: Any) -> Any:
        return {**{k: rule.deterministic_mask(v) for k, v in state.p.items()}, **state.frozen}

    def gradient_terms(self, state: Any, key: Any, n: Any, shaped: Any, members: Any = None,
                       eligibility: Any = None) -> Any:
        if self.spike_groups and eligibility is None:
            raise ValueError(f"spike release of {self.spike_groups} needs the members' eligibilities")
        z = members.batched if members is not None else self._patterns(state, key, n)
        b = self.blocks(n)
        # eligibilities may come flat per member (a simulator's synapse order = the masks' row-major
        # order); they come from a simulator on the host, so they are summed in one block
        return {k: (jnp.reshape(rule.spike_gradient_sum(shaped, *eligibility[k]), (1,) + state.p[k].shape)
                    if self.modes[k] == "spike" else rule.natural_gradient_block_sums(shaped, z[k], state.p[k], b))
                for k in state.p}

    def finish_gradient(self, state: Any, sums: Any, n: Any) -> Any:
        total = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), sums)
        return {k: (total[k] / n if self.modes[k] == "spike"
                    else rule.finish_natural_gradient(total[k][0], total[k][1], state.p[k], n)) for k in state.p}

    def apply(self, state: Any, grad: Any) -> Any:
        p, opt = rule.apply_update(state.p, grad, self.opt, state.opt, self.eps)
        return dataclasses.replace(state, p=p, opt=opt)

    def histograms(self, state: Any) -> dict:
        """Release probabilities: all learned synapses together (``p``) and each group (``p/<group>``)."""
        p = {k: np.asarray(v, np.float32).ravel() for k, v in state.p.items()}
        return {"p": np.concatenate(list(p.values())), **{f"p/{k}": v for k, v in p.items()}}

    def metrics(self, state: Any) -> Any:
        return p_metrics(state.p)


def p_metrics(p: dict) -> dict:
    """Mean p, mean binary entropy (bits) and the deterministic network's density."""
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in p.values()])
    ent = -(flat * np.log(flat) + (1 - flat) * np.log(1 - flat)).mean() / math.log(2)
    return {"p_mean": float(flat.mean()), "p_entropy_bits": float(ent), "density_eval": float((flat > 0.5).mean())}


@pytree_dataclass
class ESState:
    """ES: the mean weights, the optimiser's state and the reward transform's statistics."""

    mu: dict
    opt: Any
    shaping: dict


class ES(Strategy):
    """Antithetic Gaussian evolution strategies: members ``mu +- sigma eps`` (interleaved pairs),
    gradient ``mean over pairs (R~+ - R~-) eps`` (not divided by sigma, as the reference)."""

    multiple = 2

    def __init__(self, shapes: dict, *, sigma: float, lr: float, optimizer: str = "adamw",
                 weight_decay: float = 0.1, momentum: float = 0.9, init_std: float = 1.0,
                 shaping: shaping_lib.Transform | None = None, reduction_blocks: int = 1) -> None:
        super().__init__(shaping or shaping_lib.Transform(), reduction_blocks)
        self.shapes = {k: tuple(s) for k, s in shapes.items()}
        self.sigma, self.init_std = float(sigma), float(init_std)
        self.opt = rule.make_optimizer(optimizer, lr, momentum=momentum, weight_decay=weight_decay)

    def init(self, key: Any) -> ESState:
        keys = jax.random.split(key, len(self.shapes))
        mu = {k: self.init_std * jax.random.normal(kk, s, jnp.float32)
              for kk, (k, s) in zip(keys, self.shapes.items())}
        return ESState(mu=mu, opt=self.opt.init(mu), shaping=_shaping_leaves(shaping_lib.init_state()))

    def _noise(self, state, key, n):
        if n % 2:
            raise ValueError(f"ES needs an even number of members (antithetic pairs), got {n}")
        return {k: jax.random.normal(jax.random.fold_in(key, i), (n // 2,) + state.mu[k].shape, jnp.float32)
                for i, k in enumerate(sorted(state.mu))}

    def ask(self, state: Any, key: Any, n: Any) -> Any:
        mu, s = state.mu, self.sigma
        eps = self._noise(state, key, n)
        # member 2j = mu + sigma eps_j, member 2j+1 = mu - sigma eps_j
        return Members({k: (mu[k] + s * jnp.stack([e, -e], axis=1)).reshape((n,) + mu[k].shape)
                        for k, e in eps.items()}, {}, n)

    def deterministic(self, state: Any) -> Any:
        return dict(state.mu)

    def gradient_terms(self, state: Any, key: Any, n: Any, shaped: Any, members: Any = None,
                       eligibility: Any = None) -> Any:
        w = shaped[0::2] - shaped[1::2]
        b = self.blocks(n)
        if b == 1:
            return {k: jnp.tensordot(w, e, axes=1)[None] for k, e in self._noise(state, key, n).items()}
        return {k: rule.block_sums(w, e, b) for k, e in self._noise(state, key, n).items()}

    def finish_gradient(self, state: Any, sums: Any, n: Any) -> Any:
        return {k: jnp.sum(v, axis=0) / (n // 2) for k, v in sums.items()}

    def apply(self, state: Any, grad: Any) -> Any:
        import optax

        updates, opt = self.opt.update(grad, state.opt, state.mu)
        return dataclasses.replace(state, mu=optax.apply_updates(state.mu, updates), opt=opt)

    def metrics(self, state: Any) -> Any:
        return {"param_norm": float(np.sqrt(sum(float(jnp.sum(v**2)) for v in state.mu.values())))}

    def histograms(self, state: Any) -> dict:
        """The mean weights of each group (``weights/<group>``)."""
        return {f"weights/{k}": np.asarray(v, np.float32).ravel() for k, v in state.mu.items()}


# ----------------------------------------------------------------------------- the generation
def check_finite(fitness: Any, generation: int | None = None, hint: str = "") -> None:
    """Raise :class:`NonFiniteReward` naming the generation and how many members are affected."""
    f = np.asarray(fitness)
    bad = ~np.isfinite(f)
    if bad.any():
        where = f" in generation {generation}" if generation is not None else ""
        first = int(np.flatnonzero(bad)[0])
        raise NonFiniteReward(
            f"non-finite reward{where}: {int(bad.sum())} of {f.size} members (first: member {first}, "
            f"reward {f[first]}); rewards must be finite{hint}")


@dataclasses.dataclass
class GenerationResult:
    """What one generation produced (host NumPy): raw and shaped rewards of the sampled members,
    each chunk's extras (sliced to its valid members where they have a member axis), the
    deterministic members' result, the gradient, the seconds spent evaluating / updating, and the
    key of the next generation."""

    next_key: Any
    fitness: np.ndarray
    shaped: np.ndarray
    extras: list
    deterministic: Optional[EvalResult]
    grad: Any
    timings: dict


def _host(x):
    return jax.device_get(x)


def generation(strategy: Strategy, state: Any, evaluator: Any, key: Any, layout: Layout, context: Any = None,
               index: int | None = None, hint: str = "") -> Any:
    """One generation of ``strategy`` with ``evaluator`` (see the module docstring).

    Returns ``(new_state, result)``.  ``index`` (1-based) names the generation in error messages;
    ``hint`` is appended to the non-finite-reward message (the task's likely causes).
    """
    t0 = time.perf_counter()
    J = strategy.jitted
    next_key, k_train, k_eval = jax.random.split(key, 3)
    chunk, n_chunks = layout.chunk, layout.n_chunks
    packs = bool(getattr(evaluator, "packs_deterministic", False)) and layout.eval_size > 0
    det_net = J.deterministic(state) if layout.eval_size > 0 else None
    fitness: Any
    fitness, extras, eligibility, kept, det = [], [], [], None, None
    for i in range(n_chunks):
        kc = jax.random.fold_in(k_train, i)
        members = J.ask(state, jax.random.fold_in(kc, 0), chunk)
        info = ChunkInfo(i, i * chunk, layout.valid(i), i == n_chunks - 1)
        kwargs = {"deterministic": det_net} if packs and info.last else {}
        out = evaluator.evaluate(members, jax.random.fold_in(kc, 1), context, info, **kwargs)
        f = np.asarray(_host(out.fitness), np.float32)[:info.valid]
        fitness.append(f)
        extras.append(out.extras)
        if strategy.needs_eligibility:
            if out.eligibility is None:
                raise ValueError(f"{type(evaluator).__name__} returned no eligibilities for spike release")
            eligibility.append({k: tuple(np.asarray(a)[:info.valid] for a in v) for k, v in out.eligibility.items()})
        if n_chunks == 1:
            kept = members
        if out.deterministic is not None:
            det = out.deterministic
    if det_net is not None and det is None:
        det = evaluator.evaluate_deterministic(det_net, k_eval, layout.eval_size, context)
    t_eval = time.perf_counter() - t0
    fitness = np.concatenate(fitness)
    check_finite(fitness, index, hint)
    shaped, shaped_state = strategy.shape(state, fitness)
    sums = None
    for i in range(n_chunks):
        w = np.zeros(chunk, np.float32)
        part = shaped[i * chunk:(i + 1) * chunk]
        w[:len(part)] = part
        elig = None
        if eligibility:
            elig = {k: tuple(_pad(a, chunk) for a in v) for k, v in eligibility[i].items()}
        terms = J.terms(state, jax.random.fold_in(jax.random.fold_in(k_train, i), 0), chunk, jnp.asarray(w),
                        kept, elig)
        sums = terms if sums is None else jax.tree_util.tree_map(jnp.add, sums, terms)
    grad = J.finish(state, sums, layout.pop_size)
    new = J.apply(state, grad)
    new = dataclasses.replace(new, shaping=shaped_state.shaping)
    t_update = time.perf_counter() - t0 - t_eval
    return new, GenerationResult(next_key, fitness, shaped, extras, det, grad,
                                 {"evaluate_s": t_eval, "update_s": t_update})


def _pad(a, n):
    a = np.asarray(a, np.float32)
    if a.shape[0] == n:
        return a
    out = np.zeros((n,) + a.shape[1:], np.float32)
    out[:a.shape[0]] = a
    return out
