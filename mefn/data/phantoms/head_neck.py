"""The head and neck of a phantom: skull and brain, face, jaw and mouth, glands, larynx,
airway.

Positions and sizes are in mm of the patient frame
(:class:`~mefn.data.phantoms.frame.PatientFrame`); per-side parts are given for the left
side (x > 0) and mirrored.
"""

from __future__ import annotations

import math

import numpy as np

from mefn.data.phantoms.frame import CapsuleMM, EllipsoidMM, PatientFrame, Point
from mefn.data.phantoms.tissues import LayerStack

__all__ = ["add_head_neck"]

SIDES = (-1, 1)

SKULL = EllipsoidMM((0, 8, 855), (72, 90, 80))
BRAIN = EllipsoidMM((0, 8, 855), (66, 84, 74))
WHITE_MATTER = EllipsoidMM((0, 8, 860), (58, 76, 64))
VENTRICLE = EllipsoidMM((9, 5, 872), (6, 28, 11))  # per side
CEREBELLUM = EllipsoidMM((0, 42, 815), (42, 28, 22))
CEREBELLUM_UPTAKE_RANGE = (0.7, 0.9)  # of grey matter's
SKULL_BASE = EllipsoidMM((0, 12, 790), (55, 60, 9))
EYE = EllipsoidMM((32, -72, 830), (12, 12, 12))  # per side
MAXILLARY_SINUS = EllipsoidMM((30, -50, 795), (15, 17, 17))  # per side
NASAL_CAVITY = EllipsoidMM((0, -66, 805), (9, 20, 24))

# The mandible and the teeth: capsules along arcs x = a sin t, y = y0 - b cos t.
MANDIBLE_ARC_MM = (42, 40, -28, 745.0)  # a, b, y0, z
MANDIBLE_ARC_ANGLE_RAD, MANDIBLE_SEGMENTS = 1.25, 8  # t in [-1.25, 1.25]
MANDIBLE_RADIUS_MM = 8
RAMUS_TOP_MM, RAMUS_RADIUS_MM = (48, 5, 798), 7  # from each end of the arc up to the skull
TEETH_ARC_MM = (34, 34, -28, 762.0)
TEETH_ARC_ANGLE_RAD, TEETH_SEGMENTS = 1.1, 6
TEETH_RADIUS_MM = 5
TONGUE = EllipsoidMM((0, -35, 758), (22, 28, 14))
LINGUAL_TONSIL = EllipsoidMM((0, -14, 738), (16, 9, 9))
LINGUAL_TONSIL_UPTAKE_RANGE = (0.6, 1.0)  # of the tonsils' SUV
PAROTID = EllipsoidMM((48, 10, 775), (13, 20, 22))  # per side, and the next ones
SUBMANDIBULAR = EllipsoidMM((32, -35, 730), (11, 10, 9))
TONSIL = EllipsoidMM((16, 3, 748), (7, 10, 13))
TONSIL_UPTAKE_RANGE = (0.8, 1.2)
THYROID = EllipsoidMM((17, -20, 650), (8, 9, 20))

LARYNX = EllipsoidMM((0, -20, 692), (18, 16, 20))
LARYNX_SOFT_TISSUE = EllipsoidMM((0, -20, 692), (15, 13, 18))
VOCAL_CORD = EllipsoidMM((5, -18, 690), (4, 10, 4))  # per side
AIRWAY_MM = ((0, -2, 792), (0, 0, 750), (0, -6, 715), (0, -18, 690), (0, -22, 640),
             (0, -2, 580), (0, 18, 540))  # fmt: skip
AIRWAY_RADII_MM = (8, 9, 8, 7, 8, 8, 8)
BRONCHUS = CapsuleMM((0, 18, 540), (45, 25, 518), 7, 5)  # per side


