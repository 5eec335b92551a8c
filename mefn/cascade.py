"""The fine stage of the coarse-to-fine model.

A coarse MEFN segments the whole study on its coarse grid (large field of view, cheap); every
connected region where its lesion probability reaches ``candidate_threshold`` is a candidate.
A fine MEFN, with its own weights and its own finer grid, re-segments a box around each
candidate (the region's bounding box plus ``margin_mm``, at least one fine window wide: the
context it sees), and its maps replace the coarse ones on the output grid within ``gate_mm``
of the candidate region (in the whole box when ``gate_mm`` is None). Elsewhere the coarse
stage was below the candidate threshold, so the mask there is background at any lesion
threshold above it. Both stages are whole MEFNs: every part of each can be switched off in its
own config.

The coarse weights' card names the fine stage (``fine_stage``: ``weights``, a path relative to
the card or a bundled name, ``candidate_threshold``, ``margin_mm``, ``gate_mm``,
``max_candidates``); its post-processing (``lesion_threshold``, ``pet_check``,
``min_lesion_ml``) and trust models are then those calibrated for the cascade's output.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mefn.data.preprocess import centred_grid, to_model_space
from mefn.errors import CheckpointError
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume

__all__ = ["FineStage", "FineStageSettings", "Box", "candidate_boxes", "paste_maps"]

#: the fine stage's maps: every one the Predictor may bring onto the output grid
FINE_KEYS = ("prob", "uncertainty", "uncertainty_ct", "uncertainty_pet")


@dataclass(frozen=True)
class FineStageSettings:
    """What a card's ``fine_stage`` entry holds."""

    weights: str
    candidate_threshold: float = 0.1
    margin_mm: float = 16.0
    #: the fine maps replace the coarse ones only within this distance of the candidate region
    #: (None: in the whole box, where the fine stage may also find what the coarse one missed)
    gate_mm: float | None = 8.0
    max_candidates: int = 48

    @classmethod
    def from_card(cls, entry: dict[str, Any], where: str) -> FineStageSettings:
        known = {"weights", "candidate_threshold", "margin_mm", "gate_mm", "max_candidates"}
        unknown = sorted(set(entry) - known)
        if unknown or "weights" not in entry:
            optional = ", ".join(sorted(known - {"weights"}))
            raise CheckpointError(
                f"{where}: fine_stage expects weights and optionally {optional}; found "
                f"{', '.join(sorted(entry)) or 'nothing'}; fix or remove the entry"
            )
        settings = cls(**entry)
        gate = settings.gate_mm
        if (
            not 0.0 < settings.candidate_threshold < 1.0
            or settings.margin_mm < 0
            or (gate is not None and gate < 0)
        ):
            raise CheckpointError(
                f"{where}: fine_stage candidate_threshold must be in (0, 1), margin_mm and "
                f"gate_mm >= 0, found {settings.candidate_threshold}, {settings.margin_mm} and "
                f"{gate}"
            )
        return settings


@dataclass(frozen=True)
class Box:
    """A candidate's box in LPS mm (axis-aligned), with the highest coarse probability in it,
    and (with a gate) where the fine maps may replace the coarse ones: the candidate region
    widened by the gate, on a part of the coarse grid."""

    lo_mm: np.ndarray
    hi_mm: np.ndarray
    peak: float
    gate: Volume | None = None


def candidate_boxes(
    lesion_probability: np.ndarray,
    grid: Geometry,
    threshold: float,
    margin_mm: float,
    max_candidates: int,
    gate_mm: float | None = None,
) -> list[Box]:
    """Boxes around the connected regions of ``lesion_probability >= threshold`` on the
    identity-direction model grid ``grid``, widened by ``margin_mm``; the ``max_candidates``
    with the highest peak probability, highest first. With ``gate_mm``, each box carries its
    region widened by that much (:attr:`Box.gate`)."""
    regions, n = ndimage.label(lesion_probability >= threshold)
    if n == 0:
        return []
    peaks = ndimage.maximum(lesion_probability, regions, range(1, n + 1))
    spacing = np.asarray(grid.spacing_mm)
    boxes = []
    for index, found in enumerate(ndimage.find_objects(regions)):
        if found is None:  # pragma: no cover - every label from ndimage.label has voxels
            continue
        lo = grid.index_to_world([s.start for s in found]) - spacing / 2 - margin_mm
        hi = grid.index_to_world([s.stop - 1 for s in found]) + spacing / 2 + margin_mm
        gate = None if gate_mm is None else _gate(regions, index + 1, found, grid, gate_mm)
        boxes.append(Box(np.minimum(lo, hi), np.maximum(lo, hi), float(peaks[index]), gate))
    boxes.sort(key=lambda b: -b.peak)
    return boxes[:max_candidates]


