"""Failure paths: every fault is one line and an exit status, nothing on disk is lost, one writer per
run folder, and no file the user did not ask for runs as code.

One test (or one parametrised test) per observed fault; the compiler-less PATH is a folder of symlinks
to every program on PATH but the compilers and make; "disk full" is a tiny tmpfs in a private mount
namespace where this machine allows one, and a file-size limit (RLIMIT_FSIZE) as well.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from rsrp_sim.infra.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UserError
from rsrp_sim.infra.records import RunDir, file_mode, parse_metrics, read_metrics
from rsrp_sim.protocols.cartpole import PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
TINY = ["pop_size=32", "eval_size=2", "chunk_size=32", "model.n_neurons=32"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", MPLBACKEND="Agg")
COMPILERS = re.compile(r"^(.*-)?(gcc|g\+\+|cc|c\+\+|make|gmake|clang|clang\+\+|cpp)(-[\d.]+)?$")


# ----------------------------------------------------------------------------------------------- helpers
def run_cli(capsys, *args, protocol=PROTOCOL):
    code = protocol.main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli(*args, module="rsrp_sim.protocols.cartpole", env=None, cwd=None, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", module, "--quiet", *args], env=env or ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kw)


def one_line(err: str, *parts: str):
    """``err`` is exactly one line ``error: ...`` (no traceback) containing every one of ``parts``."""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (path -> bytes), but the lock file (it records the last writer's pid)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def ov(*items):
    from rsrp_sim.infra.config import parse_overrides

    return parse_overrides(TINY + list(items))


def same_rows(a, b):
    """The records of two runs agree exactly, timings aside."""
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    for ra, rb in zip(a, b):
        for k in ra:
            if k != "wall_s" and not k.endswith("_per_s"):
                assert ra[k] == rb[k], (k, ra[k], rb[k])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A completed 2-generation CartPole run (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("base") / "run"
    PROTOCOL.run("rsrp", seed=1, out=out, overrides=ov("generations=2"), progress=False)
    return out


@pytest.fixture
def run_copy(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


@pytest.fixture(scope="module")
def no_compiler_env(tmp_path_factory):
    """ENV with a PATH of symlinks to every program on PATH except gcc/g++/cc/c++/make (and kin)."""
    folder = tmp_path_factory.mktemp("nocompiler")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not Path(d).is_dir():
            continue
        for exe in Path(d).iterdir():
            if COMPILERS.match(exe.name) or (folder / exe.name).exists():
                continue
            if exe.is_file() and os.access(exe, os.X_OK):
                (folder / exe.name).symlink_to(exe)
    for name in ("gcc", "g++", "cc", "c++", "make"):
        assert shutil.which(name, path=str(folder)) is None
    env = {k: v for k, v in ENV.items() if k not in ("CC", "CXX")}
    env["PATH"] = str(folder)
    return env


def _can_mount() -> str | None:
    """None when a private mount namespace with a tmpfs works here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && touch /mnt/x"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


# ----------------------------------------------------------------------------------------------- compilers
def test_no_compiler_rstdp_is_one_line_before_any_folder(no_compiler_env, tmp_path):
    """No C++ compiler, --method rstdp: exit 2, one line (no NEURON "no DISPLAY" lines), no run folder."""
    pytest.importorskip("neuron")
    pytest.importorskip("netpyne")
    env = dict(no_compiler_env, RSRP_SIM_CACHE=str(tmp_path / "cache"))  # nothing compiled yet
    r = cli("--method", "rstdp", "--out", str(tmp_path / "run"), "episodes=2", "episodes_per_iteration=1",
            "eval_episodes=0", env=env)
    assert r.returncode == EXIT_USAGE, r.stderr
    one_line(r.stderr, "cannot compile the NEURON mechanisms: no C++ compiler/make found", "apt-get install g++ make")
    assert "DISPLAY" not in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("device,expect", [
    ("cpp_standalone", ["device=cpp_standalone compiles with make and a C++ compiler, and make, g++ are not on "
                        "PATH", "use device=runtime target=numpy"]),
    ("runtime", ["brian2's cython target needs a C/C++ compiler and none was found", "or use target=numpy"]),
])
def test_no_compiler_brian2_is_one_line_before_any_folder(no_compiler_env, tmp_path, device, expect):
    pytest.importorskip("brian2")
    args = ["--backend", "brian2", "--device", device, f"build_dir={tmp_path / 'build'}" if device != "runtime"
            else "target=cython", "generations=1", "pop_size=8", "eval_size=2", "chunk_size=8",
            "model.n_neurons=16", "max_episode_steps=20"]
    r = cli("--out", str(tmp_path / "run"), *args, env=no_compiler_env)
    assert r.returncode == EXIT_USAGE, r.stderr
    one_line(r.stderr, *expect)
    assert not (tmp_path / "run").exists() and not (tmp_path / "build").exists()
    if device == "runtime":  # the advice works: target=numpy needs no compiler
        r = cli("--out", str(tmp_path / "numpy"), *[a for a in args if a != "target=cython"], "target=numpy",
                env=no_compiler_env)
        assert r.returncode == 0, r.stderr
        assert len(read_metrics(tmp_path / "numpy" / "metrics.csv")) == 1


