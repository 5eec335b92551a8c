"""`mefn segment` end to end: every input form, output geometry, report, bad inputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support import BQML_PER_SUV, PET_TAGS, TINY_MODEL, make_tiny_weights, write_series

from mefn.cli import main
from mefn.io.sitk_bridge import from_sitk, write_volume
from mefn.io.volume import Volume
from mefn.io.writers import write_multichannel


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


def _volumes(seed: int = 0, flip: bool = True, oblique: bool = False) -> tuple[Volume, Volume]:
    """CT (HU) on a fine flipped grid and PET (SUV) on a coarse grid; a hot lesion in both."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(40, 10, (41, 38, 23)).astype(np.float32)
    ct[:4] = -1000
    pet = rng.gamma(4, 0.25, (21, 19, 13)).astype(np.float32)
    pet[8:13, 8:12, 5:9] = 12.0
    if oblique:
        a = np.deg2rad(12)
        direction = (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)
    elif flip:
        direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    else:
        direction = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    ct_origin = (40.0, 38.0, -10.0) if flip and not oblique else (-40.0, -38.0, -10.0)
    ct_vol = Volume.from_array(ct, (2.0, 2.0, 3.0), ct_origin, direction)
    pet_vol = Volume.from_array(pet, (4.0, 4.0, 5.0), (-42.0, -40.0, -12.0))
    return ct_vol, pet_vol


@pytest.fixture
def c_case(tmp_path) -> Path:
    """A CT/PET pair written as ``c_0000`` / ``c_0001`` in tmp_path; returns the CT path."""
    ct, pet = _volumes()
    write_volume(ct, tmp_path / "c_0000.nii.gz")
    write_volume(pet, tmp_path / "c_0001.nii.gz")
    return tmp_path / "c_0000.nii.gz"


def _run(*args: str) -> int:
    return main(["-q", *args])


def _check_outputs(out: Path, case_id: str, grid: Volume) -> dict:
    mask = sitk.ReadImage(str(out / f"{case_id}_mask.nii.gz"))
    unc = sitk.ReadImage(str(out / f"{case_id}_uncertainty.nii.gz"))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert unc.GetPixelID() == sitk.sitkFloat32
    for img in (mask, unc):
        assert img.GetSize() == grid.shape
        np.testing.assert_allclose(img.GetSpacing(), grid.spacing_mm, rtol=1e-6)
        np.testing.assert_allclose(img.GetOrigin(), grid.geometry.origin_mm, atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), grid.geometry.direction, atol=1e-6)
    u = sitk.GetArrayFromImage(unc)
    assert np.all((u >= 0) & (u <= 1)) and u.std() > 0
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}
    report = json.loads((out / f"{case_id}_report.json").read_text())
    assert report["case"] == case_id and report["software"].startswith("mefn ")
    assert report["settings"]["model_sha256"]
    return report


def test_nnunet_pair_and_report_figures(tmp_path, tiny_weights):
    ct, pet = _volumes()
    write_volume(ct, tmp_path / "case A_0000.nii.gz")
    write_volume(pet, tmp_path / "case A_0001.nii.gz")
    out = tmp_path / "out"
    assert (
        _run(
            "segment",
            str(tmp_path / "case A_0000.nii.gz"),
            "-o",
            str(out),
            "--model",
            str(tiny_weights),
            "--extra",
        )
        == 0
    )
    report = _check_outputs(out, "case A", ct)
    assert {"resample", "network", "to_output_grid", "lesion_table"} <= set(report["timings"])
    assert sum(report["timings"].values()) <= report["seconds"] + 0.02
    for extra in ("probabilities", "uncertainty_ct", "uncertainty_pet"):
        assert (out / f"case A_{extra}.nii.gz").is_file()
    prob = sitk.ReadImage(str(out / "case A_probabilities.nii.gz"))
    assert prob.GetDimension() == 4 and prob.GetSize()[3] == 2
    # report figures recomputed by hand from the written mask and the PET on the CT grid
    from mefn.io.geometry import resample_to
    from mefn.postprocess import lesion_table

    mask = from_sitk(sitk.ReadImage(str(out / "case A_mask.nii.gz")))
    unc = from_sitk(sitk.ReadImage(str(out / "case A_uncertainty.nii.gz")))
    suv = resample_to(pet, ct.geometry, interpolation="linear").array
    assert report["n_lesions"] == len(lesion_table(mask.array, suv, unc.array, ct.geometry).lesions)
    assert report["mtv_ml"] == pytest.approx((mask.array > 0).sum() * 2 * 2 * 3 / 1000)
    if report["lesions"]:
        first = report["lesions"][0]
        assert first["volume_ml"] == pytest.approx(first["voxels"] * 0.012)
        assert first["tlg"] == pytest.approx(first["suv_mean"] * first["volume_ml"])
        assert suv[mask.array > 0].max() == pytest.approx(
            max(les["suv_max"] for les in report["lesions"]), rel=1e-5
        )


