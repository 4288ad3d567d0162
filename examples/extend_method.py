"""A new population method through the engine: the cross-entropy method (CEM) for Bernoulli masks.

CEM moves each release probability towards the fraction of the elite networks (the best
``elite_frac`` of the population) in which that synapse was present: ``p <- p + alpha (mean_elite z - p)``.
It is a :class:`~rsrp_sim.engine.population.Strategy` (ask / gradient terms / update over a typed
state), so the engine's one generation loop, the JAX and Brian2 evaluators, the records, resume and
plots all work for it unchanged.

Inside the package this is three files: the strategy and method in their module (e.g.
``rsrp_sim/engine/cem.py``), a preset in ``protocols/cartpole.yaml`` (``cem: {pop_size: ...}``) and one
``MethodSpec`` line in ``rsrp_sim/protocols/cartpole.py``.  From a script, ``PROTOCOL.add_method``
registers it for this process:

    python examples/extend_method.py [generations]
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rsrp_sim.core import rule, shaping
from rsrp_sim.engine.population import Members, PopulationKeys, Strategy, p_metrics, pytree_dataclass
from rsrp_sim.engine.rl import RLConfig, RLPopulation
from rsrp_sim.protocols.base import MethodSpec
from rsrp_sim.protocols.cartpole import PROTOCOL


@pytree_dataclass
class CEMState:
    p: dict
    shaping: dict


class BernoulliCEM(Strategy):
    """Cross-entropy method over Bernoulli masks (the elite are ranked by the centred-rank transform)."""

    def __init__(self, shapes, elite_frac=0.1, alpha=0.3, eps=rule.EPS):
        super().__init__(shaping.Transform("centered_rank"))
        self.shapes, self.elite_frac, self.alpha, self.eps = dict(shapes), elite_frac, alpha, eps

    def init(self, key):
        return CEMState({k: jnp.asarray(rule.init_p(s)) for k, s in self.shapes.items()},
                        {k: np.float64(v) for k, v in shaping.init_state().items()})

    def ask(self, state, key, n):
        return Members({k: rule.sample_release(jax.random.fold_in(key, i), state.p[k], n)
                        for i, k in enumerate(sorted(state.p))}, {}, n)

    def deterministic(self, state):
        return {k: rule.deterministic_mask(v) for k, v in state.p.items()}

    def gradient_terms(self, state, key, n, shaped, members=None, eligibility=None):
        z = (members or self.ask(state, key, n)).batched
        elite = (shaped >= 0.5 - self.elite_frac).astype(jnp.float32)  # centred ranks lie in [-0.5, 0.5]
        return {k: (jnp.tensordot(elite, z[k].astype(jnp.float32), axes=1), elite.sum()) for k in state.p}

    def finish_gradient(self, state, sums, n):
        return {k: sums[k][0] / jnp.maximum(sums[k][1], 1.0) - state.p[k] for k in state.p}

    def apply(self, state, grad):
        return dataclasses.replace(state, p={k: rule.clip_p(state.p[k] + self.alpha * grad[k], self.eps)
                                             for k in state.p})

    def metrics(self, state):
        return p_metrics(state.p)


@dataclasses.dataclass
class CEMConfig(RLConfig):
    elite_frac: float = 0.1
    alpha: float = 0.3

    def validate(self):
        super().validate()
        self.require(0.0 < self.elite_frac < 0.5, f"elite_frac must be in (0, 0.5), got {self.elite_frac}")
        self.require(0.0 < self.alpha <= 1.0, f"alpha must be in (0, 1], got {self.alpha}")


class CEMMethod(RLPopulation):
    """CEM on a ConnSNN (any RL evaluator: JAX rollouts, Brian2 chunks)."""

    BaseConfig = CEMConfig
    connectivity = "bernoulli"
    method_name = "cem"

    def make_strategy(self):
        return BernoulliCEM(self.const.param_shapes(), self.config.elite_frac, self.config.alpha)


PROTOCOL.add_method(MethodSpec("cem", "cross-entropy method on Bernoulli masks (examples/extend_method.py)",
                               {"jax": "rsrp_sim.backends.jax.rl:SNNRollouts"}, method=CEMMethod))

if __name__ == "__main__":
    generations = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rd, summary = PROTOCOL.run("cem", overrides={"pop_size": 128, "eval_size": 8, "chunk_size": 128,
                                                 "generations": generations, "model_overrides": {"n_neurons": 64}})
    print(f"cem: eval score {summary['best_eval_score']:.1f} (best) in {summary['iterations_done']} generations "
          f"-> {rd.path}")