def test_cuda_standalone_without_gpu_is_refused_before_compiling(tmp_path):
    pytest.importorskip("brian2")
    from rsrp_sim.backends.brian2 import devices

    if devices.has_gpu():
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    r = cli("--backend", "brian2", "--device", "cuda_standalone", "--out", str(tmp_path / "run"),
            f"build_dir={tmp_path / 'build'}", "generations=1", "pop_size=8", "eval_size=2", "model.n_neurons=16")
    assert r.returncode == EXIT_USAGE, r.stderr
    one_line(r.stderr, "device=cuda_standalone needs an NVIDIA GPU and none was found", "checked before compiling",
             "use device=cpp_standalone")
    assert not (tmp_path / "run").exists() and not (tmp_path / "build").exists()  # nothing generated


# ----------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("where", ["under-a-file", "proc", "read-only-mount"])
def test_unwritable_out_is_one_line(capsys, tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("precious")
        out = tmp_path / "file" / "run"
        code, _, err = run_cli(capsys, "--out", str(out), *TINY, "generations=1")
        assert (tmp_path / "file").read_text() == "precious"
        expect = ["a folder on its path is a file"]
    elif where == "proc":
        out = Path("/proc/rsrp_sim_no_such_pid/run")
        code, _, err = run_cli(capsys, "--out", str(out), *TINY, "generations=1")
        expect = ["cannot write /proc/rsrp_sim_no_such_pid/run"]
    else:
        why = _can_mount()
        if why:
            pytest.skip(why)
        mnt = tmp_path / "ro"
        mnt.mkdir()
        script = (f"mount -t tmpfs -o ro,size=64k tmpfs {mnt} && exec {sys.executable} -m rsrp_sim.protocols.cartpole "
                  f"--quiet --out {mnt / 'run'} {' '.join(TINY)} generations=1")
        r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=ENV, capture_output=True, text=True, timeout=600)
        code, err = r.returncode, r.stderr
        expect = ["the file system is read-only"]
    assert code == EXIT_USAGE
    one_line(err, *expect, "the folder is not writable: choose another --out")


_DISK_FULL_SCRIPT = """
import json, os, resource, shutil, signal, sys, contextlib, io
from pathlib import Path
from rsrp_sim.protocols.cartpole import PROTOCOL
mode, out, keep = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
tiny = {tiny!r}
res = {{}}

def main(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = PROTOCOL.main(["--quiet", *args])
    return code, err.getvalue()

res["a"] = main("--out", str(out / "run"), "--seed", "2", *tiny, "generations=2")
filler = out / "filler"
if mode == "tmpfs":
    with open(filler, "wb", buffering=0) as f:  # fill the disk, then leave 12 KiB: room for small files only
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - 12288))
else:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # the checkpoint is ~24 KB
res["b"] = main("--out", str(out / "run"), "--resume", "generations=4")
if mode == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
shutil.copytree(out / "run", keep / "after_failure")
if mode == "tmpfs":
    filler.unlink()
res["c"] = main("--out", str(out / "run"), "--resume")
shutil.copytree(out / "run", keep / "resumed")
print(json.dumps(res))
"""