def test_hecktor_pair_oblique(tmp_path, tiny_weights):
    ct, pet = _volumes(oblique=True)
    write_volume(ct, tmp_path / "CHUM-001__CT.nii.gz")
    write_volume(pet, tmp_path / "CHUM-001__PT.nii.gz")
    out = tmp_path / "out"
    assert (
        _run(
            "segment",
            str(tmp_path / "CHUM-001__PT.nii.gz"),
            "-o",
            str(out),
            "--model",
            str(tiny_weights),
        )
        == 0
    )
    _check_outputs(out, "CHUM-001", ct)


def test_four_d_nifti(tmp_path, tiny_weights):
    ct, pet = _volumes(flip=False)
    from mefn.io.geometry import resample_to

    pet_on_ct = resample_to(pet, ct.geometry, interpolation="linear")
    write_multichannel(np.stack([ct.array, pet_on_ct.array]), ct.geometry, tmp_path / "both.nii.gz")
    out = tmp_path / "out"
    args = ("segment", str(tmp_path / "both.nii.gz"), "-o", str(out), "--model", str(tiny_weights))
    assert _run(*args, "--tta", "x", "--tta-scales", "1,2") == 0  # 2 passes at 2 scales
    report = _check_outputs(out, "both", ct)
    assert report["settings"]["tta_axes"] == [0]
    assert report["settings"]["tta_scales"] == [1.0, 2.0]
    assert report["settings"]["lesion_threshold"] is None  # the tiny card has none: argmax
    # a low lesion threshold keeps every argmax voxel and adds those of lower probability
    assert _run(*args, "--tta", "x", "--lesion-threshold", "0.1", "-o", str(tmp_path / "o2")) == 0
    low = _check_outputs(tmp_path / "o2", "both", ct)
    assert low["settings"]["lesion_threshold"] == 0.1
    argmax = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "both_mask.nii.gz")))
    lower = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o2" / "both_mask.nii.gz")))
    assert (lower[argmax > 0] > 0).all() and (lower > 0).sum() > (argmax > 0).sum()
    # the PET check from the command line: no lesion of the tiny model reaches SUVmax 1000
    assert report["settings"]["pet_check"]["refine_fraction"] is None  # the tiny card: none
    args3 = (*args, "--tta", "none", "--lesion-threshold", "0.1", "-o", str(tmp_path / "o3"))
    assert _run(*args3, "--min-lesion-suv", "1000", "--pet-refine", "0.4") == 0
    checked = _check_outputs(tmp_path / "o3", "both", ct)
    assert checked["settings"]["pet_check"] == {
        "min_suv": 1000.0,
        "min_contrast": 0.0,
        "refine_fraction": 0.4,
        "refine_mm": 8.0,
    }
    assert checked["n_lesions"] == 0
    # ... while the same run without the SUV floor keeps lesions: the floor removed them
    assert _run(*args3[:-1], str(tmp_path / "o4"), "--pet-refine", "0.4") == 0
    assert _check_outputs(tmp_path / "o4", "both", ct)["n_lesions"] > 0


