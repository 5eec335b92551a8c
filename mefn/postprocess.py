"""From network outputs to what a reader acts on: mask, uncertainty, lesion table.

All functions work on arrays on one grid (``[i, j, k]`` with a :class:`~mefn.io.Geometry`).
Connected components use 18-connectivity (faces and edges), as the AutoPET evaluation does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cc3d
import numpy as np
from scipy import ndimage

from mefn.confidence import (
    DEFAULT_REVIEW_BELOW,
    EvidenceMaps,
    LesionConfidence,
    iter_lesions,
    lesion_evidence,
)
from mefn.errors import InputError
from mefn.io.volume import Geometry

__all__ = [
    "DEFAULT_REVIEW_THRESHOLD",
    "DroppedLesion",
    "Lesion",
    "LesionTable",
    "check_lesion_shape",
    "check_lesion_threshold",
    "choose_review_threshold",
    "drop_unconfident",
    "format_u",
    "HotSpot",
    "HotSpotCheck",
    "find_hot_spots",
    "label_hot_spots",
    "lesion_table",
    "mask_from_probabilities",
    "PetCheck",
    "apply_pet_check",
    "remove_small_components",
    "LESION_SHAPES",
    "reshape_lesions",
    "keep_small_lesion_cores",
    "suv_peak",
    "SUV_PEAK_VOLUME_ML",
]

#: PERCIST SUVpeak: mean SUV in a 1 mL sphere (radius 6.2 mm) placed to maximise it.
SUV_PEAK_VOLUME_ML = 1.0
CONNECTIVITY: Literal[18] = 18
#: Review threshold when the weights' card does not give one.
DEFAULT_REVIEW_THRESHOLD = 0.3


def check_lesion_threshold(value: float | None) -> float | None:
    """``value`` as a float when it is a usable lesion threshold (None: the argmax), else
    :class:`~mefn.errors.InputError`."""
    if value is None:
        return None
    if not 0.0 < float(value) < 1.0:
        raise InputError(
            f"the lesion probability threshold must be between 0 and 1 (exclusive), found "
            f"{value}; use e.g. 0.5"
        )
    return float(value)


def mask_from_probabilities(
    prob: np.ndarray, min_component_voxels: int = 0, lesion_threshold: float | None = None
) -> np.ndarray:
    """Label map (uint8) from class probabilities ``(K, X, Y, Z)``.

    Without ``lesion_threshold``, the argmax (the first class wins a tie). With it, a voxel is
    foreground when its probability of not being background, ``1 - prob[0]``, reaches the
    threshold, and takes the most probable foreground class. ``min_component_voxels``
    removes foreground components smaller than that (0 keeps all). No int64 temporary (eight
    bytes per voxel of a whole-body grid); ``prob`` holds no NaN.
    """
    if prob.ndim != 4:
        raise ValueError(f"expected probabilities (K, X, Y, Z), found shape {prob.shape}")
    lesion_threshold = check_lesion_threshold(lesion_threshold)
    k = prob.shape[0]
    if lesion_threshold is None:
        if k == 2:
            mask = np.greater(prob[1], prob[0]).view(np.uint8)
        else:
            mask = _argmax_from(prob, 0)
    else:
        foreground = np.less_equal(prob[0], np.float32(1.0 - lesion_threshold))
        mask = foreground.view(np.uint8) if k == 2 else _argmax_from(prob, 1)
        if k > 2:
            mask[~foreground] = 0
    return remove_small_components(mask, min_component_voxels)


def _argmax_from(prob: np.ndarray, first: int) -> np.ndarray:
    """Argmax over classes ``first..K-1`` (the first wins a tie), as uint8 class numbers."""
    mask = np.full(prob.shape[1:], first, np.uint8)
    best = prob[first].copy()
    for c in range(first + 1, prob.shape[0]):
        higher = np.greater(prob[c], best)
        mask[higher] = c
        np.maximum(best, prob[c], out=best)
    return mask


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """``mask`` with its 18-connected foreground components of fewer than ``min_voxels``
    voxels set to 0 (in place, and returned; 0 keeps all)."""
    if min_voxels <= 0:
        return mask
    labels = cc3d.connected_components(mask > 0, connectivity=CONNECTIVITY)
    counts = np.bincount(labels.ravel())
    small = np.flatnonzero(counts < min_voxels)
    small = small[small > 0]
    if small.size:
        mask[np.isin(labels, small)] = 0
    return mask


#: What :func:`reshape_lesions` can do to the lesions of a mask.
LESION_SHAPES = ("none", "hull", "largest_hull")


def check_lesion_shape(shape: object) -> str:
    """``shape`` if it is one of :data:`LESION_SHAPES`, else an :class:`InputError`."""
    if shape not in LESION_SHAPES:
        raise InputError(
            f"lesion_shape must be one of {', '.join(LESION_SHAPES)}, found {shape!r}; "
            "'none' leaves the lesions as the network drew them"
        )
    return str(shape)


def reshape_lesions(mask: np.ndarray, shape: str) -> np.ndarray:
    """``mask`` with its lesions (18-connected components of each label) reshaped: ``"none"``
    leaves it as it is; ``"hull"`` fills each lesion's convex hull (a tumour whose cold or
    necrotic part the network leaves out is outlined whole); ``"largest_hull"`` keeps only the
    largest lesion of each label and fills its hull (one tumour per study, as in crops cut
    around it). Voxels of other labels are never taken over. A new array; ``mask`` is unchanged.
    """
    check_lesion_shape(shape)
    out = mask.copy()
    if shape == "none":
        return out
    by_label: dict[int, list[tuple[tuple[slice, ...], np.ndarray]]] = {}
    for label, box, component in iter_lesions(mask):
        by_label.setdefault(label, []).append((box, component))
    for label, lesions in by_label.items():  # label by label, as a hull may fill freed voxels
        if shape == "largest_hull" and len(lesions) > 1:
            largest = int(np.argmax([int(component.sum()) for _box, component in lesions]))
            for box, component in lesions[:largest] + lesions[largest + 1 :]:
                out[box][component] = 0
            lesions = [lesions[largest]]
        for box, component in lesions:
            hull = _convex_hull(component)
            out[box][hull & (out[box] == 0)] = label
    return out


def keep_small_lesion_cores(
    mask: np.ndarray,
    lesion_probability: np.ndarray,
    voxel_volume_ml: float,
    below_ml: float,
    threshold: float,
) -> np.ndarray:
    """``mask`` with each lesion (18-connected component of a label) smaller than
    ``below_ml`` cut down to its core: the voxels whose ``lesion_probability`` reaches
    ``threshold``; a small lesion without a core is removed. Larger lesions are left as they
    are. A low lesion threshold finds the cold parts of large tumours, but draws small ones
    too wide (test-time scales blur them): this keeps both. ``below_ml`` 0 leaves the mask as
    it is. A new array; ``mask`` is unchanged."""
    out = mask.copy()
    if below_ml <= 0:
        return out
    if lesion_probability.shape != mask.shape:
        raise ValueError(
            f"lesion probability of shape {lesion_probability.shape} for a mask of shape "
            f"{mask.shape}; both must be on one grid"
        )
    check_lesion_threshold(threshold)
    most = below_ml / voxel_volume_ml  # fewer voxels than this: a small lesion
    for _label, box, component in iter_lesions(mask):
        if component.sum() < most:
            rim = component & (lesion_probability[box] < threshold)
            out[box][rim] = 0
    return out


def _convex_hull(component: np.ndarray) -> np.ndarray:
    """The voxels of ``component``'s box whose centres lie in the convex hull of its voxel
    centres (the component itself where it spans no volume: a line, a plane)."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    points = np.argwhere(component)
    if len(points) < 4:
        return component
    try:
        corners = points[ConvexHull(points).vertices]
        simplices = Delaunay(corners)
    except QhullError:
        return component
    grid = np.indices(component.shape).reshape(3, -1).T
    inside = simplices.find_simplex(grid) >= 0
    return inside.reshape(component.shape) | component


