"""Static figures for reviewing a segmentation and its uncertainty.

Every function returns (or draws into) a :class:`matplotlib.figure.Figure` built directly,
without ``pyplot``: no backend is selected and no global state is touched, so the module is
safe in scripts, servers and notebooks alike (in a notebook, ``display(fig)`` shows one).

Orientation
    Arrays are indexed ``[i, j, k]`` on a grid whose direction matrix gives each axis in LPS
    (see :mod:`mefn.io.volume`). For display, each array is re-oriented (axes permuted and
    flipped, never resampled) to the LPS axis nearest to each of its axes, then shown in the
    radiological convention: axial seen from the feet with anterior up and the patient's
    right on the left of the screen; coronal seen from the front with the head up and the
    patient's right on the left; sagittal seen from the patient's left with the head up and
    anterior on the left. Oblique grids are shown on their nearest axes (the obliquity is
    logged, not corrected). Pixels keep their physical aspect ratio.

What the maps mean
    ``u`` is the fused evidential uncertainty mass in [0, 1] (1 = no evidence either way).
    The CT-versus-PET map is the signed difference ``u_ct - u_pet`` of the two modality
    opinions' uncertainty (:func:`modality_disagreement`): red where the CT branch is less
    sure than the PET branch, blue where PET is less sure; near zero where they agree.

Calibration (with a reference mask)
    The reliability diagram and the risk-coverage curve use :mod:`mefn.metrics.calibration`
    (the definitions of ``mefn evaluate``: 15-bin ECE, lesions referred by decreasing mean u).
    The reliability diagram is drawn over a region of interest: the bounding box of predicted
    and reference lesions grown by :data:`ROI_MARGIN_VOX` voxels (the whole image when both
    are empty), so the millions of trivially certain background voxels far from any lesion do
    not swamp it; ``mefn evaluate`` reports the whole-volume ECE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mefn.errors import GeometryError, InputError, OutputError
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume
from mefn.postprocess import DEFAULT_REVIEW_THRESHOLD, format_u

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mefn.inference import Prediction
    from mefn.postprocess import HotSpot, LesionTable

__all__ = [
    "LESION_COLUMNS",
    "PLANES",
    "ROI_MARGIN_VOX",
    "DisplayOrientation",
    "ReviewData",
    "auto_point",
    "display_orientation",
    "format_hot_spots",
    "format_lesion_table",
    "format_u",
    "lesion_choices",
    "prepare_review",
    "slice_figure",
    "slice_index",
    "load_review",
    "output_case_id",
    "lesion_point",
    "lesion_rows",
    "modality_disagreement",
    "move_point",
    "n_slices",
    "plot_calibration",
    "plot_lesion_table",
    "plot_map",
    "plot_mip",
    "plot_fusion",
    "review_figure",
    "save_figure",
    "slice_planes",
    "uncertainty_display_max",
]

logger = logging.getLogger(__name__)

PLANES: tuple[str, str, str] = ("axial", "coronal", "sagittal")
ROI_MARGIN_VOX = 10
#: CT window (level, width) in HU for PET/CT fusion: soft tissue.
CT_WINDOW_HU: tuple[float, float] = (40.0, 400.0)
LESION_COLUMNS: tuple[str, ...] = (
    "#",
    "label",
    "vol mL",
    "SUVmax",
    "SUVmean",
    "TLG",
    "u mean",
    "u max",
    "review",
)
# Screen orientation letters per plane: (top, bottom, left, right).
_PLANE_LETTERS = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}


# --- orientation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DisplayOrientation:
    """How to turn an ``[i, j, k]`` array into one indexed along (L, P, S).

    Canonical axis ``a`` is original axis ``perm[a]``, reversed when ``flip[a]``; so canonical
    index 0 along axis 0 is the patient's rightmost voxel, along 1 the most anterior, along 2
    the most inferior.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    oblique_deg: float

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The canonical view of a 3D array (a view, not a copy, where possible)."""
        out = np.transpose(array, self.perm)
        for axis, flipped in enumerate(self.flip):
            if flipped:
                out = np.flip(out, axis=axis)
        return out

    def to_canonical(self, point: Sequence[int]) -> tuple[int, int, int]:
        """Canonical index of an original voxel index."""
        out = []
        for a in range(3):
            value = int(point[self.perm[a]])
            out.append(self.shape[a] - 1 - value if self.flip[a] else value)
        return (out[0], out[1], out[2])

    def from_canonical(self, point: Sequence[int]) -> tuple[int, int, int]:
        """Original voxel index of a canonical index."""
        out = [0, 0, 0]
        for a in range(3):
            value = int(point[a])
            out[self.perm[a]] = self.shape[a] - 1 - value if self.flip[a] else value
        return (out[0], out[1], out[2])


def display_orientation(geometry: Geometry) -> DisplayOrientation:
    """The axis permutation and flips that bring ``geometry``'s array nearest to LPS."""
    direction = geometry.direction_matrix  # columns: array axes in LPS
    weights = np.abs(direction)
    perm = [-1, -1, -1]
    used_axes: set[int] = set()
    # Greedy assignment, largest cosine first: robust to oblique and tied directions.
    for flat in np.argsort(-weights, axis=None):
        lps, axis = divmod(int(flat), 3)
        if perm[lps] == -1 and axis not in used_axes:
            perm[lps] = axis
            used_axes.add(axis)
    flip = tuple(bool(direction[lps, perm[lps]] < 0) for lps in range(3))
    cosines = [abs(direction[lps, perm[lps]]) for lps in range(3)]
    oblique = float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))
    if oblique > 1.0:
        logger.debug("grid is oblique by %.1f degrees; shown on its nearest axes", oblique)
    shape = tuple(geometry.shape[p] for p in perm)
    spacing = tuple(geometry.spacing_mm[p] for p in perm)
    return DisplayOrientation(
        perm=(perm[0], perm[1], perm[2]),
        flip=(flip[0], flip[1], flip[2]),
        shape=(shape[0], shape[1], shape[2]),
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        oblique_deg=oblique,
    )