def test_autopet_study_outputs_on_the_pet_grid(tmp_path, tiny_weights):
    ct, pet = _volumes()
    from mefn.io.geometry import resample_to

    study = tmp_path / "PETCT_0af7ffe12a" / "08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698"
    study.mkdir(parents=True)
    write_volume(resample_to(ct, pet.geometry, "linear", -1000.0), study / "CTres.nii.gz")
    write_volume(pet, study / "SUV.nii.gz")
    out = tmp_path / "out"
    assert _run("segment", str(study), "-o", str(out), "--model", str(tiny_weights)) == 0
    (mask_path,) = out.glob("*_mask.nii.gz")
    case_id = mask_path.name[: -len("_mask.nii.gz")]
    _check_outputs(out, case_id, pet)


def _write_ct_series(folder: Path, ct, ct_direction, ct_tags: dict) -> None:
    """``ct`` (HU) as a DICOM series in ``folder``, rows and columns along ``ct_direction``."""
    write_series(
        folder,
        np.round(ct.array + 1024).astype(np.int16),
        "CT",
        spacing=ct.spacing_mm,
        origin=ct.geometry.origin_mm,
        row=np.asarray(ct_direction)[:, 0],
        col=np.asarray(ct_direction)[:, 1],
        intercept=-1024.0,
        tags=ct_tags,
    )


def _write_ct_pet_series(folder: Path, ct, pet, ct_direction, ct_tags: dict) -> None:
    """``ct`` (HU) and ``pet`` (SUV, stored as Bq/mL with slope 0.5) as DICOM series in
    ``folder/ct`` and ``folder/pet``; the CT's rows and columns along ``ct_direction``."""
    _write_ct_series(folder / "ct", ct, ct_direction, ct_tags)
    write_series(
        folder / "pet",
        np.round(pet.array * BQML_PER_SUV / 0.5).astype(np.int16),
        "PT",
        spacing=pet.spacing_mm,
        origin=pet.geometry.origin_mm,
        row=np.array([1.0, 0, 0]),
        col=np.array([0, 1.0, 0]),
        slopes=[0.5] * pet.shape[2],
        tags=dict(PET_TAGS),
    )


def test_dicom_folder_and_explicit_paths(tmp_path, tiny_weights):
    ct, pet = _volumes(flip=False)
    dicom = tmp_path / "study"
    _write_ct_pet_series(dicom, ct, pet, np.eye(3), {"SeriesDescription": "CT"})
    out = tmp_path / "out"
    assert _run("segment", str(dicom), "-o", str(out), "--model", str(tiny_weights)) == 0
    (mask_path,) = out.glob("*_mask.nii.gz")
    assert sitk.ReadImage(str(mask_path)).GetSize() == ct.shape
    write_volume(ct, tmp_path / "ct.nrrd")
    write_volume(pet, tmp_path / "pet.mha")
    out2 = tmp_path / "out2"
    assert (
        _run(
            "segment",
            "--ct",
            str(tmp_path / "ct.nrrd"),
            "--pet",
            str(tmp_path / "pet.mha"),
            "-o",
            str(out2),
            "--model",
            str(tiny_weights),
        )
        == 0
    )
    assert len(list(out2.glob("*_mask.nii.gz"))) == 1


def test_folder_of_cases_one_bad_case_does_not_stop_the_others(tmp_path, tiny_weights, capsys):
    images = tmp_path / "imagesTs"
    images.mkdir()
    for name in ("p1_a_x", "p2_b_y"):
        ct, pet = _volumes(seed=len(name))
        write_volume(ct, images / f"{name}_0000.nii.gz")
        write_volume(pet, images / f"{name}_0001.nii.gz")
    ct, pet = _volumes()
    write_volume(ct, images / "p3_bad_z_0000.nii.gz")
    far = Volume.from_array(pet.array, pet.spacing_mm, (0.0, 0.0, 5000.0))
    write_volume(far, images / "p3_bad_z_0001.nii.gz")  # does not overlap the CT
    out = tmp_path / "out"
    assert _run("segment", str(images), "-o", str(out), "--model", str(tiny_weights)) == 1
    assert sorted(p.name for p in out.glob("*_mask.nii.gz")) == [
        "p1_a_x_mask.nii.gz",
        "p2_b_y_mask.nii.gz",
    ]
    err = capsys.readouterr().err
    assert "p3_bad_z" in err and "do not overlap" in err


