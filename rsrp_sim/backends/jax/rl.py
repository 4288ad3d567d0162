"""Population trainers for RL tasks on the JAX back-end: RSRP (ConnSNN), RSRP-reservoir, ES (DenseSNN).

One generation:
  1. sample the population chunk by chunk inside ``jit`` (release patterns z ~ B(p), or antithetic
     Gaussian perturbations for ES) and run it closed-loop (:mod:`.population`);
  2. shape the rewards over the whole population (:mod:`rsrp_sim.shaping`);
  3. regenerate each chunk's samples from the same keys and accumulate the gradient
     (:func:`rsrp_sim.rule.natural_gradient_sum`), so memory stays bounded by the chunk size;
  4. one optimiser step (:func:`rsrp_sim.rule.apply_update`);
  5. the deterministic network (p > 0.5, or the ES mean) is evaluated on ``eval_size`` episodes.

Each chunk's member axis is split across all visible devices (:mod:`.sharding`).  Environments
with ``stepped = True`` (Brax) are rolled out by a host loop over compiled kernels instead of one
fused ``jit`` (:mod:`.population`); the numbers are the same.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ...core import rule, shaping
from ...envs import make as make_env, output_dim
from ...infra.errors import UserError
from ...engine.method import Method
from ...core.models import SNNConstants
from ...engine.rl import RLPopulationConfig, init_norm, norm_arrays, p_finalize, p_metrics, update_norm
from ...engine.rl import RSRPConfig as RSRPConfigBase
from .population import Rollout
from .sharding import shard_members
from .snn import SNN


@dataclasses.dataclass
class RSRPConfig(RSRPConfigBase):
    spike_impl: Literal["bitpack", "dense"] = "bitpack"


@dataclasses.dataclass
class ESConfig(RLPopulationConfig):
    sigma: float = 0.3
    optimizer: Literal["adam", "adamw", "sgd", "momentum"] = "adamw"
    weight_decay: float = 0.1
    model: str = "dense_snn"

    def validate(self):
        super().validate()
        if self.train_size % 2:
            raise UserError(f"es needs an even number of sampled networks (antithetic pairs), "
                            f"got pop_size - eval_size = {self.train_size}")
        if not self.sigma > 0:
            raise UserError(f"sigma must be > 0, got {self.sigma}")


class _PopulationRL(Method):
    """Shared machinery: environment, network, chunked evaluation, normaliser, records."""

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        cfg = config
        self.env = make_env(cfg.env, cfg.max_episode_steps or None)
        self.const = SNNConstants.from_model(cfg.model, self.env.obs_dim, output_dim(self.env),
                                             cfg.model_overrides)
        self._check_model()
        self.snn = SNN(self.const, getattr(cfg, "spike_impl", "dense"))
        self.train_rollout = Rollout(self.env, self.snn, shared_net=False, block=self._member_block())
        self.eval_rollout = Rollout(self.env, self.snn, shared_net=True)
        self.opt = rule.make_optimizer(cfg.optimizer, cfg.lr, weight_decay=cfg.weight_decay)
        self.chunk = self._chunk_size()
        self.n_chunks = -(-cfg.train_size // self.chunk)
        if self.train_rollout.stepped:  # e.g. Brax: sample in one jit, roll out with the env's shared kernels
            self._nets_fn = jax.jit(self._train_nets)
            self._eval_net_fn = jax.jit(self._eval_net)
            self._train_fn = self._train_chunk_stepped
            self._eval_fn = self._eval_chunk_stepped
        else:
            self._eval_fn = jax.jit(self._eval_chunk)
            self._train_fn = jax.jit(self._train_chunk)
        self._grad_fn = jax.jit(self._grad_chunk)
        self._update_fn = jax.jit(self._update)

    def _check_model(self):
        pass

    def _chunk_size(self) -> int:
        return min(self.config.chunk_size, self.config.train_size)

    def _member_block(self) -> int:
        """Auto: blocks of 16 for per-member real weights on CPU (cache reuse); none otherwise."""
        if self.config.member_block >= 0:
            return self.config.member_block
        on_cpu = jax.default_backend() == "cpu"
        return 16 if on_cpu and self.snn.spike_impl == "dense" else 0

    # ------------------------------------------------------------------ state
    def _base_state(self, key) -> dict:
        d = self.env.obs_dim
        return {
            "key": key,
            "generation": np.int64(0),
            "env_steps": np.int64(0),
            "norm": init_norm(d),
            "shaping": {k: np.float64(v) for k, v in shaping.init_state().items()},
        }

    # ------------------------------------------------------------------ normaliser
    def _norm_arrays(self, norm):
        mean, scale = norm_arrays(norm, self.config.obs_norm, self.env.obs_dim)
        return jnp.asarray(mean), jnp.asarray(scale)

    def _update_norm(self, norm, n, s, sq):
        return update_norm(norm, self.config.obs_norm, n, s, sq)

    def _pool_keys(self, key, offset, n):
        if self.config.reset_pool != "fixed":
            return None
        pool = jax.random.fold_in(jax.random.PRNGKey(self.seed), 7919)
        return jax.vmap(lambda i: jax.random.fold_in(pool, i))(offset + jnp.arange(n))

    # ------------------------------------------------------------------ per-method hooks
    def _update(self, params, grad, opt_state):
        raise NotImplementedError

    def _chunk_members(self, params, extra, key):
        """Sampled member parameters (batched pytree) of one chunk."""
        raise NotImplementedError

    def _eval_params(self, params, extra):
        raise NotImplementedError

    def _grad_terms(self, params, extra, key, shaped):
        raise NotImplementedError

    def _finish_grad(self, params, total, n):
        raise NotImplementedError

    # ------------------------------------------------------------------ jitted pieces
    def _train_nets(self, params, extra, key):
        members = self._chunk_members(params, extra, jax.random.fold_in(key, 0))
        return shard_members(jax.vmap(self.snn.prepare)(members), self.chunk)

    def _train_chunk(self, params, extra, key, pool_keys, mean, scale):
        return self.train_rollout._rollout(self._train_nets(params, extra, key), jax.random.fold_in(key, 1),
                                           pool_keys, mean, scale, n_members=self.chunk)

    def _train_chunk_stepped(self, params, extra, key, pool_keys, mean, scale):
        return self.train_rollout.run_stepped(self._nets_fn(params, extra, key), jax.random.fold_in(key, 1),
                                              pool_keys, mean, scale, n_members=self.chunk)

    def _grad_chunk(self, params, extra, key, shaped):
        return self._grad_terms(params, extra, jax.random.fold_in(key, 0), shaped)

    def _eval_net(self, params, extra):
        return self.snn.prepare(self._eval_params(params, extra))

    def _eval_chunk(self, params, extra, key, pool_keys, mean, scale):
        return self.eval_rollout._rollout(self._eval_net(params, extra), key, pool_keys, mean, scale,
                                          n_members=self.config.eval_size)

    def _eval_chunk_stepped(self, params, extra, key, pool_keys, mean, scale):
        return self.eval_rollout.run_stepped(self._eval_net_fn(params, extra), key, pool_keys, mean, scale,
                                             n_members=self.config.eval_size)

    # ------------------------------------------------------------------ one generation
    def step(self, state):
        t0 = time.perf_counter()
        cfg = self.config
        key, k_train, k_eval = jax.random.split(state["key"], 3)
        mean, scale = self._norm_arrays(state["norm"])
        params, extra = state["params"], state.get("extra", {})
        fitness, steps, obs_n, obs_s, obs_sq, episodes = [], 0, 0, 0.0, 0.0, 0
        for i in range(self.n_chunks):
            valid = min(self.chunk, cfg.train_size - i * self.chunk)
            out = self._train_fn(params, extra, jax.random.fold_in(k_train, i),
                                 self._pool_keys(key, i * self.chunk, self.chunk), mean, scale)
            out = jax.device_get(out)
            fitness.append(out["fitness"][:valid])
            t = int(out["steps"])
            steps += t * valid
            episodes += int(out["episodes"][:valid].sum())
            obs_n += t * self.chunk
            obs_s = obs_s + out["obs_sum"].astype(np.float64)
            obs_sq = obs_sq + out["obs_sq"].astype(np.float64)
        fitness = np.concatenate(fitness)
        if not np.all(np.isfinite(fitness)):
            bad = int(np.flatnonzero(~np.isfinite(fitness))[0])
            raise UserError(f"non-finite reward {fitness[bad]} for population member {bad} in generation "
                            f"{int(state['generation']) + 1}; rewards must be finite")
        shaped, shaping_state = shaping.shape(
            fitness, cfg.shaping, state["shaping"], ties=cfg.ties, unit_variance=cfg.unit_variance,
            chunks=cfg.rank_chunks, ema=cfg.baseline_ema)
        total = None
        for i in range(self.n_chunks):
            lo = i * self.chunk
            chunk_w = np.zeros(self.chunk, np.float32)
            part = shaped[lo:lo + self.chunk]
            chunk_w[:len(part)] = part
            terms = self._grad_fn(params, extra, jax.random.fold_in(k_train, i), jnp.asarray(chunk_w))
            total = terms if total is None else jax.tree_util.tree_map(jnp.add, total, terms)
        grad = self._finish_grad(params, total, cfg.train_size)
        new_params, opt_state = self._update_fn(params, grad, state["opt"])

        ev = jax.device_get(self._eval_fn(params, extra, k_eval,
                                          self._pool_keys(key, cfg.train_size, cfg.eval_size), mean, scale))
        t_eval = int(ev["steps"])
        steps += t_eval * cfg.eval_size
        ms = max(t_eval, 1) * self.const.substeps * self.const.dt * self.const.n_neurons
        new_state = dict(state, key=key, params=new_params, opt=opt_state,
                         generation=np.int64(state["generation"] + 1),
                         env_steps=np.int64(state["env_steps"] + steps),
                         norm=self._update_norm(state["norm"], obs_n, obs_s, obs_sq),
                         shaping={k: np.float64(v) for k, v in shaping_state.items()})
        record = {
            "iteration": int(new_state["generation"]),
            "env_steps": int(new_state["env_steps"]),
            "train_score": float(fitness.mean()),
            "eval_score": float(ev["fitness"].mean()),
            "train_max": float(fitness.max()),
            "eval_min": float(ev["fitness"].min()),
            "episodes": episodes,
            "spikes_per_ms": float(ev["spikes"].mean() / ms),
            "env_steps_per_s": steps / max(time.perf_counter() - t0, 1e-9),
        }
        record.update(self._param_metrics(params))
        return new_state, record

    def _param_metrics(self, params) -> dict:
        return {}


class RSRPTrainer(_PopulationRL):
    """RSRP on a ConnSNN: p per synapse of M_in, M_h (unless reservoir) and M_out."""

    Config = RSRPConfig

    def _update(self, p, grad, opt_state):
        return rule.apply_update(p, grad, self.opt, opt_state, self.config.eps)

    def _check_model(self):
        if self.const.connectivity != "bernoulli":
            raise UserError(f"rsrp needs a model with Bernoulli connectivity (e.g. conn_snn), "
                            f"got model {self.config.model!r}")

    def init_state(self):
        cfg = self.config
        key, k_res = jax.random.split(jax.random.PRNGKey(self.seed))
        shapes = self.const.param_shapes()
        extra = {}
        if cfg.reservoir:
            extra["h"] = jax.random.bernoulli(jax.random.fold_in(k_res, 1), 0.5, shapes.pop("h"))
        params = {k: jnp.asarray(rule.init_p(s, cfg.p_init)) for k, s in shapes.items()}
        state = self._base_state(key)
        state.update(params=params, extra=extra, opt=self.opt.init(params))
        return state

    def _chunk_members(self, p, extra, key):
        members = {k: rule.sample_release(jax.random.fold_in(key, i), p[k], n=self.chunk)
                   for i, k in enumerate(sorted(p))}
        for k, v in extra.items():
            members[k] = jnp.broadcast_to(v, (self.chunk,) + v.shape)
        return members

    def _eval_params(self, p, extra):
        return {**{k: rule.deterministic_mask(v) for k, v in p.items()}, **extra}

    def _grad_terms(self, p, extra, key, shaped):
        members = self._chunk_members(p, {}, key)
        return {k: rule.natural_gradient_sum(shaped, members[k], p[k]) for k in p}

    def _finish_grad(self, p, total, n):
        return {k: rule.finish_natural_gradient(total[k][0], total[k][1], p[k], n) for k in p}

    def _param_metrics(self, p):
        return p_metrics(p)

    def finalize(self, state, run_dir):
        return p_finalize(state["params"], run_dir)


class ESTrainer(_PopulationRL):
    """Antithetic Gaussian evolution strategies on a DenseSNN (the EC/RSRP baseline)."""

    Config = ESConfig

    def _check_model(self):
        if self.const.connectivity != "real":
            raise UserError(f"es needs a model with real-valued weights (e.g. dense_snn), "
                            f"got model {self.config.model!r}")

    def _chunk_size(self):
        c = min(self.config.chunk_size, self.config.train_size)
        return c + (c % 2)

    def init_state(self):
        key, k_init = jax.random.split(jax.random.PRNGKey(self.seed))
        params = self.snn.init_weights(k_init)
        state = self._base_state(key)
        state.update(params=params, extra={}, opt=self.opt.init(params))
        return state

    def _update(self, mu, grad, opt_state):
        import optax

        updates, opt_state = self.opt.update(grad, opt_state, mu)
        return optax.apply_updates(mu, updates), opt_state

    def _noise(self, params, key):
        half = self.chunk // 2
        return {k: jax.random.normal(jax.random.fold_in(key, i), (half,) + params[k].shape, jnp.float32)
                for i, k in enumerate(sorted(params))}

    def _chunk_members(self, mu, extra, key):
        sigma = self.config.sigma
        eps = self._noise(mu, key)
        # interleaved antithetic pairs: member 2j = mu + sigma eps_j, member 2j+1 = mu - sigma eps_j
        return {k: (mu[k] + sigma * jnp.stack([e, -e], axis=1)).reshape((self.chunk,) + mu[k].shape)
                for k, e in eps.items()}

    def _eval_params(self, mu, extra):
        return mu

    def _grad_terms(self, mu, extra, key, shaped):
        eps = self._noise(mu, key)
        w = shaped[0::2] - shaped[1::2]
        return {k: jnp.tensordot(w, e, axes=1) for k, e in eps.items()}

    def _finish_grad(self, mu, total, n):
        return {k: v / (n // 2) for k, v in total.items()}  # mean over pairs, not divided by sigma

    def _param_metrics(self, mu):
        return {"param_norm": float(np.sqrt(sum(float(jnp.sum(v**2)) for v in mu.values())))}
