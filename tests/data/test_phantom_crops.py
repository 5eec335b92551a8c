"""Training boxes of the fine stage cut from phantoms (mefn.data.phantoms.crops)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mefn.data.phantoms.crops import CropRecipe, cache_phantom_crops, crop_centres
from mefn.data.preprocess import PreprocessConfig
from mefn.errors import ConfigError
from mefn.io.volume import Geometry


def test_centres_sit_on_each_lesion_and_away_from_lesions_otherwise() -> None:
    geometry = Geometry(shape=(60, 60, 60), spacing_mm=(2.0, 2.0, 2.0))
    label = np.zeros(geometry.shape, np.uint8)
    label[10:13, 10:13, 10:13] = 1
    label[40:44, 40:44, 40:44] = 1
    suv = np.full(geometry.shape, 1.0, np.float32)
    suv[50:55, 5:10, 50:55] = 6.0  # a hot structure far from both lesions
    recipe = CropRecipe(crop_mm=40.0, jitter_mm=0.0, hot_per_study=2, body_per_study=1)
    centres = crop_centres(label, suv, geometry, recipe, np.random.default_rng(0))
    kinds = [k for k, _ in centres]
    assert kinds == ["lesion", "lesion", "hot", "hot", "body"]
    assert np.allclose(centres[0][1], geometry.index_to_world([11, 11, 11]))
    distance = ndimage.distance_transform_edt(label == 0, sampling=2.0)
    for kind, world in centres[2:]:
        index = tuple(np.round(geometry.world_to_index(world)).astype(int))
        assert distance[index] > 20.0
        if kind == "hot":
            assert suv[index] >= 2.5
    jittered = crop_centres(label, suv, geometry, CropRecipe(crop_mm=40.0, jitter_mm=5.0),
                            np.random.default_rng(0))  # fmt: skip
    offset = jittered[0][1] - centres[0][1]
    assert 0 < np.abs(offset).max() <= 5.0


def test_boxes_are_cached_on_the_fine_grid_and_reused(tmp_path) -> None:
    cfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0))
    recipe = CropRecipe(crop_mm=32.0, jitter_mm=4.0)
    seen: list[tuple[int, int, int]] = []
    cases = cache_phantom_crops(
        tmp_path, 1, 3, cfg, recipe, progress=lambda i, n, b, s: seen.append((i, n, b)),
        small=True, n_lesions=1,
    )  # fmt: skip
    assert seen == [(1, 1, len(cases))] and len(cases) >= 2
    lesion_boxes = [c for c in cases if c.case_id.endswith("_lesion")]
    assert len(lesion_boxes) == 1 and lesion_boxes[0].label.any()
    assert all(c.shape == (16, 16, 16) and c.grid.spacing_mm == (2.0, 2.0, 2.0) for c in cases)
    marker = next(tmp_path.glob("*.json"))
    stamp = marker.stat().st_mtime_ns
    again = cache_phantom_crops(tmp_path, 1, 3, cfg, recipe, small=True, n_lesions=1)
    assert [c.case_id for c in again] == [c.case_id for c in cases]
    assert marker.stat().st_mtime_ns == stamp  # not generated again
    with pytest.raises(ConfigError, match="positive number of studies"):
        cache_phantom_crops(tmp_path, 0, 3, cfg)
    with pytest.raises(ConfigError, match="crop_mm must be positive"):
        CropRecipe(crop_mm=0.0)