def test_torchrun_ranks_share_the_cases(tmp_path, tiny_weights, monkeypatch):
    """Under torchrun (RANK / WORLD_SIZE set) each process segments every WORLD_SIZE-th case
    and together they write each case exactly once, into one output folder."""
    images = tmp_path / "imagesTs"
    images.mkdir()
    names = ["r1_a_x", "r2_b_y", "r3_c_z"]
    for i, name in enumerate(names):
        ct, pet = _volumes(seed=i)
        write_volume(ct, images / f"{name}_0000.nii.gz")
        write_volume(pet, images / f"{name}_0001.nii.gz")
    out = tmp_path / "out"
    written = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        before = set(out.glob("*_mask.nii.gz")) if out.exists() else set()
        assert _run("segment", str(images), "-o", str(out), "--model", str(tiny_weights)) == 0
        written.append(sorted(p.name for p in set(out.glob("*_mask.nii.gz")) - before))
    assert written == [["r1_a_x_mask.nii.gz", "r3_c_z_mask.nii.gz"], ["r2_b_y_mask.nii.gz"]]


def test_existing_outputs_need_overwrite(tmp_path, c_case, tiny_weights, capsys):
    out = tmp_path / "out"
    args = [
        "segment",
        str(tmp_path / "c_0000.nii.gz"),
        "-o",
        str(out),
        "--model",
        str(tiny_weights),
    ]
    assert _run(*args) == 0
    before = (out / "c_mask.nii.gz").stat().st_mtime_ns
    assert _run(*args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "c_mask.nii.gz").stat().st_mtime_ns == before
    # refused before any weights or adapter load: a wrong adapter name is not reached
    assert _run(*args, "--adapter", "nosuch") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _run(*args, "--overwrite") == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_output(tmp_path, c_case, tiny_weights, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    assert (
        _run(
            "segment", str(tmp_path / "c_0000.nii.gz"), "-o", str(out), "--model", str(tiny_weights)
        )
        == 2
    )
    assert "not writable" in capsys.readouterr().err


def test_output_folder_that_is_a_file(tmp_path, c_case, tiny_weights, capsys):
    (tmp_path / "file").write_text("x")
    assert (
        _run(
            "segment",
            str(tmp_path / "c_0000.nii.gz"),
            "-o",
            str(tmp_path / "file"),
            "--model",
            str(tiny_weights),
        )
        == 2
    )
    assert "is a file" in capsys.readouterr().err


def test_corrupt_and_foreign_weights(tmp_path, c_case, tiny_weights, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 100)
    (tmp_path / "bad.json").write_text(tiny_weights.with_suffix(".json").read_text())
    out = tmp_path / "out"
    assert (
        _run("segment", str(tmp_path / "c_0000.nii.gz"), "-o", str(out), "--model", str(bad)) == 1
    )
    err = capsys.readouterr().err
    assert "not a valid safetensors weights file" in err and err.count("\n") == 1
    assert not out.exists()  # no output folder left behind
    # a valid safetensors file of another network
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"layer.weight": torch.zeros(3, 3)}, str(foreign))
    (tmp_path / "foreign.json").write_text(tiny_weights.with_suffix(".json").read_text())
    assert (
        _run("segment", str(tmp_path / "c_0000.nii.gz"), "-o", str(out), "--model", str(foreign))
        == 1
    )
    assert "do not fit the model" in capsys.readouterr().err
    (tmp_path / "nocard.safetensors").write_bytes(tiny_weights.read_bytes())
    assert (
        _run(
            "segment",
            str(tmp_path / "c_0000.nii.gz"),
            "-o",
            str(out),
            "--model",
            str(tmp_path / "nocard.safetensors"),
        )
        == 1
    )
    assert "no model card" in capsys.readouterr().err


