"""Tissue values of a phantom study (CT HU, FDG SUV) and the layer stack painted with them.

Values are drawn per study from the ranges of REFERENCE.md, widened by :data:`WIDEN` on
each side so that the model also sees values a little beyond them; a contrast-enhanced
study takes the portal-venous CT values of :data:`CONTRAST_HU` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mefn.data.phantoms.shapes import Layer, Shape, Value

__all__ = [
    "CONTRAST_HU",
    "TISSUE_RANGES",
    "WIDEN",
    "LayerStack",
    "draw_tissues",
    "draw_value",
]

Tissues = dict[str, tuple[float, float]]  # tissue -> (HU, SUV)

WIDEN = 0.15  # each range is widened by this fraction of its width on either side

# tissue: (HU range, SUV range, SUV drawn log-uniformly)
TISSUE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], bool]] = {
    "fat": ((-120, -60), (0.2, 0.5), False),
    "visceral_fat": ((-110, -50), (0.2, 0.5), False),
    "muscle": ((35, 60), (0.5, 1.2), False),
    "lung": ((-900, -700), (0.3, 0.6), False),
    "blood": ((30, 50), (1.5, 2.2), False),
    "myocardium": ((40, 60), (1.0, 15.0), True),
    "liver": ((50, 70), (1.8, 2.8), False),
    "spleen": ((40, 60), (1.5, 2.2), False),
    "kidney": ((30, 45), (2.0, 4.0), False),
    "urine": ((0, 20), (5.0, 40.0), True),
    "bladder": ((0, 20), (5.0, 60.0), True),
    "brain_grey": ((30, 45), (6.0, 12.0), False),
    "brain_white": ((22, 32), (2.0, 4.0), False),
    "csf": ((0, 15), (0.2, 0.6), False),
    "cortical_bone": ((700, 1500), (0.5, 1.0), False),
    "marrow": ((150, 400), (1.5, 2.5), False),
    "fatty_marrow": ((-60, 60), (0.5, 1.0), False),
    "disc": ((60, 110), (0.5, 1.0), False),
    "mixed_bone": ((350, 700), (0.8, 1.6), False),
    "teeth": ((1200, 2500), (0.3, 0.8), False),
    "parotid": ((-20, 40), (2.0, 5.0), False),
    "salivary": ((30, 60), (2.0, 5.0), False),
    "tonsil": ((30, 60), (2.0, 5.0), False),
    "tongue": ((50, 80), (1.0, 3.0), False),
    "thyroid": ((70, 130), (1.0, 2.5), False),
    "vocal_cord": ((40, 60), (1.0, 4.0), True),
    "cartilage": ((150, 350), (0.5, 1.0), False),
    "bowel_wall": ((20, 50), (1.0, 5.0), True),
    "bowel_content": ((0, 40), (0.5, 1.5), False),
    "stool": ((-100, 60), (0.5, 1.5), False),
    "stomach_wall": ((30, 50), (1.5, 4.0), False),
    "pancreas": ((35, 50), (1.2, 2.0), False),
    "gallbladder": ((0, 20), (0.3, 0.8), False),
    "pelvic_organ": ((35, 50), (1.2, 2.5), False),
    "eye": ((5, 20), (0.4, 0.8), False),
    "spinal_cord": ((20, 40), (0.8, 1.5), False),
    "table": ((100, 400), (0.0, 0.0), False),
}

# Contrast-enhanced (portal-venous) CT values replacing the plain ones.
CONTRAST_HU: dict[str, tuple[float, float]] = {
    "blood": (150, 300),
    "liver": (100, 130),
    "spleen": (110, 140),
    "kidney": (150, 220),
    "myocardium": (90, 140),
    "pancreas": (90, 120),
    "thyroid": (120, 200),
    "bowel_wall": (60, 110),
}


# Values that depend on others or on the study.
WHITE_MATTER_HU_DROP_RANGE = (5, 12)  # white matter: this much less dense than grey
WHITE_MATTER_SUV_RATIO_RANGE = (0.3, 0.45)  # ... and this fraction of grey matter's uptake
ORAL_CONTRAST_HU_RANGE = (150, 400)  # bowel content with oral contrast
GAS_HU_RANGE = (-1000, -900)
AIR_HU = -1000.0
MIN_TISSUE_SUV = 0.05  # the floor of a tissue that takes up FDG at all


def draw_value(rng: np.random.Generator, lo: float, hi: float, log: bool = False) -> float:
    """A value in [lo, hi] widened by :data:`WIDEN`, uniform (or log-uniform when ``log``)."""
    if log and lo > 0:
        log_lo, log_hi = math.log(lo), math.log(hi)
        widen = WIDEN * (log_hi - log_lo)
        return float(math.exp(rng.uniform(log_lo - widen, log_hi + widen)))
    widen = WIDEN * (hi - lo)
    return float(rng.uniform(lo - widen, hi + widen))


def draw_tissues(rng: np.random.Generator, contrast: bool, oral_contrast: bool) -> Tissues:
    """The study's (HU, SUV) of every tissue, plus ``air`` and ``gas``."""
    tissues: Tissues = {}
    for name, ((hu_lo, hu_hi), (suv_lo, suv_hi), log) in TISSUE_RANGES.items():
        if contrast and name in CONTRAST_HU:
            hu_lo, hu_hi = CONTRAST_HU[name]
        hu_value = draw_value(rng, hu_lo, hu_hi)
        suv_value = draw_value(rng, suv_lo, suv_hi, log) if suv_hi > 0 else 0.0
        tissues[name] = (hu_value, max(suv_value, MIN_TISSUE_SUV) if suv_hi > 0 else 0.0)
    grey_hu, grey_suv = tissues["brain_grey"]
    tissues["brain_white"] = (
        grey_hu - rng.uniform(*WHITE_MATTER_HU_DROP_RANGE),
        grey_suv * rng.uniform(*WHITE_MATTER_SUV_RATIO_RANGE),
    )
    if oral_contrast:
        oral_hu = float(rng.uniform(*ORAL_CONTRAST_HU_RANGE))
        tissues["bowel_content"] = (oral_hu, tissues["bowel_content"][1])
    tissues["air"] = (AIR_HU, 0.0)
    tissues["gas"] = (float(rng.uniform(*GAS_HU_RANGE)), 0.0)
    return tissues


@dataclass
class LayerStack:
    """The anatomy's layers in painting order (later ones replace earlier ones)."""

    tissues: Tissues
    layers: list[Layer] = field(default_factory=list)

    def hu(self, tissue: str) -> float:
        return self.tissues[tissue][0]

    def suv(self, tissue: str) -> float:
        return self.tissues[tissue][1]

    def add(
        self,
        name: str,
        shape: Shape,
        tissue: str | None = None,
        *,
        hu: Value | None = None,
        suv: Value | None = None,
    ) -> None:
        """Paint ``shape`` as ``tissue`` (default: the tissue called ``name``); ``hu`` or
        ``suv`` replace that tissue's value (a constant or a function of position)."""
        tissue = tissue or name
        self.layers.append(
            Layer(
                name,
                shape,
                self.hu(tissue) if hu is None else hu,
                self.suv(tissue) if suv is None else suv,
            )
        )
