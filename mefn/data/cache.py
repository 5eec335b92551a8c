"""Cases resampled to model space once and kept on disk, memory-mapped for patch sampling.

Each cached case is a folder ``<cache>/<case_id>/`` holding ``ct_hu.npy`` (float16),
``suv.npy`` (float16), ``label.npy`` (uint8), ``indices.npz`` (sampled foreground indices
per class and body indices for negative patches) and ``meta.json`` (grid, preprocessing
fingerprint). Intensities stay in physical units so augmentation can act in HU and SUV
before normalisation. A cache entry whose fingerprint differs from the current
preprocessing is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mefn.config import to_dict
from mefn.data.preprocess import PreprocessConfig, model_grid, resample_case
from mefn.io.case import Case
from mefn.io.volume import Geometry

__all__ = [
    "CachedCase",
    "cache_case",
    "load_cached_case",
    "preprocess_fingerprint",
    "write_cache_entry",
]

logger = logging.getLogger(__name__)

MAX_FG_INDICES = 50_000
MAX_BODY_INDICES = 100_000
MAX_HOT_INDICES = 50_000
HOT_MIN_SUV = 2.0


@dataclass(frozen=True, eq=False)
class CachedCase:
    case_id: str
    ct_hu: np.ndarray  # (X, Y, Z) float16, possibly a memmap
    suv: np.ndarray
    label: np.ndarray  # (X, Y, Z) uint8
    grid: Geometry
    fg_indices: dict[int, np.ndarray]  # class -> flat indices
    body_indices: np.ndarray
    hot_indices: np.ndarray  # unlabelled voxels with SUV > HOT_MIN_SUV (subsampled)
    hot_suv: np.ndarray  # their SUV, so a sampler can pick its own threshold

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape


def preprocess_fingerprint(cfg: PreprocessConfig) -> str:
    text = json.dumps({"spacing_mm": list(cfg.spacing_mm), "version": 2}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _safe_name(case_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def cache_case(
    case: Case | Callable[[], Case],
    cfg: PreprocessConfig,
    cache_dir: Path,
    seed: int = 0,
    case_id: str | None = None,
) -> CachedCase:
    """Resample a case to model space and store it under ``cache_dir`` (idempotent).

    ``case`` may be a loader (with ``case_id``): a case already cached with the same
    preprocessing is then returned without reading its images at all.
    """
    if callable(case):
        if case_id is None:
            raise ValueError("cache_case with a loader needs case_id")
    else:
        case_id = case.case_id
    folder = Path(cache_dir) / _safe_name(case_id)
    fingerprint = preprocess_fingerprint(cfg)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            return load_cached_case(folder)
    if callable(case):
        case = case()
    grid = model_grid(case.target_geometry, cfg.spacing_mm)
    ct, pet, label = resample_case(case, grid, with_label=True)
    if label is None:
        label = np.zeros(grid.shape, np.uint8)
    write_cache_entry(
        folder,
        ct,
        pet,
        label,
        {
            "case_id": case.case_id,
            "fingerprint": fingerprint,
            "grid": grid.to_json(),
            "preprocess": to_dict(cfg),
        },
        seed,
    )
    logger.debug("cached %s on %s", case.case_id, grid.shape)
    return load_cached_case(folder)


def write_cache_entry(
    folder: Path,
    ct: np.ndarray,
    pet: np.ndarray,
    label: np.ndarray,
    meta: dict[str, Any],
    seed: int = 0,
) -> None:
    """Store one case already on its model grid as the cache folder ``folder``: the arrays,
    the sampling indices (drawn with ``seed``) and ``meta`` as ``meta.json``.

    Written into ``<folder>.tmp`` and renamed, so a reader never sees half an entry.
    """
    rng = np.random.default_rng(seed)
    fg: dict[str, np.ndarray] = {}
    flat = label.ravel()
    for cls in (int(c) for c in np.unique(flat) if c != 0):
        idx = np.flatnonzero(flat == cls)
        if idx.size > MAX_FG_INDICES:
            idx = np.sort(rng.choice(idx, MAX_FG_INDICES, replace=False))
        fg[f"fg_{cls}"] = idx
    body = np.flatnonzero(((ct > -500) | (pet > 0.1)).ravel())
    if body.size == 0:
        body = np.arange(flat.size)
    if body.size > MAX_BODY_INDICES:
        body = np.sort(rng.choice(body, MAX_BODY_INDICES, replace=False))
    # hard-negative candidates: physiological uptake outside every label
    hot = np.flatnonzero((pet.ravel() > HOT_MIN_SUV) & (flat == 0))
    if hot.size > MAX_HOT_INDICES:
        hot = np.sort(rng.choice(hot, MAX_HOT_INDICES, replace=False))
    hot_suv = pet.ravel()[hot].astype(np.float32)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ct_hu.npy", ct.astype(np.float16))
    np.save(tmp / "suv.npy", np.minimum(pet, 60000).astype(np.float16))
    np.save(tmp / "label.npy", label)
    np.savez(tmp / "indices.npz", body=body, hot=hot, hot_suv=hot_suv, **fg)  # type: ignore[arg-type]
    (tmp / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_cached_case(folder: Path) -> CachedCase:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    g = meta["grid"]
    grid = Geometry(
        shape=tuple(g["shape"]),  # type: ignore[arg-type]
        spacing_mm=tuple(g["spacing_mm"]),  # type: ignore[arg-type]
        origin_mm=tuple(g["origin_mm"]),  # type: ignore[arg-type]
        direction=tuple(g["direction"]),
    )
    with np.load(folder / "indices.npz") as idx:
        fg = {int(k[3:]): idx[k] for k in idx.files if k.startswith("fg_")}
        body = idx["body"]
        hot, hot_suv = idx["hot"], idx["hot_suv"]
    return CachedCase(
        case_id=meta["case_id"],
        ct_hu=np.load(folder / "ct_hu.npy", mmap_mode="r"),
        suv=np.load(folder / "suv.npy", mmap_mode="r"),
        label=np.load(folder / "label.npy"),
        grid=grid,
        fg_indices=fg,
        body_indices=body,
        hot_indices=hot,
        hot_suv=hot_suv,
    )
