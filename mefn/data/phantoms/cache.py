"""Phantoms written straight into the training cache: model space with numpy and scipy only.

:func:`cache_phantoms` generates studies (:func:`mefn.data.phantoms.study.generate_study`) in
worker processes and stores each one as a cached case (:mod:`mefn.data.cache`: float16 HU
and SUV, uint8 label, sampling indices, ``meta.json``) that :func:`load_cached_case` reads
memory-mapped, as ``mefn train`` would after reading the nnU-Net layout of ``mefn phantoms``:
CT rendered on the PET grid (the layout's CTres), SUV, the PET-grid label, resampled onto the
model grid. No NIfTI file is written and neither SimpleITK nor nibabel is needed (a GPU
machine without them trains on these), so the resampling here is scipy's: linear for CT and
PET (voxels outside the source: -1000 HU, SUV 0), nearest for the label, with SimpleITK's
convention that a sample within half a voxel of the edge takes the edge value.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from mefn.config import to_dict
from mefn.data.cache import (
    CachedCase,
    load_cached_case,
    preprocess_fingerprint,
    write_cache_entry,
)
from mefn.data.phantoms import streams
from mefn.data.phantoms.layouts import run_in_study_order, study_seed
from mefn.data.phantoms.render import render_ct
from mefn.data.phantoms.study import generate_study
from mefn.data.preprocess import AIR_HU, PreprocessConfig, model_grid
from mefn.errors import ConfigError
from mefn.io.volume import Geometry, Volume

__all__ = ["CachedPhantom", "cache_phantoms", "resample_array"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedPhantom:
    """What :func:`cache_phantoms` reports of one study it cached."""

    index: int
    case_id: str
    folder: Path
    lesions: int
    shape: tuple[int, int, int]  # on the model grid
    seconds: float
    reused: bool  # already cached with the same recipe: not generated again


def resample_array(
    volume: Volume, grid: Geometry, order: Literal[0, 1], default_value: float
) -> np.ndarray:
    """``volume`` sampled on ``grid`` (physical space): ``order`` 1 linear, 0 nearest.

    Points of ``grid`` more than half a voxel outside ``volume`` get ``default_value``;
    within that half voxel, the edge value (SimpleITK's convention). Computed one slice of
    ``grid`` at a time, so memory stays that of the two arrays.
    """
    src = volume.geometry
    source = np.asarray(volume.array, dtype=np.float32 if order == 1 else volume.array.dtype)
    to_src = np.linalg.inv(src.direction_matrix * np.asarray(src.spacing_mm)[None, :])
    # continuous source index of grid index t: matrix @ t + offset
    matrix = to_src @ (grid.direction_matrix * np.asarray(grid.spacing_mm)[None, :])
    offset = to_src @ (np.asarray(grid.origin_mm) - np.asarray(src.origin_mm))
    nx, ny, nz = grid.shape
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    plane = matrix[:, 0, None, None] * ii + matrix[:, 1, None, None] * jj  # (3, X, Y)
    upper = np.asarray(src.shape, dtype=np.float64)[:, None, None] - 0.5
    out = np.empty(grid.shape, dtype=source.dtype)
    for k in range(nz):
        coords = plane + (matrix[:, 2] * k + offset)[:, None, None]
        values = ndimage.map_coordinates(source, coords, order=order, mode="nearest")
        inside = np.all((coords >= -0.5) & (coords <= upper), axis=0)
        out[..., k] = np.where(inside, values, np.asarray(default_value, dtype=source.dtype))
    return out


def _cache_one(
    cache_dir: Path,
    seed: int,
    index: int,
    kind: Literal["wholebody", "headneck"],
    cfg: PreprocessConfig,
    options: dict[str, Any],
) -> CachedPhantom:
    """Generate, resample and cache study ``index`` of the set: one unit of work."""
    start = time.perf_counter()
    seed_i = study_seed(seed, index)
    case_id = f"phantom_{seed_i}"
    folder = cache_dir / case_id
    recipe = {"seed": seed_i, "kind": kind, "options": options}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == preprocess_fingerprint(cfg) and meta.get("phantom") == recipe:
            shape = tuple(meta["grid"]["shape"])
            return CachedPhantom(
                index, case_id, folder, int(meta.get("lesions", 0)), shape,  # type: ignore[arg-type]
                time.perf_counter() - start, reused=True,
            )  # fmt: skip
    study = generate_study(seed_i, kind, **options)
    if study.scene is None:  # pragma: no cover - generate_study always keeps its scene
        raise ConfigError(f"phantom {seed_i} has no scene to render its CT on the PET grid")
    pet_grid = study.pet.geometry
    ctres = render_ct(study.scene, pet_grid, stream=streams.CTRES_NOISE_SUBSTREAM)
    grid = model_grid(pet_grid, cfg.spacing_mm)
    ct = resample_array(ctres, grid, 1, AIR_HU)
    pet = resample_array(study.pet, grid, 1, 0.0)
    binary = study.label_pet.with_array((study.label_pet.array > 0).astype(np.uint8))
    label = resample_array(binary, grid, 0, 0)
    meta = {
        "case_id": case_id,
        "fingerprint": preprocess_fingerprint(cfg),
        "grid": grid.to_json(),
        "preprocess": to_dict(cfg),
        "phantom": recipe,
        "lesions": len(study.lesions),
    }
    write_cache_entry(folder, ct, pet, label, meta)
    return CachedPhantom(
        index, case_id, folder, len(study.lesions), grid.shape, time.perf_counter() - start,
        reused=False,
    )  # fmt: skip


def cache_phantoms(
    cache_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    preprocess: PreprocessConfig,
    *,
    workers: int = 1,
    kind: Literal["wholebody", "headneck"] = "wholebody",
    progress: Callable[[int, int, CachedPhantom], None] | None = None,
    **options: Any,
) -> list[CachedCase]:
    """Cache ``n`` phantoms (study ``i``: seed ``study_seed(seed, i)``, as ``mefn phantoms``
    with ``--layout nnunet``; binary labels) in model space under ``cache_dir``, in
    ``workers`` processes; returns them in study order, memory-mapped.

    A study already cached with the same recipe and preprocessing is not generated again.
    ``progress(i, n, phantom)`` is called after each study, in order; ``options`` go to
    :func:`mefn.data.phantoms.generate_study`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive number of studies, found {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive number of processes, found {workers!r}")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    results: list[CachedPhantom] = []

    def done(phantom: CachedPhantom) -> None:
        results.append(phantom)
        if progress is not None:
            progress(phantom.index + 1, n, phantom)

    calls = [(root, seed, i, kind, preprocess, options) for i in range(n)]
    for phantom in run_in_study_order(_cache_one, calls, workers):
        done(phantom)
    return [load_cached_case(p.folder) for p in results]
