"""The one population engine gives the numbers the three hand-written generation loops gave before it.

``data/cartpole_pre_engine.json`` holds metrics.csv of CartPole runs made with the implementation that
preceded the engine (seed 0, 4 generations, 64 sampled + 8 deterministic networks of 32 neurons, two
chunks).  The JAX back-end's random streams were kept, so with its sums over members made as one sum
per chunk (``reduction_blocks=1``, the order of that implementation) every number must be equal, bit
for bit.  (The default sums in blocks, so that any number of devices gives the same numbers.)
"""
import json
from pathlib import Path

import pytest

from rsrp_sim.infra.records import read_metrics
from rsrp_sim.protocols.cartpole import PROTOCOL

GOLDEN = json.loads((Path(__file__).parent / "data" / "cartpole_pre_engine.json").read_text())["runs"]


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_engine_keeps_the_numbers_of_the_pre_engine_implementation(tmp_path, method):
    ov = {"pop_size": 64, "eval_size": 8, "chunk_size": 32, "generations": 4, "model_overrides": {"n_neurons": 32},
          "reduction_blocks": 1}
    PROTOCOL.run(method, "jax", "cpu", 0, tmp_path / "run", overrides=ov, progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) == len(GOLDEN[method])
    for got, want in zip(rows, GOLDEN[method]):
        assert {k: got[k] for k in want} == want
