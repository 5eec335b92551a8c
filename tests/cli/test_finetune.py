"""`mefn finetune` then `mefn segment --adapter`: a real adapter trained on tiny phantoms."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support import make_tiny_weights

from mefn.adapters import load_adapter_config
from mefn.cli import main
from mefn.training import load_train_config, lr_factor

REPO = Path(__file__).resolve().parents[2]

HN_LABELS = {"0": "background", "1": "GTVp", "2": "GTVn"}


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
    # the adapter's lr_scale (compacter's config: 5) multiplies the learning rate it trains at
    scale = load_adapter_config(adapter).lr_scale
    assert scale == (5.0 if adapter == "compacter" else 1.0)
    cfg = load_train_config(REPO / "configs" / "train" / "finetune.yaml")
    last = list(csv.DictReader((out / "log.csv").open()))[-1]
    step = int(last["step"])
    expected = cfg.lr * scale * lr_factor(step - 1, cfg.steps_per_epoch, cfg.warmup_steps)
    assert float(last["lr"]) == pytest.approx(expected, rel=1e-6)
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
    # calibrated at the end on its validation split, into the adapter's own card
    adapter_card = json.loads((out / "adapter" / "card.json").read_text())
    assert adapter_card["calibration"]["data"] == "validation split of the fine-tuning"
    assert set(adapter_card["postprocess"]) >= {"tta_axes", "lesion_threshold", "pet_check"}


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
    assert "no adapter config named 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("adapter, num_classes", [("lora", "3"), ("none", None)])
def test_finetune_to_head_and_neck_labels_gives_three_classes(tmp_path, adapter, num_classes):
    """A 2-class base fine-tuned on HECKTOR-layout phantoms (1 = GTVp, 2 = GTVn): new heads."""
    from mefn.data.phantoms import write_phantoms
    from mefn.inference import Predictor
    from mefn.io.discovery import load_case

    weights = make_tiny_weights(tmp_path)
    data = tmp_path / "hn"
    write_phantoms(data, n=3, layout="hecktor", seed=21, small=True, n_lesions=2, fov="full")
    out = tmp_path / "ft"
    argv = ["-q", "finetune", "--from", str(weights), "--adapter", adapter, "--data", str(data)]
    argv += ["-o", str(out), "--epochs", "1", "--no-calibrate"]
    if num_classes:  # else taken from the labels (largest 2 -> 3 classes)
        argv += ["--num-classes", num_classes]
    assert main(argv) == 0
    meta = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert meta["num_classes"] == 3 and meta["labels"] == HN_LABELS
    assert meta["config"]["heads"]["num_classes"] == 3 and meta["type"] == adapter
    card = json.loads((out / "adapter" / "training.json").read_text())
    assert card["labels"] == HN_LABELS and card["model"]["num_classes"] == 3

    # post-processing calibrated for the base's own (binary) heads
    base_card = weights.with_suffix(".json")
    calibrated = {
        "tta_axes": [0],
        "lesion_threshold": 0.2,
        "min_lesion_ml": 1.0,
        "pet_check": {"min_suv": 1.0, "min_contrast": 2.0},
    }
    base_card.write_text(json.dumps({**json.loads(base_card.read_text()), **calibrated}))
    predictor = Predictor(weights, adapter=out, device="cpu")
    assert predictor.num_classes == 3 and predictor.labels == HN_LABELS
    # ... does not carry over to new heads: the plain defaults
    assert predictor.tta_axes == () and predictor.lesion_threshold is None
    assert predictor.min_lesion_ml == 0.0 and predictor.review_threshold == 0.3
    assert not predictor.pet_check.active
    base = Predictor(weights, device="cpu")
    assert base.tta_axes == (0,) and base.lesion_threshold == 0.2 and base.min_lesion_ml == 1.0
    assert base.pet_check.min_suv == 1.0 and base.pet_check.min_contrast == 2.0
    case = load_case(next((data / "imagesTr").glob("*__CT.nii.gz")))
    pred = predictor.predict(case, keep_extra=True)
    assert pred.probabilities is not None and pred.probabilities.shape[0] == 3
    assert np.allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)
    assert set(np.unique(pred.mask)) <= {0, 1, 2}
    assert pred.settings["labels"] == HN_LABELS
    # the base alone still has its two classes
    assert Predictor(weights, device="cpu").labels == {"0": "background", "1": "lesion"}


def test_finetune_num_classes_error(tmp_path, capsys):
    weights = make_tiny_weights(tmp_path)
    (tmp_path / "d").mkdir()
    argv = ["finetune", "--from", str(weights), "--adapter", "lora", "--data", str(tmp_path / "d")]
    assert main(argv + ["-o", str(tmp_path / "o"), "--num-classes", "1"]) == 2
    assert "num_classes must be at least 2" in capsys.readouterr().err


def test_finetune_on_every_case_of_the_folds(tmp_path, capsys):
    """``--fold all``: every case trains, none validates; the adapter is written, not calibrated."""
    from mefn.data.datasets import index_dataset
    from mefn.data.phantoms import write_phantoms

    weights = make_tiny_weights(tmp_path)
    data = tmp_path / "data"
    write_phantoms(data, n=3, layout="nnunet", seed=12, small=True, n_lesions=1)
    ids = [e.patient_id for e in index_dataset(data)]
    folds = tmp_path / "folds.yaml"
    folds.write_text(f"folds:\n  - [{ids[0]}]\n  - [{ids[1]}, {ids[2]}]\n")
    args = ["finetune", "--from", str(weights), "--adapter", "norm_bias", "--data", str(data)]
    args += ["--folds", str(folds), "-o", str(tmp_path / "ft"), "--epochs", "1"]
    assert main(["-q", *args, "--fold", "all"]) == 0
    assert "no validation cases (fold all)" in capsys.readouterr().err
    assert (tmp_path / "ft" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "ft" / "adapter" / "card.json").exists()
    training = json.loads((tmp_path / "ft" / "adapter" / "training.json").read_text())
    assert (training["training"]["train_cases"], training["training"]["val_cases"]) == (3, 0)
    assert training["training"]["config"]["data"]["fold"] == "all"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--fold", "every"])
    assert exc.value.code == 2
    assert "expected a fold number (0, 1, ...) or 'all', found 'every'" in capsys.readouterr().err
