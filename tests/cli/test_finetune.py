"""`mefn finetune` then `mefn segment --adapter`: a real adapter trained on tiny phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from support import make_tiny_weights

from mefn.cli import main


@pytest.mark.parametrize("adapter", ["lora", "compacter"])
def test_finetune_then_segment_with_the_adapter(tmp_path, adapter):
    from safetensors.torch import load_file

    from mefn.data.phantoms import write_phantoms

    weights = make_tiny_weights(tmp_path)
    before = load_file(str(weights))
    data = tmp_path / "data"
    write_phantoms(data, n=3, layout="nnunet", seed=11, small=True, n_lesions=2)
    out = tmp_path / "ft"
    code = main(
        [
            "-q",
            "finetune",
            "--from",
            str(weights),
            "--adapter",
            adapter,
            "--data",
            str(data),
            "-o",
            str(out),
            "--epochs",
            "1",
        ]
    )
    assert code == 0
    meta = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert json.dumps(meta).count(adapter) >= 1
    # the base weights file is untouched
    after = load_file(str(weights))
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    case = next((data / "imagesTr").glob("*_0000.nii.gz"))
    res_base, res_ad = tmp_path / "base", tmp_path / "adapted"
    assert main(["-q", "segment", str(case), "-o", str(res_base), "--model", str(weights)]) == 0
    assert (
        main(
            [
                "-q",
                "segment",
                str(case),
                "-o",
                str(res_ad),
                "--model",
                str(weights),
                "--adapter",
                str(out),
            ]
        )
        == 0
    )
    name = case.name.replace("_0000.nii.gz", "_uncertainty.nii.gz")
    u_base = sitk.GetArrayFromImage(sitk.ReadImage(str(res_base / name)))
    u_ad = sitk.GetArrayFromImage(sitk.ReadImage(str(res_ad / name)))
    assert u_base.shape == u_ad.shape and not np.allclose(u_base, u_ad)
    report = json.loads((res_ad / name.replace("_uncertainty.nii.gz", "_report.json")).read_text())
    assert report["settings"]["adapter"].endswith("adapter")


def test_finetune_errors(tmp_path, capsys):
    weights = make_tiny_weights(tmp_path)
    assert (
        main(
            [
                "finetune",
                "--from",
                str(weights),
                "--adapter",
                "lora",
                "--data",
                str(tmp_path / "none"),
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert (
        main(
            [
                "finetune",
                "--from",
                str(weights),
                "--adapter",
                "nosuch",
                "--data",
                str(tmp_path / "d"),
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
