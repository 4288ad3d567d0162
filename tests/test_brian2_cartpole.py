"""CartPole with the Brian2 back-end: the equations vs gymnasium, the protocol on every device,
learning, no recompilation between generations, CUDA code generation."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("brian2")
import gymnasium as gym  # noqa: E402

from rsrp_sim.backends.brian2 import devices  # noqa: E402
from rsrp_sim.backends.brian2.cartpole import CartPoleGroup  # noqa: E402
from rsrp_sim.envs import cartpole as cp  # noqa: E402
from rsrp_sim.protocols.cartpole import PROTOCOL  # noqa: E402

pytestmark = pytest.mark.brian2
b2 = devices.import_brian2()
HAS_CXX = shutil.which("g++") is not None or shutil.which("c++") is not None
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")


def gym_rollout(actions, max_steps=cp.MAX_STEPS):
    """Trajectories of gymnasium's CartPole-v1 under fixed actions, auto-reset, and its reset table."""
    t_len, n = actions.shape
    envs = [gym.make(cp.CartPole.id).unwrapped for _ in range(n)]
    table = np.zeros((t_len, 4 * n))
    traj = np.zeros((t_len + 1, n, 4))
    n_ep, ret_sum, ep_ret, t_ep = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for k, env in enumerate(envs):
        env.reset(seed=100 + k)
        table[0, 4 * k:4 * k + 4] = traj[0, k] = env.state
    for t in range(t_len):
        for k, env in enumerate(envs):
            _, reward, terminated, _, _ = env.step(int(actions[t, k]))
            t_ep[k] += 1
            ep_ret[k] += reward
            if terminated or t_ep[k] >= max_steps:
                ret_sum[k] += ep_ret[k]
                n_ep[k] += 1
                ep_ret[k] = t_ep[k] = 0
                env.reset()
                table[int(n_ep[k]), 4 * k:4 * k + 4] = env.state
            traj[t + 1, k] = env.state
    fitness = np.where(n_ep > 0, ret_sum / np.maximum(n_ep, 1), ep_ret)
    return traj, table, n_ep, fitness


def test_brian2_cartpole_equations_match_gymnasium():
    devices.activate("runtime", target="numpy")
    n, t_len, max_steps = 4, 120, 15            # a short step limit exercises truncation too
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(t_len, n))
    actions[:, 3] = 1                           # one environment always pushes right: falls fast
    traj, table, n_ep, fitness = gym_rollout(actions, max_steps)
    act = b2.TimedArray(np.vstack([actions, actions[-1:]]).astype(float), dt=16.5 * b2.ms)
    g = CartPoleGroup(n, 16.5 * b2.ms, max_steps=max_steps, action="int(act(t - dt, i) > 0.5)",
                      extra_namespace={"act": act}, rows=t_len)
    g.ctrl.run_regularly("running = 1", when="start", order=8)   # keep stepping: compare whole trajectories
    g.set_values(table, np.zeros(4), np.ones(4), np.zeros(n))
    mon = b2.StateMonitor(g.envs, ["cx", "cx_dot", "th", "th_dot", "o0", "on2"], record=True, when="start",
                          order=1)
    b2.Network(*g.objects, mon).run((t_len + 1) * 16.5 * b2.ms, namespace={})
    got = np.stack([mon.cx[:].T, mon.cx_dot[:].T, mon.th[:].T, mon.th_dot[:].T], axis=-1)
    assert n_ep.min() >= 5 and n_ep[3] >= 10      # several episodes each: resets, terminations, truncations
    np.testing.assert_allclose(got, traj, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mon.o0[:].T, traj[..., 0].astype(np.float32))   # float32 observation
    np.testing.assert_array_equal(mon.on2[:].T, traj[..., 2].astype(np.float32))   # normaliser (0, 1)
    r = g.results()
    np.testing.assert_array_equal(r["episodes"], n_ep)
    np.testing.assert_allclose(r["fitness"], fitness)


def run_cli(tmp_path, name, *args):
    out = tmp_path / name
    code = PROTOCOL.main(["--backend", "brian2", "--out", str(out), "--quiet", *args])
    return code, out


