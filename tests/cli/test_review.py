"""``mefn review``: figure written from segment outputs, and its one-line errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mefn.cli import main
from mefn.cli.review import parse_slice
from mefn.errors import InputError
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume

SHAPE = (33, 34, 35)
GEO = Geometry(
    SHAPE,
    spacing_mm=(2.0, 1.5, 3.0),
    origin_mm=(10.0, -5.0, 7.0),
    direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1),
)


def make_volumes() -> dict[str, Volume]:
    rng = np.random.default_rng(11)
    ct = rng.normal(40.0, 30.0, SHAPE).astype(np.float32)
    suv = rng.gamma(2.0, 0.3, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:15, 12:18, 10:16] = 1
    mask[25:28, 5:8, 28:31] = 1
    suv[mask > 0] += 6.0
    unc = rng.uniform(0.0, 0.2, SHAPE).astype(np.float32)
    unc[25:28, 5:8, 28:31] = 0.8
    ref = np.zeros(SHAPE, np.uint8)
    ref[11:16, 12:18, 10:16] = 1
    arrays = {
        "ct": ct,
        "pet": suv,
        "mask": mask,
        "uncertainty": unc,
        "uncertainty_ct": rng.uniform(0, 1, SHAPE).astype(np.float32),
        "uncertainty_pet": rng.uniform(0, 1, SHAPE).astype(np.float32),
        "reference": ref,
    }
    return {k: Volume(v, GEO) for k, v in arrays.items()}


@pytest.fixture
def fake_io(tmp_path, monkeypatch):
    """Outputs and a case on disk (empty files), read through stand-in io modules.

    The stand-ins return the volumes built above by file name, so these tests check the
    command's own logic whatever state the real readers are in.
    """
    vols = make_volumes()
    outdir = tmp_path / "out"
    outdir.mkdir()
    registry: dict[str, Volume] = {}
    for key in ("mask", "uncertainty", "uncertainty_ct", "uncertainty_pet"):
        path = outdir / f"p001_{key}.nii.gz"
        path.touch()
        registry[path.name] = vols[key]
    (outdir / "p001_report.json").write_text('{"review_threshold": 0.5}')
    ref_path = tmp_path / "p001_reference.nii.gz"
    ref_path.touch()
    registry[ref_path.name] = vols["reference"]
    case_path = tmp_path / "p001_0000.nii.gz"
    case_path.touch()

    readers = types.ModuleType("mefn.io.readers")
    readers.read_volume = lambda path: registry[Path(path).name]  # type: ignore[attr-defined]
    discovery = types.ModuleType("mefn.io.discovery")
    discovery.load_case = lambda path: Case("p001", ct=vols["ct"], pet=vols["pet"])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mefn.io.readers", readers)
    monkeypatch.setitem(sys.modules, "mefn.io.discovery", discovery)
    return {"out": outdir, "case": case_path, "reference": ref_path, "tmp": tmp_path}


def test_review_from_outputs_writes_png(fake_io, capsys):
    from matplotlib.image import imread

    fig_path = fake_io["tmp"] / "review.png"
    code = main(
        [
            "review",
            str(fake_io["out"]),
            "--case",
            str(fake_io["case"]),
            "--reference",
            str(fake_io["reference"]),
            "-o",
            str(fig_path),
            "--dpi",
            "40",
        ]
    )
    assert code == 0
    # The report's threshold 0.5 is used: only the u = 0.8 lesion is flagged.
    assert "p001: 2 lesion(s), 1 flagged for review" in capsys.readouterr().out
    image = imread(fig_path)
    assert image.shape[:2] == (656, 17 * 40)  # 16.4 x 17 inches: page with calibration row
    assert image[..., :3].var() > 0.005
    assert sorted(p.name for p in fake_io["tmp"].iterdir() if p.is_file())[-1] == "review.png"


def test_review_pdf_with_explicit_slice(fake_io):
    fig_path = fake_io["tmp"] / "review.pdf"
    code = main(
        ["review", str(fake_io["out"]), "--case", str(fake_io["case"]), "-o", str(fig_path)]
        + ["--slice", "12,15,12"]
    )
    assert code == 0
    assert fig_path.read_bytes()[:5] == b"%PDF-"
    assert fig_path.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["-o", "{tmp}/r.jpg"], r"-o must name a \.png or \.pdf file, found 'r\.jpg'"),
        (["-o", "{tmp}/nofolder/r.png"], r"folder .*nofolder does not exist"),
        (["-o", "{tmp}/r.png", "--slice", "1,2"], r"--slice expects auto or three voxel indices"),
        (["-o", "{tmp}/r.png", "--slice", "1,2,99"], r"--slice 1,2,99 is outside the image"),
        (
            ["-o", "{tmp}/r.png", "--case-id", "p009"],
            r"no p009_mask\.nii\.gz in .*cases there: p001",
        ),
        (
            ["-o", "{tmp}/r.png", "--reference", "{tmp}/nope.nii.gz"],
            r"--reference .* does not exist",
        ),
    ],
)
def test_review_usage_errors(fake_io, capsys, extra_args, message):
    args = [a.format(tmp=fake_io["tmp"]) for a in extra_args]
    code = main(["review", str(fake_io["out"]), "--case", str(fake_io["case"]), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mefn review: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert not (fake_io["tmp"] / "r.png").exists()


def test_review_output_folder_errors(fake_io, capsys):
    tmp = fake_io["tmp"]
    fig = str(tmp / "r.png")
    assert main(["review", str(fake_io["out"]), "-o", fig]) == 2
    assert "pass the input case it was made from with --case" in capsys.readouterr().err

    assert main(["review", str(tmp / "missing"), "-o", fig]) == 2
    assert "missing does not exist" in capsys.readouterr().err

    (fake_io["out"] / "p002_mask.nii.gz").touch()
    assert main(["review", str(fake_io["out"]), "--case", str(fake_io["case"]), "-o", fig]) == 2
    assert "outputs of 2 cases (p001, p002); choose one with --case-id" in capsys.readouterr().err

    args = ["review", str(fake_io["out"]), "--case", str(fake_io["case"]), "-o", fig]
    assert main([*args, "--case-id", "p002"]) == 2
    assert "p002_uncertainty.nii.gz is missing beside p002_mask.nii.gz" in capsys.readouterr().err

    assert main(["review", str(fake_io["case"]), "--case", str(fake_io["case"]), "-o", fig]) == 2
    assert "--case goes with an output folder" in capsys.readouterr().err

    Path(fig).write_text("old")
    assert main([*args, "--case-id", "p001"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert Path(fig).read_text() == "old"
    assert main([*args, "--case-id", "p001", "--overwrite", "--dpi", "20"]) == 0
    assert Path(fig).read_bytes()[:4] == b"\x89PNG"


def test_review_case_with_unknown_model(fake_io, capsys):
    pytest.importorskip("mefn.inference", reason="mefn.inference cannot import yet (WIP modules)")
    fig = fake_io["tmp"] / "r.png"
    code = main(["review", str(fake_io["case"]), "--model", "no_such_model", "-o", str(fig)])
    assert code == 2
    assert "model 'no_such_model' not found" in capsys.readouterr().err
    assert not fig.exists()


def test_parse_slice():
    assert parse_slice("auto") is None
    assert parse_slice(" AUTO ") is None
    assert parse_slice("3,4,5") == (3, 4, 5)
    for bad in ("3,4", "a,b,c", "1,-2,3", ""):
        with pytest.raises(InputError, match="--slice expects auto or three voxel indices"):
            parse_slice(bad)


def test_review_listed_in_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["review", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "OUTPUTS_OR_CASE" in out and "--reference" in out and "--slice" in out


def test_review_real_files(tmp_path, capsys):
    """The same review through the real readers and case discovery (when they exist)."""
    pytest.importorskip("mefn.io.readers", reason="mefn.io.readers not written yet")
    pytest.importorskip("mefn.io.discovery", reason="mefn.io.discovery not written yet")
    from mefn.io.sitk_bridge import write_volume

    vols = make_volumes()
    outdir = tmp_path / "out"
    outdir.mkdir()
    for key in ("mask", "uncertainty", "uncertainty_ct", "uncertainty_pet"):
        write_volume(vols[key], outdir / f"rc_{key}.nii.gz")
    write_volume(vols["ct"], tmp_path / "rc_0000.nii.gz")
    write_volume(vols["pet"], tmp_path / "rc_0001.nii.gz")
    write_volume(vols["reference"], tmp_path / "ref.nii.gz")
    fig = tmp_path / "r.png"
    code = main(
        ["review", str(outdir), "--case", str(tmp_path / "rc_0000.nii.gz")]
        + ["--reference", str(tmp_path / "ref.nii.gz"), "-o", str(fig), "--dpi", "30"]
    )
    assert code == 0, capsys.readouterr().err
    from matplotlib.image import imread

    assert imread(fig)[..., :3].var() > 0.005
