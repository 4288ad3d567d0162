"""Populations over several devices and processes (jax.distributed on CPU with gloo).

1 process x 1 device, 1 process x 2 devices and 2 processes x 1 device give the same metrics, bit for
bit: members are drawn on the global arrays (partitionable threefry), fitness is gathered, and the sums
over members are made in fixed blocks (``reduction_blocks``) that every device count dividing them
splits the same way.  Resume works with another process count; the launcher forwards Ctrl-C, names a
process that died and returns the first failing exit status; start-up mistakes are one line.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsrp_sim.infra import distributed
from rsrp_sim.infra.errors import UserError
from rsrp_sim.infra.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = ["pop_size=32", "eval_size=2", "chunk_size=16", "model.n_neurons=32", "generations=3"]
DIGITS = ["pop_size=64", "chunk_size=32", "generations=4", "eval_every=2"]
COLUMNS = ("iteration", "env_steps", "examples", "train_score", "eval_score", "train_max", "p_mean",
           "p_entropy_bits", "density_eval", "param_norm", "spikes_per_ms", "episodes", "train_acc")


def env(**extra):
    e = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TQDM_DISABLE="1", RSRP_SIM_INIT_TIMEOUT="60")
    e.pop("XLA_FLAGS", None)
    e.update(extra)
    return e


def run(args, timeout=600, **extra):
    p = subprocess.run([sys.executable, "-m", *args], env=env(**extra), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def metrics(folder):
    """The rows' numbers (NaN, an iteration without a validation score, as None so rows compare)."""
    return [{k: (None if r[k] != r[k] else r[k]) for k in COLUMNS if k in r}
            for r in read_metrics(Path(folder) / "metrics.csv")]


def single(tmp_path, name, protocol, extra, **env_extra):
    code, _, err = run(["rsrp_sim.protocols." + protocol, "--quiet", "--out", str(tmp_path / name), *extra], **env_extra)
    assert code == 0, err[-2000:]
    return metrics(tmp_path / name)


def launched(tmp_path, name, protocol, extra, n=2):
    code, out, err = run(["rsrp_sim", "launch", "--local", str(n), "--", protocol, "--quiet", "--out",
                          str(tmp_path / name), *extra])
    assert code == 0, err[-3000:]
    assert out.count(f"-> {tmp_path / name}") == 1  # process 0 alone prints the summary
    return metrics(tmp_path / name)


