"""The fused spike step (``spike_impl=fused``): C++ FFI kernel on the CPU, Pallas kernel on a GPU.

Standard: the same spikes AND the same float32 state bits as ``bitpack`` (and the same spikes as
``dense``), on every code path of the CPU kernel (AVX-512, AVX2, scalar), under ``jit``/``vmap``,
with a shared mask, chunked, on two devices, and over a whole CartPole generation.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrp_sim.backends.jax import kernels
from rsrp_sim.backends.jax.snn import SNN, pack_bits
from rsrp_sim.core.models import SNNConstants
from rsrp_sim.infra.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CPU_OK, CPU_WHY = kernels.fused_status("cpu")
needs_cpu_kernel = pytest.mark.skipif(not CPU_OK, reason=f"fused CPU kernel unavailable: {CPU_WHY}")


def isas():
    if not CPU_OK:
        return ["scalar"]
    from rsrp_sim.backends.jax.kernels import cpu

    return cpu.supported_isas()


ALL_ISAS = ("avx512", "avx2", "scalar")


def masks_for(c, key, density, pop=None):
    lead = () if pop is None else (pop,)
    return {k: jax.random.uniform(jax.random.fold_in(key, i), lead + s) < density
            for i, (k, s) in enumerate(c.param_shapes().items())}


def bits(tree):
    """Every array of ``tree`` as raw bytes: equal means bit for bit (-0.0 != 0.0, NaN payloads)."""
    return {k: np.asarray(v).view(np.uint8).tobytes() for k, v in tree.items()}


def run_steps(snn, masks, key, inputs):
    net = snn.prepare(masks)
    carry = snn.init_carry(key)
    step = jax.jit(snn.step)
    ys, counts = [], []
    for x in inputs:
        carry, y, nsp = step(net, carry, x)
        ys.append(np.asarray(y))
        counts.append(int(nsp))
    raster = np.asarray(jax.jit(snn.simulate_spikes)(net, snn.init_carry(key), inputs))
    return carry, np.array(ys), counts, raster


# --------------------------------------------------------------------------------------------- CPU kernel
@needs_cpu_kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("n,ratio,density,gain", [(256, 0.5, 0.5, 1.0), (100, 0.5, 0.9, 2.0), (70, 0.8, 0.3, 3.0),
                                                  (33, 0.5, 0.5, 2.0)])
def test_fused_cpu_kernel_is_bit_identical_to_bitpack_on_every_code_path(isa, n, ratio, density, gain):
    if isa not in isas():
        pytest.skip(f"this CPU has no {isa}")
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": n, "excitatory_ratio": ratio})
    key = jax.random.PRNGKey(7)
    masks = masks_for(c, key, density)
    inputs = gain * jax.random.normal(jax.random.fold_in(key, 1), (40, 4))
    ref = run_steps(SNN(c, "bitpack"), masks, key, inputs)
    got_snn = SNN(c, "fused", isa=isa)
    assert got_snn.spike_impl == "fused" and got_snn.kernel is not None
    got = run_steps(got_snn, masks, key, inputs)
    dense_raster = run_steps(SNN(c, "dense"), masks, key, inputs)[3]
    assert ref[3].sum() > 300 and ref[3][..., c.n_exc:].sum() > 0  # both populations spike
    np.testing.assert_array_equal(got[3], ref[3])                  # every substep's spikes
    np.testing.assert_array_equal(got[3], dense_raster)
    assert bits(got[0]) == bits(ref[0])                            # v, i_syn, r, spk: bit for bit
    assert got[1].view(np.uint32).tobytes() == ref[1].view(np.uint32).tobytes()  # read-outs
    assert got[2] == ref[2]                                        # spike counts per step


def numpy_plain(c, h_bool, i_in, v, i_syn, r, spk, substeps):
    """The update in NumPy float32, no fused multiply-add (written independently of the kernel)."""
    f = np.float32
    sign = np.where(np.arange(c.n_neurons) < c.n_exc, f(1), f(-1))
    m = h_bool.astype(f)
    v, i_syn, r, spk = v.copy(), i_syn.copy(), r.copy(), spk.copy()
    count = 0
    for _ in range(substeps):
        rec = (spk.astype(f) * sign) @ m
        i_syn = f(c.alpha_syn) * i_syn + f(c.r_h) * rec
        v = f(c.alpha_m) * v + f(1.0 - c.alpha_m) * ((f(c.v_reset) + i_syn) + i_in)
        spk = v > f(c.v_th)
        v = np.where(spk, f(c.v_reset), v)
        r = f(c.alpha_out) * r + (f(1.0 - c.alpha_out) * (spk.astype(f) * sign)) / f(c.dt)
        count += int(spk.sum())
    return v, i_syn, r, spk, count


@needs_cpu_kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_fused_cpu_kernel_without_contraction_equals_plain_numpy_float32(isa):
    """``contract=False`` is the textbook float32 sequence (what XLA computes on a CPU without FMA)."""
    if isa not in isas():
        pytest.skip(f"this CPU has no {isa}")
    from rsrp_sim.backends.jax.kernels import cpu

    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 90, "excitatory_ratio": 0.6})
    rng = np.random.default_rng(3)
    h = rng.random((90, 90)) < 0.4
    i_in = (2.0 * rng.standard_normal(90)).astype(np.float32)
    v = rng.random(90).astype(np.float32)
    i_syn = rng.standard_normal(90).astype(np.float32)
    r = (0.1 * rng.standard_normal(90)).astype(np.float32)
    spk = rng.random(90) < 0.3
    want = numpy_plain(c, h, i_in, v, i_syn, r, spk, 200)
    packed = pack_bits(jnp.asarray(h).T).T
    got = jax.jit(lambda *a: cpu.lif_substeps(c, *a, substeps=200, isa=isa, contract=False))(
        packed, i_in, v, i_syn, r, spk)
    assert want[4] > 500
    for g, w in zip(got[:4], want[:4]):
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes()
    assert int(got[4]) == want[4]


@needs_cpu_kernel
def test_fused_batches_under_vmap_shared_masks_and_nested_vmap():
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 96})
    key = jax.random.PRNGKey(2)
    pop = 6
    masks = masks_for(c, key, 0.5, pop)
    obs = 2.0 * jax.random.normal(key, (pop, 4))
    out = {}
    for impl in ("bitpack", "fused"):
        snn = SNN(c, impl)
        nets = jax.vmap(snn.prepare)(masks)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        per_member = jax.jit(jax.vmap(snn.step))
        shared = jax.jit(jax.vmap(lambda n, h, cr, x: snn.step({**n, "h": h}, cr, x), in_axes=(0, None, 0, 0)))
        # two vmap levels, the mask batched over the outer one only: (2, 3) members
        nested = jax.jit(jax.vmap(jax.vmap(lambda n, h, cr, x: snn.step({**n, "h": h}, cr, x),
                                           in_axes=(0, None, 0, 0)), in_axes=(0, 0, 0, 0)))
        rest = {k: v for k, v in nets.items() if k != "h"}
        split = lambda t: jax.tree_util.tree_map(lambda a: a.reshape((2, 3) + a.shape[1:]), t)  # noqa: E731
        c1, c2, c3 = carry, carry, split(carry)
        ys = []
        for _ in range(8):
            c1, y1, _ = per_member(nets, c1, obs)
            c2, y2, _ = shared(rest, nets["h"][0], c2, obs)
            c3, y3, _ = nested(split(rest), nets["h"][::3], c3, split(obs))
            ys += [np.asarray(y1), np.asarray(y2), np.asarray(y3).reshape(pop, -1)]
        out[impl] = (bits(c1), bits(c2), bits(c3), np.array(ys).tobytes())
    assert out["fused"] == out["bitpack"]


@needs_cpu_kernel
def test_fused_kernel_bad_code_path_is_one_line():
    c = SNNConstants.from_model("conn_snn", 4, 1)
    with pytest.raises(UserError, match="unknown fused kernel code path .*'avx1024'.*allowed"):
        SNN(c, "fused", isa="avx1024")


@needs_cpu_kernel
def test_kernel_library_is_keyed_by_source_and_cpu_flags(monkeypatch, tmp_path):
    from rsrp_sim.backends.jax.kernels import cpu

    base = cpu.library_path().name
    assert base.startswith("rsrp_lif_") and base.endswith(".so")
    assert cpu.library_path().parent.name == "kernels"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: "sse2")
    assert cpu.library_path().name != base
    monkeypatch.undo()
    src = tmp_path / "lif_cpu.cc"
    src.write_text(cpu.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(cpu, "SOURCE", src)
    assert cpu.library_path().name != base


# --------------------------------------------------------------------------------------------- fallbacks
NO_COMPILER = textwrap.dedent("""
    import sys
    from rsrp_sim.backends.jax.snn import SNN
    from rsrp_sim.backends.jax.kernels import resolve_spike_impl
    from rsrp_sim.core.models import SNNConstants
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 32})
    print(SNN(c, "fused").spike_impl, resolve_spike_impl("auto", c), resolve_spike_impl("fused", c))
