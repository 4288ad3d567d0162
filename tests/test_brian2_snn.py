"""ConnSNN in Brian2 gives exactly the JAX back-end's spike trains (numpy, cython, cpp_standalone)."""
import shutil

import numpy as np
import pytest

pytest.importorskip("brian2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rsrp_sim.backends.brian2 import devices  # noqa: E402
from rsrp_sim.backends.brian2.conn_snn import ConnSNNPopulation, input_values  # noqa: E402
from rsrp_sim.backends.jax.snn import SNN  # noqa: E402
from rsrp_sim.core.models import SNNConstants  # noqa: E402

pytestmark = pytest.mark.brian2
b2 = devices.import_brian2()
HAS_CXX = shutil.which("g++") is not None or shutil.which("c++") is not None
N_COPIES, T = 2, 8  # 8 environment steps = 264 substeps of 0.5 ms


def jax_rasters(const, masks, inputs):
    snn = SNN(const, "bitpack")
    out, carries = [], []
    for k in range(N_COPIES):
        net = snn.prepare({name: jnp.asarray(v) for name, v in masks[k].items()})
        carry = snn.init_carry(jax.random.PRNGKey(10 + k))
        carries.append(np.asarray(carry["v"]))
        out.append(np.asarray(jax.jit(snn.simulate_spikes)(net, carry, jnp.asarray(inputs[k]))))
    return np.stack(out), np.concatenate(carries)


def brian2_rasters(const, masks, inputs, v0, device, target, tmp_path):
    devices.activate(device, tmp_path / "standalone", target=target)
    try:
        values = np.stack([input_values(inputs[k]) for k in range(N_COPIES)], axis=1)  # (T, copies, 2 d_obs)
        xs = b2.TimedArray(values.reshape(T, -1), dt=const.substeps * const.dt * b2.ms)
        pop = ConnSNNPopulation(const, N_COPIES, input_namespace={"xs": xs})
        pop.inputs.run_regularly("x = xs(t, i)", dt=pop.env_dt, when="start")   # the input of this env step
        pop.set_masks({name: np.stack([m[name] for m in masks]) for name in ("in", "h", "out")})
        pop.neurons.v = v0
        mon = b2.SpikeMonitor(pop.neurons)
        b2.Network(*pop.objects, mon).run(T * const.substeps * const.dt * b2.ms, namespace={})
        if device != "runtime":
            dev = b2.get_device()
            devices.build(dev, tmp_path / "standalone")
            dev.run(directory=str(tmp_path / "standalone"), with_output=False)
        i, t = np.asarray(mon.i[:]), np.round(np.asarray(mon.t[:] / b2.ms) / const.dt).astype(int)
    finally:
        devices.activate("runtime", target="numpy")
    n = const.n_neurons
    raster = np.zeros((N_COPIES, T * const.substeps, n), bool)
    raster[i // n, t, i % n] = True
    return raster.reshape(N_COPIES, T, const.substeps, n)


@pytest.mark.parametrize("device,target", [
    ("runtime", "numpy"),
    pytest.param("runtime", "cython", marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")]),
    pytest.param("cpp_standalone", "numpy", marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")]),
])
def test_identical_spike_trains_to_jax(device, target, tmp_path):
    const = SNNConstants.from_model("conn_snn", 4, 1)           # the published network: 256 neurons
    rng = np.random.default_rng(7)
    n = const.n_neurons
    masks = [{"in": rng.random((const.n_in, n)) < 0.5, "h": rng.random((n, n)) < 0.5,
              "out": rng.random((n, 1)) < 0.5} for _ in range(N_COPIES)]
    inputs = (1.5 * rng.normal(size=(N_COPIES, T, 4))).astype(np.float32)
    ref, v0 = jax_rasters(const, masks, inputs)
    got = brian2_rasters(const, masks, inputs, v0, device, target, tmp_path)
    assert T * const.substeps >= 200
    # a meaningful comparison: both populations (E and I) spike, in most substeps, far from saturation
    assert ref[..., :const.n_exc].sum() > 200 and ref[..., const.n_exc:].sum() > 200
    assert 0.005 < ref.mean() < 0.2
    mismatch = np.argwhere(ref != got)
    assert len(mismatch) == 0, f"{len(mismatch)} spike mismatches, first (copy, step, substep, neuron): {mismatch[:3]}"
