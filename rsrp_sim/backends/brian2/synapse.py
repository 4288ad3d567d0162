"""The RSRP synapse as a Brian2 model: stochastic release, and learning inside the model or between trials.

:class:`RSRPSynapses` is a ``brian2.Synapses`` whose every synapse has a release probability ``p``
(``p_init`` right after ``connect()``; the group's ``p`` is the truth, so ``S.p = ...`` is honoured)
and a release state ``release``; ``on_pre`` adds ``weight * release`` to a postsynaptic variable of
your choice.  Two release modes:

* ``trial``: ``release`` is drawn once per trial (``z ~ Bernoulli(p)``) and held for the trial.
* ``spike``: every presynaptic spike releases with probability ``p`` (``release = rand() < p``) and
  the synapse accumulates its eligibility ``elig = sum (release - p)`` and spike count ``n_spk``.

Two ways to learn ``p`` from a reward, both with :mod:`rsrp_sim.core.rule` (the one copy of the math):

* **online** (``online=True``): the update is Brian2 code inside the model, generated from
  :func:`rsrp_sim.core.rule.online_step`.  The reward ``R`` lives in the simulation (``S.reward.R``,
  a variable your own Brian2 code sets, or a variable of your own group given as ``reward=``); a
  running mean ``Rbar`` is the baseline.  At each trial boundary (every ``trial_duration``, or when
  the flag ``trial_end`` is set) ``p <- clip(p + lr (R - Rbar) elig / max(n_spk, 1), eps, 1 - eps)``,
  then ``Rbar <- Rbar + beta (R - Rbar)``, then ``elig`` and ``n_spk`` restart (trial release draws
  the next ``release`` and sets ``elig = release - p``).  ``update='continuous'`` integrates
  ``dp/dt = lr (R - Rbar) elig / tau_e`` instead.  A whole learning run is one ``net.run``, also on
  ``cpp_standalone`` and ``cuda_standalone``.
* **between trials** (:class:`RSRPLearner`): Python updates ``p`` after each ``net.run`` from the
  rewards of a population of copies (centred-rank shaping), through the engine's RSRP strategy.

A population is N copies of a network inside one Brian2 ``Network``: :meth:`RSRPSynapses.connect_copies`
lays the synapses out copy by copy, and the learner keeps one ``p`` per logical synapse, shared by
all copies::

    S = RSRPSynapses(inp, out, target_var='v', mode='spike', weight=0.2, online=True,
                     lr=0.05, trial_duration=100*ms)
    S.connect()
    net = Network(inp, out, S, reward_code)   # reward_code sets S.reward.R during each trial
    net.run(200 * 100*ms)                     # 200 trials, one run
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from ...core import rule
from ...core import shaping as shaping_lib
from ...infra.errors import UserError, unknown
from .devices import import_brian2

b2 = import_brian2()

__all__ = ["RSRPSynapses", "RSRPLearner", "RewardGroup", "release_values", "write_values", "run_args", "MODES",
           "UPDATES"]

MODES = ("trial", "spike")
UPDATES = ("trial", "continuous")
SPIKE_RELEASE = "release = int(rand() < p)"
#: variables of an online group kept by ``net.restore()`` (the learning is not undone)
ONLINE_KEPT = ("p", "release", "elig", "n_spk", "t_elig", "lr", "plastic")
REWARD_KEPT = ("R", "Rbar", "last_R", "n_trials", "begun", "beta")


class _QuietRelease(logging.Filter):
    """Drop Brian2's order-of-execution warning for the spike-mode draw: each synapse draws its own
    ``rand()`` and the postsynaptic effect is a sum, so the order does not matter."""

    def filter(self, record):
        msg = record.getMessage()
        return not ("may not be well-defined" in msg and SPIKE_RELEASE in msg)


logging.getLogger("brian2.codegen.generators.base").addFilter(_QuietRelease())


def _is_standalone() -> bool:
    from brian2.devices.device import RuntimeDevice

    return not isinstance(b2.get_device(), RuntimeDevice)


def _number(name: str, value: Any, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or \
            (high is not None and v > high):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        raise UserError(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {value!r}")
    return v


def _positive_time(name: str, value: Any, example: str) -> Any:
    """``value`` if it is a positive Brian2 time, else one line naming ``name``."""
    if not isinstance(value, b2.Quantity) or value.dim is not b2.second.dim or float(value) <= 0:
        raise UserError(f"{name} must be a positive time (e.g. {example}), got {value!r}")
    return value


def _link(group: Any, var: str) -> Any:
    """A linked variable onto ``group.var`` for a one-unit group (a shared variable, or unit 0)."""
    if group.variables[var].scalar:
        return b2.linked_var(group, var)
    return b2.linked_var(group, var, index=np.zeros(1, np.int64))


def _user_variables(group: Any) -> list[str]:
    """A group's variables a user may name (not Brian2's internal ones)."""
    return [k for k in group.variables if not k.startswith("_") and k not in ("t", "dt", "i", "N", "t_in_timesteps")]


def _ref(group: Any, var: str, what: str) -> tuple[Any, str]:
    """``(group, variable)`` of a user's reward or trial-end flag, checked."""
    if not isinstance(group, b2.NeuronGroup) and not isinstance(group, b2.Subgroup):
        raise UserError(f"{what} must be a NeuronGroup or (group, variable), got {type(group).__name__}")
    if var not in group.variables:
        raise unknown(f"variable of {group.name} for {what}", var,
                      _user_variables(group))
    v = group.variables[var]
    if not (getattr(v, "scalar", False) or len(group) == 1):
        raise UserError(f"{what} {group.name}.{var} must be one value (a group of size 1 or a shared variable), "
                        f"but {group.name} has {len(group)} neurons; sum it into a group of size 1 first")
    return group, var


