"""Training crops of the fine stage: phantoms cut around lesions and hot structures.

The fine stage of the coarse-to-fine model (:mod:`mefn.cascade`) re-segments a box around
each candidate that the coarse stage proposes, on a finer grid. It is trained on what it will
be shown: boxes centred (with a random offset) on every lesion of a phantom, and on hot
structures and body voxels away from any lesion (physiological uptake, the coarse stage's
false positives). :func:`cache_phantom_crops` generates whole-body studies in worker
processes, as :func:`mefn.data.phantoms.cache.cache_phantoms` does, and stores each box as
a cached case on its own grid (``crop_mm`` wide at the preprocessing spacing), so
``mefn.training.train_on_cases`` trains on them without any image file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mefn.config import to_dict
from mefn.data.cache import CachedCase, load_cached_case, preprocess_fingerprint, write_cache_entry
from mefn.data.phantoms import streams
from mefn.data.phantoms.cache import resample_array
from mefn.data.phantoms.layouts import run_in_study_order, study_seed
from mefn.data.phantoms.render import render_ct
from mefn.data.phantoms.study import generate_study
from mefn.data.preprocess import AIR_HU, PreprocessConfig, centred_grid
from mefn.errors import ConfigError
from mefn.io.volume import Geometry, Volume

__all__ = ["CropRecipe", "cache_phantom_crops", "crop_centres"]

#: SUV from which a voxel outside the lesions counts as a hot structure
HOT_SUV = 2.5


@dataclass(frozen=True)
class CropRecipe:
    """Which boxes :func:`cache_phantom_crops` cuts from each study."""

    crop_mm: float = 128.0  # edge of the cubic box
    jitter_mm: float = 24.0  # largest offset of a box's centre from what it is centred on
    hot_per_study: int = 2  # boxes on hot structures away from lesions
    body_per_study: int = 1  # boxes on random body voxels away from lesions

    def __post_init__(self) -> None:
        if not self.crop_mm > 0 or self.jitter_mm < 0:
            raise ConfigError(
                f"crop_mm must be positive and jitter_mm >= 0, found {self.crop_mm} and "
                f"{self.jitter_mm}"
            )
        if self.hot_per_study < 0 or self.body_per_study < 0:
            raise ConfigError(
                f"hot_per_study and body_per_study must be >= 0 boxes, found "
                f"{self.hot_per_study} and {self.body_per_study}"
            )


def crop_centres(
    label: np.ndarray,
    suv: np.ndarray,
    geometry: Geometry,
    recipe: CropRecipe,
    rng: np.random.Generator,
) -> list[tuple[str, np.ndarray]]:
    """(kind, LPS centre) of the boxes of one study: ``lesion`` for each connected lesion,
    ``hot`` for hot structures (SUV >= :data:`HOT_SUV`) and ``body`` for body voxels, both at
    least half a box from every lesion; every centre moved by up to ``jitter_mm``."""
    spacing = np.asarray(geometry.spacing_mm)
    centres: list[tuple[str, np.ndarray]] = []
    lesions, n = ndimage.label(label > 0)
    for index in ndimage.center_of_mass(label > 0, lesions, range(1, n + 1)) if n else []:
        centres.append(("lesion", np.asarray(index)))
    if n:
        # away from lesions: beyond half a box from every lesion voxel
        far = ndimage.distance_transform_edt(label == 0, sampling=spacing) > recipe.crop_mm / 2
    else:
        far = np.ones(label.shape, dtype=bool)
    for kind, pool, count in (
        ("hot", far & (suv >= HOT_SUV), recipe.hot_per_study),
        ("body", far & (suv > 0.3), recipe.body_per_study),
    ):
        idx = np.flatnonzero(pool)
        if idx.size == 0 or count == 0:
            continue
        picks = rng.choice(idx, size=min(count, idx.size), replace=False)
        centres.extend((kind, np.asarray(np.unravel_index(p, label.shape), float)) for p in picks)
    out = []
    for kind, index in centres:
        world = geometry.index_to_world(index)
        offset = rng.uniform(-1.0, 1.0, size=3) * recipe.jitter_mm
        out.append((kind, world + offset))
    return out


@dataclass(frozen=True)
class _CropsOfStudy:
    seed: int
    folders: list[Path]
    kinds: list[str]
    seconds: float


def _crops_one(
    cache_dir: Path,
    seed: int,
    index: int,
    cfg: PreprocessConfig,
    recipe: CropRecipe,
    options: dict[str, Any],
) -> _CropsOfStudy:
    """Generate study ``index`` and cache its boxes: one unit of work."""
    start = time.perf_counter()
    seed_i = study_seed(seed, index)
    marker = cache_dir / f"phantom_{seed_i}.json"
    fingerprint = {
        "preprocess": preprocess_fingerprint(cfg),
        "recipe": to_dict(recipe),
        "options": options,
    }
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("fingerprint") == fingerprint:
            folders = [cache_dir / name for name in done["crops"]]
            return _CropsOfStudy(seed_i, folders, done["kinds"], time.perf_counter() - start)
    study = generate_study(seed_i, "wholebody", **options)
    if study.scene is None:  # pragma: no cover - generate_study always keeps its scene
        raise ConfigError(f"phantom {seed_i} has no scene to render its CT on the PET grid")
    pet_grid = study.pet.geometry
    binary = (study.label_pet.array > 0).astype(np.uint8)
    rng = np.random.default_rng([seed_i, 0xC0])
    centres = crop_centres(binary, np.asarray(study.pet.array), pet_grid, recipe, rng)
    ctres: Volume | None = None
    label_volume = study.label_pet.with_array(binary)
    folders, kinds = [], []
    for k, (kind, centre) in enumerate(centres):
        grid = centred_grid(centre, np.full(3, recipe.crop_mm), cfg.spacing_mm)
        if ctres is None:
            ctres = render_ct(study.scene, pet_grid, stream=streams.CTRES_NOISE_SUBSTREAM)
        ct = resample_array(ctres, grid, 1, AIR_HU)
        pet = resample_array(study.pet, grid, 1, 0.0)
        label = resample_array(label_volume, grid, 0, 0)
        case_id = f"phantom_{seed_i}_{k}_{kind}"
        meta = {
            "case_id": case_id,
            "fingerprint": preprocess_fingerprint(cfg),
            "grid": grid.to_json(),
            "preprocess": to_dict(cfg),
            "phantom": {"seed": seed_i, "kind": "wholebody", "options": options},
            "crop": {"kind": kind, "centre_mm": [float(c) for c in centre]},
            "lesions": int(ndimage.label(label > 0)[1]),
        }
        write_cache_entry(cache_dir / case_id, ct, pet, label, meta, seed=seed_i)
        folders.append(cache_dir / case_id)
        kinds.append(kind)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"fingerprint": fingerprint, "crops": [f.name for f in folders], "kinds": kinds})
    )
    os.replace(tmp, marker)
    return _CropsOfStudy(seed_i, folders, kinds, time.perf_counter() - start)


def cache_phantom_crops(
    cache_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    preprocess: PreprocessConfig,
    recipe: CropRecipe | None = None,
    *,
    workers: int = 1,
    progress: Callable[[int, int, int, float], None] | None = None,
    **options: Any,
) -> list[CachedCase]:
    """The boxes (:class:`CropRecipe`) of ``n`` whole-body phantoms (study ``i``: seed
    ``study_seed(seed, i)``) cached under ``cache_dir`` on ``preprocess``'s grid, generated in
    ``workers`` processes; returned memory-mapped, in study order. Studies already cut with
    the same recipe are not generated again. ``progress(i, n, boxes, seconds)`` follows each
    study."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive number of studies, found {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive number of processes, found {workers!r}")
    recipe = recipe or CropRecipe()
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    calls = [(root, seed, i, preprocess, recipe, options) for i in range(n)]
    cases: list[CachedCase] = []
    for i, crops in enumerate(run_in_study_order(_crops_one, calls, workers)):
        cases.extend(load_cached_case(folder) for folder in crops.folders)
        if progress is not None:
            progress(i + 1, n, len(crops.folders), crops.seconds)
    return cases
