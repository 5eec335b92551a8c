"""``mefn evaluate`` end to end on small synthetic folders (odd sizes, rotated grids)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mefn.cli import main
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Volume

SHAPE = (13, 14, 15)
SPACING = (2.0, 2.5, 3.0)
C, S = math.cos(0.2), math.sin(0.2)
DIRECTION = (C, 0.0, -S, 0.0, 1.0, 0.0, S, 0.0, C)
VOXVOL_ML = float(np.float64(np.float32(2.0) * np.float32(2.5) * np.float32(3.0)) / 1000.0)


def _write(path, array, shape_origin=(5.0, -7.0, 11.0), spacing=SPACING):
    vol = Volume.from_array(array, spacing_mm=spacing, origin_mm=shape_origin, direction=DIRECTION)
    write_volume(vol, path, dtype=array.dtype)


def _autopet_folders(tmp_path, with_maps=True):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    rng = np.random.default_rng(1)
    for case in ("c1", "c2", "neg"):
        ref = np.zeros(SHAPE, np.uint8)
        pred = np.zeros(SHAPE, np.uint8)
        if case != "neg":
            ref[2:6, 3:7, 4:8] = 1  # 64 voxels
            ref[10, 10, 10] = 1  # a missed lesion
        pred[3:6, 3:7, 4:8] = 1  # 48 voxels, all inside the first lesion
        pred[0, 12, 0] = 1  # a false positive
        _write(ref_dir / f"{case}.nii.gz", ref)
        _write(pred_dir / f"{case}_mask.nii.gz", pred)
        if with_maps:
            u = rng.random(SHAPE).astype(np.float32) * 0.2
            u[pred != ref] += 0.7
            _write(pred_dir / f"{case}_uncertainty.nii.gz", u)
    return ref_dir, pred_dir


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_autopet_outputs(tmp_path, capsys):
    ref_dir, pred_dir = _autopet_folders(tmp_path)
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "autopet",
            str(ref_dir),
            str(pred_dir),
            "-o",
            str(out),
            "--year",
            "2024",
            "--uncertainty-dir",
            str(pred_dir),
        ]
    )
    assert rc == 0
    rows = _read_csv(out / "per_case.csv")
    assert rows[0] == ["case", "dice", "fpv_ml", "fnv_ml", "fp_voxels", "fn_voxels"]
    by_case = {r[0]: r for r in rows[1:]}
    assert sorted(by_case) == ["c1", "c2", "neg"]
    dice = 2 * 48 / (65 + 49)
    assert float(by_case["c1"][1]) == dice
    assert float(by_case["c1"][2]) == pytest.approx(1 * VOXVOL_ML, rel=1e-12)
    assert float(by_case["c1"][3]) == pytest.approx(1 * VOXVOL_ML, rel=1e-12)
    assert by_case["c1"][4:] == ["1", "1"]
    # 2024 rules: a negative case has no Dice and no FNV (empty fields)
    assert by_case["neg"][1] == "" and by_case["neg"][3] == "" and by_case["neg"][5] == ""
    assert float(by_case["neg"][2]) == pytest.approx(49 * VOXVOL_ML, rel=1e-12)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["year"] == 2024 and "2024" in summary["rules"]
    assert summary["dice_mean"] == pytest.approx(dice, abs=1e-15)
    assert summary["fpv_ml_mean"] == pytest.approx((1 + 1 + 49) * VOXVOL_ML / 3)
    assert summary["fnv_ml_mean"] == pytest.approx(VOXVOL_ML)
    cal = summary["calibration"]
    assert cal["confidence_source"] == "1 - u"
    # errors all have u >= 0.7 and correct voxels u < 0.2: a perfect detector and overlap
    assert cal["auroc_uncertainty_error"] == 1.0 and cal["ueo"] == 1.0
    assert 0.19 <= cal["ueo_threshold"] < 0.7
    assert cal["risk_coverage"]["dice"][-1] == 1.0
    for png in ("reliability.png", "risk_coverage.png", "per_case_dice.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "AutoPET 2024" in capsys.readouterr().err


def test_autopet_2022_without_maps(tmp_path):
    ref_dir, pred_dir = _autopet_folders(tmp_path, with_maps=False)
    out = tmp_path / "out"
    assert (
        main(
            ["-q", "evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(out), "--no-plots"]
        )
        == 0
    )
    rows = {r[0]: r for r in _read_csv(out / "per_case.csv")[1:]}
    assert rows["neg"][1:] == ["0.0", repr(49 * VOXVOL_ML), "0.0", "49", "0"]
    summary = json.loads((out / "summary.json").read_text())
    assert "calibration" not in summary and not list(out.glob("*.png"))


def test_missing_and_extra_cases(tmp_path, capsys):
    ref_dir, pred_dir = _autopet_folders(tmp_path, with_maps=False)
    (pred_dir / "c2_mask.nii.gz").rename(pred_dir / "c9_mask.nii.gz")
    rc = main(["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "case c2: no prediction" in capsys.readouterr().err
    (ref_dir / "c2.nii.gz").unlink()
    rc = main(["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "case c9_mask: prediction c9_mask.nii.gz has no reference" in capsys.readouterr().err


def test_mismatched_grid_names_the_case(tmp_path, capsys):
    ref_dir, pred_dir = _autopet_folders(tmp_path, with_maps=False)
    _write(pred_dir / "c1_mask.nii.gz", np.zeros((13, 14, 16), np.uint8))
    assert (
        main(["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")]) == 1
    )
    assert "case c1: prediction shape (13, 14, 16) differs" in capsys.readouterr().err
    _write(pred_dir / "c1_mask.nii.gz", np.zeros(SHAPE, np.uint8), shape_origin=(0.0, 0.0, 0.0))
    assert (
        main(["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")]) == 1
    )
    assert "case c1: prediction grid" in capsys.readouterr().err


def test_missing_uncertainty_map(tmp_path, capsys):
    ref_dir, pred_dir = _autopet_folders(tmp_path)
    (pred_dir / "c2_uncertainty.nii.gz").unlink()
    rc = main(
        [
            "evaluate",
            "autopet",
            str(ref_dir),
            str(pred_dir),
            "-o",
            str(tmp_path / "o"),
            "--uncertainty-dir",
            str(pred_dir),
        ]
    )
    assert rc == 2 and "case c2: no uncertainty map" in capsys.readouterr().err


def _hecktor_folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "labelsTr", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for case, n in (("CHUM-001", 1), ("CHUP-002", 2)):
        ref = np.zeros(SHAPE, np.uint8)
        pred = np.zeros(SHAPE, np.uint8)
        ref[2:4, 2:4, 2:4] = 1
        pred[2:4, 2:4, 2 : 2 + n] = 1
        ref[8, 8, 8:10] = 2
        pred[8, 8, 9:11] = 2
        _write(ref_dir / f"{case}.nii.gz", ref)
        _write(pred_dir / f"{case}.nii.gz", pred)
    return ref_dir, pred_dir


def test_hecktor_outputs(tmp_path):
    ref_dir, pred_dir = _hecktor_folders(tmp_path)
    out = tmp_path / "out"
    assert main(["-q", "evaluate", "hecktor", str(ref_dir), str(pred_dir), "-o", str(out)]) == 0
    rows = _read_csv(out / "per_case.csv")
    assert rows[0] == [
        "case",
        "dice_gtvp",
        "dice_gtvn",
        "tp_gtvp",
        "tp_gtvn",
        "vol_sum_gtvp",
        "vol_sum_gtvn",
    ]
    assert float(rows[1][1]) == pytest.approx(2 * 4 / 12) and float(rows[2][1]) == pytest.approx(
        2 * 8 / 16
    )
    s = json.loads((out / "summary.json").read_text())
    # GTVp: TP 4 + 8 voxels over vol_sum 12 + 16; GTVn: TP 1 + 1 over 4 + 4
    assert s["dscagg_gtvp"] == pytest.approx(2 * 12 / 28, abs=1e-12)
    assert s["dscagg_gtvn"] == pytest.approx(0.5, abs=1e-12)
    assert s["dscagg_mean"] == pytest.approx((24 / 28 + 0.5) / 2, abs=1e-12)


def test_hecktor_label_and_spacing_errors(tmp_path, capsys):
    ref_dir, pred_dir = _hecktor_folders(tmp_path)
    bad = np.zeros(SHAPE, np.uint8)
    bad[1, 1, 1] = 4
    _write(pred_dir / "CHUP-002.nii.gz", bad)
    assert (
        main(["evaluate", "hecktor", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")]) == 2
    )
    assert "case CHUP-002: prediction labels must be" in capsys.readouterr().err
    _write(pred_dir / "CHUP-002.nii.gz", np.zeros(SHAPE, np.uint8), spacing=(2.0, 2.5, 3.1))
    assert (
        main(["evaluate", "hecktor", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")]) == 1
    )
    assert "case CHUP-002: prediction spacing" in capsys.readouterr().err


def test_evaluate_without_challenge_prints_help(capsys):
    assert main(["evaluate"]) == 2
    assert "autopet" in capsys.readouterr().err


# --- DICOM references (RTSTRUCT, SEG) --------------------------------------------------------


def _grid():
    from mefn.io.volume import Geometry

    return Geometry(SHAPE, SPACING, (5.0, -7.0, 11.0), DIRECTION)


def _reference_contours():
    """Contours of the _autopet_folders reference: the 4 x 4 x 4 box and the lone voxel."""
    from dicom_refs_support import square

    grid = _grid()
    box = [grid.index_to_world(square((1.5, 2.5), (5.5, 6.5), k)) for k in range(4, 8)]
    lone = grid.index_to_world(square((9.5, 9.5), (10.5, 10.5), 10))
    return box + [lone]


def test_autopet_with_rtstruct_and_seg_references(tmp_path):
    from dicom_refs_support import write_ct_series, write_rtstruct, write_seg

    ref_dir, pred_dir = _autopet_folders(tmp_path, with_maps=False)
    (ref_dir / "c1.nii.gz").unlink()
    write_rtstruct(ref_dir / "c1.dcm", {"GTV": _reference_contours()})
    # c2's reference as a SEG written on a CT series with the grid of the prediction
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:6, 3:7, 4:8] = 1
    ref[10, 10, 10] = 1
    cols = np.asarray(DIRECTION).reshape(3, 3)
    series = write_ct_series(
        tmp_path / "ct",
        SHAPE,
        spacing=SPACING,
        origin=(5.0, -7.0, 11.0),
        row=cols[:, 0],
        col=cols[:, 1],
    )
    (ref_dir / "c2.nii.gz").unlink()
    write_seg(ref_dir / "c2.dcm", series, ref)
    out = tmp_path / "out"
    assert main(["-q", "evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(out)]) == 0
    rows = {r[0]: r for r in _read_csv(out / "per_case.csv")[1:]}
    for case in ("c1", "c2"):
        assert float(rows[case][1]) == 2 * 48 / (65 + 49)
        assert float(rows[case][2]) == pytest.approx(VOXVOL_ML, rel=1e-6)
        assert rows[case][4:] == ["1", "1"]


def test_dicom_reference_errors(tmp_path, capsys):
    from dicom_refs_support import write_rtstruct

    ref_dir, pred_dir = _autopet_folders(tmp_path, with_maps=False)
    args = ["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "o")]
    write_rtstruct(ref_dir / "c1.dcm", {"GTV": _reference_contours()})
    assert main(args) == 2
    assert "case c1: both c1.nii.gz and c1.dcm" in capsys.readouterr().err
    (ref_dir / "c1.nii.gz").unlink()
    lung = [_grid().index_to_world(np.array([[0.5, 0.5, 1], [3.5, 0.5, 1], [3.5, 3.5, 1]]))]
    write_rtstruct(ref_dir / "c1.dcm", {"GTV": _reference_contours(), "Lung": lung})
    assert main(args) == 2
    assert "holds 2 ROIs ('GTV', 'Lung'); choose one by name" in capsys.readouterr().err
    assert main(["-q", *args, "--reference-roi", "GTV"]) == 0
    row = {r[0]: r for r in _read_csv(tmp_path / "o" / "per_case.csv")[1:]}["c1"]
    assert float(row[1]) == 2 * 48 / (65 + 49)


def test_hecktor_with_rtstruct_reference(tmp_path):
    from dicom_refs_support import square, write_rtstruct

    ref_dir, pred_dir = _hecktor_folders(tmp_path)
    (ref_dir / "CHUM-001.nii.gz").unlink()
    grid = _grid()
    gtvp = [grid.index_to_world(square((1.5, 1.5), (3.5, 3.5), k)) for k in (2, 3)]
    write_rtstruct(ref_dir / "CHUM-001.dcm", {"GTVp": gtvp})
    out = tmp_path / "out"
    assert main(["-q", "evaluate", "hecktor", str(ref_dir), str(pred_dir), "-o", str(out)]) == 0
    rows = {r[0]: r for r in _read_csv(out / "per_case.csv")[1:]}
    assert float(rows["CHUM-001"][1]) == pytest.approx(2 * 4 / 12)
    assert float(rows["CHUM-001"][2]) == 0.0  # the RTSTRUCT has no GTVn: label 2 predicted
    assert float(rows["CHUP-002"][1]) == pytest.approx(2 * 8 / 16)
    # the rasterised reference went to a temporary folder, not beside the references
    assert sorted(p.name for p in ref_dir.iterdir()) == ["CHUM-001.dcm", "CHUP-002.nii.gz"]


def test_autopet_trust_from_the_reports_confidences(tmp_path):
    """With a report per case (as mefn segment writes it), each predicted lesion's confidence
    is scored against whether it touches the reference: AUROC, ECE, lesions.csv, plots."""
    ref_dir, pred_dir = _autopet_folders(tmp_path)
    for case in ("c1", "c2", "neg"):
        # the mask's lesions by decreasing size: the 48-voxel one (true except in "neg"),
        # then the one-voxel false positive
        lesions = [
            {"lesion_id": 1, "voxels": 48, "confidence": 0.3 if case == "neg" else 0.9},
            {"lesion_id": 2, "voxels": 1, "confidence": 0.2},
        ]
        report = {
            "software": "mefn test",
            "case": case,
            "uncertainty": {"map": "stated"},
            "lesions": lesions,
        }
        (pred_dir / f"{case}_report.json").write_text(json.dumps(report))
    out = tmp_path / "out"
    argv = ["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(out)]
    assert main([*argv, "--uncertainty-dir", str(pred_dir)]) == 0
    trust = json.loads((out / "summary.json").read_text())["trust"]
    assert trust["uncertainty_map"] == "stated"
    scored = trust["lesions"]
    assert scored["n_lesions"] == 6 and scored["n_true"] == 2 and scored["auroc"] == 1.0
    # bins: 0.2 x3 (all false), 0.3 (false), 0.9 x2 (true)
    assert scored["ece"] == pytest.approx((3 * 0.2 + 0.3 + 2 * 0.1) / 6)
    rows = _read_csv(out / "lesions.csv")
    assert rows[0] == ["case", "lesion_id", "confidence", "true"] and len(rows) == 7
    assert trust["voxels_near_lesions"]["n"] > 0
    for png in ("lesion_reliability.png", "lesion_risk_coverage.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert (out / "voxel_reliability_near_lesions.png").is_file()
    # a report whose lesions do not match the mask is not scored (and said so)
    report = {"software": "mefn test", "case": "c1", "lesions": lesions[:1]}
    (pred_dir / "c1_report.json").write_text(json.dumps(report))
    out2 = tmp_path / "out2"
    argv = ["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(out2)]
    assert main([*argv, "--uncertainty-dir", str(pred_dir)]) == 0
    assert "lesions" not in json.loads((out2 / "summary.json").read_text())["trust"]
    # a report that is not a mefn report is an error naming it, not a silent skip
    (pred_dir / "c1_report.json").write_text("[1, 2]")
    argv = ["evaluate", "autopet", str(ref_dir), str(pred_dir), "-o", str(tmp_path / "out3")]
    assert main([*argv, "--uncertainty-dir", str(pred_dir)]) == 2
