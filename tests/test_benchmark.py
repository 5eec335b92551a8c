"""pipelines/benchmark.py: target checks, the generated doc section, peak memory, a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from support import load_pipeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipelines" / "benchmark.py"
MODULE = "pipelines.benchmark"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_pipeline(SCRIPT)


def _row(model: str, seconds: float, rss: float = 1.0, study: str = "wholebody") -> dict:
    return {
        "device": "cpu",
        "study": study,
        "model": model,
        "seconds": seconds,
        "net_seconds": seconds * 0.9,
        "voxels_per_s": 1e6,
        "peak_rss_gib": rss,
        "tiles": 10,
        "gflop": 100.0,
        "gflops_achieved": 50.0,
        "matmul_gflops": 100.0,
    }


def _quality(dice_mefn: float, dice_dyn: float, auroc: float, ece: float) -> dict:
    def summary(dice: float, au: float, e: float) -> dict:
        return {
            "n_cases": 2,
            "dice": dice,
            "fpv_ml": 1.0,
            "fnv_ml": 2.0,
            "lesion_f1": 0.5,
            "ece": e,
            "auroc": au,
        }

    return {
        "models": {
            "mefn_small": {"summary": summary(dice_mefn, auroc, ece)},
            "dynunet_small": {"summary": summary(dice_dyn, 0.7, 0.01)},
        }
    }


def test_targets_met_and_missed_by_how_much(bench):
    inference = {
        "rows": [
            _row("mefn_small", 12.0, rss=4.5),
            _row("dynunet_small", 10.0),
            _row("dynunet_mcdropout_small", 100.0),
        ]
    }
    checks = {c["what"]: c for c in bench.check_targets(inference, _quality(0.6, 0.5, 0.8, 0.07))}
    ratio = checks["cpu wholebody: MEFN time / DynUNet time"]
    assert ratio["met"] is True and ratio["value"] == pytest.approx(1.2)
    speedup = checks["cpu wholebody: MC-dropout time / MEFN time"]
    assert speedup["met"] is True and speedup["value"] == pytest.approx(100 / 12)
    rss = checks["cpu wholebody: MEFN peak RSS"]
    assert rss["met"] is False and rss["missed_by"].startswith("0.5 GiB (12 %)")
    assert checks["MEFN Dice - DynUNet Dice"]["met"] is True
    auroc = checks["MEFN uncertainty-error AUROC"]
    assert auroc["met"] is False and auroc["missed_by"].startswith("0.05 (6 %)")
    ece = checks["MEFN ECE"]
    assert ece["met"] is False and ece["missed_by"].startswith("0.02 (40 %)")


def test_slow_mefn_and_missing_measurements(bench):
    inference = {"rows": [_row("mefn_small", 14.0), _row("dynunet_small", 10.0)]}
    checks = {c["what"]: c for c in bench.check_targets(inference, _quality(0.4, 0.5, 0.9, 0.01))}
    ratio = checks["cpu wholebody: MEFN time / DynUNet time"]
    assert ratio["met"] is False and ratio["missed_by"].startswith("0.1x (8 %)")
    assert "cpu wholebody: MC-dropout time / MEFN time" not in checks  # not run
    assert checks["MEFN Dice - DynUNet Dice"]["met"] is False
    assert checks["MEFN uncertainty-error AUROC"]["met"] is True
    nan = bench.check_targets(None, _quality(0.4, 0.5, float("nan"), 0.01))
    assert [c["met"] for c in nan if "AUROC" in c["what"]] == [None]


def test_the_bundled_card_is_held_to_the_same_limits_without_lesion_tables(bench):
    rows = [
        {**_row(bench.BUNDLED, 15.0, rss=2.5), "lesion_table_seconds": 1.0},
        {**_row("dynunet_small", 60.0), "lesion_table_seconds": 50.0},  # noise lesions
    ]
    checks = {c["what"]: c for c in bench.check_targets({"rows": rows}, None)}
    ratio = checks["cpu wholebody: bundled card's time / DynUNet time (no lesion tables)"]
    assert ratio["met"] is False and ratio["value"] == pytest.approx(14.0 / 10.0)
    assert checks["cpu wholebody: bundled card's peak RSS"]["met"] is True
    assert "cpu wholebody: MEFN time / DynUNet time" not in checks  # mefn_small not run


def test_doc_keeps_hand_written_text(bench, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written notes.\n")
    machine = {
        "cpu": "test cpu",
        "cores": 2,
        "cpu_capability": "AVX2",
        "gpu": None,
        "python": "3",
        "torch": "2",
        "monai": "1",
        "SimpleITK": "2",
        "numpy": "2",
        "mefn": "0",
        "commit": "abc",
        "date_utc": "today",
    }
    quality = _quality(0.6, 0.5, 0.9, 0.01)
    quality.update(
        command="python -m pipelines.benchmark --quality",
        load_before=2.0,
        load_after=2.1,
        budget={
            "steps": 10,
            "epochs": 1,
            "steps_per_epoch": 10,
            "patch_vox": 64,
            "batch": 2,
            "train_cases": 4,
            "train_config": "x.yaml",
            "test_cases": 2,
            "test_fov": "full",
            "ablation_test_cases": 1,
        },
    )
    bench.write_doc(doc, bench.render_report(machine, None, quality))
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nHand-written notes.\n")
    assert "| mefn_small | 2 | 0.600 | 1.00 | 2.00 | 0.500 | 0.0100 | 0.900 | n/a |" in first
    quality["models"]["mefn_small"]["summary"]["dice"] = 0.7
    bench.write_doc(doc, bench.render_report(machine, None, quality))
    second = doc.read_text()
    assert second.count(bench.BEGIN) == 1 and second.count(bench.END) == 1
    assert "| mefn_small | 2 | 0.700 |" in second and "| mefn_small | 2 | 0.600 |" not in second
    assert second.startswith("# Benchmarks\n\nHand-written notes.\n")


def test_child_peak_memory_is_its_own(bench, tmp_path):
    # A child of a big parent must not report the parent's size (ru_maxrss would).
    code = "import pipelines.benchmark as m; print(m.peak_rss_kib())"
    ballast = np.ones(300 * 1024 * 1024 // 8)  # 300 MiB, written so it is resident
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    del ballast
    assert int(out.stdout.strip()) < 250 * 1024  # numpy import only: well under 300 MiB


def test_tiles_are_counted_on_the_predictors_own_window(bench):
    """A stand-in network counts the tiles of the sliding window the Predictor would run."""
    from types import SimpleNamespace

    predictor = SimpleNamespace(
        net=SimpleNamespace(size_divisor=4), roi=(32, 32, 32), overlap=0.25, sw_batch_size=2
    )
    # 68 x 68 x 82 voxels (the tiny run's grid), 32^3 windows at 24-voxel steps
    counted = bench.count_tiles(predictor, (68, 68, 82))
    assert counted.tiles == 3 * 3 * 4 and counted.tile_shape == [32, 32, 32]
    # a grid smaller than the window along z: padded to the divisor, one window there
    small = bench.count_tiles(predictor, (40, 33, 10))
    assert small.tiles == 2 * 2 * 1 and small.tile_shape == [32, 32, 12]


@pytest.mark.slow
def test_tiny_run_of_both_sections(tmp_path):
    out, doc = tmp_path / "out", tmp_path / "benchmarks.md"
    common = ["--out", str(out), "--doc", str(doc), "--threads", "1", "--spacing", "12"]
    common += ["--patch", "32"]
    inference = ["--inference", "--studies", "wholebody", "--wb-shape", "41", "37", "33"]
    inference += ["--matmul-size", "128", "--devices", "cpu"]
    quality = ["--quality", "--small-phantoms", "--cases", "3", "--test-cases", "2"]
    quality += ["--ablation-test-cases", "1", "--mc-test-cases", "1", "--steps", "2"]
    quality += ["--batch", "1", "--val-cases", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, *common, *inference, *quality],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "inference.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"mefn_small", "dynunet_small", "dynunet_mcdropout_small"}
    # 816 x 816 x 978 mm at 12 mm: 68 x 68 x 82 voxels, 32^3 windows at 24-voxel steps
    assert all(r["tiles"] == 3 * 3 * 4 for r in rows.values())
    # the stages come from Prediction.timings, within the time of the whole predict
    for r in rows.values():
        assert {"resample", "network", "to_output_grid", "lesion_table"} <= set(r["timings"])
        assert r["net_seconds"] == r["timings"]["network"] > 0
        assert sum(r["timings"].values()) <= r["seconds"] * 1.05
    assert all(r["weights"] == "trained" for r in rows.values())  # quality ran first
    assert all(0 < r["peak_rss_gib"] < 4 for r in rows.values())
    # ten dropout passes: ten times the FLOPs of the plain DynUNet
    mc, dyn = rows["dynunet_mcdropout_small"], rows["dynunet_small"]
    assert mc["tile_gflop"] == pytest.approx(10 * dyn["tile_gflop"], rel=0.01)
    assert rows["mefn_small"]["tile_gflop"] < dyn["tile_gflop"]
    quality_res = json.loads((out / "quality.json").read_text())
    models = quality_res["models"]
    assert len(models) == 3 + 5
    assert models["mefn_small"]["summary"]["n_cases"] == 2
    assert models["mefn_small-no_cfl"]["summary"]["n_cases"] == 1
    assert models["dynunet_mcdropout_small"]["summary"]["n_cases"] == 1
    for res in models.values():
        assert 0.0 <= res["summary"]["ece"] <= 1.0
        # the near-lesion region holds the test phantoms' lesions, and is a part of the grid
        assert 0 < res["summary"]["n_voxels_near"] <= res["summary"]["n_voxels"]
    text = doc.read_text()
    assert "| cpu | wholebody | mefn_small |" in text and "| no_calibrator |" in text
    assert "MEFN time / DynUNet time" in proc.stdout
    # a second run finds every model trained and scored, and only rewrites the doc
    again = subprocess.run(
        [sys.executable, "-m", MODULE, *common, *quality],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("trained already") == 8
    assert "scoring" not in again.stdout


def test_quality_runs_split_by_model_and_ablation(bench, tmp_path):
    """`--models` with none and `--ablations` naming some: the runs one invocation trains, so
    two invocations can share the cores and a last one collects; `--lr` sets the budget's lr."""
    parser = bench.build_parser()
    only = parser.parse_args(["--quality", "--models", "--ablations", "cfl", "calibrator"])
    assert [name for name, _, _ in bench.quality_models(only)] == [
        "mefn_small-no_cfl",
        "mefn_small-no_calibrator",
    ]
    runs = bench.quality_models(only)
    assert runs[0][2].cfl is False and runs[0][2].calibrator is True
    assert runs[1][1] == "mefn_small"
    plain = parser.parse_args(["--quality", "--no-ablations"])
    assert [name for name, _, _ in bench.quality_models(plain)] == list(bench.MODELS)
    every = parser.parse_args(["--quality"])
    assert len(bench.quality_models(every)) == 3 + 5

    base = bench.train_config(every, tmp_path, tmp_path / "cache")
    assert base.lr == 0.002  # configs/train/phantoms_small.yaml
    tuned = parser.parse_args(["--quality", "--lr", "0.008", "--steps", "100", "--batch", "3"])
    cfg = bench.train_config(tuned, tmp_path, tmp_path / "cache")
    assert (cfg.lr, cfg.batch_size, cfg.epochs * cfg.steps_per_epoch) == (0.008, 3, 120)
    # the report names the config relative to the repository, other paths as given
    # (pipelines/_bench.py, shared with train_phantoms' reproduce command)
    assert bench._bench.repo_relative(str(REPO / "configs/train/phantoms_small.yaml")) == (
        "configs/train/phantoms_small.yaml"
    )
    assert bench._bench.repo_relative(str(tmp_path / "x.yaml")) == str(tmp_path / "x.yaml")


