"""pipelines/benchmark_training.py: op kinds, argument checks and a tiny two-recipe run."""

from __future__ import annotations

import json
import math
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


def _run(bench: ModuleType, recipes: list[Path], out: Path, threads: int) -> None:
    """Three steps of each recipe on one small phantom, JSON to ``out``."""
    argv = ["--recipes", *map(str, recipes), "--steps", "3", "--warmup", "1", "--last", "2"]
    argv += ["--cases", "1", "--threads", str(threads), "--matmul", "64", "--json", str(out)]
    assert bench.main(argv) == 0


@pytest.mark.slow  # writes a phantom and trains two tiny networks: ~10 s on a quiet CPU
def test_tiny_run_prints_and_writes_both_recipes(bench: ModuleType, tmp_path, capsys) -> None:
    a = _recipe(tmp_path, "plain", "")
    b = _recipe(tmp_path, "light", "fuse_convs: 1\nfuse_width: 2\nchannels_last: true\n")
    out = tmp_path / "bench.json"
    _run(bench, [a, b], out, threads=1)
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


@pytest.mark.slow  # a phantom, two tiny networks, one of them in two processes
def test_a_data_parallel_recipe_steps_in_two_processes(bench: ModuleType, tmp_path, capsys) -> None:
    a = _recipe(tmp_path, "plain", "")
    b = _recipe(tmp_path, "pair", "fuse_convs: 1\nfuse_width: 2\nfuse_pointwise: true\n")
    b.write_text(b.read_text().replace("batch_size: 2", "batch_size: 1\nprocesses: 2\nthreads: 1"))
    out = tmp_path / "bench.json"
    _run(bench, [a, b], out, threads=2)
    text = capsys.readouterr().out
    assert "in each of 2 data-parallel processes, 1 thread(s) each" in text
    plain, pair = json.loads(out.read_text())["recipes"]
    assert (plain["processes"], plain["threads"]) == (1, 2)
    assert (pair["processes"], pair["threads"]) == (2, 1)
    # two processes of one patch each: two patches per step, as the plain recipe's batch
    assert pair["voxels_per_second"] == pytest.approx(2 * 16**3 / pair["step_seconds"])
    assert len(pair["losses"]) == 3 and all(math.isfinite(v) for v in pair["losses"])
    assert set(pair["breakdown_ms"]) == set(bench.PHASES)
    # and two data-parallel recipes in one run are refused
    c = _recipe(tmp_path, "pair2", "")
    c.write_text(c.read_text() + "processes: 2\n")
    with pytest.raises(SystemExit):
        bench.main(["--recipes", str(b), str(c), "--steps", "2", "--warmup", "1", "--cases", "1"])


def test_later_recipes_start_from_the_first_ones_weights_where_they_agree(
    bench: ModuleType,
) -> None:
    import torch

    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.InstanceNorm3d(4))
    other = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.Conv3d(4, 2, 1))
    other[0].to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    kept = other[1].weight.detach().clone()
    shared, total = bench.share_initial_weights(first, other)
    assert (shared, total) == (2 * 4 * 27 + 4, 2 * 4 * 27 + 4 + 4 * 2 + 2)
    assert torch.equal(other[0].weight, first[0].weight) and torch.equal(
        other[0].bias, first[0].bias
    )
    assert torch.equal(other[1].weight, kept)  # no counterpart: as drawn
    assert optimizer.param_groups[0]["params"][0] is other[0].weight  # copied in place
