"""PPO with an LSTM policy (the published RL baseline, see :ref:`science-baselines`) in JAX: flax + optax.

One *update*: ``n_envs`` environments step ``horizon`` times with the current recurrent policy (its
LSTM state is zeroed at every episode start), then the segment is replayed from its stored initial
LSTM state (truncated back-propagation through time over the segment) for ``epochs`` passes of
``minibatches`` groups of environments, minimising

    clipped surrogate  +  vf_coef * value loss  -  ent_coef * entropy

with advantages from GAE(gamma, lambda) and an optional global gradient-norm clip.  Observations
are normalised by a running mean/std; rewards are scaled (``reward_scale``) and, for continuous
control, divided by the running std of the discounted return (``reward_norm``).  Discrete actions
use a categorical head; continuous ones a tanh-squashed diagonal Gaussian with a state-independent
std (``softplus(param) + 1e-3``), whose entropy is estimated from a reparameterised sample.
A segment cut by the time limit is bootstrapped: the reward of a truncated step gets ``gamma
V(s_final)`` (``truncation=bootstrap``, the default); ``truncation=terminal`` treats the time limit
as a terminal state, as the published code did (the ``paper`` presets).

One *iteration* (a row of ``metrics.csv``) is ``updates_per_iteration`` updates followed by a greedy
evaluation (argmax / tanh(mean)) on ``eval_episodes`` parallel episodes.  Cheap environments run the
whole iteration in one ``jit``; ``stepped`` environments (Brax) run a host loop over the policy and
the environment's shared compiled kernel (:mod:`.envloop`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ...envs import make as make_env
from ...envs import scale_action
from ...infra.errors import UserError
from ...engine.method import Method
from ...engine.population import equal_blocks  # the RL evaluator's blocks: one compiled env kernel
from . import envloop

LOG_STD_FLOOR = 1e-3  # std = softplus(param) + floor (the published policy's parameterisation)
NORM_EPS = 1e-8


@dataclasses.dataclass
class PPOConfig:
    """PPO-LSTM settings (defaults: the published CartPole settings; see :ref:`science-baselines`)."""

    env: str = "CartPole-v1"
    max_episode_steps: int = 0  # 0: the environment's own limit
    iterations: int = 100
    updates_per_iteration: int = 10
    n_envs: int = 1
    horizon: int = 20  # steps per environment per update (= BPTT length)
    epochs: int = 2
    minibatches: int = 1  # groups of environments per epoch
    lr: float = 5e-4
    gamma: float = 0.98
    gae_lambda: float = 0.95
    clip: float = 0.1
    vf_coef: float = 1.0
    value_loss: Literal["huber", "mse"] = "huber"
    ent_coef: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping
    norm_adv: bool = False
    hidden: int = 64  # Dense+ReLU layer before the LSTM; 0: none
    lstm: int = 32
    obs_norm: Literal["running", "none"] = "none"
    obs_clip: float = 10.0
    reward_scale: float = 0.01
    reward_norm: bool = False
    eval_episodes: int = 10
    truncation: Literal["bootstrap", "terminal"] = "bootstrap"  # time limit: bootstrap V, or terminal
    checkpoint_every: int = 1

    def validate(self):
        for key in ("iterations", "updates_per_iteration", "n_envs", "horizon", "epochs", "minibatches", "lstm",
                    "eval_episodes", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.hidden < 0 or self.max_episode_steps < 0:
            raise UserError("hidden and max_episode_steps must be >= 0")
        if self.n_envs % self.minibatches:
            raise UserError(f"minibatches={self.minibatches} must divide n_envs={self.n_envs}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for key in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if not self.clip > 0:
            raise UserError(f"clip must be > 0, got {self.clip}")
        if self.max_grad_norm < 0 or self.obs_clip <= 0 or self.reward_scale <= 0:
            raise UserError("max_grad_norm must be >= 0, obs_clip and reward_scale > 0")


# ----------------------------------------------------------------------------- math (tested by hand)
def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimation over a segment.

    ``rewards, values, dones``: (T, ...) with ``dones[t]`` true when the episode ended at step t;
    ``last_value``: V of the observation after the last step.  Returns ``(advantages, returns)``.
    """
    def back(carry, x):
        adv_next, v_next = carry
        r, v, d = x
        nonterminal = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * v_next * nonterminal - v
        adv = delta + gamma * lam * nonterminal * adv_next
        return (adv, v), adv

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
    return adv, adv + values