class RewardGroup(b2.NeuronGroup):  # type: ignore[name-defined,misc]  # brian2 is imported at run time
    """The reward of an online :class:`RSRPSynapses` (one unit): ``R`` (set by your Brian2 code, or
    linked to your own variable), the running mean ``Rbar``, the last trial's reward ``last_R``,
    the number of finished trials ``n_trials``.  ``net.restore()`` keeps these (the learning goes on)."""

    def _restore_from_full_state(self, state):
        kept = {k: v for k, v in state.items() if k not in REWARD_KEPT}
        super()._restore_from_full_state(kept)


class RSRPSynapses(b2.Synapses):  # type: ignore[name-defined,misc]  # brian2 is imported at run time
    """Synapses with stochastic release (see the module docstring).

    ``target_var``: the postsynaptic variable (its name in the target group, e.g. ``'v'`` or
    ``'ge'``) receiving ``weight * release`` on each presynaptic spike (``None``: no delivery, e.g.
    for a read-out defined by a summed variable in ``model``).
    ``weight``: an expression string (e.g. ``'w'``, ``'sgn_pre'``) or a number/quantity (a constant);
    the default ``'w'`` declares a per-synapse variable ``w`` (dimensionless unless ``weight_unit``
    says otherwise).  ``model`` / ``on_pre``: extra equations and statements appended to the RSRP
    ones.  ``p_init``: the release probability of every synapse made by ``connect()``.

    Online learning (``online=True``; the variables ``S.lr`` and ``S.plastic`` (1 learn, 0 frozen)
    and ``S.reward.beta`` may be changed between runs, e.g. through ``run_args`` on standalone):
    ``lr``: step size; ``trial_duration``: time between trial boundaries (a multiple of the group's
    ``dt``); ``trial_end``: instead, ``(group, variable)`` whose value 1 marks a boundary, checked
    every ``trial_duration``; ``reward``: ``None`` (``S.reward.R``, set by your code, reset to 0 at each
    boundary unless ``reset_reward=False``), ``(group, variable)`` of your own (a group of size 1
    or a shared variable), or another online group's ``reward`` unit (``reward=S1.reward``: one
    reward and one baseline for several groups; same ``trial_duration``); ``beta``: factor of the
    running-mean baseline; ``tau_e``: decay time of the spike-mode eligibility (``None``: no decay);
    ``update``: ``'trial'`` (at boundaries) or ``'continuous'`` (needs ``tau_e``; ``tau_r`` is the
    baseline's time constant, default ``10 * tau_e``); ``eps``: clip margin of ``p``; ``order``:
    scheduling order of the update in the ``'start'`` slot of the boundary's time step.
    """

    def __init__(self, source: Any, target: Any = None, target_var: str | None = None, mode: str = "trial",
                 weight: Any = "w", model: str = "", on_pre: str = "", p_init: float = rule.P_INIT,
                 weight_unit: str = "1", namespace: dict | None = None, *, online: bool = False,
                 lr: float = 0.01, trial_duration: Any = None, trial_end: Any = None, reward: Any = None,
                 reset_reward: bool = True, beta: float = rule.BASELINE_BETA, tau_e: Any = None,
                 update: str = "trial", tau_r: Any = None, eps: float = rule.EPS, order: int = -50,
                 **kwargs: Any) -> None:
        if mode not in MODES:
            raise unknown("release mode", mode, MODES)
        if update not in UPDATES:
            raise unknown("online update", update, UPDATES)
        target_group = source if target is None else target
        if target_var is not None:
            self._check_target_var(target_group, target_var)
        p_init = _number("p_init", p_init, 0.0, 1.0)
        namespace = dict(namespace or {})
        eqs = ["p : 1", "release : 1"]
        if mode == "spike" or online:
            eqs += ["elig : 1", "n_spk : 1"]
        if isinstance(weight, str):
            w_expr = weight
            if weight == "w":
                eqs.append(f"w : {weight_unit}")
        else:
            w_expr = "w_rsrp"
            namespace["w_rsrp"] = weight
        decay = tau_e is not None
        if decay:
            _positive_time("tau_e", tau_e, "500*ms; or None: no decay")
            namespace["tau_e_rsrp"] = tau_e
            eqs.append("t_elig : second")
        stmts = []
        if mode == "spike":
            stmts.append(SPIKE_RELEASE)
            if decay:
                stmts += ["elig = elig * exp(-(t - t_elig) / tau_e_rsrp) + release - p", "t_elig = t"]
            else:
                stmts.append("elig += release - p")
            stmts.append("n_spk += 1")
        if target_var is not None:
            stmts.append(f"{target_var}_post += {w_expr} * release")
        if on_pre:
            stmts.append(on_pre)
        if online:
            eqs += ["lr : 1 (shared)", "plastic : 1 (shared)"]
        model = "\n".join(eqs + ([model] if model else []))
        super().__init__(source, target, model=model, on_pre="\n".join(stmts) if stmts else None,
                         namespace=namespace, **kwargs)
        for attr in ("mode", "p_init", "n_copies", "n_logical", "online", "reward", "trial_duration",
                     "_array_connect", "_generator_connect", "_learner", "_lr_init"):
            self.add_attribute(attr)
        self.mode = mode
        self.p_init = p_init
        self.n_copies = 1
        self.n_logical: int | None = None
        self.online = bool(online)
        self.reward: Any = None  # the reward unit of an online group
        self.trial_duration = trial_duration
        self._array_connect = 0
        self._generator_connect = False
        self._learner = None
        self._lr_init = None
        if online:
            self._setup_online(lr=lr, trial_duration=trial_duration, trial_end=trial_end, reward=reward,
                               reset_reward=reset_reward, beta=beta, decay=decay, update=update, tau_r=tau_r,
                               tau_e=tau_e, eps=eps, order=order)
        else:
            given = {k: v for k, v in (("trial_duration", trial_duration), ("trial_end", trial_end),
                                       ("reward", reward), ("tau_r", tau_r)) if v is not None}
            if update != "trial":
                given["update"] = update
            if given:
                raise UserError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} options of online learning: "
                                f"add online=True (or leave them out and use RSRPLearner between trials)")
            if decay and mode != "spike":
                raise UserError("tau_e (eligibility decay) needs mode='spike' or online=True")

    @staticmethod
    def _check_target_var(group, target_var):
        names = _user_variables(group)
        if target_var in group.variables:
            return
        if target_var.endswith("_post") and target_var[:-5] in group.variables:
            raise UserError(f"target_var={target_var!r}: give the variable's name in the target group, "
                            f"without '_post' (target_var={target_var[:-5]!r})")
        raise unknown(f"target_var (a variable of the target group {group.name})", target_var, names)

    # ------------------------------------------------------------------ online learning
    def _setup_online(self, *, lr, trial_duration, trial_end, reward, reset_reward, beta, decay, update, tau_r,
                      tau_e, eps, order):
        lr = _number("lr", lr, 0.0)
        beta = _number("beta", beta, 0.0, 1.0)
        eps = _number("eps", eps, 0.0, 0.5, low_open=True)
        dt = self.clock.dt
        if update == "continuous":
            if tau_e is None:
                raise UserError("update='continuous' needs an eligibility decay time tau_e (e.g. tau_e=500*ms)")
            if trial_end is not None:
                raise UserError("trial_end marks trial boundaries; update='continuous' has none (leave it out)")
            step = dt if trial_duration is None else trial_duration
            tau_r = 10 * tau_e if tau_r is None else tau_r
            _positive_time("tau_r", tau_r, "5*second")
        else:
            if trial_duration is None:
                raise UserError("online learning needs trial_duration (e.g. trial_duration=200*ms: the update "
                                "runs every 200 ms) or update='continuous'")
            step = trial_duration
        _positive_time("trial_duration", step, "200*ms")
        ratio = float(step / dt)
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise UserError(f"trial_duration {step} is not a multiple of the synapses' dt {dt}: use a multiple "
                            f"(e.g. {round(max(ratio, 1)) * dt})")
        self.trial_duration = step
        name = self.name
        # the reward unit: R (own, or linked to the user's variable), the baseline and the trial count
        shared = isinstance(reward, RewardGroup)  # the reward unit of another online group: one reward, one baseline
        if shared:
            if trial_end is not None:
                raise UserError("reward= another group's reward unit shares its trial boundaries too: "
                                "leave trial_end out")
            if (reward.step, reward.update) != (step, update):
                raise UserError(f"the shared reward unit {reward.name} has trial_duration={reward.step} and "
                                f"update={reward.update!r}: use the same here")
            if int(order) >= reward.update_order + 1:
                raise UserError(f"order={order} would run after the shared reward unit's baseline update "
                                f"(order {reward.update_order + 1}): use order <= {reward.update_order}")
            self.reward = reward
            flag = "trial_end" if "trial_end" in reward.variables else None
        else:
            linked = reward is not None
            if linked:
                rg, rvar = _ref(*(reward if isinstance(reward, tuple) else (reward, "R")), what="reward")
            eqs = ["R : 1 (linked)" if linked else "R : 1", "Rbar : 1", "last_R : 1", "n_trials : 1", "begun : 1",
                   "beta : 1 (shared)"]
            flag = None
            if trial_end is not None:
                fg, fvar = _ref(*(trial_end if isinstance(trial_end, tuple) else (trial_end, "trial_end")),
                                what="trial_end")
                eqs.append("trial_end : 1 (linked)")
            self.reward = RewardGroup(1, "\n".join(eqs), clock=self.clock, namespace={}, name=f"{name}_reward")
            for attr, value in (("step", step), ("update", update), ("update_order", int(order))):
                self.reward.add_attribute(attr)
                setattr(self.reward, attr, value)
            if linked:
                self.reward.R = _link(rg, rvar)
            if trial_end is not None:
                self.reward.trial_end = _link(fg, fvar)
                flag = "trial_end"
            self.reward.beta = beta
            self.reward.begun = 1 if flag else 0  # fixed boundaries: the first one (t = 0) only starts trial 1
            self.contained_objects.append(self.reward)
        for var in ("R", "Rbar", "begun") + (("trial_end",) if flag else ()):
            self.variables.add_reference(var, self.reward, var, index="0")
        self._lr_init = lr  # shared synapse variables can be written only after connect()
        b = flag or "1"  # is this a boundary
        when = {"when": "start", "order": int(order)}
        if update == "continuous":
            ns = {"step_rsrp": step, "tau_e_rsrp": tau_e, "tau_r_rsrp": tau_r}
            e_now = "elig * exp(-(t - t_elig) / tau_e_rsrp)"
            new_p = rule.brian2_expression(rule.online_continuous_step, p="p", elig="e_now", reward="R",
                                           baseline="Rbar", lr="lr", step="step_rsrp", tau_e="tau_e_rsrp", eps=eps)
            code = f"e_now = {e_now}\np = plastic * {new_p} + (1 - plastic) * p"
            new_b = rule.brian2_expression(rule.online_continuous_baseline, baseline="Rbar", reward="R",
                                           step="step_rsrp", tau_r="tau_r_rsrp")
            self.run_regularly(code, dt=step, name=f"{name}_online_update", **when)
            self.namespace.update(ns)
            if shared:
                return
            self.reward.namespace.update(ns)
            self.reward.run_regularly(f"Rbar = {new_b}\nlast_R = R", dt=step, name=f"{name}_online_baseline",
                                      when="start", order=int(order) + 1)
            return
        trial_release = self.mode == "trial"
        e_now = "elig * exp(-(t - t_elig) / tau_e_rsrp)" if decay and not trial_release else "elig"
        count = "1" if trial_release else "n_spk"
        new_p = rule.brian2_expression(rule.online_step, p="p", elig="e_now", count=count, reward="R",
                                       baseline="Rbar", lr="lr", eps=eps)
        lines = [f"e_now = {e_now}", f"a_rsrp = plastic * begun * {b}",
                 f"p = a_rsrp * {new_p} + (1 - a_rsrp) * p"]
        if trial_release:
            lines += [f"release = {b} * int(rand() < p) + (1 - {b}) * release",
                      f"elig = {b} * (release - p) + (1 - {b}) * elig", "n_spk = 1"]
        else:
            lines += [f"elig = (1 - {b}) * elig", f"n_spk = (1 - {b}) * n_spk"]
            if decay:
                lines.append(f"t_elig = {b} * t + (1 - {b}) * t_elig")
        self.run_regularly("\n".join(lines), dt=step, name=f"{name}_online_update", **when)
        if shared:
            return
        new_b = rule.brian2_expression(rule.online_baseline, baseline="Rbar", reward="R", beta="beta")
        w = f"begun * {b}"
        rl = [f"Rbar = {w} * {new_b} + (1 - {w}) * Rbar", f"last_R = {w} * R + (1 - {w}) * last_R",
              f"n_trials = n_trials + {w}"]
        if reset_reward and not linked:
            rl.append(f"R = (1 - {b}) * R")
        if not flag:
            rl.append("begun = 1")
        self.reward.run_regularly("\n".join(rl), dt=step, name=f"{name}_online_baseline", when="start",
                                  order=int(order) + 1)

    def _restore_from_full_state(self, state):
        """``net.restore()`` restores everything except the learned state of an online group (its
        ``p``, eligibilities and learning variables; the reward unit keeps ``R``, ``Rbar``, ...), so
        restoring the neurons between trials does not undo the learning.  A learner's ``p`` and
        ``release`` are kept in the same way."""
        kept = ONLINE_KEPT if self.online else ("p", "release") if self._learner is not None else ()
        n = state.get("N", (None, None))[0]
        try:
            same = n is None or int(np.asarray(n).ravel()[0]) == len(self)
        except (NotImplementedError, TypeError, IndexError):
            same = True
        if kept and same:
            state = {k: v for k, v in state.items() if k not in kept}
        super()._restore_from_full_state(state)

    # ------------------------------------------------------------------ connecting
    def connect(self, condition: Any = None, i: Any = None, j: Any = None, p: Any = 1.0, n: Any = 1,
                skip_if_invalid: bool = False, namespace: dict | None = None, level: int = 0) -> None:
        """``brian2.Synapses.connect``; the new synapses get ``p = p_init`` (trial release: a first
        ``release`` drawn with that ``p``).  Synapses made before keep their values."""
        super().connect(condition=condition, i=i, j=j, p=p, n=n, skip_if_invalid=skip_if_invalid,
                        namespace=namespace, level=level + 1)
        arrays = condition is None and i is not None and j is not None and not isinstance(i, str) \
            and not isinstance(j, str) and p == 1.0 and n == 1 and not skip_if_invalid
        everything = condition in (None, True, "True") and i is None and j is None and p == 1.0 and n == 1
        if arrays:
            self._array_connect += int(np.broadcast(np.asarray(i), np.asarray(j)).size)
        elif everything:  # all-to-all: known before a standalone run too
            self._array_connect += len(self.source) * len(self.target)
        else:
            self._generator_connect = True
        self._init_new_synapses()

    def _init_new_synapses(self):
        # (a method of its own: Brian2 resolves names in the caller's frame, where connect's p= lives)
        # new synapses start with every variable 0; p = 0 is outside [eps, 1 - eps], so it marks them
        if self.mode == "trial":
            self.release["p == 0"] = f"int(rand() < {self.p_init!r})"
        self.p["p == 0"] = self.p_init
        if self.online and self._lr_init is not None:  # the first connect(): the learning variables
            self.lr, self.plastic, self._lr_init = self._lr_init, 1, None
        if self.online and self.mode == "trial":
            self.elig["n_spk == 0"] = "release - p"
            self.n_spk["n_spk == 0"] = 1

    def connect_copies(self, i: Any, j: Any, n_copies: int, pre_size: int | None = None,
                       post_size: int | None = None) -> None:
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

    def size_now(self) -> int | None:
        """The number of synapses, or None where it is not known yet (standalone before its first run)."""
        try:
            return len(self)
        except NotImplementedError:
            return self._array_connect if not self._generator_connect else None

    def logical_size(self) -> int:
        """Number of logical synapses (per copy)."""
        if self.n_logical is None:  # connected with Synapses.connect: one copy
            n = self.size_now()
            if n is None:
                raise UserError(f"{self.name}: on a standalone device the synapses made by connect() with a "
                                f"condition, p= or n= are known only after a run (and are drawn again at every run "
                                f"without brian2.seed()): connect with i=..., j=... arrays drawn with NumPy, or "
                                f"learn online (online=True, one run)")
            return n
        return self.n_logical


