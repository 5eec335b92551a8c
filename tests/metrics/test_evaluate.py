"""``evaluate_autopet`` per case and pooled: calibration sources, probability maps, pooling."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mefn.errors import GeometryError
from mefn.metrics.calibration import calibration_counts
from mefn.metrics.evaluate import CasePaths, evaluate_autopet

SHAPE = (11, 13, 9)
# RAS affine: rotated about z, anisotropic spacing, off-centre origin
_C, _S = np.cos(0.4), np.sin(0.4)
AFFINE = np.array(
    [
        [-2.0 * _C, 1.5 * _S, 0.0, 30.0],
        [-2.0 * _S, -1.5 * _C, 0.0, -12.0],
        [0.0, 0.0, 3.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _nifti(path, array):
    nib.Nifti1Image(array, AFFINE).to_filename(path)
    return path


def _arrays(seed: int):
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:6, 3:8, 2:6] = 1
    pred = np.zeros(SHAPE, np.uint8)
    pred[3:6, 3:9, 2:6] = 1
    unc = (rng.random(SHAPE) * 0.2).astype(np.float32)
    unc[pred != ref] += 0.6
    return ref, pred, unc


def _case(tmp_path, name, seed, probabilities=None) -> CasePaths:
    ref, pred, unc = _arrays(seed)
    prob_path = None
    if probabilities is not None:
        prob_path = _nifti(tmp_path / f"{name}_probabilities.nii.gz", probabilities)
    return CasePaths(
        name,
        _nifti(tmp_path / f"{name}.nii.gz", ref),
        _nifti(tmp_path / f"{name}_mask.nii.gz", pred),
        _nifti(tmp_path / f"{name}_uncertainty.nii.gz", unc),
        prob_path,
    )


def _one_hot(labels: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 2) probabilities that are certain of ``labels``."""
    return np.stack([labels == 0, labels == 1], axis=-1).astype(np.float32)


def test_calibration_pools_cases_with_mixed_confidence_sources(tmp_path):
    ref_a, pred_a, _ = _arrays(1)
    # probabilities certain of the prediction: confidence 1 everywhere, wrong where pred != ref
    a = _case(tmp_path, "a", 1, probabilities=_one_hot(pred_a))
    b = _case(tmp_path, "b", 2)
    out = tmp_path / "out"
    out.mkdir()
    summary = evaluate_autopet([a, b], out, year=2024, plots=False)
    details = json.loads((out / "per_case_details.json").read_text())
    sources = [d["calibration"]["confidence_source"] for d in details]
    assert sources == ["probabilities", "1 - u"]
    cal = summary["calibration"]
    assert cal["confidence_source"] == "mixed"
    assert cal["n_voxels"] == 2 * int(np.prod(SHAPE))
    errors = [d["calibration"]["n_error_voxels"] for d in details]
    assert errors[0] == int((ref_a != pred_a).sum()) > 0
    assert cal["n_error_voxels"] == sum(errors)
    # Brier of certain probabilities: 2 per wrong voxel, 0 elsewhere
    assert details[0]["calibration"]["brier"] == pytest.approx(2.0 * errors[0] / ref_a.size)
    want = (details[0]["calibration"]["brier"] + details[1]["calibration"]["brier"]) / 2
    assert cal["brier"] == pytest.approx(want)
    assert cal["risk_coverage"]["coverage"][0] == 1.0
    assert sorted(p.name for p in out.iterdir()) == [
        "per_case.csv",
        "per_case_details.json",
        "summary.json",
    ]


def test_case_calibration_is_that_of_the_maps_read(tmp_path):
    ref, pred, unc = _arrays(3)
    c = _case(tmp_path, "c", 3)
    out = tmp_path / "out"
    out.mkdir()
    summary = evaluate_autopet([c], out, plots=True)
    want = calibration_counts(ref, pred, unc, n_classes=2).summary()
    assert summary["calibration"]["ece"] == pytest.approx(want["ece"])
    assert summary["calibration"]["confidence_source"] == "1 - u"
    assert {"reliability.png", "risk_coverage.png", "per_case_dice.png"} <= {
        p.name for p in out.iterdir()
    }


def test_no_calibration_unless_every_case_has_a_map(tmp_path):
    a = _case(tmp_path, "a", 4)
    b = _case(tmp_path, "b", 5)
    b = CasePaths(b.case, b.reference, b.prediction)
    out = tmp_path / "out"
    out.mkdir()
    summary = evaluate_autopet([a, b], out, plots=False)
    assert "calibration" not in summary
    details = json.loads((out / "per_case_details.json").read_text())
    assert [d["case"] for d in details] == ["a", "b"]
    assert all("calibration" not in d for d in details)
    assert summary["lesion_detection"]["n_reference"] == 2


def test_probability_map_off_the_grid_names_the_case(tmp_path):
    bad = np.zeros((*SHAPE[:2], SHAPE[2] - 1, 2), np.float32)
    c = _case(tmp_path, "p7", 6, probabilities=bad)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GeometryError, match=r"case p7: probability map .* must be 4D"):
        evaluate_autopet([c], out, plots=False)
