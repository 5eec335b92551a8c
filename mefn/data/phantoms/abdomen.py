"""The abdomen and pelvis of a phantom: liver, spleen, stomach, pancreas, kidneys, ureters,
bladder and bowel.

Positions and sizes are in mm of the patient frame
(:class:`~mefn.data.phantoms.frame.PatientFrame`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mefn.data.phantoms.frame import PatientFrame, Point
from mefn.data.phantoms.shapes import Array, SmoothField
from mefn.data.phantoms.tissues import TISSUE_RANGES, LayerStack, draw_value

__all__ = ["AbdomenLayout", "add_abdominal_organs", "add_bowel"]

LIVER_CENTER_MM: Point = (-62.0, 0.0, 380.0)
LIVER_RADII_MM: Point = (88.0, 80.0, 72.0)
LIVER_ANGLE_RANGE_DEG = (-20, -5)  # about z
LIVER_LEFT_LOBE_MM = ((10, -40, 400), (55, 30, 38))  # centre, radii
GALLBLADDER_PROBABILITY = 0.6  # else removed or contracted
GALLBLADDER_MM = ((-55, -55, 330), (14, 14, 28))
SPLEEN_CENTER_MM: Point = (85.0, 45.0, 390.0)
SPLEEN_RADII_MM: Point = (30, 42, 52)
SPLEEN_ANGLES_DEG = (0, 0, 30)
STOMACH_CENTER_MM = (45, -20, 405)
STOMACH_RADII_MM, STOMACH_CONTENT_RADII_MM = (45, 35, 45), (38, 28, 38)
STOMACH_GAS_MM = ((45, -30, 422), (22, 12, 12))
PANCREAS_MM = (((-15, 20, 330), (30, 25, 345), 12, 11), ((30, 25, 345), (70, 40, 360), 11, 8))
KIDNEY_CENTERS_MM: dict[int, Point] = {-1: (-70.0, 55.0, 285.0), 1: (70.0, 55.0, 300.0)}
KIDNEY_RADII_MM = (28, 30, 55)
KIDNEY_TILT_X_DEG, KIDNEY_TILT_Z_DEG = 15, 15.0
RENAL_PELVIS_OFFSET_MM = (12, -5)  # medial, anterior of the kidney's centre
RENAL_PELVIS_RADII_MM = (9, 11, 20)
RENAL_PELVIS_URINE_RANGE = (0.3, 1.5)  # of the urine's SUV
URETER_MM = ((55, 48, 285), (45, 38, 200), (55, 45, 110), (25, -25, 40))  # x mirrored
URETER_RADIUS_MM = 3.0
URETER_PERIOD_RANGE_MM = (25, 60)  # peristalsis: urine comes in boluses
BLADDER_RADII_RANGE_MM = ((30, 60), (25, 50), (25, 50))
BLADDER_CENTER_Y_MM, BLADDER_FLOOR_Z_MM = -45.0, 20.0
BLADDER_WALL_MM = 3
PELVIC_ORGAN_MM = ((0, 10), (22, 18, 20))  # (x, y) of the prostate or uterus, radii
PELVIC_ORGAN_ABOVE_FLOOR_MM = 5


@dataclass(frozen=True)
class AbdomenLayout:
    """Where the organs that lesion sites and landmarks refer to are (patient frame, mm)."""

    liver_center_mm: Point
    liver_radii_mm: Point
    spleen_center_mm: Point
    kidney_centers_mm: dict[int, Point]
    bladder_center_mm: Point


def add_abdominal_organs(
    stack: LayerStack, rng: np.random.Generator, frame: PatientFrame
) -> AbdomenLayout:
    """Liver, gallbladder, spleen, stomach, pancreas, kidneys, ureters, bladder."""
    liver_angles = (0.0, 0.0, float(rng.uniform(*LIVER_ANGLE_RANGE_DEG)))
    stack.add("liver", frame.ellipsoid(LIVER_CENTER_MM, LIVER_RADII_MM, liver_angles))
    stack.add("liver", frame.ellipsoid(*LIVER_LEFT_LOBE_MM))
    if rng.random() < GALLBLADDER_PROBABILITY:
        stack.add("gallbladder", frame.ellipsoid(*GALLBLADDER_MM))
    stack.add("spleen", frame.ellipsoid(SPLEEN_CENTER_MM, SPLEEN_RADII_MM, SPLEEN_ANGLES_DEG))
    stomach = frame.ellipsoid(STOMACH_CENTER_MM, STOMACH_RADII_MM)
    stack.add("stomach", stomach, "stomach_wall")
    content = frame.ellipsoid(STOMACH_CENTER_MM, STOMACH_CONTENT_RADII_MM)
    stack.add("stomach_content", content, "bowel_content")
    stack.add("stomach_gas", frame.ellipsoid(*STOMACH_GAS_MM), "gas")
    for p0, p1, r0, r1 in PANCREAS_MM:
        stack.add("pancreas", frame.capsule(p0, p1, r0, r1))
    _add_urinary_tract(stack, rng, frame)
    radii = tuple(float(rng.uniform(*r)) for r in BLADDER_RADII_RANGE_MM)
    bladder_radii: Point = (radii[0], radii[1], radii[2])
    bladder_center: Point = (0.0, BLADDER_CENTER_Y_MM, BLADDER_FLOOR_Z_MM + bladder_radii[2])
    (organ_x, organ_y), organ_radii = PELVIC_ORGAN_MM
    organ_z = bladder_center[2] - bladder_radii[2] + PELVIC_ORGAN_ABOVE_FLOOR_MM
    stack.add("pelvic_organ", frame.ellipsoid((organ_x, organ_y, organ_z), organ_radii))
    rx, ry, rz = bladder_radii
    wall = (rx + BLADDER_WALL_MM, ry + BLADDER_WALL_MM, rz + BLADDER_WALL_MM)
    stack.add("bladder_wall", frame.ellipsoid(bladder_center, wall), "muscle")
    stack.add("bladder", frame.ellipsoid(bladder_center, bladder_radii))
    return AbdomenLayout(
        LIVER_CENTER_MM, LIVER_RADII_MM, SPLEEN_CENTER_MM, KIDNEY_CENTERS_MM, bladder_center
    )


def _add_urinary_tract(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    """Kidneys with urine in the renal pelvis, and ureters carrying boluses of urine."""
    urine_suv = stack.suv("urine")
    for side, (cx, cy, cz) in KIDNEY_CENTERS_MM.items():
        angles = (KIDNEY_TILT_X_DEG, 0, side * KIDNEY_TILT_Z_DEG)
        kidney = frame.ellipsoid((cx, cy, cz), KIDNEY_RADII_MM, angles)
        stack.add(f"kidney_{side}", kidney, "kidney")
        medial, anterior = RENAL_PELVIS_OFFSET_MM
        pelvis = frame.ellipsoid((cx - side * medial, cy + anterior, cz), RENAL_PELVIS_RADII_MM)
        pelvis_suv = urine_suv * float(rng.uniform(*RENAL_PELVIS_URINE_RANGE))
        stack.add(f"renal_pelvis_{side}", pelvis, "urine", suv=pelvis_suv)
    phase = float(rng.uniform(0, 2 * np.pi))
    period_mm = float(rng.uniform(*URETER_PERIOD_RANGE_MM))

    def ureter_value(x: Array, y: Array, z: Array) -> Array:
        wave = np.cos(z / np.float32(period_mm) + np.float32(phase))
        return np.float32(urine_suv) * np.clip(wave * 1.5 - 0.3, 0.05, 1.0)

    for side in (-1, 1):
        points = [(side * x, y, z) for x, y, z in URETER_MM]
        for p0, p1 in zip(points, points[1:]):
            stack.add("ureter", frame.capsule(p0, p1, URETER_RADIUS_MM), "urine", suv=ureter_value)


# The colon's course (patient frame, mm): caecum, ascending, transverse, descending, sigmoid,
# rectum.
COLON_MM = (
    (-90, 0, 150), (-100, 10, 300), (-85, -25, 338), (-30, -62, 312), (40, -62, 322),
    (92, 0, 378), (100, 25, 260), (95, 20, 150), (40, 45, 100), (5, 62, 105), (0, 70, 50),
    (0, 70, -20),
)  # fmt: skip
COLON_RADIUS_RANGE_MM = (16, 24)
COLON_WALL_MM = 4  # the content's radius is this much smaller
COLON_GAS_PROBABILITY = 0.45  # per segment
COLON_GAS_INSET_MM = 6
STOOL_MOTTLE_WAVES = 6
STOOL_MOTTLE_WAVELENGTH_MM = (8.0, 25.0)
STOOL_MOTTLE_HU = 60.0
SMALL_BOWEL_START_RANGE_MM = ((-50, 50), (-50, 0), (150, 260))
SMALL_BOWEL_BOX_MM = ((-75.0, -75.0, 120.0), (75.0, 25.0, 290.0))  # the walk stays inside
SMALL_BOWEL_STEPS_RANGE = (18, 32)
SMALL_BOWEL_STEP_RANGE_MM = (18, 30)
SMALL_BOWEL_RADIUS_RANGE_MM = (9, 14)
SMALL_BOWEL_WALL_MM = 3
SMALL_BOWEL_GAS_PROBABILITY = 0.15


def add_bowel(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    """The colon frame down to the rectum (mottled stool, pockets of gas), then small bowel
    as a random walk in the mid abdomen."""
    wall_lo, wall_hi = TISSUE_RANGES["bowel_wall"][1]
    stool_hu, stool_suv = stack.tissues["stool"]
    mottle = SmoothField.random(rng, STOOL_MOTTLE_WAVES, STOOL_MOTTLE_WAVELENGTH_MM)

    def stool_value(x: Array, y: Array, z: Array) -> Array:
        return np.float32(stool_hu) + np.float32(STOOL_MOTTLE_HU) * mottle(x, y, z)

    for p0, p1 in zip(COLON_MM, COLON_MM[1:]):
        radius = float(rng.uniform(*COLON_RADIUS_RANGE_MM))
        wall_suv = draw_value(rng, wall_lo, wall_hi, True)
        stack.add("colon", frame.capsule(p0, p1, radius), "bowel_wall", suv=wall_suv)
        content = frame.capsule(p0, p1, radius - COLON_WALL_MM)
        stack.add("colon_content", content, "stool", hu=stool_value, suv=stool_suv)
        if rng.random() < COLON_GAS_PROBABILITY:
            t0, t1 = sorted(rng.uniform(0, 1, size=2))
            gas = frame.capsule(_lerp(p0, p1, t0), _lerp(p0, p1, t1), radius - COLON_GAS_INSET_MM)
            stack.add("colon_gas", gas, "gas")
    position = np.array([rng.uniform(*r) for r in SMALL_BOWEL_START_RANGE_MM])
    box_lo, box_hi = (np.array(corner) for corner in SMALL_BOWEL_BOX_MM)
    for _ in range(int(rng.integers(*SMALL_BOWEL_STEPS_RANGE))):
        step = rng.normal(size=3)
        step *= float(rng.uniform(*SMALL_BOWEL_STEP_RANGE_MM)) / np.linalg.norm(step)
        following = np.clip(position + step, box_lo, box_hi)
        radius = float(rng.uniform(*SMALL_BOWEL_RADIUS_RANGE_MM))
        wall_suv = draw_value(rng, wall_lo, wall_hi, True)
        start, end = _point(position), _point(following)
        stack.add("small_bowel", frame.capsule(start, end, radius), "bowel_wall", suv=wall_suv)
        inner = frame.capsule(start, end, radius - SMALL_BOWEL_WALL_MM)
        if rng.random() < SMALL_BOWEL_GAS_PROBABILITY:
            stack.add("small_bowel_gas", inner, "gas")
        else:
            stack.add("small_bowel_content", inner, "bowel_content")
        position = following


def _point(p: np.ndarray) -> Point:
    return (p[0], p[1], p[2])


def _lerp(p0: Point, p1: Point, t: float) -> Point:
    """The point a fraction ``t`` of the way from ``p0`` to ``p1``."""
    return (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]), p0[2] + t * (p1[2] - p0[2]))
