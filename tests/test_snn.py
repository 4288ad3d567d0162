"""ConnSNN / DenseSNN in JAX: constants, equations, and the bit-packed spike product."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.backends.jax.snn import SNN, pack_bits
from rsrp_sim.infra.errors import UserError
from rsrp_sim.core.models import SNNConstants, load


def test_derived_constants_match_the_published_values():
    c = SNNConstants.from_model("conn_snn", d_obs=4, d_act=1)
    assert c.substeps == 33 and c.n_exc == 128 and c.n_in == 8
    assert c.r_in == pytest.approx(1.0) and c.r_h == pytest.approx(0.25)
    assert c.r_out == pytest.approx(0.44194, abs=1e-5)
    assert c.alpha_syn == pytest.approx(0.904837, abs=1e-6) and c.alpha_m == pytest.approx(0.951229, abs=1e-6)
    assert SNNConstants.from_model("conn_snn", d_obs=299, d_act=17).r_in == pytest.approx(0.11566, abs=1e-5)
    d = SNNConstants.from_model("dense_snn", d_obs=4, d_act=1)
    assert (d.r_in, d.r_h, d.r_out) == pytest.approx((0.70711, 0.17678, 0.3125), abs=1e-5)
    assert d.n_in == 4 and d.n_exc == 256 and not d.dale
    assert SNNConstants.from_model("dense_snn", 299, 17).r_in == pytest.approx(0.08179, abs=1e-5)


def test_model_overrides_are_validated():
    assert load("conn_snn", {"n_neurons": 64})["n_neurons"] == 64
    with pytest.raises(UserError, match="unknown key of model conn_snn 'n_neuron'"):
        load("conn_snn", {"n_neuron": 64})
    with pytest.raises(UserError, match="model.n_neurons must be int, got 'many'"):
        load("conn_snn", {"n_neurons": "many"})
    with pytest.raises(UserError, match="unknown model 'conn'"):
        load("conn", {})


def test_pack_bits_matches_numpy():
    rng = np.random.default_rng(0)
    b = rng.random((3, 70)) < 0.4
    packed = np.asarray(pack_bits(jnp.asarray(b)))
    assert packed.shape == (3, 3) and packed.dtype == np.uint32
    ref = np.packbits(np.pad(b, ((0, 0), (0, 26))), axis=-1, bitorder="little").view("<u4")
    np.testing.assert_array_equal(packed, ref)


def numpy_reference(c, masks, v0, inputs):
    """SPEC §3.1 written independently in NumPy float32 (spike raster and final v)."""
    f = np.float32
    sign = np.where(np.arange(c.n_neurons) < c.n_exc, f(1), f(-1))
    m_in, m_h = masks["in"].astype(f), masks["h"].astype(f)
    v, i_syn, r = v0.astype(f), np.zeros(c.n_neurons, f), np.zeros(c.n_neurons, f)
    s = np.zeros(c.n_neurons, f)
    a_syn, a_m, a_out = f(c.alpha_syn), f(c.alpha_m), f(c.alpha_out)
    raster = []
    for x in inputs:
        i_in = f(c.r_in) * (np.concatenate([x, -x]).astype(f) @ m_in)
        for _ in range(c.substeps):
            i_syn = a_syn * i_syn + f(c.r_h) * (s @ m_h)
            v = a_m * v + (f(1) - a_m) * (f(c.v_reset) + i_syn + i_in)
            spiked = v > f(c.v_th)
            v = np.where(spiked, f(c.v_reset), v)
            s = spiked.astype(f) * sign
            r = a_out * r + (f(1) - a_out) * s / f(c.dt)
            raster.append(spiked)
    return np.array(raster), v, r


def sample(c, key, density):
    return {k: jax.random.uniform(jax.random.fold_in(key, i), s) < density
            for i, (k, s) in enumerate(c.param_shapes().items())}


@pytest.mark.parametrize("n,ratio", [(64, 0.5), (40, 0.8)])
def test_equations_match_an_independent_numpy_implementation(n, ratio):
    c = SNNConstants.from_model("conn_snn", 4, 2, {"n_neurons": n, "excitatory_ratio": ratio})
    key = jax.random.PRNGKey(n)
    masks = sample(c, key, 0.5)
    snn = SNN(c, "dense")
    carry = snn.init_carry(key)
    inputs = 1.5 * jax.random.normal(jax.random.fold_in(key, 9), (30, 4))
    raster = np.asarray(snn.simulate_spikes(snn.prepare(masks), carry, inputs)).reshape(-1, n)
    ref, v_ref, r_ref = numpy_reference(c, {k: np.asarray(v) for k, v in masks.items()},
                                        np.asarray(carry["v"]), np.asarray(inputs))
    assert raster.sum() > 50 and raster[:, c.n_exc:].sum() > 0  # both populations are active
    np.testing.assert_array_equal(raster, ref)
    # the read-out after one step: y = R_out * r @ M_out
    carry1, y, nsp = snn.step(snn.prepare(masks), carry, inputs[0])
    ref1, _, r1 = numpy_reference(c, {k: np.asarray(v) for k, v in masks.items()},
                                  np.asarray(carry["v"]), np.asarray(inputs[:1]))
    np.testing.assert_allclose(np.asarray(y), c.r_out * (r1 @ np.asarray(masks["out"], np.float32)), rtol=1e-5,
                               atol=1e-6)
    assert int(nsp) == ref1.sum()


@pytest.mark.parametrize("n,ratio,density,gain", [(256, 0.5, 0.5, 1.0), (100, 0.5, 0.9, 2.0), (70, 0.8, 0.3, 3.0)])
def test_bitpacked_and_dense_spike_products_give_identical_spikes(n, ratio, density, gain):
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n, "excitatory_ratio": ratio})
    key = jax.random.PRNGKey(7)
    masks = sample(c, key, density)
    inputs = gain * jax.random.normal(jax.random.fold_in(key, 1), (200, 4))
    rasters = {}
    for impl in ("bitpack", "dense", "fused"):  # fused: bitpack where its kernel cannot run
        snn = SNN(c, impl)
        rasters[impl] = np.asarray(jax.jit(snn.simulate_spikes)(snn.prepare(masks), snn.init_carry(key), inputs))
    assert rasters["dense"].shape == (200, 33, n)
    assert rasters["dense"].sum() > 500
    np.testing.assert_array_equal(rasters["bitpack"], rasters["dense"])
    np.testing.assert_array_equal(rasters["fused"], rasters["dense"])


def test_population_vmap_bitpack_equals_dense():
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 96})
    key = jax.random.PRNGKey(2)
    pop = 16
    masks = {k: jax.random.uniform(jax.random.fold_in(key, i), (pop,) + s) < 0.5
             for i, (k, s) in enumerate(c.param_shapes().items())}
    obs = jax.random.normal(key, (pop, 4))
    outs = []
    for impl in ("bitpack", "dense", "fused"):
        snn = SNN(c, impl)
        nets = jax.vmap(snn.prepare)(masks)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        step = jax.jit(jax.vmap(snn.step))
        ys = []
        for _ in range(20):
            carry, y, nsp = step(nets, carry, obs)
            ys.append(np.asarray(y))
        outs.append(np.array(ys))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_dense_snn_uses_signed_weights_without_doubling():
    c = SNNConstants.from_model("dense_snn", 3, 2, {"n_neurons": 32})
    snn = SNN(c)
    assert snn.spike_impl == "dense"
    w = snn.init_weights(jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in w.items()} == {"in": (3, 32), "h": (32, 32), "out": (32, 2)}
    assert abs(float(w["h"].std()) - 1.0) < 0.1
    # a positive input onto a neuron with a negative input weight never makes it spike
    w = {"in": -jnp.ones((3, 32)), "h": jnp.zeros((32, 32)), "out": jnp.ones((32, 2))}
    carry, y, nsp = snn.step(snn.prepare(w), snn.init_carry(jax.random.PRNGKey(0)), jnp.ones(3))
    assert int(nsp) == 0 and np.allclose(np.asarray(y), 0.0)