#: Where a predicted lesion's background SUV is read: the median SUV in a shell this thick,
#: starting this far outside the lesion (or outside its growth zone when refining).
BACKGROUND_SHELL_MM = 8.0
BACKGROUND_GAP_MM = 4.0


@dataclass(frozen=True)
class PetCheck:
    """What a predicted lesion must show on PET, and how its outline follows the PET.

    FDG-avid lesions (what AutoPET and HECKTOR label) take up more tracer than what surrounds
    them; a predicted lesion with no uptake is a false detection whatever the network says.

    min_suv:
        A lesion's SUVmax must reach this (0: no check).
    min_contrast:
        A lesion's SUVmax must reach this multiple of its background, the median SUV in a
        shell of BACKGROUND_SHELL_MM starting BACKGROUND_GAP_MM outside it (0: no check).
    refine_fraction:
        When set, each lesion kept is redrawn as the voxels within ``refine_mm`` of it whose
        SUV reaches ``background + refine_fraction * (SUVmax - background)`` and that connect
        to it, with enclosed holes (a cold necrotic core) filled: the contrast-oriented
        adaptive threshold of PET delineation, seeded and bounded by the network. The
        background is then read beyond the growth zone.
    refine_mm:
        How far a refined lesion may grow beyond the network's outline, in mm.
    """

    min_suv: float = 0.0
    min_contrast: float = 0.0
    refine_fraction: float | None = None
    refine_mm: float = 8.0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.min_suv) and self.min_suv >= 0):
            problems.append(f"min_suv >= 0, found {self.min_suv}")
        if not (math.isfinite(self.min_contrast) and self.min_contrast >= 0):
            problems.append(f"min_contrast >= 0, found {self.min_contrast}")
        if self.refine_fraction is not None and not 0.0 < self.refine_fraction < 1.0:
            problems.append(f"refine_fraction in (0, 1), found {self.refine_fraction}")
        if not (math.isfinite(self.refine_mm) and self.refine_mm >= 0):
            problems.append(f"refine_mm >= 0, found {self.refine_mm}")
        if problems:
            raise InputError(
                "PET check expects " + "; ".join(problems) + " (e.g. min_suv 1, min_contrast "
                "2, refine_fraction 0.4, refine_mm 8)"
            )

    @property
    def active(self) -> bool:
        return bool(self.min_suv or self.min_contrast or self.refine_fraction is not None)

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)