def release_values(mode: str, kinds: np.ndarray, p: Any = None, z: Any = None, det: Any = None,
                   fixed: Any = None) -> dict[str, np.ndarray]:
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
            p_row = np.asarray(p, np.float32).ravel()[None, :]
            out["p"] = np.where(live, p_row, np.float32(0)).astype(np.float32).ravel()
        return out
    p = np.asarray(p, np.float32).ravel()
    table[kinds == 0] = p
    zeros = np.zeros(len(kinds) * p.size, np.float32)
    return {"p": table.ravel(), "release": zeros.copy(), "elig": zeros.copy(), "n_spk": zeros}


def write_values(groups: dict, values: dict) -> None:
    """Write per-synapse values ``{group: {variable: array}}`` into the synapses (runtime devices)."""
    for name, vals in values.items():
        g = groups[name]
        for var, v in vals.items():
            g.variables[var].set_value(np.asarray(v, dtype=g.variables[var].dtype))


def run_args(groups: dict, values: dict, variables: tuple[str, ...] = ("release", "p", "elig", "n_spk")) -> dict:
    """``device.run(run_args=...)`` entries for per-synapse values (standalone devices)."""
    return {getattr(groups[name], var): v for name, vals in values.items()
            for var, v in vals.items() if var in variables}


class RSRPLearner:
    """Between-trial RSRP learning for one or more :class:`RSRPSynapses` (see the module docstring).

    The update is the engine's :class:`~rsrp_sim.engine.population.RSRP` strategy (the one copy of
    the rule): this class lays its release patterns out over the network's copies and reads the
    spike-mode eligibilities back.  The groups' variables are the truth: the learner starts from
    the group's ``p`` (runtime devices; on standalone devices from ``p_init``), adopts a ``p`` you
    set between trials, and writes the updated ``p`` back after every :meth:`end_trial` (runtime).
    On standalone devices the values go in with ``device.run(run_args=learner.run_args(values))``
    and the eligibilities are read from the results after the run.

    ``synapses``: one group, a list of groups, or a dict ``name -> group`` (all with the same number
    of copies; create the learner after the last ``connect()``).  ``fixed``: names of groups whose
    ``release`` is fixed (e.g. a frozen reservoir, set with :meth:`set_fixed`); they are not learned.
    ``shaping``/``shaping_kw``: the reward transform (:func:`rsrp_sim.core.shaping.shape`); default
    ``'centered_rank'`` for a population and ``'baseline'`` for a single network (ranking one reward
    gives a constant).  ``optimizer``/``lr``: see :func:`rsrp_sim.core.rule.make_optimizer`.
    ``n_members``: population size when it exceeds the copies in the network (the population is
    then simulated chunk by chunk with :meth:`member_values`); defaults to the number of copies.
    """

    def __init__(self, synapses: Any, lr: float = 0.15, optimizer: str = "adam", shaping: str | None = None,
                 eps: float = rule.EPS, seed: int | None = 0, weight_decay: float = 0.0,
                 shaping_kw: dict | None = None, fixed: Any = (), n_members: int | None = None) -> None:
        from ...engine.population import RSRP

        if isinstance(synapses, dict):
            self.groups = dict(synapses)
        elif isinstance(synapses, (list, tuple)):
            self.groups = {g.name: g for g in synapses}
        else:
            self.groups = {"syn": synapses}
        for name, g in self.groups.items():
            if not isinstance(g, RSRPSynapses):
                raise UserError(f"RSRPLearner learns RSRPSynapses, got {type(g).__name__} for {name!r}")
            if g.online:
                raise UserError(f"{g.name} learns online (online=True): it needs no RSRPLearner; create it "
                                f"with online=False to learn between trials")
        copies = {g.n_copies for g in self.groups.values()}
        if len(copies) != 1:
            raise UserError(f"all synapse groups must have the same number of copies, got {sorted(copies)}")
        self.n_copies = copies.pop()
        self.n_members = self.n_copies if n_members is None else int(n_members)
        lr = _number("lr", lr, 0.0)
        if shaping is None:
            shaping = "centered_rank" if self.n_members > 1 else "baseline"
        if shaping == "centered_rank" and self.n_members == 1:
            raise UserError("shaping='centered_rank' ranks the rewards of a population; with a single network "
                            "every reward becomes -0.5 and nothing is learned: use shaping='baseline' (or 'raw'), "
                            "a population of copies (connect_copies), or online=True")
        transform = shaping_lib.Transform(shaping, **(shaping_kw or {}))  # an unknown name: one line, here
        self.fixed = set(fixed)
        missing = self.fixed - set(self.groups)
        if missing:
            raise unknown("fixed group", min(missing), self.groups)
        self.learned = [k for k in self.groups if k not in self.fixed]
        self.rng = np.random.default_rng(seed)
        shapes = {}
        for k in self.learned:
            size = self.groups[k].logical_size()
            if size == 0:
                raise UserError(f"{self.groups[k].name} has no synapses yet: create the learner after connect()")
            shapes[k] = (size,)
        self.sizes = {k: self.groups[k].size_now() for k in self.groups}
        queue = getattr(b2.get_device(), "main_queue", [])
        if _is_standalone() and any(f == "seed" and a is not None for f, a in queue):
            warnings.warn("brian2.seed(...) on a standalone device makes every run of the binary draw the same random "
                          "numbers (inputs, spike-mode releases): for one run per trial leave seed() out, or learn "
                          "online (online=True, one run)", UserWarning, stacklevel=2)
        self.strategy = RSRP(shapes, lr=lr, optimizer=optimizer, weight_decay=weight_decay, eps=eps,
                             release={k: self.groups[k].mode for k in self.learned},
                             shaping=transform)
        #: release probabilities per logical synapse of every learned group (NumPy; may be edited)
        self.p = {k: self._group_p(k) for k in self.learned}
        self.opt_state = self.strategy.opt.init(self.p)
        self.shaping_state = {k: float(v) for k, v in shaping_lib.init_state().items()}
        self.z: dict[str, np.ndarray] = {}
        self.fixed_release: dict[str, np.ndarray] = {}
        self.n_eval = 0
        self._written: dict[str, np.ndarray] = {}
        for k in self.learned:
            try:
                self._written[k] = np.asarray(self.groups[k].p[:], np.float32)
            except NotImplementedError:  # standalone before its first run
                pass
        self._in_trial = False
        for g in self.groups.values():
            g._learner = self

    def _group_p(self, name):
        """The logical ``p`` of a group as it stands (copy 0; ``p_init`` where it cannot be read yet)."""
        g = self.groups[name]
        size = g.logical_size()
        try:
            values = np.asarray(g.p[:], np.float32)
        except NotImplementedError:  # standalone before its first run
            return rule.init_p((size,), g.p_init)
        if values.size < size:
            return rule.init_p((size,), g.p_init)
        return rule.clip_p(values[:size].copy(), self.strategy.eps)

    def _check_sizes(self):
        for k, g in self.groups.items():
            now = g.size_now()
            if self.sizes[k] is not None and now is not None and now != self.sizes[k]:
                raise UserError(f"{g.name} has {now} synapses but the learner was created for {self.sizes[k]}: "
                                f"create the learner after the last connect()")

    @property
    def n_train(self) -> int:
        return self.n_members - self.n_eval

    @property
    def search(self) -> Any:
        """The learner's state as the strategy's typed state."""
        from ...engine.population import RSRPState

        return RSRPState(p=dict(self.p), opt=self.opt_state, frozen={},
                         shaping={k: np.float64(v) for k, v in self.shaping_state.items()})

    @search.setter
    def search(self, state: Any) -> None:
        self.p = {k: np.array(v, np.float32) for k, v in state.p.items()}
        self.opt_state = state.opt
        self.shaping_state = {k: float(v) for k, v in state.shaping.items()}

    # ------------------------------------------------------------------ per-trial values
    def set_fixed(self, name: str, release: Any) -> None:
        """Fix group ``name``'s release pattern (one logical pattern, used by every copy)."""
        self.fixed_release[name] = np.asarray(release, dtype=np.float32).ravel()

    def new_trial(self, n_eval: int = 0, rng: Any = None) -> None:
        """Start a trial: in trial mode draw ``z ~ Bernoulli(p)`` for the sampled members.

        Members ``0 .. n_members - n_eval - 1`` are sampled; the last ``n_eval`` are the
        deterministic network (``release = [p > 0.5]``) and do not contribute to the update.
        """
        if self.n_members - n_eval < 1:
            raise UserError(f"n_eval={n_eval} leaves no sampled member out of {self.n_members}")
        self.n_eval = int(n_eval)
        self._in_trial = True
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

    def write(self, values: dict) -> None:
        """Write :meth:`member_values` into the synapses (runtime devices)."""
        write_values(self.groups, values)

    def run_args(self, values: dict, variables: tuple[str, ...] = ("release", "p", "elig", "n_spk")) -> dict:
        """``device.run(run_args=...)`` entries for :meth:`member_values` (standalone devices)."""
        return run_args(self.groups, values, variables)

    def begin_trial(self, n_eval: int = 0, rng: Any = None) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`new_trial`, then write every copy's values into the synapses (runtime devices).

        A ``p`` you set in the group since the last trial is adopted first.  On standalone devices
        use :meth:`new_trial`, :meth:`member_values` and ``device.run(run_args=learner.run_args(...))``."""
        if _is_standalone():
            raise UserError("begin_trial() writes into the synapses, which a standalone device cannot do between "
                            "runs: call learner.new_trial(), then device.run(run_args=learner.run_args("
                            "learner.member_values())), then learner.end_trial(rewards); or learn online "
                            "(online=True, one run)")
        self._check_sizes()
        self._adopt_user_p()
        self.new_trial(n_eval, rng)
        values = self.member_values(0, self.n_copies)
        self.write(values)
        return values

    def _adopt_user_p(self):
        for k in self.learned:
            g = self.groups[k]
            now = np.asarray(g.p[:], np.float32)
            if k in self._written and np.array_equal(now, self._written[k]):
                continue  # unchanged since the learner last read or wrote it (learner.p may have been edited)
            self.p[k] = rule.clip_p(now[:self.p[k].size].copy(), self.strategy.eps)

    def _write_p(self):
        """The learned ``p`` into the groups (every copy; runtime devices)."""
        if _is_standalone():
            return
        for k in self.learned:
            g = self.groups[k]
            tiled = np.tile(np.asarray(self.p[k], np.float32), self.n_copies)
            g.variables["p"].set_value(tiled.astype(g.variables["p"].dtype))
            self._written[k] = np.asarray(g.p[:], np.float32)

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

        if not self.z and not self.strategy.spike_groups and self.learned:
            raise UserError("no trial has begun: call begin_trial() (standalone: new_trial()) first")
        f = np.asarray(rewards, dtype=np.float32).ravel()
        if f.size != self.n_train:
            raise ValueError(f"expected {self.n_train} rewards (one per sampled member), got {f.size}")
        return f, Members({k: self.z[k] for k in self.z}, {}, self.n_train), self._eligibility(eligibility)

    def gradient(self, rewards: Any, eligibility: Any = None) -> tuple[dict[str, np.ndarray], Any]:
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

    def end_trial(self, rewards: Any, eligibility: Any = None) -> dict[str, np.ndarray]:
        """Shape the rewards (one per sampled member), estimate the gradient and update ``p``
        (the strategy's ``tell``).  Returns the gradient."""
        if not self._in_trial:
            raise UserError("end_trial() without a trial: call begin_trial() (standalone: new_trial()) before each "
                            "trial and end_trial(rewards) once after it")
        self._check_sizes()
        f, members, elig = self._batch(rewards, eligibility)
        self.search, grad = self.strategy.tell(self.search, f, members=members, eligibility=elig)
        self._in_trial = False
        self._write_p()
        return {k: np.asarray(v, np.float32) for k, v in grad.items()}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> Any:
        """The learner's state (release probabilities, optimiser, reward statistics)."""
        return self.search

    def load_state(self, state: Any) -> None:
        self.search = state
