"""Classification protocols: RSRP and backprop on digits (learning), chunking, resume, records, errors."""
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsrp_sim
from rsrp_sim.core import rule
from rsrp_sim.infra.config import parse_overrides
from rsrp_sim.infra.errors import UserError
from rsrp_sim.protocols import get
from rsrp_sim.infra.records import read_metrics


def shared_mnist() -> Path | None:
    env = os.environ.get("RSRP_SIM_MNIST")
    p = Path(env) if env else Path(rsrp_sim.__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    return p if (p / "t10k-images-idx3-ubyte.gz").is_file() else None


def run(protocol, tmp_path, name, method="rsrp", preset="cpu", seed=0, **overrides):
    rd, summary = get(protocol).run(method, "jax", preset, seed, tmp_path / name, overrides=overrides,
                                    progress=False)
    return rd, summary


def test_threefry_bits_match_jax():
    from jax.extend.random import threefry_2x32

    key = jax.random.PRNGKey(7)
    for n in (1, 5, 64, 1001):
        np.testing.assert_array_equal(rule.threefry_bits(key, n), threefry_2x32(key, jnp.arange(n, dtype=jnp.uint32)))
    p = jnp.array([0.001, 0.25, 0.5, 0.999])
    z = rule.sample_release_fast(key, p, n=100_000)
    assert z.shape == (100_000, 4) and z.dtype == bool
    np.testing.assert_allclose(np.asarray(z).mean(0), p, atol=4 * np.sqrt(0.25 / 100_000))


@pytest.mark.parametrize("chunk", [64, 32])
def test_rsrp_generation_is_the_rule_on_the_masks_whose_rewards_were_scored(chunk):
    """One chunk (masks kept) or two (masks regenerated from their keys): the engine's gradient is
    rule.natural_gradient of the shaped rewards on the masks the evaluator scored, and those rewards are
    softrecall of the masks' logits on the generation's minibatch."""
    from rsrp_sim.core import rewards
    from rsrp_sim.engine.population import generation
    from rsrp_sim.backends.jax.classifiers import forward

    proto = get("digits")
    cls = proto.method_class(proto.method("rsrp"), "jax")
    m = cls(proto.build_config("rsrp", "jax", "cpu", {"pop_size": 64, "chunk_size": chunk}), 0)
    state = m.init_state()
    seen = []

    class Recording:
        packs_deterministic = False

        def evaluate(self, members, key, batch, info):
            seen.append((jax.device_get(members.batched), batch))
            return m.evaluator.evaluate(members, key, batch, info)

    idx = m.batches(0)
    batch = (jnp.asarray(m.ds.x_train[idx]), jnp.asarray(m.ds.y_train[idx]))
    new, res = generation(m.strategy, state["search"], Recording(), state["key"], m.layout, batch)
    assert len(seen) == 64 // chunk
    masks = {k: np.concatenate([s[0][k] for s in seen]) for k in seen[0][0]}
    x = m.ds.normalize(np.asarray(batch[0]), np)
    for i in (0, 37, 63):
        logits = forward(m.evaluator.spec, m.evaluator.spec.mask_weights({k: v[i] for k, v in masks.items()}), x)
        assert rewards.reward("softrecall", np.asarray(logits), np.asarray(batch[1]), 10) == \
            pytest.approx(float(res.fitness[i]), rel=1e-5)
    p = state["search"].p
    for k in p:
        np.testing.assert_allclose(np.asarray(res.grad[k]), rule.natural_gradient(res.shaped, masks[k], np.asarray(p[k])),
                                   rtol=1e-4, atol=1e-6)


def test_rsrp_records_resume_and_chunks(tmp_path):
    kw = dict(pop_size=96, chunk_size=40, generations=4, eval_every=2, checkpoint_every=1)
    rd, s = run("digits", tmp_path, "full", **kw)
    rows = read_metrics(rd.metrics_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [r["examples"] for r in rows] == [64, 128, 192, 256]
    assert np.isnan(rows[0]["eval_score"]) and 0 <= rows[1]["eval_score"] <= 1
    assert s["status"] == "completed" and 0 <= s["test_score"] <= 1 and s["examples"] == 256
    assert (rd.path / "plots" / "confusion_test.png").is_file()
    assert (rd.path / "plots" / "learning_curve.png").is_file()
    assert np.sum(s["confusion_test"]) == s["test_size"] == 360
    # stop after 2 generations, resume: the same numbers as the uninterrupted run
    proto = get("digits")
    proto.run("rsrp", "jax", "cpu", 0, tmp_path / "part", overrides=kw, progress=False, stop_after=2)
    rd2, s2 = proto.run(out=tmp_path / "part", resume=True, progress=False)
    again = read_metrics(rd2.metrics_path)
    for a, b in zip(rows, again):
        for k in ("train_score", "p_mean", "train_acc"):
            assert a[k] == pytest.approx(b[k], rel=1e-6)
    assert s2["test_score"] == pytest.approx(s["test_score"])
    from rsrp_sim.analysis.compare import main as compare

    assert compare([str(rd.path), str(rd2.path), "--out", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").is_file()


def test_rsrp_options_run(tmp_path):
    # per-member minibatches, an E/I preset given as on the command line, Adam, another reward
    ov = parse_overrides(["ei=1:1", "minibatch=per_member", "optimizer=adam", "lr=0.01", "pop_size=32",
                          "generations=2", "eval_every=1"])
    rd, s = run("digits", tmp_path, "opts", **ov)
    assert s["network"].startswith("mlp 64-64-10 [binary, ei(0.5)]")
    assert read_metrics(rd.metrics_path)[-1]["examples"] == 2 * 32 * 64  # every member its own batch
    _, s = run("digits", tmp_path, "ce", reward="neg_cross_entropy", shaping="raw", pop_size=16, generations=1)
    assert s["status"] == "completed" and s["final_train_score"] < 0  # a mean log-probability


def test_classification_errors(tmp_path):
    proto = get("digits")
    # YAML would read 1:1 as 61 and 01 as 1: the presets still arrive as typed
    for text in ("1:1", "01", "3:1", "1:1_input"):
        assert proto.build_config("rsrp", "jax", "cpu", parse_overrides([f"ei={text}"])).ei == text
    with pytest.raises(UserError, match="value for ei"):
        proto.build_config("rsrp", "jax", "cpu", parse_overrides(["ei=4:1"]))
    with pytest.raises(UserError, match="value for reward"):
        proto.build_config("rsrp", "jax", "cpu", {"reward": "f1"})
    with pytest.raises(UserError, match="rank_chunks"):
        proto.build_config("rsrp", "jax", "cpu", {"rank_chunks": 3, "pop_size": 64})
    with pytest.raises(UserError, match="no cnn model for data set digits"):
        run("digits", tmp_path, "cnn", net="cnn", generations=1)
    with pytest.raises(UserError, match="no MNIST-format files"):
        run("mnist", tmp_path, "nomnist", data_dir=str(tmp_path / "empty"), generations=1)
    assert get("mnist").main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "cli"),
                              "--quiet"]) == 2


@pytest.mark.slow
def test_rsrp_learns_digits(tmp_path):
    """The cpu preset of RSRP reaches >= 85 % test accuracy on digits (fixed seed)."""
    rd, s = run("digits", tmp_path, "rsrp")
    assert s["test_score"] >= 0.85, s
    rows = read_metrics(rd.metrics_path)
    assert rows[-1]["train_score"] > rows[0]["train_score"] + 0.15  # the population's reward rose


@pytest.mark.slow
def test_bp_learns_digits(tmp_path):
    _, s = run("digits", tmp_path, "bp", method="bp")
    assert s["test_score"] >= 0.95, s


@pytest.mark.skipif(shared_mnist() is None, reason="real MNIST files not found (set RSRP_SIM_MNIST or put "
                                                   "them in <repo>/../shared/data/mnist)")
def test_real_mnist_bp_and_cnn(tmp_path):
    from rsrp_sim.data import idx

    d = str(shared_mnist())
    _, s = run("mnist", tmp_path, "bp", method="bp", data_dir=d, epochs=2)
    assert s["train_size"] == 7000 and s["test_size"] == 2000
    assert s["test_score"] >= 0.9, s  # two epochs of backprop on 7000 real images
    # the CNNs (slow on CPU): on a 600-image MNIST-format folder cut from the real test set
    small = tmp_path / "small"
    idx.write_idx(small / "t10k-images-idx3-ubyte", idx.read_idx(shared_mnist() / "t10k-images-idx3-ubyte.gz")[:600])
    idx.write_idx(small / "t10k-labels-idx1-ubyte", idx.read_idx(shared_mnist() / "t10k-labels-idx1-ubyte.gz")[:600])
    rd, s = run("mnist", tmp_path, "bpcnn", method="bp", data_dir=str(small), net="cnn", epochs=3, val_size=100,
                test_size=100)
    assert s["network"] == "cnn conv [32, 64] k3 -> 1600-10 [signed]"  # the binary CNN's shape, real weights
    loss = [r["train_loss"] for r in read_metrics(rd.metrics_path)]
    assert loss[-1] < 0.8 * loss[0], loss
    _, s = run("mnist", tmp_path, "cnn", data_dir=str(small), net="cnn", pop_size=8, generations=1, val_size=100,
               test_size=100)
    assert s["network"].startswith("cnn conv [32, 64]") and s["status"] == "completed"


@pytest.mark.gpu
def test_paper_shape_on_gpu(tmp_path):
    """Two generations of the MNIST paper preset (pop 20480 in chunks of 4096) on random MNIST-shaped data."""
    from rsrp_sim.data import idx

    rng = np.random.default_rng(0)
    idx.write_idx(tmp_path / "d" / "t10k-images-idx3-ubyte", rng.integers(0, 256, (4000, 28, 28), dtype=np.uint8))
    idx.write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 4000).astype(np.uint8))
    _, s = run("mnist", tmp_path, "paper", preset="paper", data_dir=str(tmp_path / "d"), generations=2)
    assert s["status"] == "completed" and s["examples"] == 128 and 0 <= s["test_score"] <= 1
