"""Learning actually happens: the cpu presets on CartPole-v1 with fixed seeds (slow; CI runs them)."""
import pytest

from rsrp_sim.protocols.cartpole import PROTOCOL
from rsrp_sim.infra.records import read_metrics

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["rsrp", "rsrp-reservoir"])
def test_cpu_preset_solves_cartpole(tmp_path, method):
    rd, s = PROTOCOL.run(method, preset="cpu", seed=0, out=tmp_path / method, progress=False)
    rows = read_metrics(tmp_path / method / "metrics.csv")
    assert rows[0]["eval_score"] < 100  # the untrained deterministic network falls quickly
    assert s["solved"] and s["best_eval_score"] >= 475
    assert s["final_eval_score"] >= 475  # and stays solved
    assert rows[-1]["train_score"] > 400  # the sampled population, not only the eval network


def test_es_learns_cartpole(tmp_path):
    rd, s = PROTOCOL.run("es", preset="cpu", seed=0, out=tmp_path / "es", overrides={"generations": 10},
                         progress=False)
    rows = read_metrics(tmp_path / "es" / "metrics.csv")
    assert rows[0]["eval_score"] < 50
    assert s["best_eval_score"] >= 150 and s["best_eval_score"] >= 5 * rows[0]["eval_score"]
    assert rows[-1]["train_score"] > 3 * rows[0]["train_score"]
