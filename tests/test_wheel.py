"""The installed wheel: configs and the default weights inside the package, ``mefn segment``
working from an environment that cannot see the checkout.

The wheel is built from a copy of the sources (``pyproject.toml``, ``README.md``, ``mefn/``) so
that the build writes nothing into the checkout. It is installed with ``--no-deps`` into a
fresh venv (no pip, no system site-packages); the dependencies come from this test's own
environment through one ``.pth`` line naming its site-packages. A ``.pth`` line only appends
the folder: the ``.pth`` files inside it (the editable install's finder, which maps ``mefn`` to
the checkout) are not run, so ``mefn`` can only come from the wheel. Commands run from a folder
outside the checkout, with no PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from support import ct_pet_pair

from mefn.cli import main
from mefn.io.readers import read_volume
from mefn.io.sitk_bridge import write_volume

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "mefn", src / "mefn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--wheel-dir", str(dist), str(src)],
        cwd=tmp,
    )
    (wheel,) = dist.glob("mefn-*.whl")
    return wheel


def _venv_with_wheel(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """(bin folder, site-packages) of a fresh venv holding the wheel and seeing the deps."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    # Only now the dependencies: pip above saw an environment without any mefn to replace.
    out = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp)
    site = Path(out.stdout.strip())
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "zz_test_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return venv / "bin", site


CHECK = """
import json, sys
import mefn
from mefn.adapters.config import CONFIG_DIR, load_adapter_config
from mefn.cli.finetune import DEFAULT_CONFIG
from mefn.training import CONFIG_ROOT, load_train_config, resolve_model_config

train = load_train_config(CONFIG_ROOT / "train" / "phantoms_small.yaml")
print(json.dumps({
    "mefn": mefn.__file__,
    "config_root": str(CONFIG_ROOT),
    "adapter_dir": str(CONFIG_DIR),
    "finetune_default": str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
    "model_of_train_config": resolve_model_config(train.model).base_width,
    "lora_type": load_adapter_config("lora").type,
    "sys_path": sys.path,
}))
"""


def test_wheel_installs_and_segments_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    bin_dir, site = _venv_with_wheel(tmp_path, wheel)
    work = tmp_path / "elsewhere"  # the cwd of every command: not the checkout
    work.mkdir()

    info = json.loads(_run([str(bin_dir / "python"), "-c", CHECK], work).stdout)
    package = site / "mefn"
    assert Path(info["mefn"]) == package / "__init__.py"
    assert Path(info["config_root"]) == package / "configs"
    assert Path(info["adapter_dir"]) == package / "configs" / "adapters"
    assert info["finetune_default"] == str(package / "configs" / "train" / "finetune.yaml")
    assert info["model_of_train_config"] == 12  # configs/model/mefn_small.yaml, by name
    assert info["lora_type"] == "lora"
    on_path = {(work / p).resolve() for p in info["sys_path"]}  # "" is the cwd
    assert REPO not in on_path and REPO / "mefn" not in on_path

    ct, pet = ct_pet_pair()
    case = tmp_path / "case"
    case.mkdir()
    write_volume(ct, case / "ct.nii.gz")
    write_volume(pet, case / "pet.nii.gz")
    out_wheel, out_checkout = tmp_path / "out_wheel", tmp_path / "out_checkout"
    args = ["segment", "--ct", str(case / "ct.nii.gz"), "--pet", str(case / "pet.nii.gz")]
    _run([str(bin_dir / "mefn"), "-q", *args, "-o", str(out_wheel)], work)

    (report_path,) = out_wheel.glob("*_report.json")
    report = json.loads(report_path.read_text())
    assert report["settings"]["model"] == str(package / "weights" / "mefn_default.safetensors")
    (mask_path,) = out_wheel.glob("*_mask.nii.gz")
    (unc_path,) = out_wheel.glob("*_uncertainty.nii.gz")
    mask, unc = read_volume(mask_path), read_volume(unc_path)
    assert mask.shape == ct.shape and unc.shape == ct.shape
    np.testing.assert_allclose(mask.geometry.direction, ct.geometry.direction, atol=1e-6)

    # the same command from the checkout gives the same answer
    assert main(["-q", *args, "-o", str(out_checkout)]) == 0
    ref_mask = read_volume(out_checkout / mask_path.name)
    ref_unc = read_volume(out_checkout / unc_path.name)
    np.testing.assert_array_equal(mask.array, ref_mask.array)
    np.testing.assert_allclose(unc.array, ref_unc.array, atol=1e-6)
    assert float(unc.array.std()) > 0