def _padded_boxes(
    components: np.ndarray, spacing: np.ndarray, gap: float
) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Each component's number and its bounding box grown by ``gap`` and the background
    shell (and a voxel), clipped to the array: room for :func:`_background` around it."""
    margin = np.ceil((gap + BACKGROUND_SHELL_MM) / spacing).astype(int) + 1
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        if found is None:
            continue
        yield (
            index,
            tuple(
                slice(max(s.start - m, 0), min(s.stop + m, n))
                for s, m, n in zip(found, margin, components.shape)
            ),
        )


def _background(values: np.ndarray, distance: np.ndarray, gap: float) -> float:
    """The median of ``values`` in the shell of BACKGROUND_SHELL_MM starting ``gap`` mm out
    (``distance``: mm from the component); 0 where the shell is empty."""
    shell = (distance > gap) & (distance <= gap + BACKGROUND_SHELL_MM)
    return float(np.median(values[shell])) if shell.any() else 0.0


def apply_pet_check(
    mask: np.ndarray, suv: np.ndarray, spacing_mm: tuple[float, float, float], check: PetCheck
) -> np.ndarray:
    """``mask`` (a label map) after ``check``: lesions without the uptake it asks for are
    removed and, with ``check.refine_fraction``, those kept are redrawn on the PET.

    Lesions are the 18-connected components of the foreground; a refined lesion keeps its
    most frequent label. Returns a new array; ``suv`` is on the grid of ``mask``.
    """
    if mask.shape != suv.shape:
        raise ValueError(f"mask {mask.shape} and SUV {suv.shape} must have one shape")
    if not check.active:
        return mask.copy()
    components = cc3d.connected_components(mask > 0, connectivity=CONNECTIVITY)
    out = mask.copy() if check.refine_fraction is None else np.zeros_like(mask)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    gap = max(BACKGROUND_GAP_MM, check.refine_mm if check.refine_fraction is not None else 0.0)
    for index, box in _padded_boxes(components, spacing, gap):
        lesion = components[box] == index
        values = suv[box]
        peak = float(values[lesion].max())
        keep = peak >= check.min_suv
        if keep and (check.min_contrast or check.refine_fraction is not None):
            distance = ndimage.distance_transform_edt(~lesion, sampling=spacing)
            background = _background(values, distance, gap)
            keep = peak >= check.min_contrast * max(background, 0.0)
        if not keep:
            if check.refine_fraction is None:
                out[box][lesion] = 0
            continue
        if check.refine_fraction is None:
            continue
        level = background + check.refine_fraction * (peak - background)
        region = (values >= level) & (distance <= check.refine_mm)
        parts = cc3d.connected_components(region, connectivity=CONNECTIVITY)
        seeds = np.unique(parts[lesion & region])
        grown = ndimage.binary_fill_holes(np.isin(parts, seeds[seeds > 0]))
        label = int(np.bincount(mask[box][lesion]).argmax())
        out[box][grown] = label
    return out


def _sphere_kernel(spacing_mm: tuple[float, float, float], volume_ml: float) -> np.ndarray:
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    half = [int(np.ceil(radius_mm / s)) for s in spacing_mm]
    grids = np.meshgrid(
        *[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)], indexing="ij"
    )
    dist2 = sum(g**2 for g in grids)
    kernel = (dist2 <= radius_mm**2).astype(np.float64)
    return kernel / kernel.sum()


def _sphere_offsets(spacing_mm: tuple[float, float, float], volume_ml: float) -> np.ndarray:
    """Integer voxel offsets (M, 3) of the voxelised sphere of ``volume_ml``."""
    kernel = _sphere_kernel(spacing_mm, volume_ml)
    return np.argwhere(kernel > 0) - np.asarray(kernel.shape) // 2


def _peak_at(suv: np.ndarray, voxels: np.ndarray, offsets: np.ndarray, chunk: int = 8192) -> float:
    """Highest mean of ``suv`` over ``offsets`` around any of ``voxels`` (edges: nearest)."""
    upper = np.asarray(suv.shape) - 1
    best = -np.inf
    for start in range(0, len(voxels), chunk):
        pts = np.clip(voxels[start : start + chunk, None, :] + offsets[None], 0, upper)
        means = suv[pts[..., 0], pts[..., 1], pts[..., 2]].astype(np.float64).mean(axis=1)
        best = max(best, float(means.max()))
    return best


def suv_peak(
    suv: np.ndarray,
    lesion: np.ndarray,
    spacing_mm: tuple[float, float, float],
    volume_ml: float = SUV_PEAK_VOLUME_ML,
) -> float:
    """Highest mean SUV in a sphere of ``volume_ml`` whose centre lies in the lesion.

    The sphere is the set of voxel centres within its radius (a voxelised 1 mL sphere); the
    image outside the array counts as its nearest edge value.
    """
    if not lesion.any():
        return float("nan")
    return _peak_at(suv, np.argwhere(lesion), _sphere_offsets(spacing_mm, volume_ml))


@dataclass(frozen=True)
class Lesion:
    """One connected component of the predicted mask and its clinical quantities."""

    lesion_id: int
    label: int
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    uncertainty_mean: float
    uncertainty_max: float
    review: bool
    #: the calibrated probability that the lesion is true (None without a confidence model)
    confidence: float | None = None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["centroid_mm"] = [round(c, 2) for c in self.centroid_mm]
        return data


@dataclass(frozen=True)
class LesionTable:
    lesions: tuple[Lesion, ...]
    mtv_ml: float
    tlg: float
    review_threshold: float
    #: with lesion confidences: a lesion is flagged when its confidence is below this
    review_below: float | None = None

    @property
    def n_review(self) -> int:
        return sum(lesion.review for lesion in self.lesions)

    @property
    def review_rule(self) -> str:
        """Why a lesion is flagged, in words a reader understands."""
        if self.review_below is not None:
            return f"confidence below {self.review_below:.0%}"
        return f"mean u >= {format_u(self.review_threshold)}"

    def to_json(self) -> dict[str, object]:
        return {
            "n_lesions": len(self.lesions),
            "mtv_ml": self.mtv_ml,
            "tlg": self.tlg,
            "review_threshold": self.review_threshold,
            "review_below": self.review_below,
            "review_rule": self.review_rule,
            "n_review": self.n_review,
            "lesions": [lesion.to_json() for lesion in self.lesions],
        }


@dataclass(frozen=True)
class DroppedLesion:
    """A component removed from the mask because its lesion confidence was below the floor
    (``min_confidence``): what a reader needs to find it again."""

    label: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    suv_max: float
    confidence: float

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["centroid_mm"] = [round(c, 2) for c in self.centroid_mm]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DroppedLesion:
        """A dropped lesion from its ``to_json`` form (a report's ``dropped_lesions`` entry)."""
        c = data["centroid_mm"]
        return cls(
            label=int(data["label"]),
            volume_ml=float(data["volume_ml"]),
            centroid_mm=(float(c[0]), float(c[1]), float(c[2])),
            suv_max=float(data["suv_max"]),
            confidence=float(data["confidence"]),
        )


def drop_unconfident(
    mask: np.ndarray,
    model: LesionConfidence,
    maps: EvidenceMaps,
    geometry: Geometry,
    min_confidence: float,
) -> tuple[np.ndarray, tuple[DroppedLesion, ...], list[float] | None]:
    """``mask`` without the lesions (18-connected components of each label) whose calibrated
    confidence is below ``min_confidence``, those lesions (largest first), and the confidences
    of the lesions kept, in the order :func:`iter_lesions` reads the returned mask (removing
    whole components keeps the others' order), for :func:`lesion_table`. The evidence of every
    lesion is read from ``maps`` on the mask as given, so the order of removal does not
    matter. ``min_confidence`` 0 keeps every lesion (and the mask itself) and scores none."""
    if min_confidence <= 0:
        return mask, (), None
    dropped: list[DroppedLesion] = []
    kept: list[float] = []
    out = mask
    voxel_ml = geometry.voxel_volume_ml
    for label, box, comp in iter_lesions(mask):
        p_true = model(lesion_evidence(box, comp, maps))
        if p_true >= min_confidence:
            kept.append(p_true)
            continue
        if out is mask:
            out = mask.copy()
        out[box][comp] = 0
        dropped.append(
            DroppedLesion(
                label=label,
                volume_ml=float(comp.sum()) * voxel_ml,
                centroid_mm=_centroid(geometry, box, comp)[0],
                suv_max=float(maps.suv[box][comp].max()),
                confidence=p_true,
            )
        )
    dropped.sort(key=lambda d: -d.volume_ml)
    return out, tuple(dropped), kept


def _centroid(
    geometry: Geometry, box: tuple[slice, ...], comp: np.ndarray
) -> tuple[tuple[float, float, float], np.ndarray]:
    """The world centroid (mm) of a component given in its box, and its voxel indices on the
    whole grid."""
    voxels = np.argwhere(comp) + np.asarray([b.start for b in box])
    c = geometry.index_to_world(voxels.mean(axis=0))
    return (float(c[0]), float(c[1]), float(c[2])), voxels


def lesion_table(
    mask: np.ndarray,
    suv: np.ndarray,
    uncertainty: np.ndarray,
    geometry: Geometry,
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
    confidence: tuple[LesionConfidence, EvidenceMaps] | None = None,
    review_below: float = DEFAULT_REVIEW_BELOW,
    confidences: Sequence[float] | None = None,
) -> LesionTable:
    """Per-lesion quantities of a label map on ``geometry``.

    Lesions are the 18-connected components of each foreground label. ``suv`` and
    ``uncertainty`` must be on the same grid as ``mask``. With ``confidence`` (a lesion
    confidence model and the evidence maps it reads, :mod:`mefn.confidence`) each lesion gets
    its calibrated confidence and is flagged for review when that is below ``review_below``;
    without, a lesion is flagged when its mean uncertainty is at least ``review_threshold``.
    ``confidences``: the lesions' confidences already computed, in :func:`iter_lesions` order
    (:func:`drop_unconfident` gives them), instead of reading the evidence again.
    Lesions are sorted by decreasing volume and numbered from 1.
    """
    if not (mask.shape == suv.shape == uncertainty.shape == geometry.shape):
        raise ValueError(
            f"mask {mask.shape}, SUV {suv.shape}, uncertainty {uncertainty.shape} and grid "
            f"{geometry.shape} must have one shape"
        )
    voxel_ml = geometry.voxel_volume_ml
    offsets = _sphere_offsets(geometry.spacing_mm, SUV_PEAK_VOLUME_ML)
    rows: list[dict[str, object]] = []
    for index, (label, box, comp) in enumerate(iter_lesions(mask)):
        values = suv[box][comp].astype(np.float64)
        unc = uncertainty[box][comp].astype(np.float64)
        count = int(comp.sum())
        volume_ml = count * voxel_ml
        centroid, voxels = _centroid(geometry, box, comp)
        suv_mean = float(values.mean())
        peak = _peak_at(suv, voxels, offsets)
        rows.append(
            {
                "label": label,
                "voxels": count,
                "volume_ml": float(volume_ml),
                "centroid_mm": centroid,
                "suv_max": float(values.max()),
                "suv_mean": suv_mean,
                "suv_peak": float(peak),
                "tlg": float(suv_mean * volume_ml),
                "uncertainty_mean": float(unc.mean()),
                "uncertainty_max": float(unc.max()),
                "review": bool(unc.mean() >= review_threshold),
            }
        )
        if confidence is not None:
            model, maps = confidence
            p_true = (
                confidences[index]
                if confidences is not None
                else model(lesion_evidence(box, comp, maps))
            )
            rows[-1]["confidence"] = p_true
            rows[-1]["review"] = p_true < review_below
    if confidence is not None and confidences is not None and len(confidences) != len(rows):
        raise ValueError(f"{len(confidences)} confidences given for {len(rows)} lesions")
    rows.sort(key=lambda row: -int(row["voxels"]))  # type: ignore[call-overload]
    lesions = [Lesion(lesion_id=n, **row) for n, row in enumerate(rows, start=1)]  # type: ignore[arg-type]
    return LesionTable(
        lesions=tuple(lesions),
        mtv_ml=float(sum(lesion.volume_ml for lesion in lesions)),
        tlg=float(sum(lesion.tlg for lesion in lesions)),
        review_threshold=review_threshold,
        review_below=review_below if confidence is not None else None,
    )


@dataclass(frozen=True)
class HotSpotCheck:
    """Which PET hot spots outside the mask a report lists, so that nothing obvious is
    dropped in silence: a reader sees what the model decided was not tumour.

    A hot spot is an 18-connected region of voxels with SUV >= ``min_suv`` that holds at
    least ``min_volume_ml``, whose SUVmax reaches ``min_contrast`` times its background (the
    median SUV in a shell of BACKGROUND_SHELL_MM starting BACKGROUND_GAP_MM outside it, as for
    :class:`PetCheck`) and of which the mask covers less than ``max_covered_fraction`` (0: only
    regions the mask does not touch at all; the default 0.5 also lists a large hot tumour of
    which the mask holds a sliver).
    """

    min_suv: float = 2.5
    min_contrast: float = 2.0
    min_volume_ml: float = 0.2
    max_covered_fraction: float = 0.5
    enabled: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.min_suv) and self.min_suv > 0):
            problems.append(f"min_suv > 0, found {self.min_suv}")
        if not (math.isfinite(self.min_contrast) and self.min_contrast >= 0):
            problems.append(f"min_contrast >= 0, found {self.min_contrast}")
        if not (math.isfinite(self.min_volume_ml) and self.min_volume_ml >= 0):
            problems.append(f"min_volume_ml >= 0, found {self.min_volume_ml}")
        if not 0.0 <= self.max_covered_fraction <= 1.0:
            problems.append(f"max_covered_fraction in [0, 1], found {self.max_covered_fraction}")
        if problems:
            raise InputError(
                "hot-spot check expects " + "; ".join(problems) + " (e.g. min_suv 2.5, "
                "min_contrast 2, min_volume_ml 0.2)"
            )

    def to_json(self) -> dict[str, float | bool]:
        return asdict(self)