@pytest.mark.parametrize("mode", ["tmpfs", "rlimit"])
def test_disk_full_during_a_checkpoint_loses_nothing(tmp_path, mode):
    """The disk fills up during a checkpoint: exit 3, one line (free space, --resume), the checkpoint on
    disk is the previous one, no temporary file left; after freeing space, --resume ends exactly as
    an uninterrupted run."""
    script = tmp_path / "disk_full.py"
    script.write_text(_DISK_FULL_SCRIPT.format(tiny=TINY))
    keep = tmp_path / "keep"
    keep.mkdir()
    env = ENV
    if mode == "tmpfs":
        why = _can_mount()
        if why:
            pytest.skip(why)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        cmd = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt} && exec {sys.executable} "
                                            f"{script} tmpfs {mnt} {keep}"]
    else:
        out = tmp_path / "disk"
        out.mkdir()
        cmd = [sys.executable, str(script), "rlimit", str(out), str(keep)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["a"][0] == 0
    code, err = res["b"]
    assert code == EXIT_FAILED
    one_line(err, "the disk is full: cannot write", "checkpoint.npz",
             "nothing was lost: free space, then continue with --resume")
    failed = keep / "after_failure"
    assert json.loads(np.load(failed / "checkpoint.npz")["__meta__"].item())["iteration"] == 2
    assert not [p for p in failed.rglob("*.tmp")]
    assert yaml.safe_load((failed / "config.yaml").read_text())["config"]["generations"] == 4
    assert res["c"][0] == 0, res["c"][1]
    resumed = read_metrics(keep / "resumed" / "metrics.csv")
    full = tmp_path / "full"
    PROTOCOL.run("rsrp", seed=2, out=full, overrides=ov("generations=4"), progress=False)
    same_rows(read_metrics(full / "metrics.csv"), resumed)


# ----------------------------------------------------------------------------------------------- metrics.csv
@pytest.mark.parametrize("damage,message", [
    (lambda t: t.replace("\n2,", "\ngarbage,", 1), "line 3: iteration 'garbage' where 2 was expected"),
    (lambda t: t.replace("\n2,", "\n2,1,2,3,4,5,6,7,8,9,", 1), "line 3 has"),
    (lambda t: "not,a,header\n" + t.split("\n", 1)[1], "line 1 is not a metrics header"),
    (lambda t: t.replace("\n2,", "\n1,", 1), "line 3: iteration 1 where 2 was expected"),  # a duplicated row
])
def test_damaged_metrics_is_one_line_and_changes_nothing(capsys, run_copy, damage, message):
    p = run_copy / "metrics.csv"
    p.write_text(damage(p.read_text()))
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", "generations=3")
    assert code == EXIT_USAGE
    one_line(err, str(p), message, "restore it from a copy or start a new run")
    assert snapshot(run_copy) == before


def test_torn_last_metrics_row_is_repaired_on_resume(capsys, tmp_path):
    """A process killed while writing a row leaves it without its line end: compare ignores it, resume
    drops it (and the rows after the checkpoint) and appends clean rows; the result equals an
    uninterrupted run."""
    from rsrp_sim.__main__ import main

    part = tmp_path / "part"
    PROTOCOL.run("rsrp", seed=4, out=part, overrides=ov("generations=4"), progress=False, stop_after=2)
    good = (part / "metrics.csv").read_text()
    row3 = good.splitlines()[-1].replace("2,", "3,", 1)
    (part / "metrics.csv").write_text(good + row3[: len(row3) // 2])  # killed mid-write of row 3
    assert [r["iteration"] for r in read_metrics(part / "metrics.csv")] == [1, 2]
    assert main(["compare", str(part), "--out", str(tmp_path / "cmp.png")]) == 0
    capsys.readouterr()
    code, out, err = run_cli(capsys, "--out", str(part), "--resume")
    assert code == 0, err
    rows, columns, torn = parse_metrics(part / "metrics.csv")
    assert not torn and all(len(line.split(",")) == len(columns)
                            for line in (part / "metrics.csv").read_text().splitlines())
    full = tmp_path / "full"
    PROTOCOL.run("rsrp", seed=4, out=full, overrides=ov("generations=4"), progress=False)
    same_rows(read_metrics(full / "metrics.csv"), rows)


# ----------------------------------------------------------------------------------------------- one writer
def test_second_writer_gets_one_line_naming_the_holder(tmp_path):
    """--resume (or a new run) on a folder that a running process writes: exit 2, one line with that
    process's pid, nothing changed; the first run's records stay whole."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "rsrp_sim.protocols.cartpole", "--quiet", "--out", str(out),
                              *TINY, "generations=1000000"], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(read_metrics(out / "metrics.csv")) < 1:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        config = (out / "config.yaml").read_bytes()
        second = cli("--out", str(out), "--resume", "generations=3")
        assert second.returncode == EXIT_USAGE
        one_line(second.stderr, f"run folder {out} is in use by another process (pid {first.pid})",
                 "wait for it to finish")
        again = cli("--out", str(out), *TINY, "generations=3")
        assert again.returncode == EXIT_USAGE and "already exists" in again.stderr
        assert (out / "config.yaml").read_bytes() == config
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == EXIT_INTERRUPTED, err
    rows, _, torn = parse_metrics(out / "metrics.csv")  # iterations 1, 2, 3 ... once each
    assert rows and not torn
    assert json.loads((out / "summary.json").read_text())["iterations_done"] == len(rows)
    with pytest.raises(UserError, match="not a run folder"):  # the lock is released: resuming works again
        RunDir.open(tmp_path)
    RunDir.open(out).close()


# ----------------------------------------------------------------------------------------------- resume checks
def _edit(path: Path, fn):
    doc = yaml.safe_load(path.read_text())
    doc = fn(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("edit,message", [
    (lambda d: {k: v for k, v in d.items() if k != "method"}, "lacks the key 'method'"),
    (lambda d: {**d, "method": ["rsrp"]}, "method must be str, got ['rsrp']"),
    (lambda d: {**d, "seed": "abc"}, "seed must be int, got 'abc'"),
    (lambda d: {**d, "seed": -5}, "--seed must be an integer in [0, 4294967296), got -5"),
    (lambda d: ["a", "list"], "is not a run record (a list, expected a mapping)"),
    (lambda d: {**d, "config": {**d["config"], "lr": 0.3}}, "was edited: lr is 0.3 but the checkpoint was made "
                                                            "with 0.15; restore it (only generations may change"),
    (lambda d: {**d, "config": {**d["config"], "lr": "fast"}}, "config.yaml: lr must be float, got 'fast'"),
    (lambda d: {**d, "config": {**d["config"], "model_overrides": {"n_neurons": 48}}},
     "was edited: model.n_neurons is 48 but the checkpoint was made with 32"),
    (lambda d: {**d, "seed": 7}, "was edited: seed is 7 but the checkpoint was made with 1"),
    (lambda d: {**d, "method": "rsrpp"}, "names method 'rsrpp', which protocol cartpole does not have"),
])
def test_edited_config_yaml_is_refused(capsys, run_copy, edit, message):
    _edit(run_copy / "config.yaml", edit)
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", "generations=3")
    assert code == EXIT_USAGE
    one_line(err, message)
    assert snapshot(run_copy) == before


def test_only_the_iteration_count_may_change(capsys, run_copy):
    _edit(run_copy / "config.yaml", lambda d: {**d, "config": {**d["config"], "generations": 3}})
    code, out, err = run_cli(capsys, "--out", str(run_copy), "--resume")
    assert code == 0, err
    assert "3/3 iterations" in out and len(read_metrics(run_copy / "metrics.csv")) == 3


def test_corrupt_checkpoint_leaves_config_yaml_untouched(capsys, run_copy):
    (run_copy / "checkpoint.npz").write_bytes(b"not a zip file")
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", "generations=3")
    assert code == EXIT_USAGE
    one_line(err, "checkpoint.npz is unreadable")
    assert snapshot(run_copy) == before  # config.yaml still says generations: 2


def _rewrite_meta(path: Path, meta):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if meta is None:
        del arrays["__meta__"]
    else:
        arrays["__meta__"] = np.asarray(meta)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("meta,message", [
    (None, "has no metadata (__meta__)"),
    ("{not json", "has malformed metadata (not JSON)"),
    ("[1, 2]", "has malformed metadata (a list, expected a mapping)"),
    ('{"iteration": -5, "wall_s": 1.0}', "has an invalid iteration -5"),
    ('{"iteration": "2", "wall_s": 1.0}', "has an invalid iteration '2'"),
    ('{"iteration": 2, "wall_s": "NaN"}', "has an invalid wall_s 'NaN'"),
    ('{"iteration": 9, "wall_s": 1.0}', "metrics.csv has 2 rows but the checkpoint is at iteration 9"),
])
def test_bad_checkpoint_metadata_is_refused(capsys, run_copy, meta, message):
    _rewrite_meta(run_copy / "checkpoint.npz", meta)
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", "generations=3")
    assert code == EXIT_USAGE
    one_line(err, message)
    assert snapshot(run_copy) == before  # with -5 no metrics row is deleted


@pytest.mark.parametrize("other", ["digits", "mnist"])
def test_resume_through_another_protocol_is_refused(capsys, run_copy, other):
    from rsrp_sim.protocols import get

    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", protocol=get(other))
    assert code == EXIT_USAGE
    one_line(err, f"is a run of protocol 'cartpole', not {other}",
             f"resume it with python -m rsrp_sim.protocols.cartpole --out {run_copy} --resume")
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("args,message", [
    (["--seeds", "0-100000000"], "names more than 1000 seeds, the limit of one group"),
    (["--seeds", "0,-3"], "--seeds must be integers >= 0"),
    (["--seeds", "-1"], "--seeds must be integers >= 0"),
    (["--seeds", "5-2"], "is empty"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967296), got -1"),
    (["--seed", "4294967296"], "--seed must be an integer in [0, 4294967296)"),
])
def test_seeds_are_bounded_and_non_negative(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "g"), *args, *TINY, "generations=1")
    assert code == EXIT_USAGE
    one_line(err, message)
    assert not (tmp_path / "g").exists()


def test_edited_group_yaml_is_refused(capsys, tmp_path):
    group = tmp_path / "g"
    code, _, err = run_cli(capsys, "--seeds", "0", "--out", str(group), *TINY, "generations=1")
    assert code == 0, err
    for edit, message in [(lambda d: {k: v for k, v in d.items() if k != "method"}, "method must be str"),
                          (lambda d: {**d, "seeds": ["../x"]}, "seeds must be integers"),
                          (lambda d: {**d, "seeds": [0, 0]}, "must list distinct seeds"),
                          (lambda d: {**d, "overrides": [1]}, "overrides must be a mapping")]:
        original = (group / "group.yaml").read_text()
        _edit(group / "group.yaml", edit)
        before = snapshot(group)
        code, _, err = run_cli(capsys, "--seeds", "0", "--out", str(group), "--resume")
        assert code == EXIT_USAGE
        one_line(err, message)
        assert snapshot(group) == before
        (group / "group.yaml").write_text(original)


@pytest.mark.parametrize("args,message", [
    (["lr=.inf"], "lr must be a finite number, got inf"),
    (["--method", "es", "sigma=.inf"], "sigma must be a finite number, got inf"),
    (["--method", "es", "sigma=0"], "sigma must be > 0, got 0"),
    (["lr=-0.1"], "lr must be > 0, got -0.1"),
    (["lr=.nan"], "lr must be a finite number, got nan"),
    (["model.k_out=.nan"], "model.k_out must be a finite number, got nan"),
    (["model.k_in=1e400"], "model.k_in must be a finite number, got inf"),
    (["model.tau_syn=0"], "model.tau_syn must be > 0, got 0"),
    (["model.tau_m=-10.0"], "model.tau_m must be > 0, got -10.0"),
    (["model.dt=0"], "model.dt must be > 0, got 0"),
    (["model.k_h=0"], "model.k_h must be a finite number > 0, got 0"),
    (["baseline_ema=.nan"], "baseline_ema must be a finite number, got nan"),
    (["--method", "ppo-lstm", "lr=.inf"], "lr must be a finite number, got inf"),
])
def test_non_finite_and_non_positive_keys_are_refused(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "run"), *args, *TINY, "generations=1")
    assert code == EXIT_USAGE
    one_line(err, message)
    assert not (tmp_path / "run").exists()


def test_model_time_constants_of_every_model_must_be_positive():
    from rsrp_sim.core import models

    with pytest.raises(UserError, match=r"^model\.cells\.E\.tauAM must be > 0, got 0\.0$"):
        models.load("rstdp_cartpole", {"cells.E.tauAM": 0.0})
    with pytest.raises(UserError, match=r"^model\.gain\.EE must be > 0, got -2\.0$"):
        models.load("rstdp_cartpole", {"gain.EE": -2.0})
    with pytest.raises(UserError, match=r"^model\.exc\.tau_ge must be a finite number, got inf$"):
        models.load("diehl_cook", {"exc.tau_ge": float("inf")})
    models.load("rstdp_cartpole", {"cells.E.RMP": -70.0})  # a negative potential is fine


def test_non_finite_reward_names_the_generation_and_the_likely_cause(capsys, tmp_path, monkeypatch):
    from rsrp_sim.backends.jax.rl import SNNRollouts

    real, calls = SNNRollouts.evaluate, []

    def evaluate(self, members, key, context, chunk):
        out = real(self, members, key, context, chunk)
        calls.append(1)
        if len(calls) >= bad_from:
            out = dataclasses.replace(out, fitness=np.full(np.shape(out.fitness), np.nan, np.float32))
        return out

    monkeypatch.setattr(SNNRollouts, "evaluate", evaluate)
    bad_from = 1  # the first generation: nothing recorded, no folder left behind
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "a"), *TINY, "generations=3", "model.k_in=5.0")
    assert code == EXIT_FAILED
    one_line(err, "non-finite reward in generation 1: 32 of 32 members", "environment CartPole-v1",
             "likely cause: the model override(s) model.k_in=5.0, model.n_neurons=32 make the network diverge",
             "lr=0.15", "nothing was recorded; the run folder")
    assert not (tmp_path / "a").exists()
    calls.clear()
    bad_from = 2  # the second: the first generation is kept, resumable
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "b"), *TINY, "generations=3")
    assert code == EXIT_FAILED
    one_line(err, "non-finite reward in generation 2", "likely cause: the model override(s) model.n_neurons=32",
             "continue with --resume")
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["status"] == "failed" and "generation 2" in summary["error"]
    assert len(read_metrics(tmp_path / "b" / "metrics.csv")) == 1


def test_a_group_or_ablation_that_never_started_leaves_no_folder(capsys, tmp_path, monkeypatch):
    from rsrp_sim.backends.jax.rl import SNNRollouts
    from rsrp_sim.protocols import ablations

    real = SNNRollouts.evaluate

    def evaluate(self, *args):
        out = real(self, *args)
        return dataclasses.replace(out, fitness=np.full(np.shape(out.fitness), np.nan, np.float32))

    monkeypatch.setattr(SNNRollouts, "evaluate", evaluate)
    code, _, err = run_cli(capsys, "--seeds", "0,1", "--out", str(tmp_path / "g" / "group"), *TINY, "generations=2")
    assert code == EXIT_FAILED
    one_line(err, "non-finite reward in generation 1", "nothing was recorded")
    assert not (tmp_path / "g").exists()
    code = ablations.main(["cartpole-reward", "--values", "raw", "--seeds", "0", "--out", str(tmp_path / "a" / "abl"),
                           "--quiet", *TINY, "generations=2"])
    _, err = capsys.readouterr()
    assert code == EXIT_FAILED
    one_line(err, "non-finite reward in generation 1")
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------------------------- interruptions
def test_double_ctrl_c_is_quiet_and_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rsrp_sim.protocols.cartpole", "--quiet", "--out", str(out),
                             *TINY, "generations=1000000"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics(out / "metrics.csv")) < 2:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    seen = []
    for line in proc.stderr:  # the first Ctrl-C is being handled: press it again, as impatient users do
        seen.append(line)
        if line.startswith("interrupted: saving the run folder"):
            break
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    done = json.loads((out / "summary.json").read_text())
    assert done["status"] == "interrupted"
    assert len(read_metrics(out / "metrics.csv")) == done["iterations_done"] >= 2
    assert not list(out.rglob("*.tmp"))
    rd, s = PROTOCOL.run(out=out, resume=True, overrides={"generations": done["iterations_done"] + 1}, progress=False)
    assert s["status"] == "completed"


def test_temporary_files_left_by_kill_9_are_removed_on_resume(capsys, run_copy):
    orphans = [run_copy / ".checkpoint.npz.k9x_ab12.tmp", run_copy / ".summary.json.zz99yy00.tmp",
               run_copy / "plots" / ".learning_curve.png.a1b2c3d4.tmp"]
    for p in orphans:
        p.write_bytes(b"half written")
    mine = run_copy / ".notes.tmp"  # not one of ours: kept
    mine.write_text("mine")
    code, _, err = run_cli(capsys, "--out", str(run_copy), "--resume", "generations=3")
    assert code == 0, err
    assert not any(p.exists() for p in orphans) and mine.read_text() == "mine"


# ----------------------------------------------------------------------------------------------- compare / report
def test_compare_unknown_column_overwrite_and_corrupt_runs(capsys, tmp_path, base_run):
    from rsrp_sim.__main__ import main

    runs = tmp_path / "runs"
    shutil.copytree(base_run, runs / "good")
    shutil.copytree(base_run, runs / "bad")
    (runs / "bad" / "metrics.csv").write_text("iteration,eval_score\n1,3\nabc,4\n")
    fig = tmp_path / "cmp.png"
    assert main(["compare", str(runs / "good"), "--y", "nosuchcol", "--out", str(fig)]) == EXIT_USAGE
    _, err = capsys.readouterr()
    one_line(err, "unknown column 'nosuchcol' for --y; the runs' metrics columns: iteration, env_steps, wall_s, "
                  "train_score, eval_score")
    assert not fig.exists()
    assert main(["compare", str(runs), "--out", str(fig)]) == 0  # the damaged run is skipped
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"warning: skipping {runs / 'bad'}: ") and "line 3" in err
    assert "rsrp [jax]" in out and fig.stat().st_size > 10_000
    fig.write_bytes(b"precious")
    assert main(["compare", str(runs), "--out", str(fig)]) == EXIT_USAGE
    _, err = capsys.readouterr()
    one_line(err, f"{fig} already exists; pass --force")
    assert fig.read_bytes() == b"precious"
    assert main(["compare", str(runs), "--out", str(fig), "--force"]) == 0
    assert fig.read_bytes() != b"precious"


def test_report_skips_corrupt_runs_and_refuses_to_overwrite(capsys, tmp_path, base_run):
    from rsrp_sim.__main__ import main

    runs = tmp_path / "runs"
    shutil.copytree(base_run, runs / "good")
    shutil.copytree(base_run, runs / "bad")
    (runs / "bad" / "config.yaml").write_text("protocol: [unclosed")
    rep = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(rep)]) == 0
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"warning: skipping {runs / 'bad'}")
    json.loads((rep / "report.json").read_text(), parse_constant=_no_constants)  # strict JSON
    before = snapshot(rep)
    assert main(["report", str(runs), "--out", str(rep)]) == EXIT_USAGE
    _, err = capsys.readouterr()
    one_line(err, f"{rep / 'index.html'} already exists; pass --force to overwrite the report")
    assert snapshot(rep) == before
    assert main(["report", str(runs), "--out", str(rep), "--force"]) == 0
    capsys.readouterr()
    abl = tmp_path / "abl"  # an edited ablation.yaml (its key removed): skipped with one warning
    shutil.copytree(base_run, abl / "v" / "s0")
    (abl / "ablation.yaml").write_text(yaml.safe_dump({"ablation": "x", "description": "no key"}))
    assert main(["report", str(abl), str(runs / "good"), "--out", str(tmp_path / "rep2")]) == 0
    _, err = capsys.readouterr()
    assert err == f"warning: skipping {abl}: {abl / 'ablation.yaml'} is not a valid ablation record\n"


def test_report_path_traversal_stays_inside_out(capsys, tmp_path, base_run):
    """Names in an ablation.yaml or config.yaml never become paths: nothing is written outside --out."""
    from rsrp_sim.__main__ import main

    abl = tmp_path / "a" / "b" / "abl"
    shutil.copytree(base_run, abl / "v1" / "s0")
    (abl / "ablation.yaml").write_text(yaml.safe_dump({"ablation": "x/../../../../PWNED", "key": "shaping",
                                                       "description": "hostile"}))
    evil = tmp_path / "c" / "run"
    shutil.copytree(base_run, evil)
    _edit(evil / "config.yaml", lambda d: {**d, "protocol": "../../../../PWNED2"})
    out = tmp_path / "a" / "b" / "out"
    assert main(["report", str(abl), str(evil), "--out", str(out)]) == 0, capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert "ablation_x-PWNED.png" in written and "PWNED2.png" in written
    assert [p for p in tmp_path.rglob("PWNED*") if not p.is_relative_to(out)] == []


def test_edited_ablation_yaml_cannot_name_folders_outside(capsys, tmp_path):
    from rsrp_sim.protocols import ablations

    folder = tmp_path / "a" / "abl"
    folder.mkdir(parents=True)
    meta = {"ablation": "cartpole-reward", "values": ["../../PWNED"], "seeds": [0], "preset": "cpu", "overrides": {}}
    (folder / "ablation.yaml").write_text(yaml.safe_dump(meta))
    before = snapshot(folder)
    assert ablations.main(["cartpole-reward", "--out", str(folder), "--resume", "--quiet"]) == EXIT_USAGE
    _, err = capsys.readouterr()
    one_line(err, "values must be a list of the sweep's values", "restore it or start a new ablation")
    assert snapshot(folder) == before and not list(tmp_path.rglob("PWNED*"))


# ----------------------------------------------------------------------------------------------- hostile files
def test_cifar_unpickler_bounds_array_sizes(tmp_path):
    from rsrp_sim.data import cifar10

    huge = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"J\x80\x96\x98\x00J\x80\x96\x98\x00\x86U\x01b\x87R.")  # asks for a (1e7, 1e7) array
    (tmp_path / "data_batch_1").write_bytes(huge)
    with pytest.raises(UserError) as e:
        cifar10.read_pickle_batch(tmp_path / "data_batch_1")
    assert "asks for an array of shape (10000000, 10000000)" in str(e.value) and "\n" not in str(e.value)
    state = pickle.dumps(np.zeros(2, np.uint8), protocol=2).replace(  # a small array whose state is huge
        b"K\x01K\x02\x85", b"K\x01J\x80\x96\x98\x00J\x80\x96\x98\x00\x86")
    (tmp_path / "data_batch_2").write_bytes(state)
    with pytest.raises(UserError, match="asks for an array of shape"):
        cifar10.read_pickle_batch(tmp_path / "data_batch_2")
    ok = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(ok, protocol=2))
    x, y = cifar10.read_pickle_batch(tmp_path / "data_batch_3")
    assert type(x) is np.ndarray and x.shape == (2, 32, 32, 3) and list(y) == [1, 2]


_HOSTILE_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void hostile(void) {
    FILE* f = fopen(MARKER, "w");
    if (f) { fputs("ran\n", f); fclose(f); }
}
void modl_reg(void) {}
"""


def test_foreign_libnrnmech_in_the_working_directory_never_runs(tmp_path):
    """A folder with x86_64/libnrnmech.so and x86_64/.libs/libnrnmech.so (libraries whose constructor
    writes a file): a plain ``import neuron`` there runs one (the control); rsrp_sim never does."""
    pytest.importorskip("neuron")
    pytest.importorskip("netpyne")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the hostile library")
    work = tmp_path / "work"
    (work / "x86_64" / ".libs").mkdir(parents=True)
    (tmp_path / "hostile.c").write_text(_HOSTILE_C)
    markers = {}
    for rel in ("x86_64/libnrnmech.so", "x86_64/.libs/libnrnmech.so"):
        markers[rel] = tmp_path / f"RAN_{rel.replace('/', '_')}"
        subprocess.run([cc, "-shared", "-fPIC", f'-DMARKER="{markers[rel]}"', "-o", str(work / rel),
                        str(tmp_path / "hostile.c")], check=True)
    env = dict(ENV, NEURON_MODULE_OPTIONS="-nogui")
    subprocess.run([sys.executable, "-c", "import neuron"], cwd=work, env=env, check=True, capture_output=True)
    assert any(m.exists() for m in markers.values())  # the control: NEURON alone loads one
    for m in markers.values():
        m.unlink(missing_ok=True)
    env = {k: v for k, v in ENV.items() if k != "NEURON_MODULE_OPTIONS"}
    probe = ("from rsrp_sim.backends.netpyne import mechanisms; lib = mechanisms.load(); from neuron import h; "
             "print(lib, all(hasattr(h, n) for n in mechanisms.mechanism_names()))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "cannot compile the NEURON mechanisms" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("True") and "nrnmech" in r.stdout and str(work) not in r.stdout
    assert "DISPLAY" not in r.stderr
    r = cli("--method", "rstdp", "--out", str(tmp_path / "run"), "episodes=2", "episodes_per_iteration=1",
            "eval_episodes=0", "raster_ms=100", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert not any(m.exists() for m in markers.values())


# ----------------------------------------------------------------------------------------------- records
def test_file_modes_are_consistent_and_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(["sh", "-c", 'umask 027 && exec "$0" "$@"', sys.executable, "-m", "rsrp_sim.protocols.cartpole",
                        "--quiet", "--out", str(out), *TINY, "generations=1"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.csv", "summary.json", "checkpoint.npz", ".lock",
            "plots/learning_curve.png"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes
    assert file_mode() == 0o666 & ~_umask_now()


def _umask_now() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _no_constants(name):
    raise ValueError(f"not strict JSON: {name}")


def test_summary_json_is_strict_json_with_null_for_missing_scores(tmp_path, monkeypatch):
    from rsrp_sim.engine.rl import RLPopulation

    real = RLPopulation.step

    def step(self, state):  # an iteration without an evaluation records NaN (as eval_every does)
        new, rec = real(self, state)
        return new, {**rec, "eval_score": float("nan")}

    monkeypatch.setattr(RLPopulation, "step", step)
    rd, s = PROTOCOL.run("rsrp", out=tmp_path / "run", overrides=ov("generations=3"), progress=False, stop_after=1)
    assert s["status"] == "interrupted"
    text = (tmp_path / "run" / "summary.json").read_text()
    doc = json.loads(text, parse_constant=_no_constants)
    assert doc["final_eval_score"] is None and doc["best_eval_score"] is None and "NaN" not in text
    with np.load(tmp_path / "run" / "checkpoint.npz") as z:
        json.loads(z["__meta__"].item(), parse_constant=_no_constants)


def test_dataset_cache_honours_rsrp_sim_cache(tmp_path, monkeypatch):
    from rsrp_sim import data
    from test_data import fake_mnist

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RSRP_SIM_CACHE", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "data"
    fake_mnist(tmp_path / "cache" / "data" / "mnist", n_train=None, n_test=40)
    assert data.load("mnist", val_size=5, test_size=5).sizes() == {"train": 30, "val": 5, "test": 5}


def test_debug_shows_the_traceback_and_internal_errors_are_one_line(capsys, tmp_path, monkeypatch):
    code, _, err = run_cli(capsys, "--debug", "--out", str(tmp_path / "r"), "lr=.inf")
    assert code == EXIT_USAGE and "Traceback" in err and err.rstrip().endswith("lr must be a finite number, got inf")

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(PROTOCOL), "run", boom)
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "r"))
    assert code == 1
    one_line(err, "unexpected RuntimeError: boom", "rerun with --debug")
    code, _, err = run_cli(capsys, "--debug", "--out", str(tmp_path / "r"))
    assert code == 1 and "Traceback" in err


def test_a_bug_in_an_iteration_leaves_a_failed_resumable_folder(capsys, tmp_path, monkeypatch):
    from rsrp_sim.engine import rl

    real_step, calls = rl.RLPopulation.step, []

    def step(self, state):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in iteration 2")
        return real_step(self, state)

    monkeypatch.setattr(rl.RLPopulation, "step", step)
    out = tmp_path / "r"
    code, _, err = run_cli(capsys, "--out", str(out), "generations=3", *TINY)
    assert code == 1
    one_line(err, "unexpected RuntimeError: boom in iteration 2", "rerun with --debug")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom in iteration 2" in summary["error"]
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1]
    code, _, err = run_cli(capsys, "--out", str(out), "--resume")
    assert code == 0, err
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
