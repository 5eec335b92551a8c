"""Drawing helpers shared by the figures, and :func:`save_figure`.

Figures are built directly (``matplotlib.figure.Figure``), without ``pyplot``: no backend
is selected and no global state is touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mefn.errors import OutputError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CT_WINDOW_HU", "save_figure"]

#: CT window (level, width) in HU for PET/CT fusion: soft tissue.
CT_WINDOW_HU: tuple[float, float] = (40.0, 400.0)
# Screen orientation letters per plane: (top, bottom, left, right).
_PLANE_LETTERS = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}


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