def test_cli_runtime_numpy_records_plots_and_reservoir(tmp_path, capsys):
    code, out = run_cli(tmp_path, "run", "--device", "runtime", "--method", "rsrp-reservoir", "target=numpy",
                        "generations=2", "pop_size=10", "eval_size=2", "chunk_size=5", "model.n_neurons=16")
    assert code == 0
    assert "cartpole CartPole-v1 rsrp-reservoir/brian2 seed 0" in capsys.readouterr().out
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for field in ("iteration", "env_steps", "wall_s", "train_score", "eval_score", "p_mean", "spikes_per_ms"):
        assert field in header
    assert len(rows) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "brian2" and summary["status"] == "completed"
    assert summary["iterations_done"] == 2 and summary["env_steps"] > 0
    assert (out / "plots" / "learning_curve.png").exists() and (out / "plots" / "p_histogram.png").exists()
    files = np.load(out / "checkpoint.npz").files   # reservoir: h is frozen, not learned
    assert "['search'].frozen['h']" in files and "['search'].p['in']" in files and "['search'].p['h']" not in files


def test_presets_refine_a_method_per_back_end():
    jax_cfg = PROTOCOL.build_config("rsrp", "jax", "cpu", {})
    b2_cfg = PROTOCOL.build_config("rsrp-reservoir", "brian2", "cpu", {"model_overrides": {"tau_m": 12.0}})
    assert (jax_cfg.pop_size, jax_cfg.eval_size, jax_cfg.model_overrides["n_neurons"]) == (256, 16, 128)
    assert (b2_cfg.pop_size, b2_cfg.eval_size, b2_cfg.device, b2_cfg.reservoir) == (64, 4, "runtime", True)
    assert b2_cfg.model_overrides == {"n_neurons": 32, "tau_m": 12.0}   # preset layers, then the override


def test_bad_device_and_env_are_one_line_errors(tmp_path, capsys):
    code, _ = run_cli(tmp_path, "a", "--device", "gpu")
    assert code == 2 and "cuda_standalone" in capsys.readouterr().err
    code, _ = run_cli(tmp_path, "b", "--env", "Acrobot-v1")
    assert code == 2 and "CartPole-v1 only" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["runtime", pytest.param("cpp_standalone", marks=[needs_cxx, pytest.mark.slow])])
def test_spike_release_mode_collects_each_members_eligibility_across_chunks(device, tmp_path):
    """release_mode=spike: every sampled member's (elig, n_spk) reaches the update in its own row,
    also when the population is simulated in several chunks (standalone: several runs of one binary,
    eligibilities reset through run_args), and the update moves p."""
    cfg = PROTOCOL.build_config("rsrp", "brian2", "cpu", {
        "release_mode": "spike", "target": "numpy", "pop_size": 10, "eval_size": 2, "chunk_size": 5,
        "model_overrides": {"n_neurons": 16}, "generations": 1, "device": device,
        "build_dir": str(tmp_path / "build") if device != "runtime" else ""})
    method = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "brian2")(cfg, seed=0)
    assert method.evaluator.slots == 7  # a chunk of 5 sampled members + the 2 deterministic ones
    spikes, captured = [], []
    run_chunk, evaluate = method.evaluator.sim.run_chunk, method.evaluator.evaluate

    def chunk(values, v0, member, *rest):
        out = run_chunk(values, v0, member, *rest)
        spikes.append(out["spikes"][member == 0])
        return out

    def record(*args, **kw):
        out = evaluate(*args, **kw)
        captured.append(out.eligibility)
        return out

    method.evaluator.sim.run_chunk, method.evaluator.evaluate = chunk, record
    state = method.init_state()
    try:
        new_state, _ = method.step(state)
    finally:
        method.close()
        devices.activate("runtime", target="numpy")
    n = 16
    assert len(captured) == 2 and set(captured[0]) == {"in", "h"}  # the read-out stays in trial mode
    e_h, n_h = (np.concatenate([c["h"][i] for c in captured]).reshape(10, n, n) for i in (0, 1))
    per_member = np.concatenate(spikes)                  # each sampled member's total spike count
    assert per_member.shape == (10,) and per_member.min() > 0
    np.testing.assert_array_equal(n_h[:, :, 0].sum(1), per_member)   # row k = member k's presynaptic spikes
    p_h = np.asarray(state["search"].p["h"])
    assert np.all(np.abs(e_h) <= n_h) and np.all(e_h >= -n_h * p_h[None]) and np.all(e_h <= n_h * (1 - p_h[None]))
    moved = np.abs(np.asarray(new_state["search"].p["h"]) - p_h)
    assert moved.max() > 0.01 and moved[n_h.sum(0) == 0].max(initial=0) == 0   # silent synapses: unchanged


