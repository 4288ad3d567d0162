"""Humanoid (Brax): the adapter's errors, and the cpu preset running two generations of every
method with finite returns (all methods share one compiled environment kernel)."""
import math

import pytest

from rsrp_sim.infra.errors import UserError

brax = pytest.importorskip("brax", reason="Brax is not installed (the rl extra)")

from rsrp_sim import envs  # noqa: E402
from rsrp_sim.envs import brax as brax_adapter  # noqa: E402
from rsrp_sim.protocols.humanoid import PROTOCOL  # noqa: E402


def test_brax_ids_and_errors():
    env = envs.make("humanoid", 7)
    assert (env.obs_dim, env.n_actions, env.action_kind, env.max_steps) == (244, 17, "continuous", 7)
    assert env.stepped and (env.action_low == -1).all() and (env.action_high == 1).all()
    assert envs.make("humanoid", 7) is env  # memoised: its compiled kernels are shared
    assert brax_adapter.is_brax_id("ant") and brax_adapter.is_brax_id("hopper:positional")
    assert not brax_adapter.is_brax_id("CartPole-v1")
    with pytest.raises(UserError, match="did you mean 'humanoid'"):
        envs.make("humanoidd")
    with pytest.raises(UserError, match="pipeline.*allowed: spring, positional, generalized, mjx"):
        envs.make("humanoid:fast")
    assert "hopper" in envs.list_envs() and "CartPole-v1" in envs.list_envs()


def test_brax_adapter_passes_the_conformance_check():
    """A cheap Brax task (its step compiles in seconds) through the same adapter as the humanoid."""
    env = envs.make("inverted_pendulum", max_steps=20)
    assert env.reward_threshold is None
    seen = envs.check_env(env)
    assert seen["steps"] <= 20 and (seen["terminated"] or seen["truncated"])


def test_humanoid_presets_build():
    for method in PROTOCOL.methods:
        for preset in ("cpu", "paper"):
            cfg = PROTOCOL.build_config(method, "jax", preset, {})
            assert cfg.env == "humanoid"
            assert cfg.max_episode_steps == (1000 if preset == "paper" else 200)
    paper = PROTOCOL.build_config("rsrp", "jax", "paper", {})
    assert (paper.pop_size + paper.eval_size, paper.generations, paper.lr) == (10240, 2000, 0.15)
    ppo = PROTOCOL.build_config("ppo-lstm", "jax", "paper", {})
    assert (ppo.n_envs, ppo.horizon, ppo.lstm, ppo.lr, ppo.max_grad_norm) == (2048, 16, 128, 3e-4, 0.5)
    assert ppo.truncation == "terminal"  # the published code treats the time limit as terminal
    assert PROTOCOL.build_config("ppo-lstm", "jax", "cpu", {}).truncation == "bootstrap"


@pytest.mark.slow
def test_cpu_preset_two_generations_of_each_method(tmp_path):
    for method in ("rsrp", "rsrp-reservoir", "es", "ppo-lstm"):
        key = "iterations" if method == "ppo-lstm" else "generations"
        rd, s = PROTOCOL.run(method, "jax", "cpu", seed=1, out=tmp_path / method, overrides={key: 2},
                             progress=False)
        assert s["status"] == "completed", (method, s)
        rows = rd.read_metrics()
        assert [r["iteration"] for r in rows] == [1, 2]
        for r in rows:
            for k in ("train_score", "eval_score", "env_steps_per_s"):
                assert math.isfinite(r[k]), (method, k, r)
            assert r["env_steps"] > 0 and r["env_steps_per_s"] > 0
        assert rows[1]["env_steps"] > rows[0]["env_steps"]
        assert (rd.path / "checkpoint.npz").exists()


@pytest.mark.gpu
def test_paper_preset_generation_on_gpu(tmp_path):
    rd, s = PROTOCOL.run("rsrp", "jax", "paper", seed=0, out=tmp_path / "rsrp", overrides={"generations": 1},
                         progress=False)
    row = rd.read_metrics()[0]
    assert math.isfinite(row["eval_score"]) and row["env_steps"] >= 10240
