"""pipelines/false_positives_by_structure.py: structure lookup, false lesions, and a real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from support import load_pipeline, make_tiny_weights, tiny_phantom_config

from mefn.data.phantom_shapes import Ellipsoid, Layer

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "false_positives_by_structure.py"


@pytest.fixture(scope="module")
def fp():
    return load_pipeline(SCRIPT)


def test_structure_is_the_last_pet_layer_painted_there(fp) -> None:
    organ = Layer("liver", Ellipsoid((0.0, 0.0, 0.0), (50.0, 40.0, 30.0)), 60.0, 2.0)
    gland = Layer("gland", Ellipsoid((30.0, 0.0, 0.0), (10.0, 10.0, 10.0)), 40.0, 4.0)
    ct_only = Layer("table", Ellipsoid((0.0, 0.0, 0.0), (90.0, 90.0, 90.0)), 200.0, None)
    layers = [organ, gland, ct_only]
    assert fp.structure_at(layers, np.array([-20.0, 0.0, 0.0])) == "liver"
    assert fp.structure_at(layers, np.array([32.0, 1.0, 0.0])) == "gland"  # painted last
    assert fp.structure_at(layers, np.array([0.0, 0.0, 80.0])) == "body"  # CT-only layer
    assert fp.structure_at(layers[::-1], np.array([32.0, 1.0, 0.0])) == "liver"


def test_false_lesions_are_those_touching_no_reference(fp) -> None:
    ref = np.zeros((20, 20, 20), np.uint8)
    mask = np.zeros_like(ref)
    suv = np.ones((20, 20, 20), np.float32)
    ref[2:5, 2:5, 2:5] = 1
    mask[3:6, 3:6, 3:6] = 1  # true: overlaps the reference
    mask[10:12, 10:13, 10:11] = 1  # false, 6 voxels, hottest at (11, 12, 10)
    suv[11, 12, 10] = 7.0
    mask[17, 17, 17] = 1  # false, 1 voxel
    got = sorted(fp.false_lesions(ref, mask, suv))
    assert got == [((11, 12, 10), 6), ((17, 17, 17), 1)]


def test_names_every_false_positive_of_a_real_run(fp, tmp_path, monkeypatch) -> None:
    config = tiny_phantom_config(tmp_path)
    weights = make_tiny_weights(tmp_path)
    out = tmp_path / "out"
    argv = ["x", "--model", str(weights), "--config", str(config), "--tta", "none"]
    monkeypatch.setattr(sys, "argv", [*argv, "--max-cases", "2", "-o", str(out)])
    assert fp.main() == 0
    record = json.loads((out / "false_positives.json").read_text())
    assert record["settings"]["tta_axes"] == []
    rows = record["false_lesions"]
    totals = record["by_structure"]
    assert sum(v["lesions"] for v in totals.values()) == len(rows)
    assert sum(v["volume_ml"] for v in totals.values()) == pytest.approx(
        sum(r["volume_ml"] for r in rows)
    )
    # the untrained model calls lesion where there is none; every false lesion gets a name
    assert rows and all(r["structure"] for r in rows)