""")


def test_without_a_compiler_one_line_says_so_and_bitpack_runs(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), RSRP_SIM_CACHE=str(tmp_path / "cache"),
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", NO_COMPILER], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["bitpack", "bitpack", "bitpack"]
    notes = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert notes == [f"note: spike_impl=fused is not available here (the C++ compiler CXX={tmp_path / 'no-such-c++'} "
                     f"was not found); running spike_impl=bitpack (same results)"]
    assert not list((tmp_path / "cache").glob("kernels/*.so"))


def test_an_unwritable_kernel_cache_is_one_line_and_bitpack_runs(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    env = dict(os.environ, RSRP_SIM_CACHE=str(blocker), JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", NO_COMPILER], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["bitpack", "bitpack", "bitpack"]
    notes = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: spike_impl=fused is not available here (cannot write the "
                                                   "kernel cache") and "set RSRP_SIM_CACHE" in notes[0]


def test_real_valued_networks_run_the_dense_path_or_its_kernel():
    c = SNNConstants.from_model("dense_snn", 4, 1, {"n_neurons": 32})
    assert kernels.resolve_spike_impl("bitpack", c) == "dense"  # no bit-packing of real weights
    assert kernels.resolve_spike_impl("auto", c) == ("fused" if CPU_OK else "dense")
    assert SNN(c, "bitpack").spike_impl == "dense"
    assert SNN(c, "fused", kernel_backend="interpret").spike_impl == "dense"  # no Pallas kernel for them


@needs_cpu_kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("n,gain", [(128, 3.0), (100, 2.0)])
def test_dense_snn_kernel_is_bit_identical_to_the_dense_path(isa, n, gain):
    """DenseSNN (ES): the kernel adds the rows of the neurons that spiked in ascending order, the
    order of XLA's sum, so states, read-outs and spike counts are the dense path's bits."""
    if isa not in isas():
        pytest.skip(f"this CPU has no {isa}")
    c = SNNConstants.from_model("dense_snn", 4, 2, {"n_neurons": n})
    key = jax.random.PRNGKey(3)
    pop = 6
    ref = SNN(c, "dense")
    weights = jax.vmap(ref.init_weights)(jax.random.split(key, pop))
    obs = gain * jax.random.normal(key, (25, pop, 4))
    out = {}
    for name, snn in (("dense", ref), ("fused", SNN(c, "fused", isa=isa))):
        nets = jax.vmap(snn.prepare)(weights)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        step = jax.jit(jax.vmap(snn.step))
        ys, counts = [], []
        for x in obs:
            carry, y, nsp = step(nets, carry, x)
            ys.append(np.asarray(y))
            counts.append(np.asarray(nsp))
        raster = np.asarray(jax.jit(snn.simulate_spikes)(jax.tree_util.tree_map(lambda a: a[2], nets),
                                                          jax.tree_util.tree_map(lambda a: a[2], carry), obs[:, 2]))
        out[name] = (bits(carry), np.array(ys).tobytes(), np.array(counts).tolist(), raster)
    assert sum(map(sum, out["dense"][2])) > 1000
    np.testing.assert_array_equal(out["fused"][3], out["dense"][3])
    assert out["fused"][:3] == out["dense"][:3]


# --------------------------------------------------------------------------------------------- GPU kernel
def test_pallas_kernel_in_the_interpreter_is_bit_identical_to_bitpack():
    from rsrp_sim.backends.jax.kernels import gpu

    ok, why = gpu.available()
    if not ok:
        pytest.skip(why)
    c = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 70, "excitatory_ratio": 0.8})
    key = jax.random.PRNGKey(5)
    pop = 3
    masks = masks_for(c, key, 0.3, pop)
    obs = 3.0 * jax.random.normal(key, (6, pop, 4))
    out = {}
    for name, snn in (("bitpack", SNN(c, "bitpack")), ("pallas", SNN(c, "fused", kernel_backend="interpret"))):
        nets = jax.vmap(snn.prepare)(masks)
        carry = jax.vmap(snn.init_carry)(jax.random.split(key, pop))
        step = jax.jit(jax.vmap(snn.step))
        ys = []
        for x in obs:
            carry, y, nsp = step(nets, carry, x)
            ys.append(np.asarray(y))
        raster = np.asarray(jax.jit(snn.simulate_spikes)(jax.tree_util.tree_map(lambda a: a[0], nets),
                                                          jax.tree_util.tree_map(lambda a: a[0], carry), obs[:, 0]))
        out[name] = (bits(carry), np.array(ys).tobytes(), raster)
    assert out["bitpack"][2].sum() > 100
    np.testing.assert_array_equal(out["pallas"][2], out["bitpack"][2])
    assert out["pallas"][:2] == out["bitpack"][:2]


@pytest.mark.gpu
def test_pallas_kernel_on_the_gpu_gives_the_spikes_of_bitpack():
    c = SNNConstants.from_model("conn_snn", 4, 1)
    key = jax.random.PRNGKey(1)
    masks = masks_for(c, key, 0.5)
    inputs = 1.5 * jax.random.normal(key, (50, 4))
    fused = SNN(c, "fused")
    assert fused.spike_impl == "fused"
    got = run_steps(fused, masks, key, inputs)
    ref = run_steps(SNN(c, "bitpack"), masks, key, inputs)
    np.testing.assert_array_equal(got[3], ref[3])
    assert got[2] == ref[2]


# --------------------------------------------------------------------------------------------- in the method
@needs_cpu_kernel
def test_cartpole_generation_fused_equals_bitpack_and_config_records_the_resolved_path(tmp_path):
    """A whole CartPole generation at the cpu preset's shape: identical metrics; auto -> fused."""
    from rsrp_sim.infra.records import read_metrics
    from rsrp_sim.protocols.cartpole import PROTOCOL

    rows = {}
    for impl in ("auto", "bitpack"):
        out = tmp_path / impl
        PROTOCOL.run("rsrp", "jax", "cpu", 0, out, overrides={"generations": 2, "spike_impl": impl}, progress=False)
        rows[impl] = [{k: v for k, v in r.items() if k not in ("wall_s", "env_steps_per_s")}
                      for r in read_metrics(out / "metrics.csv")]
        cfg = __import__("yaml").safe_load((out / "config.yaml").read_text())["config"]
        assert cfg["spike_impl"] == ("fused" if impl == "auto" else "bitpack")
    assert rows["auto"] == rows["bitpack"] and len(rows["auto"]) == 2
    assert rows["auto"][1]["spikes_per_ms"] > 0


