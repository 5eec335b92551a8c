"""The lesion and hot-spot tables: text rows, a lesion picker, plain text, a drawn table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mefn.postprocess import format_u
from mefn.viz.drawing import _new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mefn.postprocess import HotSpot, Lesion, LesionTable

__all__ = [
    "HOT_SPOT_COLUMNS",
    "LESION_COLUMNS",
    "format_confidence",
    "format_hot_spots",
    "format_lesion_table",
    "lesion_choices",
    "lesion_columns",
    "lesion_rows",
    "plot_lesion_table",
]

LESION_COLUMNS: tuple[str, ...] = (
    "#",
    "label",
    "vol mL",
    "SUVmax",
    "SUVmean",
    "TLG",
    "u mean",
    "u max",
    "confidence",
    "review",
)


def lesion_columns(table: LesionTable) -> tuple[str, ...]:
    """:data:`LESION_COLUMNS`, with the map's columns named for what the map is: the
    calibrated probability that a voxel's label is wrong ("p wrong") when the table has
    lesion confidences (the card's trust fit), else the evidential u."""
    if table.review_below is None:
        return LESION_COLUMNS
    names = {"u mean": "p wrong mean", "u max": "p wrong max"}
    return tuple(names.get(c, c) for c in LESION_COLUMNS)


def _ordered(table: LesionTable) -> list[Lesion]:
    """Least confident first (with confidences), else most uncertain first."""
    return sorted(
        table.lesions,
        key=lambda lesion: (
            lesion.confidence if lesion.confidence is not None else -lesion.uncertainty_mean,
            lesion.lesion_id,
        ),
    )


def format_confidence(value: float | None) -> str:
    """A lesion's confidence for a reader: a percentage ("83%"), "-" without one."""
    return "-" if value is None else f"{value:.0%}"


def lesion_rows(table: LesionTable) -> list[tuple[str, ...]]:
    """The lesions as text rows (columns :data:`LESION_COLUMNS`), least confident (or, without
    confidences, most uncertain) first."""
    ordered = _ordered(table)
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
            format_confidence(lesion.confidence),
            "REVIEW" if lesion.review else "",
        )
        for lesion in ordered
    ]


def lesion_choices(table: LesionTable) -> list[tuple[str, int]]:
    """(label, lesion id) pairs for a lesion picker, least confident (or most uncertain)
    first."""
    ordered = _ordered(table)
    return [
        (
            f"{lesion.lesion_id}: {lesion.volume_ml:.2f} mL, SUVmax {lesion.suv_max:.1f}, "
            + (
                f"confidence {format_confidence(lesion.confidence)}"
                if lesion.confidence is not None
                else f"u {format_u(lesion.uncertainty_mean)}"
            )
            + ("  REVIEW" if lesion.review else ""),
            lesion.lesion_id,
        )
        for lesion in ordered
    ]


def format_lesion_table(table: LesionTable) -> str:
    """The lesion table as aligned plain text, most uncertain lesion first."""
    rows = [lesion_columns(table), *lesion_rows(table)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(LESION_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not table.lesions:
        lines.append("(no lesion found)")
    lines.append(
        f"MTV {table.mtv_ml:.2f} mL, TLG {table.tlg:.1f}; {table.n_review} lesion(s) with "
        f"{table.review_rule} flagged for review"
        + (
            " (confidence: the calibrated probability that the lesion is real)"
            if table.review_below is not None
            else ""
        )
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
    by = "confidence" if table.review_below is not None else "uncertainty"
    title = (
        f"lesions by {by} (MTV {table.mtv_ml:.1f} mL)\n"
        f"{table.n_review} flagged for review: {table.review_rule}"
    )
    if len(rows) > max_rows:
        title += f"; {len(rows) - max_rows} more not shown"
    ax.set_title(title, fontsize=9)
    if not shown:
        ax.text(0.5, 0.5, "no lesion found", ha="center", va="center", transform=ax.transAxes)
        return fig  # type: ignore[return-value]
    # long names on two lines, columns as wide as their longest line, together the axes'
    # width (equal cells let "p wrong mean" and "confidence" overlap)
    labels = [c.replace("wrong ", "wrong\n") for c in lesion_columns(table)]
    chars = [
        max(len(line) for v in (label, *column) for line in str(v).split("\n")) + 1
        for label, *column in zip(labels, *shown)
    ]
    widths = [c / sum(chars) for c in chars]
    mpl_table = ax.table(cellText=shown, colLabels=labels, colWidths=widths, loc="upper center")
    mpl_table.auto_set_font_size(False)
    mpl_table.set_fontsize(7)
    if any("\n" in label for label in labels):
        for c in range(len(labels)):
            mpl_table[0, c].set_height(2 * mpl_table[0, c].get_height())
    for r, row in enumerate(shown, start=1):
        if row[-1]:
            for c in range(len(LESION_COLUMNS)):
                mpl_table[r, c].set_facecolor("#ffd6d6")
    return fig  # type: ignore[return-value]