@dataclass(frozen=True)
class HotSpot:
    """A PET hot spot that the mask does not touch, with what the model thought of it."""

    spot_id: int
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    suv_max: float
    suv_mean: float
    background_suv: float
    #: SUVmax over the background (None: no background uptake around it)
    contrast: float | None
    #: the fraction of its voxels inside the mask (below the check's max_covered_fraction)
    covered_fraction: float
    #: highest probability of not being background the network gave inside (None: unknown)
    lesion_probability_max: float | None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["centroid_mm"] = [round(c, 2) for c in self.centroid_mm]
        for key in (
            "volume_ml",
            "suv_max",
            "suv_mean",
            "background_suv",
            "contrast",
            "covered_fraction",
        ):
            if data[key] is not None:
                data[key] = round(float(data[key]), 4)
        if self.lesion_probability_max is not None:
            data["lesion_probability_max"] = float(f"{self.lesion_probability_max:.3g}")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HotSpot:
        """A hot spot from its ``to_json`` form (a report's ``hot_spots`` entry)."""
        c = data["centroid_mm"]
        prob = data.get("lesion_probability_max")
        contrast = data.get("contrast")
        return cls(
            spot_id=int(data["spot_id"]),
            voxels=int(data["voxels"]),
            volume_ml=float(data["volume_ml"]),
            centroid_mm=(float(c[0]), float(c[1]), float(c[2])),
            suv_max=float(data["suv_max"]),
            suv_mean=float(data["suv_mean"]),
            background_suv=float(data["background_suv"]),
            contrast=None if contrast is None else float(contrast),
            covered_fraction=float(data.get("covered_fraction", 0.0)),
            lesion_probability_max=None if prob is None else float(prob),
        )


