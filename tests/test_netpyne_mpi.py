"""stdp-dc (Diehl & Cook on NEURON) over MPI ranks: NEURON's ParallelContext, mpi4py, Open MPI's mpiexec.

1 process, 2 and 4 MPI ranks give the same weights, theta and spike counts, bit for bit; a run
started on 2 ranks is resumed in 1 process and ends exactly as an uninterrupted one; rank 0 alone
writes and prints; errors, a killed rank and Ctrl-C are one line each and stop every rank.
"""
from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rsrp_sim.infra import distributed
from rsrp_sim.infra.errors import UserError
from rsrp_sim.infra.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec")
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="Open MPI's mpiexec or mpi4py not installed (apt-get install "
                                                   "openmpi-bin libopenmpi-dev; pip install -e '.[mpi]')")
needs_neuron = pytest.mark.skipif(importlib.util.find_spec("neuron") is None, reason="NEURON not installed")

#: 5 presentations of the digits at N_e = 20 (one iteration), then labels and a short validation/test
SMALL = ["n_exc=20", "examples=5", "examples_per_iteration=5", "label_window=10", "eval_every=1", "val_size=10",
         "test_size=10"]
FIELDS = ("iteration", "examples", "train_score", "eval_score", "presentations", "repeats", "mean_spikes",
          "theta_mean", "labelled")


def env(**extra):
    e = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", MPLBACKEND="Agg")
    for k in [k for k in e if k.startswith(("OMPI_", "PMI_", "PMIX_", "RSRP_SIM_COORDINATOR", "RSRP_SIM_NUM",
                                            "RSRP_SIM_PROCESS", "SLURM_"))]:
        e.pop(k)  # (a test run under a launcher of its own must not look like one rank of it)
    e.update(extra)
    return e