def test_a_wrong_adapter_is_refused_before_any_output(tmp_path, c_case, tiny_weights, capsys):
    from mefn.adapters import AdapterConfig, inject_adapters, save_adapter
    from mefn.config import from_dict
    from mefn.model import ModelConfig, build_model

    net = build_model(from_dict(ModelConfig, TINY_MODEL))
    cfg = from_dict(AdapterConfig, {"type": "bottleneck"})
    inject_adapters(net, cfg)
    save_adapter(net, tmp_path / "adapter", base_model_hash="0" * 64)
    out = tmp_path / "out"
    args = [
        "segment",
        str(tmp_path / "c_0000.nii.gz"),
        "-o",
        str(out),
        "--model",
        str(tiny_weights),
    ]
    assert _run(*args, "--adapter", str(tmp_path / "adapter")) == 1
    err = capsys.readouterr().err
    assert "was trained on base model 0000000000000000" in err and err.count("\n") == 1
    assert not out.exists()  # no output folder left behind
    assert _run(*args, "--adapter", "nosuch") == 2
    err = capsys.readouterr().err
    assert "adapter 'nosuch' not found" in err and err.count("\n") == 1
    assert not out.exists()


def test_usage_errors(tmp_path, capsys):
    assert _run("segment") == 2
    assert "no input given" in capsys.readouterr().err
    assert _run("segment", "--ct", "x.nii.gz") == 2
    assert "--ct and --pet go together" in capsys.readouterr().err
    assert _run("segment", str(tmp_path / "missing_0000.nii.gz"), "-o", str(tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no output folder left behind
    assert _run("segment", str(tmp_path / "a_0000.nii.gz"), "--tta", "xq") == 2
    assert "mirroring expects axis letters among x, y and z" in capsys.readouterr().err
    assert _run("segment", str(tmp_path / "a_0000.nii.gz"), "--tta-scales", "2") == 2
    assert "1 among them (e.g. 1,1.5,2), found (2.0,)" in capsys.readouterr().err
    weights = make_tiny_weights(tmp_path)
    args = (str(tmp_path / "a_0000.nii.gz"), "--model", str(weights), "-o", str(tmp_path / "o"))
    write_volume(_volumes()[0], tmp_path / "a_0000.nii.gz")
    write_volume(_volumes()[1], tmp_path / "a_0001.nii.gz")
    assert _run("segment", *args, "--lesion-threshold", "1.5") == 2
    err = capsys.readouterr().err
    assert "probability threshold must be between 0 and 1" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    for flag, value, message in (
        ("--pet-refine", "1.2", "refine_fraction in (0, 1), found 1.2"),
        ("--pet-refine", "half", "--pet-refine expects a fraction in (0, 1)"),
        ("--min-lesion-contrast", "-1", "min_contrast >= 0, found -1.0"),
        ("--pet-refine-mm", "nan", "refine_mm >= 0, found nan"),
        ("--min-confidence", "1", "min_confidence must be a probability in [0, 1), found 1.0"),
        ("--small-lesion-threshold", "1.2", "small_lesion_threshold must be a probability"),
        ("--small-lesion-ml", "-1", "small_lesion_ml must be a number >= 0, found -1.0"),
        ("--small-lesion-threshold", "0.8", "which is 0 (no card value); give small_lesion_ml"),
    ):
        assert _run("segment", *args, flag, value) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "o").exists()
    assert _run("segment", "--list-models") == 0


def test_help_groups_the_flags_by_concern(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    sections: dict[str, str] = {}  # section heading -> its text, from the help's blank lines
    for block in text.split("\n\n"):
        head, _, body = block.partition("\n")
        if head.endswith(":") and not head.startswith(" "):
            sections[head[:-1]] = body
    expected = {
        "inputs and outputs": ("INPUT", "--ct", "--pet-series", "--output", "--dicom"),
        "model": ("--model", "--adapter", "--device", "--tta", "--list-models"),
        "post-processing": (
            "--review-threshold",
            "--lesion-threshold",
            "--pet-refine-mm",
            "--min-confidence",
        ),
        "hot spots (PET uptake the mask leaves out)": ("--hot-spot-suv", "--no-hot-spots"),
        "performance": ("--sw-batch-size", "--overlap", "--threads"),
    }
    assert list(sections) == ["options", *expected]
    for heading, flags in expected.items():
        for flag in flags:
            assert f"  {flag}" in sections[heading] or f", {flag}" in sections[heading], flag
    assert "--hot-spot-suv" not in sections["post-processing"]


def test_dropped_lesions_are_summed_up_under_the_table(capsys):
    from mefn.cli.segment import _print_dropped

    _print_dropped({"settings": {"min_confidence": 0.2}, "dropped_lesions": []}, sys.stdout)
    assert capsys.readouterr().out == ""
    dropped = [{"volume_ml": 1.25}, {"volume_ml": 0.5}]
    _print_dropped({"settings": {"min_confidence": 0.2}, "dropped_lesions": dropped}, sys.stdout)
    out = capsys.readouterr().out
    assert "2 lesion(s) of 1.75 mL in all removed for a confidence below 20%" in out
    assert "--min-confidence 0 keeps them" in out


# --- DICOM outputs (--dicom) -----------------------------------------------------------------


def _dicom_study(folder: Path) -> list:
    """A DICOM CT + PT study (oblique CT, its own frame of reference) under ``folder``;
    returns the CT's datasets (headers) in slice order."""
    import pydicom
    from pydicom.uid import generate_uid

    ct, pet = _volumes(oblique=True)
    direction = ct.geometry.direction_matrix
    ct_tags = {"SeriesDescription": "CT", "FrameOfReferenceUID": generate_uid()}
    _write_ct_pet_series(folder, ct, pet, direction, ct_tags)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in (folder / "ct").glob("*.dcm")]
    normal = direction[:, 2]
    return sorted(datasets, key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))