def find_hot_spots(
    mask: np.ndarray,
    suv: np.ndarray,
    geometry: Geometry,
    check: HotSpotCheck | None = None,
    lesion_probability: np.ndarray | None = None,
) -> tuple[HotSpot, ...]:
    """The PET hot spots of ``check`` that ``mask`` leaves out, hottest first.

    ``suv``, ``mask`` and ``lesion_probability`` (1 - p(background), any float dtype) are on
    ``geometry``'s grid. Regions the mask covers (``check.max_covered_fraction`` or more of
    their voxels) are not listed: the mask answers for them in the lesion table.
    """
    return label_hot_spots(mask, suv, geometry, check, lesion_probability)[0]


def label_hot_spots(
    mask: np.ndarray,
    suv: np.ndarray,
    geometry: Geometry,
    check: HotSpotCheck | None = None,
    lesion_probability: np.ndarray | None = None,
) -> tuple[tuple[HotSpot, ...], np.ndarray]:
    """:func:`find_hot_spots` and a map of them (int32, each spot's ``spot_id``, else 0)."""
    check = check or HotSpotCheck()
    if not (mask.shape == suv.shape == geometry.shape):
        raise ValueError(
            f"mask {mask.shape}, SUV {suv.shape} and grid {geometry.shape} must have one shape"
        )
    if lesion_probability is not None and lesion_probability.shape != mask.shape:
        raise ValueError(f"lesion probability {lesion_probability.shape} must be {mask.shape}")
    empty = np.zeros(mask.shape, dtype=np.int32)
    if not check.enabled:
        return (), empty
    hot = suv >= check.min_suv
    if not hot.any():
        return (), empty
    components = cc3d.connected_components(hot, connectivity=CONNECTIVITY)
    n = int(components.max())
    counts = np.bincount(components.ravel(), minlength=n + 1)
    covered = np.bincount(components[(mask > 0) & hot], minlength=n + 1)
    fraction = covered / np.maximum(counts, 1)
    candidate = counts * geometry.voxel_volume_ml >= check.min_volume_ml
    candidate[0] = False
    if check.max_covered_fraction > 0:
        candidate &= fraction < check.max_covered_fraction
    else:
        candidate &= covered == 0
    spacing = np.asarray(geometry.spacing_mm, dtype=np.float64)
    rows: list[dict[str, object]] = []
    for index, box in _padded_boxes(components, spacing, BACKGROUND_GAP_MM):
        if not candidate[index]:
            continue
        region = components[box] == index
        values = suv[box]
        inside = values[region].astype(np.float64)
        peak = float(inside.max())
        distance = ndimage.distance_transform_edt(~region, sampling=spacing)
        background = _background(values, distance, BACKGROUND_GAP_MM)
        if peak < check.min_contrast * max(background, 0.0):
            continue
        lo = np.asarray([b.start for b in box])
        voxels = np.argwhere(region) + lo
        centroid = geometry.index_to_world(voxels.mean(axis=0))
        prob = (
            float(lesion_probability[box][region].max()) if lesion_probability is not None else None
        )
        count = int(region.sum())
        rows.append(
            {
                "component": index,
                "voxels": count,
                "volume_ml": float(count * geometry.voxel_volume_ml),
                "centroid_mm": (float(centroid[0]), float(centroid[1]), float(centroid[2])),
                "suv_max": peak,
                "suv_mean": float(inside.mean()),
                "background_suv": background,
                "contrast": peak / background if background > 0 else None,
                "covered_fraction": float(fraction[index]),
                "lesion_probability_max": prob,
            }
        )
    rows.sort(key=lambda row: -float(row["suv_max"]))  # type: ignore[arg-type]
    lookup = np.zeros(n + 1, dtype=np.int32)
    spots = []
    for k, row in enumerate(rows, start=1):
        lookup[int(row.pop("component"))] = k  # type: ignore[call-overload]
        spots.append(HotSpot(spot_id=k, **row))  # type: ignore[arg-type]
    return tuple(spots), lookup[components]


