"""The data folders (models/, mod/, protocols/) at the repository's root are found by an editable
install (this checkout) and shipped inside a non-editable one (a wheel built from the checkout)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from rsrp_sim.infra import assets

ROOT = Path(__file__).resolve().parents[1]
PROBE = r"""
import json, rsrp_sim
from rsrp_sim.infra import assets
from rsrp_sim.core import models
from rsrp_sim.protocols import get
from rsrp_sim.backends.netpyne import mechanisms
from rsrp_sim.backends.jax.kernels import cpu
print("RESULT" + json.dumps({"kernel_source": cpu.SOURCE.is_file(),"package": rsrp_sim.__file__, "folders": {n: str(assets.folder(n)) for n in assets.FOLDERS},
      "models": models.available(), "presets": sorted(get("cartpole").presets),
      "mod": sorted(p.name for p in mechanisms.mod_files()),
      "n_neurons": models.SNNConstants.from_model("conn_snn", 4, 1).n_neurons}))
"""


def probe(env=None, cwd=None):
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.split("RESULT", 1)[1])


def test_editable_checkout_reads_the_root_folders():
    for name in assets.FOLDERS:
        assert assets.folder(name) == ROOT / name
    assert (ROOT / "mod" / "rlstdp.mod").is_file()  # `nrnivmodl mod` from the root, as NEURON users do


def test_a_non_editable_install_carries_models_mod_and_protocols(tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    out = probe(env, cwd=tmp_path)  # away from the checkout: only the installed copy can be found
    assert Path(out["package"]).resolve().is_relative_to(target.resolve())
    for name in assets.FOLDERS:
        assert Path(out["folders"][name]) == (target / "rsrp_sim" / "_assets" / name).resolve()
    here = probe()
    assert out["models"] == here["models"] and "conn_snn" in out["models"]
    assert out["presets"] == ["cpu", "paper"] and out["n_neurons"] == 256
    assert out["mod"] == here["mod"] == sorted(p.name for p in (ROOT / "mod").glob("*.mod"))
    assert out["kernel_source"]  # the fused kernel's C++ source, compiled on first use
