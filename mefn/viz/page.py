"""The one-page review of a case (:func:`review_figure`) and the lighter
:func:`slice_figure` for browsing slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mefn.postprocess import DEFAULT_REVIEW_THRESHOLD
from mefn.viz.calibration import plot_calibration
from mefn.viz.drawing import CT_WINDOW_HU, _default_suv_max, _new_figure
from mefn.viz.orientation import _check_point
from mefn.viz.plots import plot_fusion, plot_map, plot_mip, uncertainty_display_max
from mefn.viz.points import auto_point, modality_disagreement
from mefn.viz.review_data import ReviewData
from mefn.viz.tables import plot_lesion_table

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["review_figure", "slice_figure"]


def _plot_fusion(
    data: ReviewData, point: Any, axes: Any, ct_window_hu: tuple[float, float], suv_max: float
) -> None:
    """PET/CT fusion into three axes, with the mask and any reference outlined."""
    plot_fusion(
        data.ct,
        data.suv,
        data.geometry,
        point,
        mask=data.mask,
        reference=data.reference,
        ct_window_hu=ct_window_hu,
        suv_max=suv_max,
        axes=axes,
    )


def _plot_uncertainty(data: ReviewData, point: Any, axes: Any, review_threshold: float) -> float:
    """The uncertainty map into three axes, with the mask and any reference; returns the top
    of the scale. A calibrated map (the probability that the voxel's label is wrong: the
    report's table has lesion confidences) is drawn from 0 to 1; the raw evidential u on its
    own scale (:func:`uncertainty_display_max`)."""
    calibrated = data.lesions is not None and data.lesions.review_below is not None
    u_max = 1.0 if calibrated else uncertainty_display_max(data.uncertainty, review_threshold)
    plot_map(
        data.uncertainty,
        data.geometry,
        point,
        label="P(voxel label wrong)" if calibrated else "uncertainty u",
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
    _plot_fusion(data, point, row_axes[0], ct_window_hu, vmax)
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
        + (f", {len(data.hot_spots)} PET hot spot(s) outside the mask" if data.hot_spots else "")
        + (
            f", {len(data.dropped)} removed for a confidence below the floor"
            if data.dropped
            else ""
        ),
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
    vmax = suv_max if suv_max is not None else _default_suv_max(data.suv)
    _plot_fusion(data, point, list(axes[0]), ct_window_hu, vmax)
    threshold = (
        data.lesions.review_threshold if data.lesions is not None else DEFAULT_REVIEW_THRESHOLD
    )
    _plot_uncertainty(data, point, list(axes[1]), threshold)
    if data.uncertainty_ct is not None and data.uncertainty_pet is not None:
        _plot_disagreement(data, point, list(axes[2]))
    fig.suptitle(f"{data.case_id}: [i, j, k] = {tuple(int(p) for p in point)}", fontsize=10)
    return fig


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
