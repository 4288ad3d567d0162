"""The stepped rollout (used for Brax) gives the numbers of the fused one, and sharding a population
over two devices changes no result while really splitting the member axis."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, jax, numpy as np
from rsrp_sim.infra import config as configlib
from rsrp_sim.infra import distributed as sharding
from rsrp_sim.backends.jax.rl import SNNRollouts
from rsrp_sim.engine.rl import RSRPMethod
from rsrp_sim.envs.cartpole import CartPole
SMALL = dict(pop_size=16, eval_size=8, chunk_size=8, generations=2, model_overrides={"n_neurons": 16})
M = RSRPMethod.with_evaluator(SNNRollouts)

def two_generations(stepped, shard):
    CartPole.stepped = stepped
    orig = sharding.member_sharding
    if not shard:
        sharding.member_sharding = lambda n: None
    try:
        m = M(configlib.build(M.Config, ("t", SMALL)), 0)
        assert m.evaluator.stepped is stepped
        s, recs = m.init_state(), []
        for _ in range(2):
            s, r = m.step(s)
            assert r.pop("env_steps_per_s") > 0
            recs.append(r)
        members = m.strategy.jitted.ask(s["search"], jax.random.PRNGKey(1), 8)
        devs = len(m.evaluator._prepare_fn(members)[0]["in"].sharding.device_set) if stepped else None
        return recs, [np.asarray(v).tolist() for v in s["search"].p.values()], devs
    finally:
        sharding.member_sharding = orig

out = {"devices": jax.device_count(), "fused_one": two_generations(False, False),
       "stepped_sharded": two_generations(True, True)}
print("RESULT" + json.dumps(out))
"""


def test_stepped_and_sharded_equal_fused_on_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT", 1)[1])
    assert out["devices"] == 2
    fused, stepped = out["fused_one"], out["stepped_sharded"]
    assert fused[0] == stepped[0]  # every record of both generations
    assert fused[1] == stepped[1]  # the learned release probabilities, bit for bit
    assert stepped[2] == 2  # the sampled networks really live on both devices
    assert fused[0][1]["env_steps"] > fused[0][0]["env_steps"] > 0
