"""A randomised adult anatomy for FDG PET/CT phantoms, as ordered layers of analytic shapes.

:func:`build_anatomy` draws a habitus (:mod:`~mefn.data.phantoms.body`) and the tissue
values (:mod:`~mefn.data.phantoms.tissues`), then paints the body section by section:
outline, muscles, thorax, abdomen, bowel, skeleton, head and neck, the couch. Layers are
painted in order: later layers replace earlier ones (with partial volume), so an organ is
carved out of whatever it is painted over. Every random draw comes from the one generator
in a fixed order, so a seed always gives the same patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mefn.data.phantoms.abdomen import add_abdominal_organs, add_bowel
from mefn.data.phantoms.body import (
    Habitus,
    TorsoOutline,
    add_body_outline,
    add_muscles,
    draw_habitus,
    shoulder_half_width_mm,
)
from mefn.data.phantoms.frame import PatientFrame, Point
from mefn.data.phantoms.head_neck import add_head_neck
from mefn.data.phantoms.shapes import Box, Layer
from mefn.data.phantoms.sites import Site, landmarks, lesion_sites
from mefn.data.phantoms.skeleton import add_skeleton
from mefn.data.phantoms.thorax import add_great_vessels, add_heart, add_lungs_and_ribs
from mefn.data.phantoms.tissues import LayerStack, draw_tissues

__all__ = ["OUTLINE_LAYERS", "Anatomy", "build_anatomy"]

# Layers whose union is the body's outline (by the name before the first "_").
OUTLINE_LAYERS = ("body", "neck", "head", "thigh", "arm", "shoulder")

# Landmarks along z (mm above the pubis, patient frame): scan ranges are drawn from them.
Z_LANDMARKS_MM = {
    "knee": -450,
    "mid_thigh": -220,
    "pelvis_floor": -70,
    "pubis": 0,
    "diaphragm": 450,
    "lung_apex": 640,
    "upper_thorax": 600,
    "larynx": 690,
    "oropharynx": 745,
    "skull_base": 790,
    "vertex": 940,
}

# The couch under the patient: a carbon-fibre shell (table HU) around a foam core.
TABLE_GAP_RANGE_MM = (2, 15)  # between the patient's back and the couch top
TABLE_HALF_SIZE_MM = (240.0, 20.0)  # x, y (world mm, not scaled with the patient)
TABLE_CORE_HALF_SIZE_MM = (236.0, 16.0)
TABLE_Z_RANGE_MM = (-700, 1100)  # patient frame
TABLE_CORE_HU_RANGE = (-950, -750)


@dataclass
class Anatomy:
    """The painted layers of one patient, with what lesion sampling and tests need to know."""

    layers: list[Layer]
    tissues: dict[str, tuple[float, float]]  # tissue -> (HU, SUV)
    landmarks: dict[str, tuple[Point, str]]  # name -> (LPS mm, tissue)
    sites: dict[str, Site]
    z_landmarks_mm: dict[str, float]  # world z of pubis, skull base, vertex ...
    body_lo_mm: tuple[float, float, float]
    body_hi_mm: tuple[float, float, float]
    table_top_y_mm: float
    params: dict[str, float | bool | str] = field(default_factory=dict)


def build_anatomy(rng: np.random.Generator, contrast: bool | None = None) -> Anatomy:
    """A random patient: tissue values, body habitus and position, optional arms and contrast."""
    habitus = draw_habitus(rng, contrast)
    frame = habitus.frame
    stack = LayerStack(draw_tissues(rng, habitus.contrast, habitus.oral_contrast))
    outline = add_body_outline(stack, rng, habitus)
    add_muscles(stack, rng, habitus, outline)
    add_lungs_and_ribs(stack, rng, frame)
    add_heart(stack, rng, frame)
    add_great_vessels(stack, frame)
    abdomen = add_abdominal_organs(stack, rng, frame)
    add_bowel(stack, rng, frame)
    add_skeleton(stack, frame, shoulder_half_width_mm())
    add_head_neck(stack, rng, frame)
    table_top_y = _add_table(stack, rng, habitus, outline) if habitus.table else float("inf")
    body_lo, body_hi = _outline_bounds(stack.layers)
    return Anatomy(
        layers=stack.layers,
        tissues=stack.tissues,
        landmarks=landmarks(frame, abdomen, habitus.fat_mm, habitus.muscle_mm),
        sites=lesion_sites(
            frame,
            abdomen,
            shoulder_half_width_mm(),
            habitus.fat_mm,
            habitus.muscle_mm,
            habitus.arms_down,
        ),  # fmt: skip
        z_landmarks_mm={name: frame.z(z) for name, z in Z_LANDMARKS_MM.items()},
        body_lo_mm=body_lo,
        body_hi_mm=body_hi,
        table_top_y_mm=table_top_y,
        params=_params(habitus),
    )


def _add_table(
    stack: LayerStack, rng: np.random.Generator, habitus: Habitus, outline: TorsoOutline
) -> float:
    """The couch, just behind the patient's back; returns the y of its top (world mm)."""
    frame: PatientFrame = habitus.frame
    top = (
        frame.point(0, 0, 0)[1]
        + outline.back_y_mm * habitus.build
        + float(rng.uniform(*TABLE_GAP_RANGE_MM))
    )
    z_lo, z_hi = (frame.z(z) for z in TABLE_Z_RANGE_MM)
    center = (habitus.shift_mm[0], top + TABLE_HALF_SIZE_MM[1], (z_lo + z_hi) / 2)
    half_z = (z_hi - z_lo) / 2
    shell = Box(center, (*TABLE_HALF_SIZE_MM, half_z))
    stack.layers.append(Layer("table", shell, stack.hu("table"), 0.0))
    core_hu = float(rng.uniform(*TABLE_CORE_HU_RANGE))
    stack.layers.append(
        Layer("table_core", Box(center, (*TABLE_CORE_HALF_SIZE_MM, half_z)), core_hu, 0.0)
    )
    return top


def _outline_bounds(layers: list[Layer]) -> tuple[Point, Point]:
    """The bounding box (world mm) of the layers that make the body's outline."""
    boxes = [lay.shape.bounds() for lay in layers if lay.name.split("_")[0] in OUTLINE_LAYERS]
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return (float(lo[0]), float(lo[1]), float(lo[2])), (float(hi[0]), float(hi[1]), float(hi[2]))


def _params(habitus: Habitus) -> dict[str, float | bool | str]:
    """The habitus as recorded in a study's metadata."""
    return {
        "build": habitus.build,
        "height": habitus.height,
        "fat_mm": habitus.fat_mm,
        "arms_down": habitus.arms_down,
        "table": habitus.table,
        "contrast": bool(habitus.contrast),
        "oral_contrast": habitus.oral_contrast,
        "brown_fat": habitus.brown_fat,
    }
