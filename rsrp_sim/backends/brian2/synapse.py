"""The RSRP synapse as a Brian2 model, and the between-trial learner that drives it.

:class:`RSRPSynapses` is a ``brian2.Synapses`` whose every synapse has a release probability ``p``
and a release state ``release``; ``on_pre`` adds ``weight * release`` to a postsynaptic variable of
your choice.  Two release modes (SPEC §1):

``trial``  ``release`` is drawn once per trial (``z ~ Bernoulli(p)``, by :class:`RSRPLearner`) and held.
``spike``  every presynaptic spike releases with probability ``p`` (``release = rand() < p``) and
           the synapse accumulates its eligibility ``elig = sum (release - p)`` and spike count ``n_spk``.

:class:`RSRPLearner` does the reward-modulated update between trials with :mod:`rsrp_sim.rule`
and :mod:`rsrp_sim.shaping` (the one copy of the math).  A population is N copies of a network
inside one Brian2 ``Network``: :meth:`RSRPSynapses.connect_copies` lays the synapses out copy by
copy, and the learner keeps one ``p`` per logical synapse, shared by all copies::

    S = RSRPSynapses(inp, out, target_var='v', mode='spike', weight=0.2)
    S.connect()
    learner = RSRPLearner(S, lr=0.05, shaping='baseline')
    for trial in range(50):
        learner.begin_trial(); net.run(200*ms); learner.end_trial([reward])
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...core import rule
from ...core import shaping as shaping_lib
from ...infra.errors import UserError, unknown
from .devices import import_brian2

b2 = import_brian2()

MODES = ("trial", "spike")
SPIKE_RELEASE = "release = int(rand() < p)"


class _QuietRelease(logging.Filter):
    """Drop Brian2's order-of-execution warning for the spike-mode draw: each synapse draws its own
    ``rand()`` and the postsynaptic effect is a sum, so the order does not matter."""

    def filter(self, record):
        msg = record.getMessage()
        return not ("may not be well-defined" in msg and SPIKE_RELEASE in msg)


logging.getLogger("brian2.codegen.generators.base").addFilter(_QuietRelease())


class RSRPSynapses(b2.Synapses):
    """Synapses with stochastic release (see the module docstring).

    ``target_var``: postsynaptic variable receiving ``weight * release`` on each presynaptic spike
    (``None``: no delivery, e.g. for a read-out defined by a summed variable in ``model``).
    ``weight``: an expression string (e.g. ``'w'``, ``'sgn_pre'``) or a number/quantity (a constant);
    the default ``'w'`` declares a per-synapse variable ``w`` (dimensionless unless
    ``weight_unit`` says otherwise).  ``model`` / ``on_pre``: extra equations and statements appended
    to the RSRP ones.  ``p_init``: the initial release probability.
    """

    def __init__(self, source, target=None, target_var: str | None = None, mode: str = "trial",
                 weight: Any = "w", model: str = "", on_pre: str = "", p_init: float = rule.P_INIT,
                 weight_unit: str = "1", namespace: dict | None = None, **kwargs):
        if mode not in MODES:
            raise unknown("release mode", mode, MODES)
        namespace = dict(namespace or {})
        eqs = ["p : 1", "release : 1"]
        if mode == "spike":
            eqs += ["elig : 1", "n_spk : 1"]
        if isinstance(weight, str):
            w_expr = weight
            if weight == "w":
                eqs.append(f"w : {weight_unit}")
        else:
            w_expr = "w_rsrp"
            namespace["w_rsrp"] = weight
        stmts = []
        if mode == "spike":
            stmts += [SPIKE_RELEASE, "elig += release - p", "n_spk += 1"]
        if target_var is not None:
            stmts.append(f"{target_var}_post += {w_expr} * release")
        if on_pre:
            stmts.append(on_pre)
        model = "\n".join(eqs + ([model] if model else []))
        super().__init__(source, target, model=model, on_pre="\n".join(stmts) if stmts else None,
                         namespace=namespace or None, **kwargs)
        for attr in ("mode", "p_init", "n_copies", "n_logical"):
            self.add_attribute(attr)
        self.mode = mode
        self.p_init = float(p_init)
        self.n_copies = 1
        self.n_logical: int | None = None

    def connect_copies(self, i, j, n_copies: int, pre_size: int | None = None, post_size: int | None = None):
        """Connect ``n_copies`` copies of the logical synapses ``(i[l], j[l])`` (one per copy).

        Copy ``c`` connects presynaptic ``c * pre_size + i`` to postsynaptic ``c * post_size + j``;
        the synapses are laid out copy by copy, so synapse ``c * L + l`` is copy ``c``'s version of
        logical synapse ``l``.  ``pre_size``/``post_size`` default to the group sizes / ``n_copies``.
        """
        i = np.asarray(i, dtype=np.int32).ravel()
        j = np.asarray(j, dtype=np.int32).ravel()
        pre_size = len(self.source) // n_copies if pre_size is None else pre_size
        post_size = len(self.target) // n_copies if post_size is None else post_size
        if len(i) != len(j):
            raise ValueError("i and j must have the same length")
        if n_copies * pre_size > len(self.source) or n_copies * post_size > len(self.target):
            raise ValueError(f"{n_copies} copies of {pre_size} -> {post_size} neurons do not fit groups of "
                             f"{len(self.source)} -> {len(self.target)}")
        offs = np.arange(n_copies, dtype=np.int64)[:, None]
        self.connect(i=(offs * pre_size + i).ravel(), j=(offs * post_size + j).ravel())
        self.n_copies, self.n_logical = int(n_copies), len(i)

    def logical_size(self) -> int:
        """Number of logical synapses (per copy)."""
        if self.n_logical is None:  # connected with Synapses.connect: one copy
            self.n_logical = len(self)
        return self.n_logical


def release_values(mode: str, kinds: np.ndarray, p=None, z=None, det=None, fixed=None) -> dict[str, np.ndarray]:
    """The per-synapse values of one group for a set of member slots, laid out copy by copy.

    ``kinds``: one entry per slot, 0 sampled member, 1 deterministic member, 2 padding (nothing
    released).  ``mode``: ``trial`` (``z``: the sampled slots' release patterns, in order; ``p``,
    optional, is written too),
    ``spike`` (sampled slots release with probability ``p`` at every spike; eligibilities zeroed)
    or ``fixed`` (every live slot releases ``fixed``).  ``det``: the deterministic network's mask.
    """
    kinds = np.asarray(kinds)
    live = (kinds < 2)[:, None]
    if mode == "fixed":
        rel = np.where(live, np.asarray(fixed, np.float32).ravel()[None, :], np.float32(0)).astype(np.float32).ravel()
        return {"p": rel.copy(), "release": rel}
    det = np.asarray(det, np.float32).ravel()
    table = np.zeros((len(kinds), det.size), np.float32)
    table[kinds == 1] = det
    if mode == "trial":
        table[kinds == 0] = np.asarray(z, np.float32).reshape(-1, det.size)
        out = {"release": table.ravel()}
        if p is not None:  # the group's own p (unused by trial release; kept for the user to read)
            out["p"] = np.where(live, np.asarray(p, np.float32).ravel()[None, :], np.float32(0)).astype(np.float32).ravel()
        return out
    p = np.asarray(p, np.float32).ravel()
    table[kinds == 0] = p
    zeros = np.zeros(len(kinds) * p.size, np.float32)
    return {"p": table.ravel(), "release": zeros.copy(), "elig": zeros.copy(), "n_spk": zeros}


def write_values(groups: dict, values: dict):
    """Write per-synapse values ``{group: {variable: array}}`` into the synapses (runtime devices)."""
    for name, vals in values.items():
        g = groups[name]
        for var, v in vals.items():
            g.variables[var].set_value(np.asarray(v, dtype=g.variables[var].dtype))


def run_args(groups: dict, values: dict, variables=("release", "p", "elig", "n_spk")) -> dict:
    """``device.run(run_args=...)`` entries for per-synapse values (standalone devices)."""
    return {getattr(groups[name], var): v for name, vals in values.items()
            for var, v in vals.items() if var in variables}


class RSRPLearner:
    """Between-trial RSRP learning for one or more :class:`RSRPSynapses` (see the module docstring).

    The update is the engine's :class:`~rsrp_sim.engine.population.RSRP` strategy (the one copy of
    the rule): this class lays its release patterns out over the network's copies and reads the
    spike-mode eligibilities back.

    ``synapses``: one group, or a dict ``name -> group`` (all with the same number of copies).
    ``fixed``: names of groups whose ``release`` is fixed (e.g. a frozen reservoir, set with
    :meth:`set_fixed`); they are not learned.  ``shaping``/``shaping_kw``: the reward transform
    (:func:`rsrp_sim.core.shaping.shape`); use ``'baseline'`` or ``'raw'`` for a single network (N = 1)
    learning over successive trials.  ``optimizer``/``lr``: see :func:`rsrp_sim.core.rule.make_optimizer`.
    ``n_members``: population size when it exceeds the copies in the network (the population is
    then simulated chunk by chunk with :meth:`member_values`); defaults to the number of copies.
    """

    def __init__(self, synapses, lr: float = 0.15, optimizer: str = "adam", shaping: str = "centered_rank",
                 eps: float = rule.EPS, seed: int | None = 0, weight_decay: float = 0.0,
                 shaping_kw: dict | None = None, fixed=(), n_members: int | None = None):
        from ...engine.population import RSRP

        self.groups = dict(synapses) if isinstance(synapses, dict) else {"syn": synapses}
        copies = {g.n_copies for g in self.groups.values()}
        if len(copies) != 1:
            raise ValueError(f"all synapse groups must have the same number of copies, got {sorted(copies)}")
        self.n_copies = copies.pop()
        self.n_members = self.n_copies if n_members is None else int(n_members)
        self.fixed = set(fixed)
        self.learned = [k for k in self.groups if k not in self.fixed]
        self.rng = np.random.default_rng(seed)
        shapes = {k: (self.groups[k].logical_size(),) for k in self.learned}
        self.strategy = RSRP(shapes, lr=lr, optimizer=optimizer, weight_decay=weight_decay, eps=eps,
                             release={k: self.groups[k].mode for k in self.learned},
                             shaping=shaping_lib.Transform(shaping, **(shaping_kw or {})))
        #: release probabilities per logical synapse of every learned group (NumPy; may be edited)
        self.p = {k: rule.init_p(shapes[k], self.groups[k].p_init) for k in self.learned}
        self.opt_state = self.strategy.opt.init(self.p)
        self.shaping_state = {k: float(v) for k, v in shaping_lib.init_state().items()}
        self.z: dict[str, np.ndarray] = {}
        self.fixed_release: dict[str, np.ndarray] = {}
        self.n_eval = 0

    @property
    def n_train(self) -> int:
        return self.n_members - self.n_eval

    @property
    def search(self):
        """The learner's state as the strategy's typed state."""
        from ...engine.population import RSRPState

        return RSRPState(p=dict(self.p), opt=self.opt_state, frozen={},
                         shaping={k: np.float64(v) for k, v in self.shaping_state.items()})

    @search.setter
    def search(self, state):
        self.p = {k: np.array(v, np.float32) for k, v in state.p.items()}
        self.opt_state = state.opt
        self.shaping_state = {k: float(v) for k, v in state.shaping.items()}

    # ------------------------------------------------------------------ per-trial values
    def set_fixed(self, name: str, release):
        """Fix group ``name``'s release pattern (one logical pattern, used by every copy)."""
        self.fixed_release[name] = np.asarray(release, dtype=np.float32).ravel()

    def new_trial(self, n_eval: int = 0, rng=None):
        """Start a trial: in trial mode draw ``z ~ Bernoulli(p)`` for the sampled members.

        Members ``0 .. n_members - n_eval - 1`` are sampled; the last ``n_eval`` are the
        deterministic network (``release = [p > 0.5]``) and do not contribute to the update.
        """
        if self.n_members - n_eval < 1:
            raise ValueError(f"n_eval={n_eval} leaves no sampled member out of {self.n_members}")
        self.n_eval = int(n_eval)
        members = self.strategy.ask(self.search, self.rng if rng is None else rng, self.n_train)
        self.z = {k: np.asarray(v) for k, v in members.batched.items()}

    def member_values(self, start: int = 0, count: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Per-synapse values ``{group: {variable: array}}`` of members ``start .. start+count-1``.

        Laid out as the synapses (copy by copy); members past the population are padding (nothing
        released).  Trial mode: ``release`` (and ``p``).  Spike mode: ``p`` (for the deterministic
        members their 0/1 mask, so they release deterministically) and zeroed ``release``,
        ``elig``, ``n_spk``.
        """
        count = self.n_copies if count is None else int(count)
        rows = np.arange(start, start + count)
        kinds = np.where(rows < self.n_train, 0, np.where(rows < self.n_members, 1, 2))
        out = {}
        for name, g in self.groups.items():
            if name in self.fixed:
                if name not in self.fixed_release:
                    raise ValueError(f"group {name!r} is fixed but set_fixed() was not called")
                out[name] = release_values("fixed", kinds, fixed=self.fixed_release[name])
                continue
            p = self.p[name]
            z = self.z[name][rows[kinds == 0]] if g.mode == "trial" else None
            out[name] = release_values(g.mode, kinds, p=p, z=z, det=rule.deterministic_mask(p))
        return out

    def write(self, values: dict):
        """Write :meth:`member_values` into the synapses (runtime devices)."""
        write_values(self.groups, values)

    def run_args(self, values: dict, variables=("release", "p", "elig", "n_spk")) -> dict:
        """``device.run(run_args=...)`` entries for :meth:`member_values` (standalone devices)."""
        return run_args(self.groups, values, variables)

    def begin_trial(self, n_eval: int = 0, rng=None):
        """:meth:`new_trial`, then write every copy's values into the synapses (runtime devices)."""
        self.new_trial(n_eval, rng)
        values = self.member_values(0, self.n_copies)
        self.write(values)
        return values

    # ------------------------------------------------------------------ the update
    def _eligibility(self, eligibility):
        out = {}
        for name in self.strategy.spike_groups:
            g, size = self.groups[name], self.p[name].size
            e, cnt = eligibility[name] if eligibility is not None and name in eligibility else (g.elig[:], g.n_spk[:])
            out[name] = (np.asarray(e, np.float32).reshape(-1, size)[:self.n_train],
                         np.asarray(cnt, np.float32).reshape(-1, size)[:self.n_train])
        return out

    def _batch(self, rewards, eligibility):
        from ...engine.population import Members

        f = np.asarray(rewards, dtype=np.float32).ravel()
        if f.size != self.n_train:
            raise ValueError(f"expected {self.n_train} rewards (one per sampled member), got {f.size}")
        return f, Members({k: self.z[k] for k in self.z}, {}, self.n_train), self._eligibility(eligibility)

    def gradient(self, rewards, eligibility=None):
        """Natural-gradient estimate from the last trial's rewards (one per sampled member), without
        updating.  ``eligibility``: spike mode's ``{group: (elig, n_spk)}`` per synapse of the
        sampled members (read from the synapses when omitted).  Returns ``(grad, shaped)``."""
        from ...engine.population import check_finite

        f, members, elig = self._batch(rewards, eligibility)
        check_finite(f)
        search = self.search
        shaped, _ = self.strategy.shape(search, f)
        sums = self.strategy.gradient_terms(search, None, len(f), shaped, members, elig)
        grad = self.strategy.finish_gradient(search, sums, len(f))
        return {k: np.asarray(v, np.float32) for k, v in grad.items()}, shaped

    def end_trial(self, rewards, eligibility=None):
        """Shape the rewards (one per sampled member), estimate the gradient and update ``p``
        (the strategy's ``tell``).  Returns the gradient."""
        f, members, elig = self._batch(rewards, eligibility)
        self.search, grad = self.strategy.tell(self.search, f, members=members, eligibility=elig)
        return {k: np.asarray(v, np.float32) for k, v in grad.items()}

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        """The learner's state (release probabilities, optimiser, reward statistics)."""
        return self.search

    def load_state(self, state):
        self.search = state