@needs_cpu_kernel
def test_es_generations_with_the_dense_snn_kernel_equal_the_dense_path():
    from rsrp_sim.protocols.cartpole import PROTOCOL

    cls = PROTOCOL.method_class(PROTOCOL.method("es"), "jax")
    recs = {}
    for impl in ("auto", "dense"):
        m = cls(PROTOCOL.build_config("es", "jax", "cpu", {"spike_impl": impl, "pop_size": 64, "eval_size": 4,
                                                              "chunk_size": 64}), 0)
        assert m.config.spike_impl == ("fused" if impl == "auto" else "dense")
        st, rows = m.init_state(), []
        for _ in range(2):
            st, rec = m.step(st)
            rows.append({k: v for k, v in rec.items() if k not in ("env_steps_per_s",)})
        recs[impl] = rows
    assert recs["auto"] == recs["dense"] and recs["dense"][1]["spikes_per_ms"] > 0


def test_list_keys_shows_the_spike_step_choices(capsys):
    from rsrp_sim.protocols.cartpole import PROTOCOL

    assert PROTOCOL.main(["--method", "rsrp", "--list-keys"]) == 0
    assert "spike_impl (one of 'auto', 'fused', 'bitpack', 'dense') = 'auto'" in capsys.readouterr().out


TWO_DEVICES = textwrap.dedent("""
    import json, re
    import jax, jax.numpy as jnp
    from rsrp_sim.protocols.cartpole import PROTOCOL
    out = {"devices": jax.device_count()}
    ov = {"pop_size": 64, "eval_size": 8, "chunk_size": 32, "generations": 2, "model_overrides": {"n_neurons": 64}}
    for impl in ("fused", "bitpack"):
        cls = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "jax")
        m = cls(PROTOCOL.build_config("rsrp", "jax", "cpu", dict(ov, spike_impl=impl)), 0)
        st, recs = m.init_state(), []
        for _ in range(2):
            st, rec = m.step(st)
            recs.append({k: rec[k] for k in ("train_score", "eval_score", "episodes", "spikes_per_ms", "env_steps")})
        out[impl] = recs
        if impl == "fused":  # each device calls the kernel on its own 16 of the chunk's 32 members
            ev = m.evaluator
            pol = ev.train_rollout._init_policy(jax.random.PRNGKey(0), 32)[0]
            nets = ({"h": jnp.zeros((32, 2, 64), jnp.uint32), "in": jnp.zeros((32, 8, 64)), "out": jnp.zeros((32, 64, 1))}, {})
            hlo = jax.jit(ev.train_rollout._policy).lower(nets, pol, jnp.zeros((32, 4)), jnp.zeros(4), jnp.ones(4)).compile().as_text()
            out["kernel_shapes"] = sorted(set(re.findall(r"(f32\\[\\d+,64\\])[^\\n]*custom_call_target=\\"rsrp_lif_substeps\\"", hlo)))
    print("RESULT" + json.dumps(out))
""")


@needs_cpu_kernel
def test_fused_on_two_devices_equals_bitpack_on_one():
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    res = {}
    for devices in (1, 2):
        env = dict(base, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        p = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        res[devices] = json.loads(p.stdout.split("RESULT", 1)[1])
    assert res[2]["devices"] == 2
    assert res[2]["fused"] == res[2]["bitpack"] == res[1]["bitpack"] == res[1]["fused"]
    assert res[2]["kernel_shapes"] == ["f32[16,64]"] and res[1]["kernel_shapes"] == ["f32[32,64]"]