def add_head_neck(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    """Skull and brain, face, jaw and mouth with the glands, larynx and airway."""
    _add_skull_and_brain(stack, rng, frame)
    _add_jaw_and_mouth(stack, rng, frame)
    stack.add("larynx", frame.place(LARYNX), "cartilage")
    stack.add("larynx_soft", frame.place(LARYNX_SOFT_TISSUE), "muscle")
    for side in SIDES:
        stack.add("vocal_cord", frame.place(VOCAL_CORD, side))
    segments = zip(zip(AIRWAY_MM, AIRWAY_MM[1:]), zip(AIRWAY_RADII_MM, AIRWAY_RADII_MM[1:]))
    for (p0, p1), (r0, r1) in segments:
        stack.add("airway", frame.capsule(p0, p1, r0, r1), "air")
    for side in SIDES:
        stack.add("bronchus", frame.place(BRONCHUS, side), "air")


def _add_skull_and_brain(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    stack.add("skull", frame.place(SKULL), "cortical_bone")
    stack.add("brain", frame.place(BRAIN), "brain_grey")
    stack.add("white_matter", frame.place(WHITE_MATTER), "brain_white")
    for side in SIDES:
        stack.add("ventricle", frame.place(VENTRICLE, side), "csf")
    cerebellum_suv = stack.suv("brain_grey") * float(rng.uniform(*CEREBELLUM_UPTAKE_RANGE))
    stack.add("cerebellum", frame.place(CEREBELLUM), "brain_grey", suv=cerebellum_suv)
    stack.add("skull_base", frame.place(SKULL_BASE), "cortical_bone")
    for side in SIDES:
        stack.add("eye", frame.place(EYE, side))
        stack.add("maxillary_sinus", frame.place(MAXILLARY_SINUS, side), "air")
    stack.add("nasal_cavity", frame.place(NASAL_CAVITY), "air")


def _arc(spec: tuple[float, float, float, float], angle_rad: float, segments: int) -> list[Point]:
    a, b, y0, z = spec
    return [
        (a * math.sin(t), y0 - b * math.cos(t), z)
        for t in np.linspace(-angle_rad, angle_rad, segments + 1)
    ]


def _add_jaw_and_mouth(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    mandible = _arc(MANDIBLE_ARC_MM, MANDIBLE_ARC_ANGLE_RAD, MANDIBLE_SEGMENTS)
    for p0, p1 in zip(mandible, mandible[1:]):
        stack.add("mandible", frame.capsule(p0, p1, MANDIBLE_RADIUS_MM), "cortical_bone")
    for side, end in ((-1, mandible[0]), (1, mandible[-1])):
        top = (side * RAMUS_TOP_MM[0], RAMUS_TOP_MM[1], RAMUS_TOP_MM[2])
        stack.add("mandible_ramus", frame.capsule(end, top, RAMUS_RADIUS_MM), "cortical_bone")
    teeth = _arc(TEETH_ARC_MM, TEETH_ARC_ANGLE_RAD, TEETH_SEGMENTS)
    for p0, p1 in zip(teeth, teeth[1:]):
        stack.add("teeth", frame.capsule(p0, p1, TEETH_RADIUS_MM), "teeth")
    stack.add("tongue", frame.place(TONGUE))
    tonsil_suv = stack.suv("tonsil")
    lingual_suv = tonsil_suv * float(rng.uniform(*LINGUAL_TONSIL_UPTAKE_RANGE))
    stack.add("lingual_tonsil", frame.place(LINGUAL_TONSIL), "tonsil", suv=lingual_suv)
    for side in SIDES:
        stack.add("parotid", frame.place(PAROTID, side))
        stack.add("submandibular", frame.place(SUBMANDIBULAR, side), "salivary")
        side_suv = tonsil_suv * float(rng.uniform(*TONSIL_UPTAKE_RANGE))
        stack.add("tonsil", frame.place(TONSIL, side), suv=side_suv)
        stack.add("thyroid", frame.place(THYROID, side))
