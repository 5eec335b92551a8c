"""pipelines/benchmark_training.py: op kinds, argument checks and a tiny two-recipe run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from support import TINY_MODEL_YAML, load_pipeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipelines" / "benchmark_training.py"

TINY_MODEL = TINY_MODEL_YAML + "{extra}"

TINY_TRAIN = """\
model: {model}
preprocess:
  spacing_mm: [8.0, 8.0, 8.0]
patch_size_vox: [16, 16, 16]
batch_size: 2
steps_per_epoch: 2
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_pipeline(SCRIPT)


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::convolution_backward", "convolution"),
        ("aten::native_batch_norm_backward", "normalisation"),
        ("aten::leaky_relu_backward", "activation"),
        ("aten::polygamma", "evidential special functions"),
        ("aten::bmm", "matmul and attention"),
        ("aten::upsample_trilinear3d", "resampling"),
        ("aten::copy_", "copies and layout"),
        ("aten::mul", "element-wise and reductions"),
    ],
)
def test_op_kind(bench: ModuleType, op: str, kind: str) -> None:
    assert bench.op_kind(op) == kind


def test_needs_more_steps_than_warmup(bench: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--steps", "2", "--warmup", "2"])
    assert exc.value.code == 2
    assert "need --steps > --warmup" in capsys.readouterr().err


def _recipe(folder: Path, name: str, extra: str) -> Path:
    model = folder / f"{name}_model.yaml"
    model.write_text(TINY_MODEL.format(extra=extra))
    train = folder / f"{name}.yaml"
    train.write_text(TINY_TRAIN.format(model=model))
    return train


@pytest.mark.slow  # writes a phantom and trains two tiny networks: ~10 s on a quiet CPU
def test_tiny_run_prints_and_writes_both_recipes(bench: ModuleType, tmp_path, capsys) -> None:
    a = _recipe(tmp_path, "plain", "")
    b = _recipe(tmp_path, "light", "fuse_convs: 1\nfuse_width: 2\nchannels_last: true\n")
    out = tmp_path / "bench.json"
    argv = ["--recipes", str(a), str(b), "--steps", "3", "--warmup", "1", "--last", "2"]
    argv += ["--cases", "1", "--threads", "1", "--matmul", "64", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "CPU capability" in text
    assert "ratio light (" in text and "training voxels/s" in text
    result = json.loads(out.read_text())
    rows = result["recipes"]
    assert [r["recipe"].split()[0] for r in rows] == ["plain", "light"]
    for row in rows:
        assert len(row["losses"]) == 3 and len(row["step_times"]) == 2
        assert row["voxels_per_second"] == pytest.approx(2 * 16**3 / row["step_seconds"])
        assert row["network_voxels_per_second"] > row["voxels_per_second"]
        assert row["gflop_per_step"] > 0 and 0.0 <= row["idle_fraction"] <= 1.0
        assert set(row["breakdown_ms"]) == set(bench.PHASES)
        assert row["breakdown_ms"]["backward"]["convolution"] > 0
    # the light fused stage costs fewer FLOPs than the two-convolution one
    assert rows[1]["gflop_per_step"] < rows[0]["gflop_per_step"]
    assert result["ratio_voxels_per_second"] == pytest.approx(
        rows[1]["voxels_per_second"] / rows[0]["voxels_per_second"]
    )
    assert result["machine"]["cpu_capability"]