def _plane_axes(plane: str) -> tuple[int, int, int]:
    """(canonical axis held fixed, axis along screen rows, axis along screen columns)."""
    if plane == "axial":
        return 2, 1, 0
    if plane == "coronal":
        return 1, 2, 0
    if plane == "sagittal":
        return 0, 2, 1
    raise ValueError(f"plane must be one of {PLANES}, found {plane!r}")


def _canonical_plane(canon: np.ndarray, plane: str, index: int) -> np.ndarray:
    fixed, rows, _ = _plane_axes(plane)
    image = np.take(canon, index, axis=fixed)  # remaining axes in increasing order
    # After removing `fixed`, put `rows` first.
    remaining = [a for a in range(3) if a != fixed]
    if remaining[0] != rows:
        image = image.T
    if rows == 2:  # superior at the top of the screen
        image = image[::-1, :]
    return image


def _plane_aspect(orient: DisplayOrientation, plane: str) -> float:
    _, rows, cols = _plane_axes(plane)
    return orient.spacing_mm[rows] / orient.spacing_mm[cols]


def _screen_position(
    orient: DisplayOrientation, plane: str, canon_point: Sequence[int]
) -> tuple[float, float]:
    """(column, row) on screen of a canonical point in a plane's image."""
    _, rows, cols = _plane_axes(plane)
    row = canon_point[rows]
    if rows == 2:
        row = orient.shape[2] - 1 - row
    return float(canon_point[cols]), float(row)


def slice_planes(
    array: np.ndarray, geometry: Geometry, point: Sequence[int]
) -> dict[str, np.ndarray]:
    """The axial, coronal and sagittal images through voxel ``point`` as shown on screen.

    Row 0 is the top of the screen: anterior (axial) or superior (coronal, sagittal).
    """
    _check_grid(array, geometry, "image")
    _check_point(point, geometry)
    orient = display_orientation(geometry)
    canon = orient.apply(array)
    cpoint = orient.to_canonical(point)
    return {
        plane: _canonical_plane(canon, plane, cpoint[_plane_axes(plane)[0]]) for plane in PLANES
    }


def n_slices(geometry: Geometry, plane: str) -> int:
    """Number of display slices in ``plane`` (e.g. axial slices from feet to head)."""
    orient = display_orientation(geometry)
    return orient.shape[_plane_axes(plane)[0]]


def slice_index(geometry: Geometry, point: Sequence[int], plane: str) -> int:
    """The display slice of ``plane`` that ``point`` lies in (inverse of :func:`move_point`)."""
    orient = display_orientation(geometry)
    return orient.to_canonical(point)[_plane_axes(plane)[0]]


def move_point(
    geometry: Geometry, point: Sequence[int], plane: str, index: int
) -> tuple[int, int, int]:
    """``point`` moved to display slice ``index`` of ``plane`` (axial 0 = most inferior,
    coronal 0 = most anterior, sagittal 0 = patient's rightmost), as an ``[i, j, k]`` index."""
    orient = display_orientation(geometry)
    fixed = _plane_axes(plane)[0]
    if not 0 <= index < orient.shape[fixed]:
        raise ValueError(f"{plane} slice {index} is outside 0..{orient.shape[fixed] - 1}")
    canon = list(orient.to_canonical(point))
    canon[fixed] = int(index)
    return orient.from_canonical(canon)


def _check_grid(array: np.ndarray | None, geometry: Geometry, name: str) -> None:
    if array is not None and tuple(array.shape) != geometry.shape:
        raise GeometryError(
            f"{name} has shape {tuple(array.shape)} but the review grid is {geometry.shape}; "
            "resample it onto the prediction's grid first"
        )


def _check_point(point: Sequence[int], geometry: Geometry) -> None:
    if len(point) != 3 or not all(0 <= int(p) < n for p, n in zip(point, geometry.shape)):
        raise ValueError(
            f"slice point {tuple(point)} is outside the image of shape {geometry.shape}"
        )


# --- maps and points -----------------------------------------------------------------------
def modality_disagreement(u_ct: np.ndarray, u_pet: np.ndarray, signed: bool = True) -> np.ndarray:
    """CT-versus-PET disagreement: ``u_ct - u_pet`` (or its absolute value), float32.

    Positive where the CT opinion is less certain than the PET opinion, negative where the
    PET opinion is less certain; both maps must be on one grid.
    """
    if u_ct.shape != u_pet.shape:
        raise GeometryError(
            f"CT uncertainty {u_ct.shape} and PET uncertainty {u_pet.shape} must share a grid"
        )
    diff = u_ct.astype(np.float32) - u_pet.astype(np.float32)
    return np.abs(diff) if not signed else diff


def lesion_point(table: LesionTable, lesion_id: int, geometry: Geometry) -> tuple[int, int, int]:
    """Voxel index (clipped into the image) of a lesion's centroid."""
    for lesion in table.lesions:
        if lesion.lesion_id == lesion_id:
            index = np.rint(geometry.world_to_index(np.asarray(lesion.centroid_mm)))
            clipped = np.clip(index, 0, np.asarray(geometry.shape) - 1).astype(int)
            return (int(clipped[0]), int(clipped[1]), int(clipped[2]))
    known = [lesion.lesion_id for lesion in table.lesions]
    raise ValueError(f"no lesion {lesion_id} in the table; lesions are {known}")


