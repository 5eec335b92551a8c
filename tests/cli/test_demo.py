"""`mefn demo` (and `python -m mefn.demo`): a phantom study, segmented and reviewed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mefn.cli import main
from mefn.demo import write_demo_study


def test_demo_is_a_subcommand_and_python_m_mefn_demo_runs_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo       segment a generated PET/CT phantom" in capsys.readouterr().out
    from mefn import demo

    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mefn demo") and "--small" in out


def test_demo_study_is_a_case_segment_reads(tmp_path):
    from mefn.io.discovery import load_case

    study = write_demo_study(tmp_path / "input", seed=7, small=True)
    assert study.ct_path == tmp_path / "input" / "demo_0000.nii.gz"
    case = load_case(study.ct_path)  # the pair is found from the CT: demo_0000 + demo_0001
    assert case.case_id == "demo"
    assert case.pet.geometry.shape != case.ct.geometry.shape  # PET on its own, coarser grid
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(study.reference_path)))
    assert reference.shape == case.ct.array.shape[::-1]
    n_components = ndimage.label(reference > 0)[1]
    assert study.n_lesions >= 1 and 1 <= n_components <= study.n_lesions
    again = write_demo_study(tmp_path / "again", seed=7, small=True)  # same seed, same study
    for a, b in ((study.ct_path, again.ct_path), (study.pet_path, again.pet_path)):
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(b))),
        )


def test_demo_into_a_file_fails_in_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker), "--small"]) == 2
    captured = capsys.readouterr()
    assert "mefn demo: error: cannot create output folder" in captured.err
    assert captured.err.count("\n") == 1
    assert "generating" in captured.out and "wrote" not in captured.out


@pytest.mark.slow  # a phantom segmented (tiny untrained weights) and its review figure drawn
def test_demo_end_to_end_on_a_small_phantom(tmp_path, capsys):
    from support import make_tiny_weights

    weights = make_tiny_weights(tmp_path)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--small", "--model", str(weights)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("demo_mask.nii.gz", "demo_uncertainty.nii.gz", "demo_report.json", "cases.csv"):
        assert (out / "segmentation" / name).is_file(), name
        assert f"         {name}" in printed
    report = json.loads((out / "segmentation" / "demo_report.json").read_text())
    assert report["settings"]["model"] == str(weights)
    assert (out / "review.png").stat().st_size > 10_000
    assert f"$ mefn segment {out / 'input' / 'demo_0000.nii.gz'} -o" in printed
    assert f"--model {weights} --overwrite" in printed and "[demo] review figure:" in printed
    assert main(["-q", *argv]) == 0  # again, quiet: no demo lines, no segment summary
    printed = capsys.readouterr().out
    assert "[demo]" not in printed and "lesion(s)" not in printed