def clipped_surrogate(logp_new, logp_old, adv, clip: float):
    """PPO's clipped policy loss ``-mean(min(rho A, clip(rho, 1-e, 1+e) A))``; also the clip fraction."""
    ratio = jnp.exp(logp_new - logp_old)
    loss = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv))
    return loss, jnp.mean((jnp.abs(ratio - 1.0) > clip).astype(jnp.float32))


def tanh_gaussian_logp(u, mu, std):
    """log-density of ``a = tanh(u)`` with ``u ~ N(mu, std^2)``, summed over the last axis."""
    logp_u = -0.5 * ((u - mu) / std) ** 2 - jnp.log(std) - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # log(1 - tanh(u)^2), stable
    return jnp.sum(logp_u - log_det, axis=-1)


def _welford(stats, x):
    """Merge a batch ``x`` (n, d) into running ``{count, mean, var}``."""
    n = x.shape[0]
    bmean, bvar = x.mean(0), x.var(0)
    tot = stats["count"] + n
    delta = bmean - stats["mean"]
    mean = stats["mean"] + delta * n / tot
    m2 = stats["var"] * stats["count"] + bvar * n + delta**2 * stats["count"] * n / tot
    return {"count": tot, "mean": mean, "var": m2 / tot}


def _stats(d):
    return {"count": jnp.float32(0.0), "mean": jnp.zeros(d, jnp.float32), "var": jnp.ones(d, jnp.float32)}


# ----------------------------------------------------------------------------- network
class ActorCritic(nn.Module):
    """(Dense+ReLU) -> LSTM -> policy head and value head; the carry is zeroed where ``first``."""

    n_out: int
    hidden: int
    lstm: int
    continuous: bool

    @nn.compact
    def __call__(self, carry, obs, first):
        keep = (~first)[:, None].astype(jnp.float32)
        carry = jax.tree_util.tree_map(lambda c: c * keep, carry)
        x = obs
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, name="embed")(x))
        carry, h = nn.OptimizedLSTMCell(self.lstm, name="lstm")(carry, x)
        out = nn.Dense(self.n_out, name="pi")(h)
        value = nn.Dense(1, name="v")(h)[..., 0]
        if self.continuous:
            std = jax.nn.softplus(self.param("std_param", nn.initializers.zeros, (self.n_out,))) + LOG_STD_FLOOR
            return carry, (out, jnp.broadcast_to(std, out.shape)), value
        return carry, out, value


