"""`mefn segment --adapter sts` on a real sarcoma study (skips without ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mefn.cli import main
from mefn.registry import list_adapters


def test_the_bundled_sarcoma_adapter_outlines_sts_001(shared_data: Path, tmp_path: Path, capsys):
    assert "sts" in list_adapters()
    assert main(["segment", "--list-models"]) == 0
    assert "sts (adapter: --adapter sts)" in capsys.readouterr().out
    case = shared_data / "sts" / "STS_001"
    out = tmp_path / "out"
    args = ["-q", "segment", "--ct", str(case / "CT" / "image.nii.gz")]
    args += ["--pet", str(case / "PET" / "image.nii.gz"), "--adapter", "sts", "-o", str(out)]
    assert main(args) == 0
    (mask_path,) = out.glob("*_mask.nii.gz")
    reference = sitk.ReadImage(str(case / "CT" / "mask.nii.gz"))
    mask = sitk.ReadImage(str(mask_path))
    assert mask.GetSize() == reference.GetSize()  # written on the CT grid
    assert np.allclose(mask.GetOrigin(), reference.GetOrigin())
    predicted = sitk.GetArrayFromImage(mask) > 0
    truth = sitk.GetArrayFromImage(reference) > 0
    dice = 2.0 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    # measured 0.835 (200-step Compacter, one pass on the model grid, threshold 0.4, each
    # lesion redrawn on the PET at 20 % between background and SUVmax within 24 mm, then its
    # convex hull: its card's settings; 0.778 with test-time scales 1-3 and the hull alone,
    # 0.562 on the model grid at the argmax); issue 19 asks 0.80
    assert dice >= 0.80, f"Dice {dice:.3f} against the contour"