def test_calibration_near_lesions(bench):
    """The region of the near-lesion ECE/AUROC: 3 six-connected steps around either mask
    (an octahedron of 63 voxels around one voxel), nothing in a case with neither."""
    ref = np.zeros((15, 15, 15), np.uint8)
    pred = np.zeros_like(ref)
    assert not bench.lesion_region(ref, pred).any()
    ref[4, 4, 4] = 1
    pred[10, 10, 10] = 1
    region = bench.lesion_region(ref, pred)
    assert region.sum() == 2 * 63
    assert region[4, 4, 7] and not region[4, 5, 7]
    # the same limits apply to the near-lesion figures, listed beside the pooled ones
    quality = _quality(0.6, 0.5, 0.9, 0.01)
    quality["models"]["mefn_small"]["summary"].update(ece_near=0.08, auroc_near=0.9)
    checks = {c["what"]: c for c in bench.check_targets(None, quality)}
    assert checks["MEFN ECE near lesions"]["met"] is False
    assert checks["MEFN ECE near lesions"]["missed_by"] == "0.03 (60 %)"
    assert checks["MEFN AUROC near lesions"]["met"] is True
    plain = bench.check_targets(None, _quality(0.6, 0.5, 0.9, 0.01))
    assert not any("near lesions" in c["what"] for c in plain)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "-1", "expected a positive number, found -1"),
        ("--steps", "0", "expected a positive number, found 0"),
        ("--batch", "two", "expected a positive int, found 'two'"),
        ("--spacing", "nan", "expected a positive number, found nan"),
    ],
)
def test_budget_flags_must_be_positive(bench, capsys, flag, value, message):
    """A zero or negative budget is a usage error before anything is written (it used to
    reach the optimizer, or divide by zero, after the phantoms were generated)."""
    with pytest.raises(SystemExit) as exc:
        bench.build_parser().parse_args(["--quality", flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_no_section_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", MODULE], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 2
    assert "choose at least one of --inference, --quality, --report" in proc.stderr


# --- the speed changes in mefn.inference.sliding_window_predict and mefn.inference ------------
def _per_output_reference(net, image, roi, overlap):
    """MONAI blending each output of ``infer`` alone (what sliding_window_predict did before)."""
    import torch
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        return sliding_window_inference(
            image, roi, 1, net.infer, overlap=overlap, mode="gaussian", device=torch.device("cpu")
        )


def test_one_blend_for_all_outputs_matches_blending_each():
    import torch
    from support import TINY_MODEL

    from mefn.config import from_dict
    from mefn.inference import sliding_window_predict
    from mefn.model import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(from_dict(ModelConfig, TINY_MODEL)).eval()
    image = torch.randn(1, 2, 36, 40, 28)  # multiples of the divisor 4: no padding involved
    ref = _per_output_reference(net, image, (16, 24, 16), 0.25)
    out = sliding_window_predict(net, image, (16, 24, 16), 0.25, 1, torch.device("cpu"))
    assert list(out) == list(ref) == ["prob", "uncertainty", "uncertainty_ct", "uncertainty_pet"]
    for key in ref:
        assert out[key].shape == ref[key].shape
        assert torch.equal(out[key], ref[key])  # the same operations on every voxel
    some = sliding_window_predict(
        net, image, (16, 24, 16), 0.25, 2, torch.device("cpu"), keys=("uncertainty", "prob")
    )
    assert list(some) == ["prob", "uncertainty"]  # the model's order, not the request's
    torch.testing.assert_close(some["uncertainty"], ref["uncertainty"], rtol=0, atol=1e-6)


def test_argmax_without_int64_temporary():
    from mefn.postprocess import mask_from_probabilities as _argmax_uint8

    rng = np.random.default_rng(3)
    two = rng.random((2, 33, 34, 35)).astype(np.float32)
    two[1, :3] = two[0, :3]  # ties: class 0 wins, as with np.argmax
    three = rng.random((3, 33, 34, 35)).astype(np.float32)
    three[2, :2] = three[1, :2] = three[0, :2]
    for prob in (two, three):
        mask = _argmax_uint8(prob)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, np.argmax(prob, axis=0))
    assert not _argmax_uint8(two)[:3].any() and not _argmax_uint8(three)[:2].any()