# ----------------------------------------------------------------------------- method
class PPOLSTM(Method):
    """PPO-LSTM on any environment of :mod:`rsrp_sim.envs` (discrete or continuous actions)."""

    Config = PPOConfig
    iterations_key = "iterations"

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.env = make_env(cfg.env, cfg.max_episode_steps or None)
        self.continuous = self.env.action_kind == "continuous"
        self.net = ActorCritic(self.env.n_actions, cfg.hidden, cfg.lstm, self.continuous)
        tx = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm > 0 else []
        self.opt = optax.chain(*tx, optax.adam(cfg.lr))
        self.stepped = bool(getattr(self.env, "stepped", False))
        self._learn = jax.jit(self._learn_fn)
        if self.stepped:
            self._act_fn = jax.jit(self._act)
            self._post_fn = jax.jit(self._post)
            self._finish_fn = jax.jit(self._finish)
            self._greedy_fn = jax.jit(self._greedy_step)
            self._eval_start = jax.jit(self._eval_carry, static_argnums=(0,))
        else:
            self._iterate = jax.jit(self._iterate_fused)
            self._evaluate = jax.jit(self._evaluate_fused)

    # ------------------------------------------------------------------ state
    def _zero_carry(self, n):
        z = jnp.zeros((n, self.config.lstm), jnp.float32)
        return (z, z)

    def init_state(self):
        cfg = self.config
        key, k_init, k_reset, k_loop = jax.random.split(jax.random.PRNGKey(self.seed), 4)
        d = self.env.obs_dim
        params = self.net.init(k_init, self._zero_carry(1), jnp.zeros((1, d), jnp.float32), jnp.ones((1,), bool))
        if self.stepped:
            ls = envloop.kernels(self.env).init(k_reset, k_loop, cfg.n_envs, None, equal_blocks(cfg.n_envs))
        else:
            ls = envloop.init(self.env, k_reset, k_loop, cfg.n_envs, None, equal_blocks(cfg.n_envs))
        return {
            "key": key, "params": params, "opt": self.opt.init(params), "loop": ls,
            "carry": self._zero_carry(cfg.n_envs), "first": jnp.ones((cfg.n_envs,), bool),
            "disc_ret": jnp.zeros((cfg.n_envs,), jnp.float32),
            "obs_stats": _stats(d), "ret_stats": _stats(1),
            "updates": np.int64(0), "env_steps": np.int64(0), "train_env_steps": np.int64(0),
            "iteration": np.int64(0),
        }

    # ------------------------------------------------------------------ policy pieces
    def _normalize(self, obs, stats):
        if self.config.obs_norm == "none":
            return obs
        z = (obs - stats["mean"]) / jnp.sqrt(stats["var"] + NORM_EPS)
        return jnp.clip(z, -self.config.obs_clip, self.config.obs_clip)

    def _env_action(self, a):
        if not self.continuous:
            return a.astype(jnp.int32)
        return scale_action(jnp, self.env, a)  # a = tanh(u) is already in [-1, 1]

    def _sample(self, out, key):
        """Sampled action (stored form), its log-probability, and the environment action."""
        if self.continuous:
            mu, std = out
            u = mu + std * jax.random.normal(key, mu.shape)
            return u, tanh_gaussian_logp(u, mu, std), self._env_action(jnp.tanh(u))
        a = jax.random.categorical(key, out)
        logp = jnp.take_along_axis(jax.nn.log_softmax(out), a[:, None], axis=1)[:, 0]
        return a, logp, self._env_action(a)

    def _greedy(self, out):
        return self._env_action(jnp.tanh(out[0]) if self.continuous else jnp.argmax(out, axis=-1))

    def _act(self, params, st, ls, key):
        """Policy step of the collection: returns (new carry, env action, per-step record)."""
        obs = self._normalize(ls["obs"], st["obs_stats"])
        carry, out, value = self.net.apply(params, st["carry"], obs, st["first"])
        act, logp, env_act = self._sample(out, key)
        rec = {"obs": obs, "raw_obs": ls["obs"], "first": st["first"], "act": act, "logp": logp, "value": value}
        return carry, env_act, rec

    def _post(self, params, st, carry, rec, step):
        cfg = self.config
        rew = step.reward * cfg.reward_scale
        done = step.done
        disc = st["disc_ret"] * cfg.gamma * (1.0 - st["first"].astype(jnp.float32)) + rew
        # a truncated episode did not end: its last reward is followed by gamma V(s_final)
        boot = jnp.zeros_like(rew)
        if cfg.truncation == "bootstrap":
            final = self._normalize(step.final_obs, st["obs_stats"])
            _, _, v_final = self.net.apply(params, carry, final, jnp.zeros_like(done))
            boot = jnp.where(step.truncated, cfg.gamma * v_final, 0.0)
        rec = dict(rec, reward=rew, done=done, disc_ret=disc, bootstrap=boot)
        return dict(st, carry=carry, first=done, disc_ret=disc), rec

    def _finish(self, params, st, ls, recs):
        """After a segment: bootstrap value, reward normalisation, GAE, normaliser updates."""
        cfg = self.config
        obs = self._normalize(ls["obs"], st["obs_stats"])
        _, _, last_v = self.net.apply(params, st["carry"], obs, st["first"])
        rewards = recs["reward"]
        ret_stats = st["ret_stats"]
        if cfg.reward_norm:
            ret_stats = _welford(ret_stats, recs["disc_ret"].reshape(-1, 1))
            rewards = rewards / jnp.sqrt(ret_stats["var"][0] + NORM_EPS)
        rewards = rewards + recs["bootstrap"]  # the value net's units (after normalisation)
        adv, ret = gae(rewards, recs["value"], recs["done"], last_v, cfg.gamma, cfg.gae_lambda)
        obs_stats = st["obs_stats"]
        if cfg.obs_norm == "running":
            obs_stats = _welford(obs_stats, recs["raw_obs"].reshape(-1, recs["raw_obs"].shape[-1]))
        batch = {"obs": recs["obs"], "first": recs["first"], "act": recs["act"], "logp": recs["logp"],
                 "adv": adv, "ret": ret, "value": recs["value"]}
        return dict(st, obs_stats=obs_stats, ret_stats=ret_stats), batch

    # ------------------------------------------------------------------ learning
    def _loss(self, params, carry0, mb, key):
        cfg = self.config

        def replay(carry, x):
            obs, first = x
            carry, out, v = self.net.apply(params, carry, obs, first)
            return carry, (out, v)

        _, (out, v) = jax.lax.scan(replay, carry0, (mb["obs"], mb["first"]))
        if self.continuous:
            mu, std = out
            logp = tanh_gaussian_logp(mb["act"], mu, std)
            u = mu + std * jax.random.normal(key, mu.shape)  # reparameterised sample for the entropy
            entropy = -jnp.mean(tanh_gaussian_logp(u, mu, std))
        else:
            logits = jax.nn.log_softmax(out)
            logp = jnp.take_along_axis(logits, mb["act"][..., None], axis=-1)[..., 0]
            entropy = -jnp.mean(jnp.sum(jnp.exp(logits) * logits, axis=-1))
        adv = mb["adv"]
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + NORM_EPS)
        pg, clip_frac = clipped_surrogate(logp, mb["logp"], adv, cfg.clip)
        err = v - mb["ret"]
        vf = jnp.mean(optax.huber_loss(err)) if cfg.value_loss == "huber" else jnp.mean(err**2)
        loss = pg + cfg.vf_coef * vf - cfg.ent_coef * entropy
        approx_kl = jnp.mean(mb["logp"] - logp)
        return loss, {"pg_loss": pg, "vf_loss": vf, "entropy": entropy, "clip_frac": clip_frac, "approx_kl": approx_kl}

    def _learn_fn(self, params, opt_state, carry0, batch, key):
        cfg = self.config
        n, mbs = cfg.n_envs, cfg.minibatches
        size = n // mbs

        def epoch(c, k):
            params, opt_state = c
            k_perm, k_mb = jax.random.split(k)
            perm = jax.random.permutation(k_perm, n) if mbs > 1 else jnp.arange(n)

            def minibatch(c, i):
                params, opt_state = c
                idx = jax.lax.dynamic_slice_in_dim(perm, i * size, size)
                mb = jax.tree_util.tree_map(lambda x: x[:, idx], batch)
                c0 = jax.tree_util.tree_map(lambda x: x[idx], carry0)
                (_, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
                    params, c0, mb, jax.random.fold_in(k_mb, i))
                updates, opt_state = self.opt.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), aux

            return jax.lax.scan(minibatch, (params, opt_state), jnp.arange(mbs))

        (params, opt_state), aux = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, cfg.epochs))
        return params, opt_state, jax.tree_util.tree_map(jnp.mean, aux)

    # ------------------------------------------------------------------ one update, fused
    def _update_fused(self, st, key):
        k_col, k_learn = jax.random.split(key)
        params, carry0 = st["params"], st["carry"]

        def step(c, k):
            st, ls = c
            carry, env_act, rec = self._act(params, st, ls, k)
            ls, step = envloop.advance(self.env, ls, env_act)
            st, rec = self._post(params, st, carry, rec, step)
            return (st, ls), rec

        (st, ls), recs = jax.lax.scan(step, (st, st["loop"]), jax.random.split(k_col, self.config.horizon))
        st, batch = self._finish(params, dict(st, loop=ls), ls, recs)
        params, opt, aux = self._learn_fn(params, st["opt"], carry0, batch, k_learn)
        return dict(st, params=params, opt=opt), aux

    def _iterate_fused(self, st, key):
        def one(st, k):
            return self._update_fused(st, k)

        st, aux = jax.lax.scan(one, st, jax.random.split(key, self.config.updates_per_iteration))
        return st, jax.tree_util.tree_map(jnp.mean, aux)

    # ------------------------------------------------------------------ one update, stepped
    def _update_stepped(self, st, key):
        kern = envloop.kernels(self.env)
        k_col, k_learn = jax.random.split(key)
        params, carry0, ls = st["params"], st["carry"], st["loop"]
        run = {k: st[k] for k in ("carry", "first", "disc_ret", "obs_stats")}  # what a step reads
        recs = []
        for k in jax.random.split(k_col, self.config.horizon):
            carry, env_act, rec = self._act_fn(params, run, ls, k)
            ls, step = kern.advance(ls, env_act, None)
            run, rec = self._post_fn(params, run, carry, rec, step)
            recs.append(rec)
        recs = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *recs)
        fin, batch = self._finish_fn(params, dict(run, ret_stats=st["ret_stats"]), ls, recs)
        st = dict(st, loop=ls, **fin)
        params, opt, aux = self._learn(params, st["opt"], carry0, batch, k_learn)
        return dict(st, params=params, opt=opt), aux

    # ------------------------------------------------------------------ greedy evaluation
    def _eval_carry(self, n):
        return self._zero_carry(n), jnp.ones((n,), bool)

    def _greedy_step(self, params, carry, first, ls, obs_stats):
        active = envloop.until_first_episode(self.env, ls)
        new, out, _ = self.net.apply(params, carry, self._normalize(ls["obs"], obs_stats), first)
        return envloop.freeze(active, new, carry), self._greedy(out)

    def _evaluate_fused(self, params, obs_stats, key):
        n = self.config.eval_episodes
        k_reset, k_loop = jax.random.split(key)
        ls = envloop.init(self.env, k_reset, k_loop, n, None, equal_blocks(n))

        def body(c):
            carry, first, ls = c
            carry, out, _ = self.net.apply(params, carry, self._normalize(ls["obs"], obs_stats), first)
            ls, step = envloop.advance(self.env, ls, self._greedy(out))
            return carry, step.done, ls

        _, _, ls = jax.lax.while_loop(lambda c: envloop.until_first_episode(self.env, c[2]), body,
                                      (*self._eval_carry(n), ls))
        return envloop.mean_return(ls), ls["t"]

    def _evaluate_stepped(self, params, obs_stats, key):
        n = self.config.eval_episodes
        kern = envloop.kernels(self.env)
        k_reset, k_loop = jax.random.split(key)
        ls = kern.init(k_reset, k_loop, n, None, equal_blocks(n))
        carry, first = self._eval_start(n)
        while bool(envloop.until_first_episode(self.env, ls)):
            for _ in range(envloop.CHECK_EVERY):
                carry, act = self._greedy_fn(params, carry, first, ls, obs_stats)
                ls, step = kern.advance_until_first(ls, act, None)
                first = step.done
        return envloop.mean_return(ls), ls["t"]

    # ------------------------------------------------------------------ iteration
    def step(self, state):
        cfg = self.config
        t0 = time.perf_counter()
        key, k_it, k_eval = jax.random.split(state["key"], 3)
        ret0, n0 = np.asarray(state["loop"]["ret_sum"]).sum(), np.asarray(state["loop"]["n_ep"]).sum()
        st = {k: v for k, v in state.items() if k not in ("key", "updates", "env_steps", "train_env_steps",
                                                          "iteration")}
        if self.stepped:
            auxs = []
            for k in jax.random.split(k_it, cfg.updates_per_iteration):
                st, aux = self._update_stepped(st, k)
                auxs.append(aux)
            aux = jax.tree_util.tree_map(lambda *xs: jnp.mean(jnp.stack(xs)), *auxs)
            scores, t_eval = self._evaluate_stepped(st["params"], st["obs_stats"], k_eval)
        else:
            st, aux = self._iterate(st, k_it)
            scores, t_eval = self._evaluate(st["params"], st["obs_stats"], k_eval)
        scores = np.asarray(scores)
        aux = {k: float(v) for k, v in jax.device_get(aux).items()}
        if not all(math.isfinite(v) for v in aux.values()):
            raise UserError(f"PPO produced a non-finite loss in iteration {int(state['iteration']) + 1} "
                            f"({aux}); try a smaller lr")
        ret1, n1 = np.asarray(st["loop"]["ret_sum"]).sum(), np.asarray(st["loop"]["n_ep"]).sum()
        train_steps = cfg.updates_per_iteration * cfg.horizon * cfg.n_envs
        steps = train_steps + int(t_eval) * cfg.eval_episodes
        new_state = dict(st, key=key, updates=np.int64(state["updates"] + cfg.updates_per_iteration),
                         env_steps=np.int64(state["env_steps"] + steps),
                         train_env_steps=np.int64(state["train_env_steps"] + train_steps),
                         iteration=np.int64(state["iteration"] + 1))
        episodes = int(n1 - n0)
        record = {
            "iteration": int(new_state["iteration"]),
            "env_steps": int(new_state["env_steps"]),
            "train_score": float((ret1 - ret0) / episodes) if episodes else float("nan"),
            "eval_score": float(scores.mean()),
            "eval_min": float(scores.min()),
            "episodes": episodes,
            "updates": int(new_state["updates"]),
            "train_env_steps": int(new_state["train_env_steps"]),
            "env_steps_per_s": steps / max(time.perf_counter() - t0, 1e-9),
            **aux,
        }
        return new_state, record
