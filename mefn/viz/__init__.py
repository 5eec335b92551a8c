"""Static figures for reviewing a segmentation and its uncertainty.

Every function returns (or draws into) a :class:`matplotlib.figure.Figure` built directly,
without ``pyplot``: no backend is selected and no global state is touched, so the package is
safe in scripts, servers and notebooks alike (in a notebook, ``display(fig)`` shows one).
Every public name is importable from here (``from mefn import viz; viz.review_figure``);
the code lives in one module per concern:

- :mod:`~mefn.viz.orientation`: arrays re-oriented for the screen (radiological
  convention), display planes, slice navigation;
- :mod:`~mefn.viz.points`: the CT-versus-PET disagreement map, where a review starts;
- :mod:`~mefn.viz.drawing`: shared drawing helpers and :func:`save_figure`;
- :mod:`~mefn.viz.plots`: single plots (PET/CT fusion, a voxel map, the PET MIP);
- :mod:`~mefn.viz.tables`: the lesion and hot-spot tables;
- :mod:`~mefn.viz.calibration`: reliability diagram and risk-coverage curve;
- :mod:`~mefn.viz.review_data`: :class:`ReviewData` and loading `mefn segment` outputs;
- :mod:`~mefn.viz.page`: the one-page review and the slice browser's figure.
"""

from __future__ import annotations

from mefn.postprocess import format_u
from mefn.viz.calibration import ROI_MARGIN_VOX, plot_calibration
from mefn.viz.drawing import CT_WINDOW_HU, save_figure
from mefn.viz.orientation import (
    PLANES,
    DisplayOrientation,
    display_orientation,
    move_point,
    n_slices,
    slice_index,
    slice_planes,
)
from mefn.viz.page import review_figure, slice_figure
from mefn.viz.plots import MIP_MAX_MARKS, plot_fusion, plot_map, plot_mip, uncertainty_display_max
from mefn.viz.points import auto_point, lesion_point, modality_disagreement
from mefn.viz.review_data import ReviewData, load_review, output_case_id, prepare_review
from mefn.viz.tables import (
    HOT_SPOT_COLUMNS,
    LESION_COLUMNS,
    format_confidence,
    format_hot_spots,
    format_lesion_table,
    lesion_choices,
    lesion_columns,
    lesion_rows,
    plot_lesion_table,
)

__all__ = [
    "CT_WINDOW_HU",
    "HOT_SPOT_COLUMNS",
    "LESION_COLUMNS",
    "MIP_MAX_MARKS",
    "PLANES",
    "ROI_MARGIN_VOX",
    "DisplayOrientation",
    "ReviewData",
    "auto_point",
    "display_orientation",
    "format_confidence",
    "format_hot_spots",
    "format_lesion_table",
    "format_u",
    "lesion_choices",
    "lesion_columns",
    "lesion_point",
    "lesion_rows",
    "load_review",
    "modality_disagreement",
    "move_point",
    "n_slices",
    "output_case_id",
    "plot_calibration",
    "plot_fusion",
    "plot_lesion_table",
    "plot_map",
    "plot_mip",
    "prepare_review",
    "review_figure",
    "save_figure",
    "slice_figure",
    "slice_index",
    "slice_planes",
    "uncertainty_display_max",
]