def format_u(value: float) -> str:
    """An uncertainty for display: two decimals, or two significant digits below 0.01
    (0.80, 0.12, 0.0039)."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def choose_review_threshold(
    uncertainty_means: np.ndarray, false_positive: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The lesion-level review threshold that best separates false from true detections.

    ``uncertainty_means`` holds each predicted lesion's mean uncertainty and
    ``false_positive`` whether it touches no reference lesion. A lesion is flagged when its
    mean u is at least the threshold; the threshold maximises Youden's J = (share of false
    positives flagged) - (share of true lesions flagged), the lowest such value on a tie.
    Returns the threshold and ``{"j", "fp_flagged", "tp_flagged", "n_fp", "n_tp"}``.

    The Dempster-Shafer u of three combined opinions is small in absolute terms (about the
    product of the three masses), so a fixed threshold such as 0.3 suits one model and not
    another; calibrating it on validation cases gives the flag a measured meaning.
    """
    u = np.asarray(uncertainty_means, dtype=np.float64).ravel()
    fp = np.asarray(false_positive, dtype=bool).ravel()
    if u.shape != fp.shape:
        raise ValueError(f"{u.size} uncertainty values but {fp.size} false-positive flags")
    if not fp.any() or fp.all():
        raise ValueError(
            f"calibration needs both false and true detections, found {int(fp.sum())} false "
            f"and {int((~fp).sum())} true"
        )
    candidates = np.unique(u)
    flagged_fp = (u[fp][None, :] >= candidates[:, None]).mean(axis=1)
    flagged_tp = (u[~fp][None, :] >= candidates[:, None]).mean(axis=1)
    j = flagged_fp - flagged_tp
    best = int(np.argmax(j))  # first maximum: the lowest threshold
    return float(candidates[best]), {
        "j": float(j[best]),
        "fp_flagged": float(flagged_fp[best]),
        "tp_flagged": float(flagged_tp[best]),
        "n_fp": int(fp.sum()),
        "n_tp": int((~fp).sum()),
    }