def auto_point(
    geometry: Geometry,
    lesions: LesionTable | None = None,
    suv: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """Where a review starts: the most uncertain lesion flagged for review, else the largest
    lesion, else the hottest PET voxel, else the centre of the image."""
    if lesions is not None and lesions.lesions:
        flagged = [lesion for lesion in lesions.lesions if lesion.review]
        if flagged:
            pick = max(flagged, key=lambda lesion: lesion.uncertainty_mean)
        else:
            pick = max(lesions.lesions, key=lambda lesion: lesion.voxels)
        return lesion_point(lesions, pick.lesion_id, geometry)
    if suv is not None and suv.size and np.isfinite(suv).any():
        flat = int(np.nanargmax(suv))
        index = np.unravel_index(flat, suv.shape)
        return (int(index[0]), int(index[1]), int(index[2]))
    return (geometry.shape[0] // 2, geometry.shape[1] // 2, geometry.shape[2] // 2)


# --- drawing helpers -----------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _ct_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    level, width = window
    lo = level - width / 2.0
    return np.clip((image.astype(np.float32) - lo) / max(width, 1e-6), 0.0, 1.0)


def _pet_rgba(image: np.ndarray, suv_max: float, max_alpha: float = 0.75) -> np.ndarray:
    from matplotlib import colormaps

    scaled = np.clip(np.nan_to_num(image.astype(np.float32)) / max(suv_max, 1e-6), 0.0, 1.0)
    rgba = colormaps["hot"](scaled)
    rgba[..., 3] = max_alpha * scaled  # background uptake stays see-through, hot spots opaque
    return rgba


def _default_suv_max(suv: np.ndarray) -> float:
    finite = suv[np.isfinite(suv)]
    if finite.size == 0:
        return 1.0
    return float(max(np.percentile(finite, 99.9), 1.0))


def _style_axes(ax: Axes, plane: str, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    from matplotlib.patheffects import withStroke

    top, bottom, left, right = _PLANE_LETTERS[plane]
    for x, y, letter, ha, va in (
        (0.5, 0.98, top, "center", "top"),
        (0.5, 0.02, bottom, "center", "bottom"),
        (0.02, 0.5, left, "left", "center"),
        (0.98, 0.5, right, "right", "center"),
    ):
        ax.text(
            x,
            y,
            letter,
            ha=ha,
            va=va,
            transform=ax.transAxes,
            color="white",
            fontsize=7,
            fontweight="bold",
            path_effects=[withStroke(linewidth=1.5, foreground="black")],
        )


def _draw_contours(ax: Axes, image: np.ndarray, color: str, linestyle: str = "solid") -> None:
    if image is None or not np.any(image > 0) or np.all(image > 0):
        return
    ax.contour(
        (image > 0).astype(np.float32),
        levels=[0.5],
        colors=[color],
        linewidths=0.9,
        linestyles=linestyle,
    )


def _draw_crosshair(ax: Axes, x: float, y: float) -> None:
    ax.axvline(x, color="deepskyblue", linewidth=0.4, alpha=0.5)
    ax.axhline(y, color="deepskyblue", linewidth=0.4, alpha=0.5)


def _axes_row(fig: Figure, axes: Sequence[Axes] | None) -> Sequence[Axes]:
    if axes is None:
        return list(fig.subplots(1, 3))
    if len(axes) != 3:
        raise ValueError(f"expected three axes (axial, coronal, sagittal), found {len(axes)}")
    return axes


def plot_fusion(
    ct: np.ndarray,
    suv: np.ndarray,
    geometry: Geometry,
    point: Sequence[int],
    mask: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    ct_window_hu: tuple[float, float] = CT_WINDOW_HU,
    suv_max: float | None = None,
    axes: Sequence[Axes] | None = None,
    crosshair: bool = True,
) -> Figure:
    """PET/CT fusion in three planes through ``point``: CT in grey (window level, width in
    HU), PET in a hot colour map whose opacity grows with SUV, the predicted mask outlined in
    cyan and the reference (if given) in dashed green."""
    for name, arr in (("CT", ct), ("PET", suv), ("mask", mask), ("reference", reference)):
        _check_grid(arr, geometry, name)
    fig = _new_figure((12, 4)) if axes is None else axes[0].get_figure()
    axes = _axes_row(fig, axes)  # type: ignore[arg-type]
    orient = display_orientation(geometry)
    vmax = suv_max if suv_max is not None else _default_suv_max(suv)
    ct_planes = slice_planes(ct, geometry, point)
    pet_planes = slice_planes(suv, geometry, point)
    mask_planes = slice_planes(mask, geometry, point) if mask is not None else None
    ref_planes = slice_planes(reference, geometry, point) if reference is not None else None
    cpoint = orient.to_canonical(point)
    for ax, plane in zip(axes, PLANES):
        aspect = _plane_aspect(orient, plane)
        ax.imshow(
            _ct_grey(ct_planes[plane], ct_window_hu),
            cmap="gray",
            vmin=0,
            vmax=1,
            aspect=aspect,
            interpolation="nearest",
        )
        ax.imshow(_pet_rgba(pet_planes[plane], vmax), aspect=aspect, interpolation="nearest")
        if mask_planes is not None:
            _draw_contours(ax, mask_planes[plane], "cyan")
        if ref_planes is not None:
            _draw_contours(ax, ref_planes[plane], "lime", "dashed")
        if crosshair:
            _draw_crosshair(ax, *_screen_position(orient, plane, cpoint))
        _style_axes(ax, plane, f"PET/CT {plane} {cpoint[_plane_axes(plane)[0]]}")
    return fig  # type: ignore[return-value]


def uncertainty_display_max(uncertainty: np.ndarray, review_threshold: float) -> float:
    """Top of the colour scale for a u map: its 99.9th percentile or twice the review threshold,
    whichever is larger; 1 once that reaches 0.5. MEFN's fused u is often far below 1 (the
    Dempster-Shafer combination multiplies the opinions' uncertainty masses), and on a fixed
    0-1 scale the map would look uniformly certain."""
    finite = uncertainty[np.isfinite(uncertainty)]
    top = float(np.percentile(finite, 99.9)) if finite.size else 1.0
    top = max(top, 2.0 * review_threshold, 1e-3)
    return 1.0 if top >= 0.5 else top


def plot_map(
    values: np.ndarray,
    geometry: Geometry,
    point: Sequence[int],
    label: str = "uncertainty u",
    cmap: str = "magma",
    vmin: float = 0.0,
    vmax: float = 1.0,
    mask: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    axes: Sequence[Axes] | None = None,
    crosshair: bool = True,
    colorbar: bool = True,
) -> Figure:
    """A voxel map (uncertainty, disagreement, probability) as a heat map in three planes
    through ``point``, with the predicted mask (white) and reference (dashed green)."""
    for name, arr in (("map", values), ("mask", mask), ("reference", reference)):
        _check_grid(arr, geometry, name)
    fig = _new_figure((12, 4)) if axes is None else axes[0].get_figure()
    axes = _axes_row(fig, axes)  # type: ignore[arg-type]
    orient = display_orientation(geometry)
    planes = slice_planes(values, geometry, point)
    mask_planes = slice_planes(mask, geometry, point) if mask is not None else None
    ref_planes = slice_planes(reference, geometry, point) if reference is not None else None
    cpoint = orient.to_canonical(point)
    image = None
    for ax, plane in zip(axes, PLANES):
        image = ax.imshow(
            planes[plane],
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            aspect=_plane_aspect(orient, plane),
            interpolation="nearest",
        )
        if mask_planes is not None:
            _draw_contours(ax, mask_planes[plane], "white")
        if ref_planes is not None:
            _draw_contours(ax, ref_planes[plane], "lime", "dashed")
        if crosshair:
            _draw_crosshair(ax, *_screen_position(orient, plane, cpoint))
        _style_axes(ax, plane, f"{label} {plane}")
    if colorbar and image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label=label)  # type: ignore[union-attr]
    return fig  # type: ignore[return-value]


MIP_MAX_MARKS = 25


def plot_mip(
    suv: np.ndarray,
    geometry: Geometry,
    lesions: LesionTable | None = None,
    mask: np.ndarray | None = None,
    suv_max: float | None = None,
    ax: Axes | None = None,
    u_max: float = 1.0,
    hot_spots: Sequence[HotSpot] = (),
) -> Figure:
    """Coronal maximum-intensity projection of the PET (inverted grey, as read clinically),
    each lesion marked at its centroid with its number, coloured by its mean uncertainty
    (0 to ``u_max``), lesions flagged for review ringed in red, and the PET hot spots the
    mask leaves out marked with orange triangles (``H<n>``, SUVmax and the network's highest
    lesion probability there)."""
    _check_grid(suv, geometry, "PET")
    _check_grid(mask, geometry, "mask")
    fig = _new_figure((5, 8)) if ax is None else ax.get_figure()
    if ax is None:
        ax = fig.subplots()  # type: ignore[union-attr]
    assert ax is not None  # for mypy: set just above
    orient = display_orientation(geometry)
    canon = orient.apply(np.nan_to_num(suv.astype(np.float32)))
    mip = canon.max(axis=1).T[::-1, :]  # rows: superior at top; columns: patient right at left
    vmax = suv_max if suv_max is not None else _default_suv_max(suv)
    aspect = orient.spacing_mm[2] / orient.spacing_mm[0]
    ax.imshow(mip, cmap="gray_r", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
    if mask is not None:
        projected = np.asarray(orient.apply(mask > 0).any(axis=1)).T[::-1, :]
        _draw_contours(ax, projected, "tab:cyan")
    if lesions is not None and lesions.lesions:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        # mark the flagged lesions and the largest others, at most MIP_MAX_MARKS in all
        ranked = sorted(lesions.lesions, key=lambda les: (not les.review, -les.volume_ml))
        for lesion in ranked[:MIP_MAX_MARKS]:
            index = lesion_point(lesions, lesion.lesion_id, geometry)
            x, y = _screen_position(orient, "coronal", orient.to_canonical(index))
            colour = cmap(float(np.clip(lesion.uncertainty_mean / u_max, 0.0, 1.0)))
            ax.scatter(
                [x],
                [y],
                s=70,
                facecolors="none",
                edgecolors=["red" if lesion.review else colour],
                linewidths=2.0 if lesion.review else 1.2,
            )
            ax.annotate(
                f"{lesion.lesion_id} u={format_u(lesion.uncertainty_mean)}",
                (x, y),
                xytext=(6, 4),
                textcoords="offset points",
                fontsize=7,
                color="red" if lesion.review else "black",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
            )
    for spot in list(hot_spots)[:MIP_MAX_MARKS]:
        _mark_hot_spot(ax, orient, geometry, spot)
    ax.set_xticks([])
    ax.set_yticks([])
    title = "PET MIP (coronal)"
    if lesions is not None:
        title += f": {len(lesions.lesions)} lesion(s), {lesions.n_review} to review"
        if len(lesions.lesions) > MIP_MAX_MARKS:
            title += f"\n(marked: flagged and largest, {MIP_MAX_MARKS} of {len(lesions.lesions)})"
    if hot_spots:
        title += f"\n{len(hot_spots)} hot spot(s) outside the mask (orange: check them)"
    ax.set_title(title, fontsize=9)
    return fig  # type: ignore[return-value]


def _mark_hot_spot(ax: Axes, orient: DisplayOrientation, geometry: Geometry, spot: HotSpot) -> None:
    index = np.rint(geometry.world_to_index(np.asarray(spot.centroid_mm))).astype(int)
    index = np.clip(index, 0, np.asarray(geometry.shape) - 1)
    x, y = _screen_position(orient, "coronal", orient.to_canonical(tuple(int(v) for v in index)))
    ax.scatter([x], [y], s=80, marker="^", facecolors="none", edgecolors=["tab:orange"])
    p = spot.lesion_probability_max
    ax.annotate(
        f"H{spot.spot_id} SUV {spot.suv_max:.1f}" + ("" if p is None else f" p={p:.2g}"),
        (x, y),
        xytext=(6, -10),
        textcoords="offset points",
        fontsize=7,
        color="tab:orange",
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
    )


# --- lesion table ------------------------------------------------------------------------
def lesion_rows(table: LesionTable) -> list[tuple[str, ...]]:
    """The lesions as text rows (columns :data:`LESION_COLUMNS`), most uncertain first."""
    ordered = sorted(table.lesions, key=lambda lesion: (-lesion.uncertainty_mean, lesion.lesion_id))
    return [
        (
            str(lesion.lesion_id),
            str(lesion.label),
            f"{lesion.volume_ml:.2f}",
            f"{lesion.suv_max:.2f}",
            f"{lesion.suv_mean:.2f}",
            f"{lesion.tlg:.1f}",
            format_u(lesion.uncertainty_mean),
            f"{lesion.uncertainty_max:.2f}",
            "REVIEW" if lesion.review else "",
        )
        for lesion in ordered
    ]


def lesion_choices(table: LesionTable) -> list[tuple[str, int]]:
    """(label, lesion id) pairs for a lesion picker, most uncertain first."""
    ordered = sorted(table.lesions, key=lambda lesion: (-lesion.uncertainty_mean, lesion.lesion_id))
    return [
        (
            f"{lesion.lesion_id}: {lesion.volume_ml:.2f} mL, SUVmax {lesion.suv_max:.1f}, "
            f"u {format_u(lesion.uncertainty_mean)}{'  REVIEW' if lesion.review else ''}",
            lesion.lesion_id,
        )
        for lesion in ordered
    ]


def format_lesion_table(table: LesionTable) -> str:
    """The lesion table as aligned plain text, most uncertain lesion first."""
    rows = [LESION_COLUMNS, *lesion_rows(table)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(LESION_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not table.lesions:
        lines.append("(no lesion found)")
    lines.append(
        f"MTV {table.mtv_ml:.2f} mL, TLG {table.tlg:.1f}; {table.n_review} lesion(s) with "
        f"mean u >= {format_u(table.review_threshold)} flagged for review"
    )
    return "\n".join(lines)


HOT_SPOT_COLUMNS: tuple[str, ...] = ("H#", "vol mL", "SUVmax", "contrast", "p lesion", "centre mm")


def format_hot_spots(spots: Sequence[HotSpot]) -> str:
    """The PET hot spots outside the mask as aligned plain text, hottest first."""
    if not spots:
        return "no PET hot spot outside the mask"
    rows = [HOT_SPOT_COLUMNS]
    for spot in spots:
        c = spot.centroid_mm
        rows.append(
            (
                f"H{spot.spot_id}",
                f"{spot.volume_ml:.2f}",
                f"{spot.suv_max:.2f}",
                "-" if spot.contrast is None else f"{spot.contrast:.1f}",
                "-"
                if spot.lesion_probability_max is None
                else f"{spot.lesion_probability_max:.3g}",
                f"({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f})",
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(HOT_SPOT_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(
        f"{len(spots)} PET hot spot(s) the mask leaves out: the model judged them not lesion "
        "(p lesion: its highest probability there); check them"
    )
    return "\n".join(lines)


def plot_lesion_table(table: LesionTable, ax: Axes | None = None, max_rows: int = 15) -> Figure:
    """The lesion table drawn as a figure table, most uncertain first, flagged rows in red."""
    fig = _new_figure((7, 4)) if ax is None else ax.get_figure()
    if ax is None:
        ax = fig.subplots()  # type: ignore[union-attr]
    assert ax is not None  # for mypy: set just above
    ax.axis("off")
    rows = lesion_rows(table)
    shown = rows[:max_rows]
    title = (
        f"lesions by uncertainty (MTV {table.mtv_ml:.1f} mL)\n"
        f"{table.n_review} flagged for review: mean u >= {format_u(table.review_threshold)}"
    )
    if len(rows) > max_rows:
        title += f"; {len(rows) - max_rows} more not shown"
    ax.set_title(title, fontsize=9)
    if not shown:
        ax.text(0.5, 0.5, "no lesion found", ha="center", va="center", transform=ax.transAxes)
        return fig  # type: ignore[return-value]
    mpl_table = ax.table(cellText=shown, colLabels=list(LESION_COLUMNS), loc="upper center")
    mpl_table.auto_set_font_size(False)
    mpl_table.set_fontsize(7)
    for r, row in enumerate(shown, start=1):
        if row[-1]:
            for c in range(len(LESION_COLUMNS)):
                mpl_table[r, c].set_facecolor("#ffd6d6")
    return fig  # type: ignore[return-value]


# --- calibration ---------------------------------------------------------------------------
def _roi_box(mask: np.ndarray, reference: np.ndarray) -> tuple[slice, ...]:
    either = (mask > 0) | (reference > 0)
    if not either.any():
        return tuple(slice(0, n) for n in mask.shape)
    idx = np.argwhere(either)
    lo = np.maximum(idx.min(axis=0) - ROI_MARGIN_VOX, 0)
    hi = np.minimum(idx.max(axis=0) + ROI_MARGIN_VOX + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def plot_calibration(
    mask: np.ndarray,
    uncertainty: np.ndarray,
    reference: np.ndarray,
    probabilities: np.ndarray | None = None,
    axes: Sequence[Axes] | None = None,
    n_bins: int = 10,
) -> Figure:
    """Reliability diagram and risk-coverage curve of the prediction against ``reference``.

    Confidence is the probability of the predicted class when ``probabilities``
    (``(K, X, Y, Z)``) are given, else ``1 - u``. Voxels: the region of interest described in
    the module docstring.
    """
    if mask.shape != reference.shape or mask.shape != uncertainty.shape:
        raise GeometryError(
            f"mask {mask.shape}, uncertainty {uncertainty.shape} and reference "
            f"{reference.shape} must share a grid; resample the reference onto the prediction"
        )
    if probabilities is not None and probabilities.shape[1:] != mask.shape:
        raise GeometryError(
            f"probabilities {probabilities.shape} do not match the mask grid {mask.shape}"
        )
    fig = _new_figure((8, 4)) if axes is None else axes[0].get_figure()
    if axes is None:
        axes = list(fig.subplots(1, 2))  # type: ignore[union-attr]
    if len(axes) != 2:
        raise ValueError(f"expected two axes (reliability, risk-coverage), found {len(axes)}")
    from mefn.metrics.calibration import (
        calibration_counts,
        expected_calibration_error,
        lesion_units,
        risk_coverage,
    )

    region = np.zeros(mask.shape, dtype=bool)
    region[_roi_box(mask, reference)] = True
    counts = calibration_counts(
        reference,
        mask,
        uncertainty,
        probabilities=probabilities,
        n_classes=max(2, int(max(mask.max(initial=0), reference.max(initial=0))) + 1),
        region=region,
    )
    conf_label = "predicted-class probability" if probabilities is not None else "confidence 1 - u"
    rel = counts.reliability()
    ece = expected_calibration_error(counts)
    rc = risk_coverage(lesion_units(reference, mask, uncertainty))
    ax_rel, ax_rc = axes[0], axes[1]
    edges = np.asarray(rel["edges"])
    centres = 0.5 * (edges[:-1] + edges[1:])
    acc = np.asarray(rel["accuracy"])
    ax_rel.bar(centres, np.nan_to_num(acc), width=edges[1] - edges[0], edgecolor="k", alpha=0.7)
    ax_rel.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_xlabel(conf_label, fontsize=8)
    ax_rel.set_ylabel("observed accuracy", fontsize=8)
    ax_rel.set_title(f"reliability (ECE {ece:.3f}, lesion region)", fontsize=9)
    ax_rc.step(np.asarray(rc["coverage"]), np.asarray(rc["dice"]), where="post", linewidth=1.2)
    ax_rc.set_xlim(1, 0)
    ax_rc.set_ylim(0, 1.02)
    ax_rc.set_xlabel("coverage (lesions left automatic; most uncertain referred first)", fontsize=8)
    ax_rc.set_ylabel("Dice after referral", fontsize=8)
    ax_rc.set_title(f"risk-coverage (area {rc['area']:.3f})", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
    return fig  # type: ignore[return-value]


# --- the one-page review -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReviewData:
    """Everything a review figure shows, on one grid (the prediction's)."""

    geometry: Geometry
    ct: np.ndarray
    suv: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray
    lesions: LesionTable | None = None
    uncertainty_ct: np.ndarray | None = None
    uncertainty_pet: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    reference: np.ndarray | None = None
    case_id: str = "case"
    #: PET hot spots the mask leaves out (the report's ``hot_spots``)
    hot_spots: tuple[HotSpot, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "ct",
            "suv",
            "mask",
            "uncertainty",
            "uncertainty_ct",
            "uncertainty_pet",
            "reference",
        ):
            _check_grid(getattr(self, name), self.geometry, name)
        if (
            self.probabilities is not None
            and tuple(self.probabilities.shape[1:]) != self.geometry.shape
        ):
            raise GeometryError(
                f"probabilities {self.probabilities.shape} do not match the grid "
                f"{self.geometry.shape}; expected (K, *grid)"
            )

    @classmethod
    def from_prediction(
        cls,
        prediction: Prediction,
        ct: Volume | np.ndarray,
        reference: Volume | np.ndarray | None = None,
    ) -> ReviewData:
        """From a :class:`mefn.inference.Prediction`, the CT and optionally a reference mask.

        Arrays must be on the prediction's grid; volumes on another grid are resampled onto
        it (CT linearly, the reference by nearest neighbour).
        """
        geo = prediction.geometry
        return cls(
            geometry=geo,
            ct=_array_on_grid(ct, geo, "CT", "linear", -1000.0),
            suv=prediction.suv,
            mask=prediction.mask,
            uncertainty=prediction.uncertainty,
            lesions=prediction.lesions,
            uncertainty_ct=prediction.uncertainty_ct,
            uncertainty_pet=prediction.uncertainty_pet,
            probabilities=prediction.probabilities,
            reference=_reference_on_grid(reference, geo),
            case_id=prediction.case_id,
            hot_spots=prediction.hot_spots,
        )

    def lesion_table(self) -> LesionTable:
        """The given lesion table, or one computed from the mask (review threshold 0.3)."""
        if self.lesions is not None:
            return self.lesions
        from mefn.postprocess import lesion_table

        return lesion_table(self.mask, self.suv, self.uncertainty, self.geometry)


# --- loading `mefn segment` outputs --------------------------------------------------------
def _array_on_grid(
    image: Volume | np.ndarray, geometry: Geometry, what: str, interpolation: str, default: float
) -> np.ndarray:
    """An array on ``geometry``: arrays as given, volumes resampled when their grid differs."""
    if not isinstance(image, Volume):
        return np.asarray(image)
    if image.geometry.same_grid(geometry):
        return image.array
    from mefn.io.geometry import resample_to

    logger.info("resampling the %s onto the prediction grid (%s)", what, interpolation)
    return resample_to(image, geometry, interpolation=interpolation, default_value=default).array


def _reference_on_grid(
    reference: Volume | np.ndarray | None, geometry: Geometry
) -> np.ndarray | None:
    if reference is None:
        return None
    return _array_on_grid(reference, geometry, "reference", "nearest", 0.0).astype(np.uint8)


def output_case_id(folder: str | os.PathLike[str], case_id: str | None = None) -> str:
    """The case whose `mefn segment` outputs are in ``folder`` (the only one, or ``case_id``)."""
    folder = Path(folder)
    found = sorted(p.name[: -len("_mask.nii.gz")] for p in folder.glob("*_mask.nii.gz"))
    if case_id is not None:
        if case_id not in found:
            raise InputError(
                f"no {case_id}_mask.nii.gz in {folder}; cases there: {', '.join(found) or 'none'}"
            )
        return case_id
    if not found:
        raise InputError(
            f"{folder} holds no <case>_mask.nii.gz: expected a `mefn segment` output folder"
        )
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(
            f"{folder} holds outputs of {len(found)} cases ({shown}); choose one with --case-id"
        )
    return found[0]


def _report_threshold(path: Path, default: float = DEFAULT_REVIEW_THRESHOLD) -> float:
    if not path.is_file():
        return default
    import json

    try:
        return float(json.loads(path.read_text(encoding="utf-8")).get("review_threshold", default))
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
        logger.warning("%s is not a mefn report; using review threshold %g", path, default)
        return default


def _report_hot_spots(path: Path) -> tuple[HotSpot, ...]:
    """The hot spots a report lists (none for a report without them, or no report)."""
    if not path.is_file():
        return ()
    import json

    from mefn.postprocess import HotSpot

    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("hot_spots") or []
        return tuple(HotSpot.from_json(entry) for entry in entries)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError, KeyError):
        logger.warning("%s has no readable hot spots; none are marked", path)
        return ()


def load_review(
    outputs: str | os.PathLike[str],
    case: Case | str | os.PathLike[str],
    reference: Volume | str | os.PathLike[str] | None = None,
    case_id: str | None = None,
) -> ReviewData:
    """Review data from a `mefn segment` output folder and the input case it was made from.

    Reads ``<case>_mask`` and ``<case>_uncertainty`` (and, when both exist,
    ``<case>_uncertainty_ct`` / ``_pet`` from ``--extra``); ``case`` (a :class:`Case` or a path
    for :func:`mefn.io.discovery.load_case`) gives the CT and PET, resampled onto the output
    grid when needed. The lesion table is recomputed with the report's review threshold.
    """
    from mefn.io.readers import read_volume
    from mefn.postprocess import lesion_table

    folder = Path(outputs)
    case_id = output_case_id(folder, case_id)
    paths = {
        key: folder / f"{case_id}_{key}.nii.gz"
        for key in ("mask", "uncertainty", "uncertainty_ct", "uncertainty_pet")
    }
    if not paths["uncertainty"].is_file():
        raise InputError(
            f"{paths['uncertainty']} is missing beside {paths['mask'].name}; "
            "rerun `mefn segment` for this case"
        )
    if reference is not None and not isinstance(reference, Volume):
        ref_path = Path(reference)
        if not ref_path.is_file():
            raise InputError(f"reference mask {reference} does not exist; check the path")
    mask_vol = read_volume(paths["mask"])
    geo = mask_vol.geometry
    unc_vol = read_volume(paths["uncertainty"])
    if not unc_vol.geometry.same_grid(geo):
        raise GeometryError(
            f"{paths['uncertainty'].name} and {paths['mask'].name} are on different grids; "
            "both must come from one `mefn segment` run"
        )
    extra: dict[str, np.ndarray] = {}
    if paths["uncertainty_ct"].is_file() and paths["uncertainty_pet"].is_file():
        u_ct, u_pet = (read_volume(paths[k]) for k in ("uncertainty_ct", "uncertainty_pet"))
        if u_ct.geometry.same_grid(geo) and u_pet.geometry.same_grid(geo):
            extra = {"uncertainty_ct": u_ct.array, "uncertainty_pet": u_pet.array}
    if isinstance(case, Case):
        loaded = case
    else:
        from mefn.io.discovery import load_case

        loaded = load_case(Path(case))
    ref_volume = (
        reference
        if reference is None or isinstance(reference, Volume)
        else read_volume(Path(reference))
    )
    ct = _array_on_grid(loaded.ct, geo, "CT", "linear", -1000.0)
    suv = _array_on_grid(loaded.pet, geo, "PET", "linear", 0.0).astype(np.float32)
    mask = np.asarray(mask_vol.array, dtype=np.uint8)
    unc = np.asarray(unc_vol.array, dtype=np.float32)
    report_path = folder / f"{case_id}_report.json"
    threshold = _report_threshold(report_path)
    return ReviewData(
        geometry=geo,
        ct=ct,
        suv=suv,
        mask=mask,
        uncertainty=unc,
        lesions=lesion_table(mask, suv, unc, geo, review_threshold=threshold),
        reference=_reference_on_grid(ref_volume, geo),
        case_id=case_id,
        hot_spots=_report_hot_spots(report_path),
        **extra,
    )


def _plot_uncertainty(data: ReviewData, point: Any, axes: Any, review_threshold: float) -> float:
    """The u map into three axes on its own scale (:func:`uncertainty_display_max`), with the
    mask and any reference; returns the top of the scale."""
    u_max = uncertainty_display_max(data.uncertainty, review_threshold)
    plot_map(
        data.uncertainty,
        data.geometry,
        point,
        label="uncertainty u",
        cmap="magma",
        vmax=u_max,
        mask=data.mask,
        reference=data.reference,
        axes=axes,
    )
    return u_max


def _plot_disagreement(data: ReviewData, point: Any, axes: Any) -> None:
    """The signed CT-versus-PET uncertainty map into three axes (needs both modality maps)."""
    if data.uncertainty_ct is None or data.uncertainty_pet is None:
        raise ValueError("the disagreement map needs uncertainty_ct and uncertainty_pet")
    plot_map(
        modality_disagreement(data.uncertainty_ct, data.uncertainty_pet),
        data.geometry,
        point,
        label="u_CT - u_PET",
        cmap="RdBu_r",
        vmin=-1.0,
        vmax=1.0,
        mask=data.mask,
        axes=axes,
    )


def review_figure(
    data: ReviewData,
    point: Sequence[int] | None = None,
    ct_window_hu: tuple[float, float] = CT_WINDOW_HU,
    suv_max: float | None = None,
) -> Figure:
    """A one-page review of a case.

    Left, three rows in three planes through ``point`` (default :func:`auto_point`): PET/CT
    fusion with the mask outlined, the uncertainty u, and the CT-versus-PET disagreement
    (when both modality maps are present). Right: the coronal PET MIP with lesions marked and
    the lesion table sorted by uncertainty. Bottom, with a reference mask: the reliability
    diagram and the risk-coverage curve.
    """
    table = data.lesion_table()
    point = tuple(point) if point is not None else auto_point(data.geometry, table, data.suv)
    _check_point(point, data.geometry)
    vmax = suv_max if suv_max is not None else _default_suv_max(data.suv)
    has_ref = data.reference is not None
    has_pair = data.uncertainty_ct is not None and data.uncertainty_pet is not None
    heights = [1.0, 1.0, 1.0 if has_pair else 0.35] + ([0.9] if has_ref else [])
    fig = _new_figure((17, 4.0 * sum(heights) + 0.8))
    grid = fig.add_gridspec(len(heights), 4, width_ratios=[1, 1, 1, 1.3], height_ratios=heights)
    row_axes = [[fig.add_subplot(grid[r, c]) for c in range(3)] for r in range(3)]
    plot_fusion(
        data.ct,
        data.suv,
        data.geometry,
        point,
        mask=data.mask,
        reference=data.reference,
        ct_window_hu=ct_window_hu,
        suv_max=vmax,
        axes=row_axes[0],
    )
    u_max = _plot_uncertainty(data, point, row_axes[1], table.review_threshold)
    if has_pair:
        _plot_disagreement(data, point, row_axes[2])
    else:
        for ax in row_axes[2]:
            ax.axis("off")
        row_axes[2][1].text(
            0.5,
            0.5,
            "CT-versus-PET disagreement not available:\n"
            "segment with `mefn segment --extra` to keep both modality opinions",
            ha="center",
            va="center",
            fontsize=9,
            transform=row_axes[2][1].transAxes,
        )
    plot_mip(
        data.suv,
        data.geometry,
        lesions=table,
        mask=data.mask,
        suv_max=vmax,
        ax=fig.add_subplot(grid[0:2, 3]),
        u_max=u_max,
        hot_spots=data.hot_spots,
    )
    plot_lesion_table(table, ax=fig.add_subplot(grid[2, 3]))
    if has_ref:
        assert data.reference is not None  # for mypy: has_ref
        plot_calibration(
            data.mask,
            data.uncertainty,
            data.reference,
            probabilities=data.probabilities,
            axes=[fig.add_subplot(grid[3, 0]), fig.add_subplot(grid[3, 1])],
        )
        ax_text = fig.add_subplot(grid[3, 2:])
        ax_text.axis("off")
        ax_text.text(
            0.0,
            0.9,
            _reference_summary(data),
            va="top",
            fontsize=9,
            family="monospace",
            transform=ax_text.transAxes,
        )
    fig.suptitle(
        f"{data.case_id}: slice point [i, j, k] = {tuple(int(p) for p in point)}; "
        f"{len(table.lesions)} lesion(s), {table.n_review} flagged for review"
        + (f", {len(data.hot_spots)} PET hot spot(s) outside the mask" if data.hot_spots else ""),
        fontsize=11,
    )
    return fig


def slice_figure(
    data: ReviewData,
    point: Sequence[int],
    ct_window_hu: tuple[float, float] = CT_WINDOW_HU,
    suv_max: float | None = None,
) -> Figure:
    """The three planes through ``point``: fusion, uncertainty and (when available) the
    CT-versus-PET disagreement; lighter than :func:`review_figure`, for browsing slices."""
    _check_point(point, data.geometry)
    has_pair = data.uncertainty_ct is not None and data.uncertainty_pet is not None
    rows = 3 if has_pair else 2
    fig = _new_figure((13, 4 * rows))
    axes = fig.subplots(rows, 3)
    plot_fusion(
        data.ct,
        data.suv,
        data.geometry,
        point,
        mask=data.mask,
        reference=data.reference,
        ct_window_hu=ct_window_hu,
        suv_max=suv_max if suv_max is not None else _default_suv_max(data.suv),
        axes=list(axes[0]),
    )
    threshold = (
        data.lesions.review_threshold if data.lesions is not None else DEFAULT_REVIEW_THRESHOLD
    )
    _plot_uncertainty(data, point, list(axes[1]), threshold)
    if data.uncertainty_ct is not None and data.uncertainty_pet is not None:
        _plot_disagreement(data, point, list(axes[2]))
    fig.suptitle(f"{data.case_id}: [i, j, k] = {tuple(int(p) for p in point)}", fontsize=10)
    return fig


def prepare_review(
    case: Case | str | os.PathLike[str] | None = None,
    outputs: str | os.PathLike[str] | None = None,
    reference: Volume | str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] = "default",
    device: str = "auto",
    phantom_seed: int = 2026,
) -> ReviewData:
    """Review data for the notebook and scripts, from whatever is at hand.

    With ``outputs`` (a `mefn segment` folder) and ``case``: :func:`load_review`. With a case
    only: segmented here by :class:`mefn.inference.Predictor` (``model``, ``device``). With
    neither: a whole-body phantom (:func:`mefn.data.phantoms.generate_study`, ``phantom_seed``)
    is generated and segmented, and its true lesion mask becomes the reference.
    """
    if outputs is not None:
        if case is None:
            raise InputError(
                f"outputs {outputs} need the input case they were made from; pass case="
            )
        return load_review(outputs, case, reference=reference)
    from mefn.inference import Predictor

    if case is None:
        from mefn.data.phantoms import generate_study

        study = generate_study(phantom_seed, kind="wholebody")
        loaded = Case(f"phantom_{phantom_seed}", ct=study.ct, pet=study.pet, label=study.label_ct)
        if reference is None:
            reference = study.label_ct
    elif isinstance(case, Case):
        loaded = case
    else:
        from mefn.io.discovery import load_case

        loaded = load_case(Path(case))
    ref_volume: Volume | None = None
    if isinstance(reference, Volume):
        ref_volume = reference
    elif reference is not None:
        from mefn.io.readers import read_volume

        if not Path(reference).is_file():
            raise InputError(f"reference mask {reference} does not exist; check the path")
        ref_volume = read_volume(Path(reference))
    prediction = Predictor(model if isinstance(model, str) else Path(model), device=device).predict(
        loaded, keep_extra=True
    )
    return ReviewData.from_prediction(prediction, loaded.ct, reference=ref_volume)


def _reference_summary(data: ReviewData) -> str:
    assert data.reference is not None  # called only with a reference
    pred = data.mask > 0
    ref = data.reference > 0
    total = int(pred.sum()) + int(ref.sum())
    dice = 2.0 * int((pred & ref).sum()) / total if total else float("nan")
    voxel_ml = data.geometry.voxel_volume_ml
    wrong = pred != ref
    u_wrong = float(data.uncertainty[wrong].mean()) if wrong.any() else float("nan")
    u_right = (
        float(data.uncertainty[~wrong & (pred | ref)].mean())
        if (~wrong & (pred | ref)).any()
        else float("nan")
    )
    return (
        f"against the reference mask\n"
        f"  Dice (all lesions)       {dice:.3f}\n"
        f"  predicted volume         {pred.sum() * voxel_ml:.2f} mL\n"
        f"  reference volume         {ref.sum() * voxel_ml:.2f} mL\n"
        f"  mean u, wrong voxels     {u_wrong:.3f}\n"
        f"  mean u, correct lesion   {u_right:.3f}\n"
        "u should be higher where the mask is wrong."
    )


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically, as PNG or PDF by its extension."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf"):
        raise OutputError(
            f"figure path must end in .png or .pdf, found {path.name!r}; choose one of those"
        )
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist; create it first")
    from mefn.fileutil import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path