@pytest.mark.slow
@needs_cxx
def test_cpp_standalone_learns_without_recompiling(tmp_path):
    """A small population learns CartPole (fixed seed); generations re-run the same binary."""
    build = tmp_path / "build"
    cfg = PROTOCOL.build_config("rsrp", "brian2", "cpu", {
        "device": "cpp_standalone", "build_dir": str(build), "pop_size": 64, "eval_size": 4, "chunk_size": 64,
        "model_overrides": {"n_neurons": 32}, "generations": 12})
    method = PROTOCOL.method_class(PROTOCOL.method("rsrp"), "brian2")(cfg, seed=0)
    binary = devices.binary_path(build)
    assert binary.exists() and method.evaluator.sim.compile_s > 0
    state = method.init_state()
    evals, mtimes = [], []
    for _ in range(cfg.generations):
        state, rec = method.step(state)
        evals.append(rec["eval_score"])
        mtimes.append(binary.stat().st_mtime_ns)
    assert len(set(mtimes)) == 1                       # never rebuilt
    assert not list((build / "static_arrays").glob("init_*"))   # run_args files cleaned up
    untrained = evals[0]
    assert untrained < 30
    # 75 of 80 seeds pass this within 12 generations (benchmarks/results/brian2_engine_equivalence.json)
    assert max(evals) >= 100 and max(evals) > 5 * untrained, evals


@needs_cxx
def test_cuda_standalone_code_generation_without_gpu(tmp_path):
    pytest.importorskip("brian2cuda")
    from rsrp_sim.backends.brian2.rl import StandaloneSim
    from rsrp_sim.core.models import SNNConstants

    const = SNNConstants.from_model("conn_snn", 4, 1, {"n_neurons": 16})
    try:
        sim = StandaloneSim(const, 4, 20, "cuda_standalone", build_dir=str(tmp_path), compile=False)
    finally:
        devices.activate("runtime", target="numpy")
    assert sim.compile_s >= 0
    assert (tmp_path / "main.cu").exists() and not devices.binary_path(tmp_path).exists()
    makefile = (tmp_path / "makefile").read_text()
    assert "-std=c++17" in makefile and "-lcurand" in makefile
    code = tmp_path / "code_objects"   # code object names get a suffix when earlier tests made the same
    update = next(code.glob("snn_update_codeobject*.cu")).read_text()
    assert "__host__ __device__ float f32(double x)" in update
    assert list(code.glob("cartpole_tick_codeobject*.cu"))


@pytest.mark.gpu
def test_cuda_standalone_runs_generations(tmp_path):
    pytest.importorskip("brian2cuda")
    code, out = run_cli(tmp_path, "cuda", "--device", "cuda_standalone", f"build_dir={tmp_path / 'build'}",
                        "generations=2", "pop_size=32", "eval_size=4", "model.n_neurons=32")
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["iterations_done"] == 2


def test_brian2_and_jax_draw_the_same_members_for_the_same_seed():
    """One engine: for the same seed, keys and sizes, the Brian2 back-end evaluates exactly the release
    patterns (and deterministic network) the JAX back-end evaluates."""
    ov = {"pop_size": 10, "eval_size": 2, "chunk_size": 5, "model_overrides": {"n_neurons": 16},
          "max_episode_steps": 20, "generations": 1}
    seen = {}
    for backend, extra in (("jax", {}), ("brian2", {"target": "numpy"})):
        m = PROTOCOL.method_class(PROTOCOL.method("rsrp"), backend)(
            PROTOCOL.build_config("rsrp", backend, "cpu", {**ov, **extra}), seed=4)
        got = seen[backend] = {"members": [], "det": None}
        evaluate = m.evaluator.evaluate

        def record(members, key, ctx, chunk, deterministic=None, _ev=evaluate, _got=got):
            _got["members"].append({k: np.asarray(v) for k, v in members.batched.items()})
            if deterministic is not None:
                _got["det"] = {k: np.asarray(v) for k, v in deterministic.items()}
                return _ev(members, key, ctx, chunk, deterministic=deterministic)
            return _ev(members, key, ctx, chunk)

        m.evaluator.evaluate = record
        if backend == "jax":
            det_eval = m.evaluator.evaluate_deterministic
            m.evaluator.evaluate_deterministic = lambda net, *a, _d=det_eval, _got=got: (
                _got.__setitem__("det", {k: np.asarray(v) for k, v in net.items()}), _d(net, *a))[1]
        try:
            m.step(m.init_state())
        finally:
            m.close()
    assert len(seen["jax"]["members"]) == len(seen["brian2"]["members"]) == 2
    for a, b in zip(seen["jax"]["members"], seen["brian2"]["members"]):
        assert set(a) == set(b) == {"in", "h", "out"}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for k in seen["jax"]["det"]:
        np.testing.assert_array_equal(seen["jax"]["det"][k], seen["brian2"]["det"][k])
