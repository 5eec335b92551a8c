"""pipelines/gpu_burst.py: its scoring, that its path needs no SimpleITK, nibabel or cc3d,
and (slow) the whole burst on the CPU with a one-minute budget, then `mefn segment` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import load_pipeline

REPO = Path(__file__).resolve().parents[1]
BURST = REPO / "pipelines" / "gpu_burst.py"
ABSENT = ("SimpleITK", "nibabel", "cc3d")  # not on the bare GPU machine


@pytest.fixture(scope="module")
def burst():
    return load_pipeline(BURST)


def _without(tmp_path: Path) -> dict[str, str]:
    """An environment where importing SimpleITK, nibabel or cc3d fails, as on the GPU machine."""
    shim = tmp_path / "absent"
    for name in ABSENT:
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(f"raise ImportError('{name} is absent here')\n")
    path = os.pathsep.join([str(shim), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_case_scores_follow_autopet_definitions(burst):
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[1:4, 1:4, 1:4] = 1  # 27 voxels, found
    ref[8:10, 8:10, 8:10] = 1  # 8 voxels, missed
    pred = np.zeros_like(ref)
    pred[2:4, 1:4, 1:4] = 1  # 18 voxels inside the first lesion
    pred[6, 0:5, 10] = 1  # 5 voxels touching nothing
    dice, fpv, fnv = burst.case_scores(pred, ref, voxel_ml=0.5)
    assert dice == pytest.approx(2 * 18 / (23 + 35))
    assert (fpv, fnv) == (5 * 0.5, 8 * 0.5)
    assert burst.case_scores(pred, np.zeros_like(ref), 1.0) == (None, 23.0, 0.0)


def test_small_components_and_thresholds(burst):
    mask = np.zeros((9, 9, 9), np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # 8 voxels
    mask[5, 5, 5] = 1
    assert burst.drop_small(mask, 2).sum() == 8 and burst.drop_small(mask, 9).sum() == 0
    prob = np.stack([np.full((2, 2, 2), 0.7), np.full((2, 2, 2), 0.3)])
    assert burst.lesion_mask(prob, None).sum() == 0  # argmax: background
    assert burst.lesion_mask(prob, 0.3).sum() == 8  # P(lesion) 0.3 reaches 0.3


@pytest.mark.slow  # a fresh interpreter importing torch and MONAI: about 10-20 s on two cores
def test_burst_path_imports_without_simpleitk_nibabel_cc3d(tmp_path):
    code = (
        "import runpy, sys; sys.argv = ['gpu_burst.py', '--help'];\n"
        "import mefn.training, mefn.data.phantom_cache, mefn.model.sliding_window\n"
        "try:\n    runpy.run_module('pipelines.gpu_burst', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "try:\n    import mefn.inference\nexcept ImportError as exc:\n    print('inference:', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_without(tmp_path),
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training budget" in proc.stdout  # the burst's --help was printed
    # the control: mefn.inference does need cc3d (through mefn.postprocess)
    assert "inference: cc3d is absent here" in proc.stdout


@pytest.mark.slow
def test_burst_end_to_end_on_the_cpu_then_segment(tmp_path):
    (tmp_path / "tiny.yaml").write_text(
        "architecture: mefn\nnum_classes: 2\nbase_width: 4\ndepth: 3\nattention_heads: 2\n"
        "loss:\n  kl_anneal_epochs: 2\n  uncertainty_anneal_epochs: 2\n"
    )
    (tmp_path / "burst.yaml").write_text(
        "model: tiny.yaml\ndata:\n  val_fraction: 0.34\npreprocess:\n  spacing_mm: [8.0, 8.0, 8.0]\n"
        "patch_size_vox: [24, 24, 24]\nbatch_size: 1\nsteps_per_epoch: 4\nval_max_cases: 1\n"
        "sw_batch_size: 1\nthreads: 1\n"
    )
    out = tmp_path / "burst"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.gpu_burst", str(out),
         "--config", str(tmp_path / "burst.yaml"), "--n", "3", "--workers", "2", "--minutes", "1", "--small", "--device", "cpu"],
        capture_output=True, text=True, env=_without(tmp_path), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for step in ("[phantoms] 3/3", "[train] epoch 1/", "[calibrate]", "[done]"):
        assert step in proc.stdout, step
    card = json.loads((out / "model.json").read_text())
    assert card["burst"]["amp"] == "fp32" and card["burst"]["workers"] == 2
    assert 30 <= card["burst"]["train_seconds"] <= 120  # the one-minute budget, roughly kept
    assert "lesion_threshold" in card and card["calibration"]["cases"] == 1
    assert not any(p.suffix == ".gz" for p in out.rglob("*"))  # no NIfTI on the way

    from mefn.cli import main
    from mefn.data.phantom_layouts import write_phantoms

    case = write_phantoms(tmp_path / "case", 1, "nnunet", seed=77, small=True, n_lesions=1)[0]
    seg = tmp_path / "seg"
    assert main(["-q", "segment", str(case), "-o", str(seg), "--model", str(out)]) == 0
    report = json.loads(next(seg.glob("*_report.json")).read_text())
    assert report["settings"]["lesion_threshold"] == card["lesion_threshold"]
    assert next(seg.glob("*_mask.nii.gz")).is_file()
