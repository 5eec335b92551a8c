"""Single plots: PET/CT fusion, a voxel map in three planes, the coronal PET MIP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mefn.io.volume import Geometry
from mefn.postprocess import format_u
from mefn.viz.drawing import (
    CT_WINDOW_HU,
    _axes_row,
    _ct_grey,
    _default_suv_max,
    _draw_contours,
    _draw_crosshair,
    _new_figure,
    _pet_rgba,
    _style_axes,
)
from mefn.viz.orientation import (
    PLANES,
    DisplayOrientation,
    _check_grid,
    _plane_aspect,
    _plane_axes,
    _screen_position,
    display_orientation,
    slice_planes,
)
from mefn.viz.points import lesion_point

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mefn.postprocess import HotSpot, LesionTable

__all__ = ["MIP_MAX_MARKS", "plot_fusion", "plot_map", "plot_mip", "uncertainty_display_max"]


def _draw_overlays(
    ax: Axes,
    plane: str,
    orient: DisplayOrientation,
    cpoint: Sequence[int],
    mask_planes: dict[str, np.ndarray] | None,
    ref_planes: dict[str, np.ndarray] | None,
    mask_colour: str,
    crosshair: bool,
) -> None:
    """The mask outline (``mask_colour``), the reference (dashed green) and the crosshair."""
    if mask_planes is not None:
        _draw_contours(ax, mask_planes[plane], mask_colour)
    if ref_planes is not None:
        _draw_contours(ax, ref_planes[plane], "lime", "dashed")
    if crosshair:
        _draw_crosshair(ax, *_screen_position(orient, plane, cpoint))


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
        _draw_overlays(ax, plane, orient, cpoint, mask_planes, ref_planes, "cyan", crosshair)
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
        _draw_overlays(ax, plane, orient, cpoint, mask_planes, ref_planes, "white", crosshair)
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
            doubt = (
                1.0 - lesion.confidence
                if lesion.confidence is not None
                else lesion.uncertainty_mean / u_max
            )
            colour = cmap(float(np.clip(doubt, 0.0, 1.0)))
            ax.scatter(
                [x],
                [y],
                s=70,
                facecolors="none",
                edgecolors=["red" if lesion.review else colour],
                linewidths=2.0 if lesion.review else 1.2,
            )
            ax.annotate(
                f"{lesion.lesion_id} "
                + (
                    f"{lesion.confidence:.0%} sure"
                    if lesion.confidence is not None
                    else f"u={format_u(lesion.uncertainty_mean)}"
                ),
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
