"""Bernoulli MLP layer types, E/I presets, binary CNN (against hand computations) and the rewards."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.core import rewards
from rsrp_sim.backends.jax.classifiers import (NetSpec, ei_signs, forward, init_real_weights, parse_layer,
                                               population_logits)
from rsrp_sim.infra.errors import UserError

X = np.array([[1.0, 2.0, 3.0]], np.float32)  # one example, fan_in 3


def one_layer(kind: str, n_out=2):
    t = parse_layer(kind)
    return NetSpec(kind="mlp", in_shape=(1, 1, 3), n_classes=n_out, dense=(t,), dense_sizes=(n_out,))


def run(spec, masks, x=X):
    w = spec.mask_weights({k: jnp.asarray(v) for k, v in masks.items()})
    return np.asarray(forward(spec, w, jnp.asarray(x).reshape((len(x),) + spec.in_shape)))


# ------------------------------------------------------------------------------------------ layer types
def test_signed_layer_by_hand():
    k = np.array([[1, 0], [0, 1], [1, 1]], bool)  # weights [[+1,-1],[-1,+1],[+1,+1]]
    np.testing.assert_allclose(run(one_layer("signed"), {"dense0": k}), [[2 / math.sqrt(3), 4 / math.sqrt(3)]],
                               rtol=1e-6)


def test_binary_layer_by_hand():
    k = np.array([[1, 0], [0, 1], [1, 1]], bool)
    np.testing.assert_allclose(run(one_layer("binary"), {"dense0": k}), [[4 / math.sqrt(3), 5 / math.sqrt(3)]],
                               rtol=1e-6)


def test_signed_input_layer_by_hand():
    spec = one_layer("signed_input")
    assert spec.mask_shapes()["dense0"] == (6, 2)  # rows for [x, -x]
    # column 0: +x0 +x2 -x1 = 2; column 1: +x2 -x0 = 2; scale 1/sqrt(2*3)
    k = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [0, 0]], bool)
    np.testing.assert_allclose(run(spec, {"dense0": k}), [[2 / math.sqrt(6), 2 / math.sqrt(6)]], rtol=1e-6)


def test_ei_layer_by_hand():
    np.testing.assert_allclose(ei_signs(3, 2 / 3), [1, 1, -2])
    np.testing.assert_allclose(ei_signs(4, 0.5), [1, 1, -1, -1])
    np.testing.assert_allclose(ei_signs(8, 0.75), [1] * 6 + [-3] * 2)
    k = np.array([[1, 0], [1, 1], [1, 1]], bool)
    # ei(2/3) on 3 inputs: x0, x1 excitatory, x2 inhibitory with weight -2
    np.testing.assert_allclose(run(one_layer("ei(2/3)"), {"dense0": k}),
                               [[(1 + 2 - 6) / math.sqrt(3), (2 - 6) / math.sqrt(3)]], rtol=1e-6)
    assert parse_layer("ei(0.75)") == ("ei", 0.75)
    for bad in ("ei(1.5)", "ei(0)", "dense", "ei(x)"):
        with pytest.raises(UserError):
            parse_layer(bad)


def numpy_mlp(types, masks, x, gain=2.0):
    """Independent reference of a Bernoulli MLP written from SPEC §3.3."""
    h = x
    for i, (kind, q) in enumerate(types):
        k = masks[f"dense{i}"].astype(float)
        n = h.shape[1]
        if kind == "signed":
            y = (h @ k - h @ (1 - k)) / math.sqrt(n)
        elif kind == "binary":
            y = h @ k / math.sqrt(n)
        elif kind == "signed_input":
            y = np.concatenate([h, -h], axis=1) @ k / math.sqrt(2 * n)
        else:
            ne = int(round(q * n))
            y = (h[:, :ne] @ k[:ne] - q / (1 - q) * h[:, ne:] @ k[ne:]) / math.sqrt(n)
        h = gain * np.maximum(y, 0) if i < len(types) - 1 else y
    return h


PRESET_TYPES = {
    "none": [("signed", 0.0), ("signed", 0.0)],
    "1:1": [("binary", 0.0), ("ei", 0.5)],
    "1:1_input": [("signed_input", 0.0), ("ei", 0.5)],
    "3:1": [("binary", 0.0), ("ei", 0.75)],
    "2:1": [("binary", 0.0), ("ei", 2 / 3)],
    "01": [("signed_input", 0.0), ("binary", 0.0)],
}


@pytest.mark.parametrize("preset", list(PRESET_TYPES))
def test_ei_presets(preset):
    spec = NetSpec.from_model("mlp", "digits", (1, 1, 5), 3, ei=preset, overrides={"hidden": [6]})
    assert [(k, pytest.approx(q)) for k, q in spec.dense] == PRESET_TYPES[preset]
    rng = np.random.default_rng(1)
    masks = {k: rng.random(s) < 0.5 for k, s in spec.mask_shapes().items()}
    x = rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(run(spec, masks, x), numpy_mlp(spec.dense, masks, x), rtol=1e-5, atol=1e-5)


def test_published_parameter_counts():
    # Bernoulli parameter counts of the reference networks (reference-experiments §5.4)
    def n(net, ds, shape, ei="none", **ov):
        return NetSpec.from_model(net, ds, shape, 10, ei, ov or None).n_params()

    assert n("mlp", "mnist", (28, 28, 1)) == 50_816
    assert n("mlp", "mnist", (28, 28, 1), "1:1_input") == 100_992
    assert n("mlp", "cifar10", (32, 32, 3), hidden=[128]) == 394_496
    assert n("mlp", "cifar10", (32, 32, 3)) == 402_048
    assert n("cnn", "mnist", (28, 28, 1)) == 34_720
    assert n("cnn", "cifar10", (32, 32, 3)) == 42_336
    with pytest.raises(UserError, match="MLP only"):
        NetSpec.from_model("cnn", "mnist", (28, 28, 1), 10, ei="1:1")
    with pytest.raises(UserError, match="no cnn model for data set digits"):
        NetSpec.from_model("cnn", "digits", (8, 8, 1), 10)
    with pytest.raises(UserError, match="unknown E/I preset"):
        NetSpec.from_model("mlp", "mnist", (28, 28, 1), 10, ei="4:1")
    with pytest.raises(UserError, match="model.hidden"):
        NetSpec.from_model("mlp", "mnist", (28, 28, 1), 10, overrides={"hidden": 64})


def test_binary_cnn_by_hand():
    spec = NetSpec(kind="cnn", in_shape=(6, 6, 2), n_classes=3, dense=(("signed", 0.0),), dense_sizes=(3,),
                   channels=(2,), kernel=3, stride=1, pool=2, conv_scale="fan_in")
    assert spec.feature_size() == 2 * 2 * 2 and spec.n_params() == 3 * 3 * 2 * 2 + 8 * 3
    rng = np.random.default_rng(0)
    masks = {k: rng.random(s) < 0.5 for k, s in spec.mask_shapes().items()}
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    got = run(spec, masks, x)
    kern = (2.0 * masks["conv0"] - 1.0) / math.sqrt(18)  # +-1 kernels, HWIO
    conv = np.zeros((2, 4, 4, 2))
    for i in range(4):
        for j in range(4):
            conv[:, i, j, :] = np.einsum("bhwc,hwco->bo", x[:, i:i + 3, j:j + 3, :], kern)
    pooled = np.maximum(conv, 0).reshape(2, 2, 2, 2, 2, 2).max(axis=(2, 4))  # 2x2 max-pool
    w = (2.0 * masks["dense0"] - 1.0) / math.sqrt(8)
    np.testing.assert_allclose(got, pooled.reshape(2, -1) @ w, rtol=1e-5, atol=1e-5)


def test_population_and_real_twin():
    spec = NetSpec.from_model("mlp", "digits", (8, 8, 1), 10)
    rng = np.random.default_rng(2)
    masks = {k: jnp.asarray(rng.random((3,) + s) < 0.5) for k, s in spec.mask_shapes().items()}
    x = jnp.asarray(rng.normal(size=(5, 8, 8, 1)), jnp.float32)
    pop = np.asarray(population_logits(spec, masks, x))
    assert pop.shape == (3, 5, 10)
    for m in range(3):
        np.testing.assert_allclose(pop[m], run(spec, {k: np.asarray(v[m]) for k, v in masks.items()}, x),
                                   rtol=1e-5, atol=1e-5)
    xs = jnp.stack([x, x[::-1], x])  # per-member inputs
    per = np.asarray(population_logits(spec, masks, xs, shared_input=False))
    np.testing.assert_allclose(per[1], pop[1][::-1], rtol=1e-5, atol=1e-5)
    # the real twin with weights +-1/sqrt(fan_in) is the signed network
    fan = spec.fan_ins()
    signed = {k: (2.0 * v[0].astype(jnp.float32) - 1.0) / math.sqrt(fan[k]) for k, v in masks.items()}
    np.testing.assert_allclose(np.asarray(forward(spec, signed, x)), pop[0], rtol=1e-5, atol=1e-5)
    w = init_real_weights(spec, __import__("jax").random.PRNGKey(0))
    assert {k: v.shape for k, v in w.items()} == spec.weight_shapes()
    assert float(jnp.std(w["dense0"])) == pytest.approx(1 / 8, rel=0.1)  # N(0, 1/fan_in), fan_in 64


# ------------------------------------------------------------------------------------------ rewards
LOGITS = np.array([[3.0, 1.0, 0.0, 0.0],   # label 0: top-1 -> 5/6
                   [3.0, 2.0, 1.0, 0.0],   # label 1: ranked 2nd -> 5/7
                   [0.0, 0.0, 0.0, 0.0]],  # label 1: four-way tie, counts all 4 -> 5/9
                  np.float32)
LABELS = np.array([0, 1, 1])


def _lse(v):
    return math.log(sum(math.exp(a) for a in v))


EXPECTED = {
    "softacc": (5 / 6 + 5 / 7 + 5 / 9) / 3,
    "softrecall": (5 / 6 + (5 / 7 + 5 / 9) / 2) / 2,  # macro over the classes present (0 and 1)
    "accuracy": 1 / 3,  # argmax of a tie is the first class
    "recall": (1.0 + 0.0) / 2,
    "neg_cross_entropy": ((3 - _lse([3, 1, 0, 0])) + (2 - _lse([3, 2, 1, 0])) - math.log(4)) / 3,
}


@pytest.mark.parametrize("name", rewards.REWARDS)
def test_rewards_by_hand(name):
    assert set(EXPECTED) == set(rewards.REWARDS)
    got = rewards.reward(name, LOGITS, LABELS)
    assert float(got) == pytest.approx(EXPECTED[name], rel=1e-6)
    got_jax = rewards.reward(name, jnp.asarray(LOGITS), jnp.asarray(LABELS))
    assert float(got_jax) == pytest.approx(EXPECTED[name], rel=1e-5)
    pop = rewards.reward(name, np.stack([LOGITS, LOGITS[::-1]]), np.stack([LABELS, LABELS[::-1]]))
    assert pop.shape == (2,) and pop[0] == pytest.approx(pop[1], rel=1e-6)  # order inside a batch is irrelevant


def test_softrecall_top1_scores_five_sixths():
    logits = np.eye(10, dtype=np.float32)[[3, 7]] * 4.0
    assert rewards.soft_score(logits, np.array([3, 7])) == pytest.approx([5 / 6, 5 / 6])
    assert float(rewards.reward("softrecall", logits, np.array([3, 7]))) == pytest.approx(5 / 6)
    ranked = np.array([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]], np.float32)
    for k in range(10):  # the true class ranked (k+1)-th scores 5 / (5 + k + 1)
        assert float(rewards.soft_score(ranked, np.array([k]))[0]) == pytest.approx(5 / (6 + k))
    # macro averaging: a rare class weighs as much as a frequent one
    lg = np.array([[1.0, 0.0]] * 3 + [[1.0, 0.0]], np.float32)
    y = np.array([0, 0, 0, 1])
    assert float(rewards.reward("softrecall", lg, y, 2)) == pytest.approx((5 / 6 + 5 / 7) / 2)
    assert float(rewards.reward("softacc", lg, y, 2)) == pytest.approx((3 * 5 / 6 + 5 / 7) / 4)
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.reward("f1", lg, y)