def test_dicom_outputs_match_the_nifti_outputs(tmp_path, tiny_weights, capsys):
    import highdicom as hd
    import pydicom

    ct_datasets = _dicom_study(tmp_path / "study")
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "study"), "-o", str(out), "--model", str(tiny_weights)]
    # a low threshold so the untrained tiny model marks some voxels, not all
    assert _run(*args, "--dicom", "--lesion-threshold", "0.45") == 0
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "study_mask.nii.gz")))  # (k, j, i)
    unc = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "study_uncertainty.nii.gz")))
    assert 0 < mask.sum() < mask.size

    seg = hd.seg.segread(out / "study_seg.dcm")
    uids = [d.SOPInstanceUID for d in ct_datasets]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(frames, mask)
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "lesion"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert "tiny" in algorithm.AlgorithmParameters
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_datasets[0].SeriesInstanceUID

    pm = pydicom.dcmread(out / "study_uncertainty_pm.dcm")
    index = {uid: k for k, uid in enumerate(uids)}
    back = np.full(unc.shape, np.nan, dtype=np.float32)
    for n, frame in enumerate(pm.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        back[index[source]] = pm.pixel_array[n]
    np.testing.assert_array_equal(back, unc)
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_datasets[0].SeriesInstanceUID
    hd.pm.ParametricMap.from_dataset(pm)  # highdicom reads it back

    # the DICOM files count as outputs: without --overwrite an existing SEG stops the run
    for name in ("study_mask.nii.gz", "study_uncertainty.nii.gz", "study_report.json"):
        (out / name).unlink()
    before = (out / "study_seg.dcm").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(*args, "--dicom") == 2
    assert "study_seg.dcm already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "study_seg.dcm").stat().st_mtime_ns == before
    assert _run(*args, "--dicom", "--overwrite") == 0
    assert (out / "study_mask.nii.gz").exists()


def test_dicom_outputs_refused_for_a_nifti_input(tmp_path, c_case, tiny_weights, capsys):
    out = tmp_path / "out"
    args = ["segment", str(c_case), "-o", str(out), "--model", str(tiny_weights), "--dicom"]
    assert _run(*args) == 2
    err = capsys.readouterr().err
    assert "DICOM outputs need a DICOM CT series as input" in err and "c_0000.nii.gz" in err
    assert err.count("\n") == 1
    assert not out.exists()  # nothing written, not even the folder


# --- the right PET series (AC over NAC, --pet-series); a PET that cannot be one ---------------


def _ac_nac_study(folder: Path, nac: list[str]) -> None:
    """A DICOM study: CT, an AC PET (rescale slope 0.5) and a second PET of the same size
    whose CorrectedImage is ``nac`` (slope 0.25, other values): the report's rescale slopes
    and series description tell which one was segmented."""
    ct, pet = _volumes(flip=False)
    axes = {"row": np.array([1.0, 0, 0]), "col": np.array([0, 1.0, 0])}
    _write_ct_series(folder / "ct", ct, np.eye(3), {"SeriesDescription": "CT"})
    for name, slope, suv, corrected in (
        ("PET AC", 0.5, pet.array, ["DECY", "ATTN"]),
        ("PET NAC", 0.25, np.full(pet.shape, 0.8), nac),
    ):
        write_series(
            folder / name.replace(" ", "_"),
            np.round(suv * BQML_PER_SUV / slope).astype(np.int16),
            "PT",
            spacing=pet.spacing_mm,
            origin=pet.geometry.origin_mm,
            slopes=[slope] * pet.shape[2],
            tags={**PET_TAGS, "SeriesDescription": name, "CorrectedImage": corrected},
            **axes,
        )


def test_dicom_study_with_ac_and_nac_pet_segments_the_ac_one(tmp_path, tiny_weights, capsys):
    study = tmp_path / "study"
    _ac_nac_study(study, nac=["DECY"])
    args = ["segment", str(study), "--model", str(tiny_weights), "-o"]
    assert _run(*args, str(tmp_path / "out")) == 0
    pet = json.loads((tmp_path / "out" / "study_report.json").read_text())["input"]["pet"]
    assert (pet["series_description"], pet["rescale_slopes"]) == ("PET AC", [0.5])
    # --pet-series takes the other one, by its description
    assert _run(*args, str(tmp_path / "nac"), "--pet-series", "pet nac") == 0
    pet = json.loads((tmp_path / "nac" / "study_report.json").read_text())["input"]["pet"]
    assert (pet["series_description"], pet["rescale_slopes"]) == ("PET NAC", [0.25])
    capsys.readouterr()
    assert _run(*args, str(tmp_path / "none"), "--pet-series", "PET MAC") == 2
    err = capsys.readouterr().err
    assert "no PET series under" in err and "'PET MAC'; its PET series are:" in err
    assert err.count("\n") == 1 and not (tmp_path / "none").exists()


def test_two_ac_pet_series_of_one_size_need_pet_series(tmp_path, tiny_weights, capsys):
    study = tmp_path / "study"
    _ac_nac_study(study, nac=["ATTN"])  # both attenuation-corrected: no rule can choose
    out = tmp_path / "out"
    assert _run("segment", str(study), "-o", str(out), "--model", str(tiny_weights)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert "holds 2 PET series of equal size and attenuation correction ('PET AC' " in err
    assert "; 'PET NAC' " in err and "(13 files, AC)" in err
    assert err.rstrip().endswith(
        "choose one with --pet-series followed by its SeriesInstanceUID or SeriesDescription"
    )


def test_an_all_zero_pet_is_refused_and_nothing_is_written(tmp_path, tiny_weights, capsys):
    ct, pet = _volumes()
    write_volume(ct, tmp_path / "z_0000.nii.gz")
    write_volume(pet.with_array(np.zeros_like(pet.array)), tmp_path / "z_0001.nii.gz")
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "z_0000.nii.gz"), "--model", str(tiny_weights)]
    assert _run(*args, "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mefn segment: error: PET has no voxel above 0 (values 0 to 0)")
    assert err.count("\n") == 1
    assert not out.exists()  # no mask, no report, no folder
    out.mkdir()  # an existing output folder stays empty
    assert _run(*args, "-o", str(out)) == 2
    assert list(out.iterdir()) == []


def test_a_pet_outside_the_body_fails_only_its_case(tmp_path, tiny_weights, capsys):
    images = tmp_path / "imagesTs"
    images.mkdir()
    ct, pet = _volumes()
    write_volume(ct, images / "good_0000.nii.gz")
    write_volume(pet, images / "good_0001.nii.gz")
    write_volume(ct.with_array(np.full_like(ct.array, -1000.0)), images / "air_0000.nii.gz")
    write_volume(pet, images / "air_0001.nii.gz")  # uptake, but the CT shows only air
    out = tmp_path / "out"
    assert _run("segment", str(images), "-o", str(out), "--model", str(tiny_weights)) == 1
    assert (out / "good_mask.nii.gz").exists() and (out / "good_report.json").exists()
    assert not any(out.glob("air_*"))
    err = capsys.readouterr().err
    assert "failed: air: PET has no voxel above 0 inside the body seen on the CT" in err
