"""A new environment: an adapter of the interface in ``rsrp_sim/envs/base.py``, checked, registered, learned.

``PointMass-v0``: a unit mass on a line, pushed left or right every step; reward ``1 - |x|`` per step,
so the return rises as the policy learns to hold the mass near the origin.  Leaving ``|x| > 2`` ends
the episode (``terminated``); otherwise the time limit does (``truncated``).

Inside the package this is the adapter's module (``rsrp_sim/envs/point_mass.py``), its registration in
``rsrp_sim/envs/__init__.py`` (``NATIVE``) and, optionally, presets in ``protocols/cartpole.yaml``.
From a script, ``envs.register`` makes it known to this process:

    python examples/extend_env.py [generations]
"""
import sys

import jax
import jax.numpy as jnp

from rsrp_sim import envs
from rsrp_sim.protocols.cartpole import PROTOCOL


class PointMass:
    id = "PointMass-v0"
    obs_dim = 2  # position, velocity
    action_kind = "discrete"
    n_actions = 2  # 0 push left, 1 push right
    action_low = action_high = None
    reward_threshold = None
    stepped = False
    DT, FORCE, LIMIT = 0.1, 1.0, 2.0

    def __init__(self, max_steps: int = 50):
        self.max_steps = int(max_steps)

    def reset(self, key):
        x = jax.random.uniform(key, (2,), jnp.float32, -1.0, 1.0) * jnp.array([1.0, 0.2], jnp.float32)
        return x, (x, jnp.int32(0))

    def step(self, key, state, action):
        (x, v), t = state[0], state[1] + 1
        v = v + self.DT * jnp.where(action == 1, self.FORCE, -self.FORCE)
        x = x + self.DT * v
        obs = jnp.stack([x, v]).astype(jnp.float32)
        terminated = jnp.abs(x) > self.LIMIT
        truncated = (t >= self.max_steps) & ~terminated
        return obs, (obs, t), (1.0 - jnp.abs(x)).astype(jnp.float32), terminated, truncated


envs.register(PointMass.id, PointMass)

if __name__ == "__main__":
    print("conformance:", envs.check_env(envs.make(PointMass.id)))
    generations = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rd, summary = PROTOCOL.run("rsrp", overrides={"env": PointMass.id, "pop_size": 128, "eval_size": 8,
                                                  "chunk_size": 128, "generations": generations,
                                                  "model_overrides": {"n_neurons": 32}})
    rows = rd.read_metrics()
    print(f"PointMass-v0: eval return {rows[0]['eval_score']:.2f} -> {rows[-1]['eval_score']:.2f} -> {rd.path}")
