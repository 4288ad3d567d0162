"""The stepped rollout (used for Brax) gives the numbers of the fused one; sharding a population
over several devices changes no result and really splits the member axis."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from rsrp_sim import config as configlib
from rsrp_sim.backends.jax.rl import ESTrainer, RSRPTrainer

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(pop_size=40, eval_size=8, chunk_size=16, generations=2, model_overrides={"n_neurons": 32})


def _two_generations(cls, monkeypatch, stepped):
    from rsrp_sim.envs.cartpole import CartPole

    monkeypatch.setattr(CartPole, "stepped", stepped, raising=False)
    m = cls(configlib.build(cls.Config, ("test", SMALL)), 0)
    assert m.train_rollout.stepped is stepped
    s = m.init_state()
    recs = []
    for _ in range(2):
        s, r = m.step(s)
        assert r.pop("env_steps_per_s") > 0
        recs.append(r)
    return s, recs


def test_stepped_rollout_equals_fused(monkeypatch):
    for cls in (RSRPTrainer, ESTrainer):
        a, ra = _two_generations(cls, monkeypatch, False)
        b, rb = _two_generations(cls, monkeypatch, True)
        assert ra == rb
        for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


SHARD_SCRIPT = r"""
import json, jax, numpy as np
from rsrp_sim import config as configlib
from rsrp_sim.backends.jax import sharding
from rsrp_sim.backends.jax.rl import RSRPTrainer
from rsrp_sim.envs.cartpole import CartPole
SMALL = json.loads(%r)
def one(stepped, shard):
    CartPole.stepped = stepped
    orig = sharding.member_sharding
    if not shard:
        sharding.member_sharding = lambda n: None
    try:
        m = RSRPTrainer(configlib.build(RSRPTrainer.Config, ("t", SMALL)), 0)
        s = m.init_state()
        s, r = m.step(s)
        r.pop("env_steps_per_s")
        devs = None
        if stepped:
            nets = m._nets_fn(s["params"], s["extra"], jax.random.PRNGKey(1))
            devs = len(nets["in"].sharding.device_set)
        return r, float(np.asarray(s["params"]["h"]).sum()), devs
    finally:
        sharding.member_sharding = orig
out = {"devices": jax.device_count()}
for stepped in (False, True):
    out[str(stepped)] = [one(stepped, True), one(stepped, False)]
print("RESULT" + json.dumps(out))
"""


def test_two_devices_give_the_same_generation():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", SHARD_SCRIPT % json.dumps(SMALL)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT", 1)[1])
    assert out["devices"] == 2
    for stepped in ("False", "True"):
        (rec_sh, h_sh, devs_sh), (rec_one, h_one, devs_one) = out[stepped]
        assert rec_sh == rec_one
        assert h_sh == h_one
    assert out["True"][0][2] == 2  # the sampled networks really live on both devices
    assert out["True"][1][2] == 1