@pytest.mark.parametrize("protocol,method,extra", [
    ("cartpole", "rsrp", CARTPOLE),
    ("cartpole", "es", CARTPOLE),
    ("digits", "rsrp", DIGITS),
])
def test_one_and_two_devices_and_two_processes_give_the_same_metrics(tmp_path, protocol, method, extra):
    extra = ["--method", method, *extra]
    one = single(tmp_path, "one", protocol, extra)
    two_devices = single(tmp_path, "two_devices", protocol, extra, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    two_processes = launched(tmp_path, "two_processes", protocol, extra)
    assert len(one) == int([a for a in extra if a.startswith("generations=")][0].split("=")[1])
    assert one == two_devices == two_processes  # bit for bit (the tolerance is zero)
    cfg = (tmp_path / "two_processes" / "config.yaml").read_text()
    assert "processes: 2" in cfg and "devices: 2" in cfg


def test_resume_with_another_process_count_continues_exactly(tmp_path):
    full = single(tmp_path, "full", "cartpole", [*CARTPOLE[:-1], "generations=4"])
    part = launched(tmp_path, "part", "cartpole", [*CARTPOLE[:-1], "generations=2"])
    assert part == full[:2]
    code, _, err = run(["rsrp_sim.protocols.cartpole", "--quiet", "--out", str(tmp_path / "part"), "--resume",
                        "generations=4"])
    assert code == 0, err[-2000:]
    assert metrics(tmp_path / "part") == full


def _children(pid):
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _process_id(child) -> int | None:
    try:
        return int(child.environ().get("RSRP_SIM_PROCESS_ID"))
    except Exception:
        return None


def _start_long_run(tmp_path, *launch_args):
    cmd = [sys.executable, "-m", "rsrp_sim", "launch", "--local", "2", *launch_args, "--", "cartpole", "--quiet",
           "--out", str(tmp_path / "run"), *CARTPOLE[:-1], "generations=1000000", "checkpoint_every=1"]
    proc = subprocess.Popen(cmd, env=env(RSRP_SIM_HEARTBEAT_TIMEOUT="10"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until a few generations are done
        rows = read_metrics(tmp_path / "run" / "metrics.csv") if (tmp_path / "run" / "metrics.csv").exists() else []
        if len(rows) >= 2:
            return proc
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the launched run did not start")


def test_ctrl_c_on_the_launcher_stops_every_process_and_the_run_resumes(tmp_path):
    proc = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; continue with:" in out
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    code, _, err = run(["rsrp_sim.protocols.cartpole", "--quiet", "--out", str(tmp_path / "run"), "--resume",
                        f"generations={len(rows) + 1}"])
    assert code == 0, err[-2000:]
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == len(rows) + 1


def test_a_process_that_dies_stops_the_others_with_one_line(tmp_path):
    proc = _start_long_run(tmp_path, "--grace", "20")
    victim = next(c for c in _children(proc.pid) if _process_id(c) == 1)
    t0 = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 137  # the first failing process: killed by signal 9
    assert "launch: process 1 of 2 exited with status 137; stopping the other processes" in err
    # nothing already written is lost: the completed generations are there, in order
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) >= 2 and [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("args,message", [
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in 0..1 for --num-processes 2, got 2"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator", "nowhere", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
])
def test_bad_start_up_is_one_line(args, message, tmp_path):
    code, _, err = run(["rsrp_sim.protocols.cartpole", "--out", str(tmp_path / "r"), *args], timeout=120)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_an_unreachable_coordinator_is_one_line_after_the_timeout(tmp_path):
    port = __import__("rsrp_sim.protocols.launch", fromlist=["free_port"]).free_port()
    t0 = time.monotonic()
    code, _, err = run(["rsrp_sim.protocols.cartpole", "--out", str(tmp_path / "r"), "--coordinator",
                        f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"],
                       timeout=180, RSRP_SIM_INIT_TIMEOUT="5")
    assert code == 2 and time.monotonic() - t0 < 120
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"could not join 127.0.0.1:{port} within 5 s" in lines[0], err[-2000:]
    assert not (tmp_path / "r").exists()


def test_a_population_the_devices_do_not_divide_is_refused(tmp_path):
    code, _, err = run(["rsrp_sim.protocols.cartpole", "--out", str(tmp_path / "r"), "pop_size=30", "eval_size=2",
                        "chunk_size=15"], XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert code == 2 and "chunk_size (sampled members per chunk) is 15, which the 2 devices of this run do not " \
                         "divide; choose a multiple of 2" in err
    assert not (tmp_path / "r").exists()


def test_cluster_detection_from_slurm_and_open_mpi():
    assert distributed.plan(environ={}).detected == "single"
    c = distributed.plan(environ={"SLURM_NTASKS": "4", "SLURM_PROCID": "3"})
    assert (c.detected, c.num_processes, c.process_id) == ("slurm", 4, 3)
    c = distributed.plan(environ={"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})
    assert (c.detected, c.num_processes, c.process_id) == ("openmpi", 2, 1)
    c = distributed.plan(environ={"RSRP_SIM_COORDINATOR": "h:1", "RSRP_SIM_NUM_PROCESSES": "3",
                                  "RSRP_SIM_PROCESS_ID": "2"})
    assert (c.detected, c.coordinator, c.num_processes, c.process_id) == ("explicit", "h:1", 3, 2)
    with pytest.raises(UserError, match="--num-processes must be an integer"):
        distributed.plan("h:1", "two", "0", environ={})


def test_launcher_errors():
    from rsrp_sim.protocols.launch import launch

    with pytest.raises(UserError, match="launch needs a command after --"):
        launch(2, [])
    with pytest.raises(UserError, match="--local must be at least 1"):
        launch(0, ["cartpole"])
    assert launch(2, [sys.executable, "-c", "import sys; sys.exit(0)"]) == 0
    assert launch(2, [sys.executable, "-c", "import os, sys; sys.exit(3 if os.environ['RSRP_SIM_PROCESS_ID'] == '1' "
                                            "else 0)"], grace_s=5) == 3


def test_methods_that_run_in_one_process_say_so_when_launched_on_several(tmp_path):
    code, out, err = run(["rsrp_sim", "launch", "--local", "2", "--", "cartpole", "--method", "ppo-lstm", "--out",
                          str(tmp_path / "r"), "iterations=1"], timeout=300)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines and all("ppo-lstm on the jax back-end runs in one process" in line for line in lines)
    assert not (tmp_path / "r").exists()