def _gate(
    regions: np.ndarray, label: int, found: tuple[slice, ...], grid: Geometry, gate_mm: float
) -> Volume:
    """Region ``label`` of ``regions`` widened by ``gate_mm``, on the part of ``grid`` that
    holds it (uint8)."""
    spacing = np.asarray(grid.spacing_mm)
    pad = np.ceil(gate_mm / spacing).astype(int) + 1
    start = np.asarray([s.start for s in found]) - pad
    stop = np.asarray([s.stop for s in found]) + pad
    lo, hi = np.maximum(start, 0), np.minimum(stop, regions.shape)
    part = np.zeros(tuple(stop - start), dtype=bool)
    inner = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(lo, start, hi))
    part[inner] = regions[tuple(slice(int(a), int(c)) for a, c in zip(lo, hi))] == label
    near = ndimage.distance_transform_edt(~part, sampling=spacing) <= gate_mm
    geometry = Geometry(
        shape=part.shape,  # type: ignore[arg-type]
        spacing_mm=grid.spacing_mm,
        origin_mm=tuple(grid.index_to_world(start)),  # type: ignore[arg-type]
        direction=grid.direction,
    )
    return Volume(near.astype(np.uint8), geometry, modality="SEG", units="label")


def box_grid(
    box: Box, spacing_mm: tuple[float, float, float], min_vox: tuple[int, int, int]
) -> Geometry:
    """Identity-direction grid at ``spacing_mm`` that covers ``box`` (at least ``min_vox``
    voxels along each axis), centred on it."""
    return centred_grid((box.lo_mm + box.hi_mm) / 2, box.hi_mm - box.lo_mm, spacing_mm, min_vox)


def _sub_geometry(target: Geometry, grid: Geometry) -> tuple[tuple[slice, ...], Geometry] | None:
    """The part of ``target`` (same spacing and direction) that covers ``grid``'s extent, and
    where it sits in ``target``; None when they do not overlap."""
    lo, hi = grid.extent_mm()
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    index = target.world_to_index(corners)
    start = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, np.asarray(target.shape))
    if np.any(stop <= start):
        return None
    sub = Geometry(
        shape=tuple(int(v) for v in stop - start),  # type: ignore[arg-type]
        spacing_mm=target.spacing_mm,
        origin_mm=tuple(target.index_to_world(start)),  # type: ignore[arg-type]
        direction=target.direction,
    )
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop)), sub


def paste_maps(
    target_maps: np.ndarray, target: Geometry, fine_maps: np.ndarray, grid: Geometry
) -> None:
    """Replace, in place, the voxels of ``target_maps`` ``(C, *target.shape)`` that lie inside
    ``grid`` with the fine stage's maps ``(C, *grid.shape)`` resampled onto them (linear)."""
    from mefn.data.preprocess import to_output_grid

    placed = _sub_geometry(target, grid)
    if placed is None:
        return
    where, sub = placed
    nan = (float("nan"),) * fine_maps.shape[0]
    resampled = to_output_grid(fine_maps, grid, sub, default_values=nan)
    inside = np.isfinite(resampled[0])
    view = target_maps[(slice(None), *where)]
    view[:, inside] = resampled[:, inside]


class FineStage:
    """The fine MEFN of a cascade: its own weights, card, grid and window."""

    def __init__(self, settings: FineStageSettings, card_dir: Path, device: Any) -> None:
        from mefn.inference import _load_network
        from mefn.registry import read_model_card, resolve_weights

        weights = Path(settings.weights)
        if not weights.is_absolute() and (card_dir / weights).exists():
            weights = card_dir / weights
        self.settings = settings
        self.weights_path, self.card_path = resolve_weights(str(weights))
        self.card, self.model_cfg, self.preprocess = read_model_card(self.card_path)
        roi = [int(v) for v in self.card.get("patch_size_vox", (48, 48, 48))]
        self.roi: tuple[int, int, int] = (roi[0], roi[1], roi[2])
        self.overlap = float(self.card.get("sw_overlap", 0.25))
        self.device = device
        self.net = _load_network(self.model_cfg, self.weights_path).to(device).eval()

    def boxes(self, lesion_probability: np.ndarray, grid: Geometry) -> list[Box]:
        s = self.settings
        return candidate_boxes(
            lesion_probability, grid, s.candidate_threshold, s.margin_mm, s.max_candidates,
            s.gate_mm,
        )  # fmt: skip

    def segment_box(self, case: Case, box: Box) -> tuple[Geometry, dict[str, np.ndarray]]:
        """The fine stage's maps (:data:`FINE_KEYS`) on its grid around ``box``, one pass;
        NaN outside the box's gate (:func:`paste_maps` leaves the coarse maps there)."""
        import torch

        from mefn.io.geometry import resample_to
        from mefn.model.sliding_window import sliding_window_predict

        grid = box_grid(box, self.preprocess.spacing_mm, self.roi)
        image = to_model_space(case, self.preprocess, grid, with_label=False).image
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        out = sliding_window_predict(
            self.net, x, self.roi, self.overlap, 1, self.device, keys=FINE_KEYS
        )
        maps = {k: v[0].numpy() for k, v in out.items()}
        if box.gate is not None:
            outside = resample_to(box.gate, grid, "nearest", 0).array == 0
            for v in maps.values():
                v[:, outside] = np.nan
        return grid, maps

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "weights": str(self.weights_path),
            "spacing_mm": list(self.preprocess.spacing_mm),
            "roi_size_vox": list(self.roi),
            "candidate_threshold": s.candidate_threshold,
            "margin_mm": s.margin_mm,
            "gate_mm": s.gate_mm,
            "max_candidates": s.max_candidates,
        }
