"""PNG figures of an evaluation: reliability diagram, risk-coverage curve, per-case Dice.

matplotlib runs with the Agg backend (no display); files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mefn.fileutil import atomic_path

__all__ = ["plot_reliability", "plot_risk_coverage", "plot_per_case_dice"]


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")
    return path


def plot_reliability(
    reliability: dict[str, np.ndarray], ece: float, path: str | os.PathLike[str]
) -> Path:
    """Accuracy against confidence per bin, with the voxel count per bin underneath."""
    fig = _figure((5.0, 6.0))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = reliability["edges"]
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = edges[1] - edges[0]
    acc = np.nan_to_num(reliability["accuracy"], nan=0.0)
    ax.bar(centres, acc, width=width, edgecolor="black", label="accuracy")
    conf = reliability["confidence"]
    ok = ~np.isnan(conf)
    ax.plot(centres[ok], conf[ok], "o", color="tab:red", label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE = {ece:.4f}, 15 bins)")
    ax.legend(loc="upper left")
    ax_n.bar(centres, np.maximum(reliability["count"], 1), width=width, color="grey")
    ax_n.set_yscale("log")
    ax_n.set_xlabel("confidence of the predicted class")
    ax_n.set_ylabel("voxels")
    ax_n.set_xlim(0, 1)
    return _save(fig, path)


def _coverage_curve(
    coverage: Any, values: Any, ylabel: str, title: str, path: str | os.PathLike[str]
) -> Path:
    """A curve against coverage, from all lesions automatic (left) to all referred."""
    fig = _figure((5.0, 4.0))
    ax = fig.subplots()
    ax.plot(coverage, values, "-o", markersize=3)
    ax.set_xlim(1.02, -0.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (fraction of lesions left automatic)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_risk_coverage(curve: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Dice against coverage as the most uncertain lesions are referred to a reader."""
    title = f"Lesion referral by mean uncertainty ({len(curve['dice']) - 1} lesions)"
    return _coverage_curve(curve["coverage"], curve["dice"], "pooled Dice", title, path)


def plot_binned_reliability(
    reliability: dict[str, Any],
    path: str | os.PathLike[str],
    title: str,
    xlabel: str,
    ylabel: str,
    unit: str,
) -> Path:
    """A reliability diagram from :meth:`mefn.metrics.trust.BinnedReliability.to_json`: the
    observed rate against the stated probability per bin, the count per bin underneath."""
    fig = _figure((5.0, 6.0))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    n_bins = int(reliability["bins"])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    observed = np.asarray([np.nan if v is None else v for v in reliability["observed"]], float)
    stated = np.asarray(
        [np.nan if v is None else v for v in reliability["mean_probability"]], float
    )
    ax.bar(
        centres, np.nan_to_num(observed), width=1.0 / n_bins, edgecolor="black", label="observed"
    )
    ok = ~np.isnan(stated)
    ax.plot(centres[ok], stated[ok], "o", color="tab:red", label="mean stated probability")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ece = reliability["ece"]
    ax.set_title(f"{title}\n(ECE = {ece:.3f}, {n_bins} bins, n = {reliability['n']})")
    ax.legend(loc="upper left")
    ax_n.bar(centres, np.maximum(np.asarray(reliability["count"], float), 1), width=1.0 / n_bins,
             color="grey")  # fmt: skip
    ax_n.set_yscale("log")
    ax_n.set_xlabel(xlabel)
    ax_n.set_ylabel(unit)
    ax_n.set_xlim(0, 1)
    return _save(fig, path)


def plot_lesion_risk_coverage(curve: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """The share of false lesions among those left automatic, as the least confident lesions
    are referred to a reader first (:func:`mefn.metrics.trust.lesion_risk_coverage`)."""
    title = (
        f"Referral by lesion confidence ({len(curve['risk']) - 1} lesions, "
        f"area {curve['area']:.3f})"
    )
    return _coverage_curve(
        curve["coverage"], curve["risk"], "false lesions among those left", title, path
    )


def plot_per_case_dice(
    cases: Sequence[str], dice: Sequence[float], path: str | os.PathLike[str]
) -> Path:
    """One bar per case (NaN cases drawn as empty)."""
    fig = _figure((max(4.0, 0.3 * len(cases) + 2.0), 4.0))
    ax = fig.subplots()
    values = np.asarray(dice, dtype=np.float64)
    ax.bar(np.arange(len(cases)), np.nan_to_num(values, nan=0.0))
    ax.set_xticks(np.arange(len(cases)))
    ax.set_xticklabels(list(cases), rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title("Per-case Dice")
    return _save(fig, path)
