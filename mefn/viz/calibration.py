"""Calibration plots against a reference mask: reliability diagram, risk-coverage curve.

Both use :mod:`mefn.metrics.calibration` (the definitions of ``mefn evaluate``: 15-bin ECE,
lesions referred by decreasing mean u). The reliability diagram is drawn over a region of
interest: the bounding box of predicted and reference lesions grown by
:data:`ROI_MARGIN_VOX` voxels (the whole image when both are empty), so the millions of
trivially certain background voxels far from any lesion do not swamp it; ``mefn evaluate``
reports the whole-volume ECE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from mefn.errors import GeometryError
from mefn.viz.drawing import _new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ROI_MARGIN_VOX", "plot_calibration"]

ROI_MARGIN_VOX = 10


def _roi_box(mask: np.ndarray, reference: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of mask | reference grown by ROI_MARGIN_VOX (the image if both empty)."""
    either = ((mask > 0) | (reference > 0)).astype(np.uint8)
    boxes = ndimage.find_objects(either)
    if not boxes:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(
        slice(max(int(box.start) - ROI_MARGIN_VOX, 0), min(int(box.stop) + ROI_MARGIN_VOX, n))
        for box, n in zip(boxes[0], mask.shape)
    )


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