def run(args, timeout=600, **extra):
    p = subprocess.run(args, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def one_process(out, *extra):
    return run([sys.executable, "-m", "rsrp_sim.protocols.digits", "--method", "stdp-dc", "--quiet", "--out",
                str(out), *SMALL, *extra])


def mpi_launch(n, out, *extra):
    return run([sys.executable, "-m", "rsrp_sim", "launch", "--mpi", str(n), "--", "digits", "--method", "stdp-dc",
                "--quiet", "--out", str(out), *SMALL, *extra])


def rows(folder):
    return [{k: (None if r[k] != r[k] else r[k]) for k in FIELDS} for r in read_metrics(Path(folder) / "metrics.csv")]


def checkpoint(folder):
    with np.load(Path(folder) / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k != "__meta__"}


def assert_same_run(a, b):
    assert rows(a) == rows(b)
    ca, cb = checkpoint(a), checkpoint(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)


def errors(err):
    return [line for line in err.splitlines() if line.startswith(("error:", "launch:"))]


# ---------------------------------------------------------------------------------------------- the same numbers
@needs_mpi
@needs_neuron
def test_one_process_and_two_ranks_give_the_same_weights_theta_and_spike_counts(tmp_path):
    code, out1, err = one_process(tmp_path / "one")
    assert code == 0, err[-3000:]
    code, out2, err = mpi_launch(2, tmp_path / "two")
    assert code == 0, err[-3000:]
    assert out2.count(f"-> {tmp_path / 'two'}") == 1  # rank 0 alone prints the summary
    assert_same_run(tmp_path / "one", tmp_path / "two")
    ck = checkpoint(tmp_path / "two")
    weights, theta, responses = (next(v for k, v in ck.items() if name in k) for name in ("weights", "theta",
                                                                                          "responses"))
    assert weights.shape == (20, 64) and responses[:5].sum() > 0  # (real spikes, real learning)
    assert not np.allclose(theta, theta[0]) and np.ptp(weights) > 0
    # both ranks wrote nothing else: one run folder, rank 0's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


@needs_mpi
@needs_neuron
def test_a_run_of_two_ranks_resumes_in_one_process_exactly(tmp_path):
    code, _, err = one_process(tmp_path / "whole", "examples=10")  # two iterations in one go
    assert code == 0, err[-3000:]
    code, _, err = mpi_launch(2, tmp_path / "part")  # the first iteration on 2 ranks
    assert code == 0, err[-3000:]
    code, _, err = run([sys.executable, "-m", "rsrp_sim.protocols.digits", "--quiet", "--out", str(tmp_path / "part"),
                        "--resume", "examples=10"])
    assert code == 0, err[-3000:]
    assert [r["examples"] for r in rows(tmp_path / "part")] == [5, 10]
    assert_same_run(tmp_path / "whole", tmp_path / "part")


@needs_mpi
@needs_neuron
@pytest.mark.slow
def test_four_ranks_and_plain_mpiexec_give_the_same_numbers(tmp_path):
    """4 ranks (oversubscribed on a small machine) through Open MPI's mpiexec itself, as NEURON users start it."""
    code, _, err = one_process(tmp_path / "one")
    assert code == 0, err[-3000:]
    root = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    code, out, err = run([MPIEXEC, "--oversubscribe", "-n", "4", sys.executable, "-m", "rsrp_sim.protocols.digits",
                          "--method", "stdp-dc", "--quiet", "--out", str(tmp_path / "four"), *SMALL], **root)
    assert code == 0, err[-3000:]
    assert out.count(f"-> {tmp_path / 'four'}") == 1
    assert_same_run(tmp_path / "one", tmp_path / "four")


# ---------------------------------------------------------------------------------------------- faults
@needs_mpi
@needs_neuron
def test_an_error_every_rank_hits_is_said_once_and_nothing_is_written(tmp_path):
    code, out, err = mpi_launch(2, tmp_path / "r", "n_exc=1")
    assert code == 2, err[-3000:]
    assert errors(err) == ["error: n_exc=1 excitatory cells cannot be split over 2 MPI ranks; start at most 1 ranks"]
    assert not (tmp_path / "r").exists()
    code, out, err = mpi_launch(2, tmp_path / "r", "model.weights.inh_to_exc_delay_ms=0.5")
    assert code == 2 and len(errors(err)) == 1 and "must exceed one step (dt=0.5 ms)" in err
    # launch --local (jax.distributed) is refused for a method that runs over MPI ranks
    code, out, err = run([sys.executable, "-m", "rsrp_sim", "launch", "--local", "2", "--", "digits", "--method",
                          "stdp-dc", "--quiet", "--out", str(tmp_path / "r"), *SMALL])
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # (each process says it)
    assert code == 2 and lines and all("start it with mpiexec -n N, srun or rsrp-sim launch --mpi N" in line
                                       for line in lines), err[-2000:]
    assert not (tmp_path / "r").exists()


RANK1_FAILS = """
import sys, time
from rsrp_sim.infra import distributed
from rsrp_sim.infra.errors import UserError
from rsrp_sim.infra.cli import guard
from rsrp_sim.protocols.base import _say_on_ranks
c = distributed.start_ranks()

def fail():
    raise UserError("the data folder /nowhere is not readable on this host")

if c.process_id == 1:
    sys.exit(guard(fail, say=_say_on_ranks))
distributed.barrier("never")  # rank 0 waits for rank 1, which left
print("rank 0 went on", flush=True)
"""


@needs_mpi
def test_a_rank_that_fails_alone_names_itself_in_one_line_and_stops_the_others():
    t0 = time.monotonic()
    code, out, err = run([sys.executable, "-m", "rsrp_sim", "launch", "--mpi", "2", "--", "python", "-c", RANK1_FAILS],
                         timeout=120)
    assert code == 2, err
    assert errors(err) == ["error: rank 1 of 2: the data folder /nowhere is not readable on this host"]
    assert "went on" not in out and time.monotonic() - t0 < 100


def _rank_pids(mpiexec_pid: int) -> dict[int, int]:
    """MPI rank -> pid of the processes mpiexec started on this machine (Linux /proc)."""
    out = {}
    for task in Path(f"/proc/{mpiexec_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                    out[int(item.split(b"=")[1])] = int(pid)
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_long(tmp_path, name):
    cmd = [sys.executable, "-m", "rsrp_sim", "launch", "--mpi", "2", "--", "digits", "--method", "stdp-dc", "--quiet",
           "--out", str(tmp_path / name), "n_exc=20", "examples=400", "examples_per_iteration=5", "label_window=10",
           "eval_every=100", "val_size=10", "test_size=10"]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = tmp_path / name / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # one iteration done
            return p
        if p.poll() is not None:
            raise AssertionError(p.communicate()[1][-3000:])
        time.sleep(0.2)
    p.kill()
    raise AssertionError("the run did not start")


@needs_mpi
@needs_neuron
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through Linux /proc")
def test_a_killed_rank_is_named_in_one_line_the_others_stop_and_the_run_resumes(tmp_path):
    p = _start_long(tmp_path, "r")
    mpiexec = next(int(c) for t in Path(f"/proc/{p.pid}/task").iterdir() for c in (t / "children").read_text().split())
    pids = _rank_pids(mpiexec)
    assert sorted(pids) == [0, 1]
    os.kill(pids[1], signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 137, err[-3000:]
    assert errors(err) == ["launch: MPI rank 1 of 2 was killed by signal 9 (Killed); mpiexec stopped the other ranks"]
    assert "----" not in err  # no Open MPI notice
    assert not _alive(pids[0])  # rank 0 was stopped too
    done = len(rows(tmp_path / "r"))
    assert done >= 1
    code, _, err = run([sys.executable, "-m", "rsrp_sim.protocols.digits", "--quiet", "--out", str(tmp_path / "r"),
                        "--resume", f"examples={5 * (done + 1)}"])
    assert code == 0, err[-3000:]
    assert [r["iteration"] for r in rows(tmp_path / "r")] == list(range(1, done + 2))


@needs_mpi
@needs_neuron
def test_ctrl_c_on_the_launcher_stops_every_rank_after_the_same_iteration(tmp_path):
    p = _start_long(tmp_path, "r")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 130, err[-3000:]
    assert errors(err) == [] and out.count("interrupted; continue with") == 1
    done = rows(tmp_path / "r")
    assert 1 <= len(done) < 80
    ck = checkpoint(tmp_path / "r")
    assert int(next(v for k, v in ck.items() if "iteration" in k)) == len(done)


# ---------------------------------------------------------------------------------------------- no MPI needed
def test_launch_mpi_without_mpiexec_says_what_to_install(monkeypatch, tmp_path):
    from rsrp_sim.protocols import launch

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as e:
        launch.mpiexec_command(2, ["python"])
    assert str(e.value) == ("--mpi needs mpiexec on PATH; install Open MPI (e.g. apt-get install openmpi-bin "
                            "libopenmpi-dev) and mpi4py (pip install -c constraints.txt -e '.[mpi]')")
    with pytest.raises(UserError, match="--mpi must be at least 1"):
        launch.launch_mpi(0, ["digits"])
    code = subprocess.run([sys.executable, "-m", "rsrp_sim", "launch", "--mpi", "2", "--", "digits"],
                          env=env(PATH=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and code.stderr.strip().splitlines() == ["error: " + str(e.value)]


def test_open_mpi_notices_become_one_line():
    from rsrp_sim.protocols.launch import _OMPI_RULE, _OmpiNotices

    def through(text, n=2):
        out = io.StringIO()
        notices = _OmpiNotices(n, out)
        for line in io.StringIO(text):
            notices.feed_line(line)
        return out.getvalue()

    rule = _OMPI_RULE + "\n"
    killed = (f"progress 1\n{rule}Primary job  terminated normally, but 1 process returned\na non-zero exit code. Per "
              f"user-direction, the job has been aborted.\n{rule}{rule}mpiexec noticed that process rank 1 with PID 0 "
              f"on node vm exited on signal 9 (Killed).\n{rule}")
    assert through(killed) == ("progress 1\nlaunch: MPI rank 1 of 2 was killed by signal 9 (Killed); mpiexec stopped "
                               "the other ranks\n")
    exited = (f"{rule}mpiexec detected that one or more processes exited with non-zero status, thus causing\nthe job "
              f"to be terminated. The first process to do so was:\n\n  Process name: [[9418,1],3]\n  Exit code:    7\n"
              f"{rule}")
    assert through(exited, 4) == "launch: MPI rank 3 of 4 exited with status 7; mpiexec stopped the other ranks\n"
    assert through(exited.replace("Exit code:    7", "Exit code:    130")) == ""  # interrupted together: no line
    aborted = (f"error: n_exc=1 ...\n{rule}MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD\nwith "
               f"errorcode 2.\n{rule}[vm:1] [[2,0],0] ORTE_ERROR_LOG: Data unpack would read past end of buffer\n")
    assert through(aborted) == "error: n_exc=1 ...\n"  # the rank said why; Open MPI's notice and log line go


def test_mpi_launch_size_from_the_launchers_environment():
    assert distributed.mpi_launch_size({}) == 1
    assert distributed.mpi_launch_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert distributed.mpi_launch_size({"PMI_SIZE": "3"}) == 3  # MPICH, Intel MPI
    assert distributed.mpi_launch_size({"SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8"}) == 8  # srun
    assert distributed.mpi_launch_size({"SLURM_NTASKS": "8"}) == 1  # a batch script's own shell, not srun
    with pytest.raises(UserError, match="OMPI_COMM_WORLD_SIZE must be an integer"):
        distributed.mpi_launch_size({"OMPI_COMM_WORLD_SIZE": "x"})
