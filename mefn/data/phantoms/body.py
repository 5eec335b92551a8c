"""The body outline and the muscles of a phantom: torso, neck, head, thighs, arms, shoulders.

The torso is an elliptic tube through knots along z: an inner frame (the muscle wall's
inside), then muscle and subcutaneous fat of the study's thicknesses around it; the belly
takes more fat at the front. All sizes are in mm of the patient frame
(:class:`~mefn.data.phantoms.frame.PatientFrame`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mefn.data.phantoms.frame import PatientFrame
from mefn.data.phantoms.tissues import LayerStack, draw_value

__all__ = ["Habitus", "TorsoOutline", "add_body_outline", "add_muscles", "draw_habitus"]

SIDES = (-1, 1)  # right, left

# --- habitus: drawn per study --------------------------------------------------------------
BUILD_SCALE_RANGE = (0.88, 1.1)  # x and y scale of the patient frame
HEIGHT_SCALE_RANGE = (0.9, 1.1)  # z scale
SHIFT_X_RANGE_MM = (-40, 40)  # where the patient lies in the scanner
SHIFT_Y_RANGE_MM = (-40, 40)
SHIFT_Z_RANGE_MM = (-1400, 200)
FAT_THICKNESS_RANGE_MM = (5.0, 45.0)  # subcutaneous fat, drawn log-uniformly
MUSCLE_THICKNESS_RANGE_MM = (8, 18)  # the muscle wall around the torso's inner frame
ARMS_DOWN_PROBABILITY = 0.45  # else the arms are raised, out of the field of view
TABLE_PROBABILITY = 0.75
CONTRAST_PROBABILITY = 0.35  # portal-venous contrast CT
ORAL_CONTRAST_PROBABILITY = 0.2
BROWN_FAT_PROBABILITY = 0.06

# --- torso: knots along z (mm above the pubis) ---------------------------------------------
TORSO_KNOTS_Z_MM = (-60, 0, 80, 160, 220, 300, 380, 440, 500, 560, 600, 625)
TORSO_INNER_HALF_WIDTH_MM = (140, 145, 140, 135, 125, 125, 135, 140, 145, 145, 140, 100)
TORSO_INNER_HALF_DEPTH_MM = (85, 85, 85, 85, 85, 90, 95, 95, 95, 90, 80, 60)
BELLY_FAT_FACTOR = (1.0, 1.0, 1.15, 1.3, 1.4, 1.35, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6)  # front fat
TORSO_CENTER_Y_MM = 5.0
SHOULDER_KNOT = -3  # the torso knot at the shoulders (z 560 mm)

# --- neck (knots above the torso's last one) and head ---------------------------------------
NECK_KNOTS_Z_MM = (625, 650, 700, 745, 780, 800)
NECK_FAT_FRACTION = 0.4  # of the subcutaneous fat thickness
NECK_BASE_WIDTH_FRACTION, NECK_BASE_WIDTH_MM = 0.7, 20  # the first knot: 0.7 torso + 20 mm
NECK_BASE_DEPTH_FRACTION = 0.9
NECK_CENTER_Y_MM = (0, -2, -8, -6, -2)  # knots 2 to 6 (the first follows the torso)
NECK_MUSCLE_TOP_HALF_WIDTH_MM = (58, 60)  # the last two knots, under the skull
NECK_MUSCLE_TOP_HALF_DEPTH_MM = (70, 72)
HEAD_CENTER_MM, HEAD_RADII_MM = (0, 2, 848), (78, 98, 92)

# --- thighs: knots along z, x mirrored per side ----------------------------------------------
THIGH_KNOTS_Z_MM = (-470, -300, -120, -20, 30)
THIGH_MUSCLE_KNOTS_Z_MM = (-470, -300, -120, -20, 20)
THIGH_HALF_WIDTH_MM = (45, 55, 64, 70, 66)  # of the muscle; fat adds to it
THIGH_HALF_DEPTH_MM = (48, 56, 64, 70, 66)
THIGH_CENTER_X_MM = (96, 98, 100, 98, 88)
THIGH_CENTER_Y_MM = (0, 0, 5, 8, 8)
THIGH_FAT_FRACTION = 0.8

# --- arms (when down), x from the torso's outside ------------------------------------------
ARM_GAP_MM = 35  # from the torso's surface to the arm's axis
ARM_JOINTS_MM = ((0, 15, 585), (15, 25, 330), (10, 5, 90))  # shoulder, elbow, wrist (dx, y, z)
ARM_SEGMENT_RADII_MM = ((46, 38), (38, 30))  # upper arm, forearm: muscle radius at each end
ARM_FAT_FRACTION = 0.5
HUMERUS_RADIUS_MM, HUMERUS_MARROW_RADIUS_MM = 12, 7
FOREARM_BONE_RADII_MM = (9, 7)
INJECTION_PROBABILITY = 0.12  # a paravenous injection at the elbow: a classic hot spot
INJECTION_SUV_RANGE = (5.0, 60.0)
INJECTION_OFFSET_Y_MM = -20
INJECTION_RADII_MM = (8, 6, 12)

# --- shoulders (deltoid over the humeral head), whatever the arms do ---------------------------
SHOULDER_OFFSET_X_MM = 20  # beyond the torso frame's half width
SHOULDER_Y_MM, SHOULDER_Z_MM = 15, 585
SHOULDER_FAT_FRACTION = 0.6
SHOULDER_RADII_MM = (42, 45, 45)  # fat adds to x and y
DELTOID_RADII_MM = (40, 42, 42)

# --- brown fat: supraclavicular and paravertebral ----------------------------------------------
BROWN_FAT_SUV_RANGE = (3.0, 12.0)
BROWN_FAT_SUPRACLAVICULAR_MM = ((55, 5, 628), (28, 20, 18))  # centre (x mirrored), radii
BROWN_FAT_PARAVERTEBRAL_MM = ((28, 62, 520), (10, 12, 60))


@dataclass(frozen=True)
class Habitus:
    """What varies from patient to patient besides tissue values."""

    build: float  # x and y scale
    height: float  # z scale
    shift_mm: tuple[float, float, float]
    fat_mm: float  # subcutaneous fat thickness
    muscle_mm: float  # muscle wall thickness
    arms_down: bool
    table: bool
    contrast: bool
    oral_contrast: bool
    brown_fat: bool

    @property
    def frame(self) -> PatientFrame:
        return PatientFrame(self.build, self.height, self.shift_mm)


def draw_habitus(rng: np.random.Generator, contrast: bool | None) -> Habitus:
    """A random habitus; ``contrast`` forces contrast-enhanced CT on or off."""
    build = float(rng.uniform(*BUILD_SCALE_RANGE))
    height = float(rng.uniform(*HEIGHT_SCALE_RANGE))
    shift = (
        float(rng.uniform(*SHIFT_X_RANGE_MM)),
        float(rng.uniform(*SHIFT_Y_RANGE_MM)),
        float(rng.uniform(*SHIFT_Z_RANGE_MM)),
    )
    fat_lo, fat_hi = FAT_THICKNESS_RANGE_MM
    fat_mm = float(np.exp(rng.uniform(np.log(fat_lo), np.log(fat_hi))))
    muscle_mm = float(rng.uniform(*MUSCLE_THICKNESS_RANGE_MM))
    arms_down = bool(rng.random() < ARMS_DOWN_PROBABILITY)
    table = bool(rng.random() < TABLE_PROBABILITY)
    if contrast is None:
        contrast = bool(rng.random() < CONTRAST_PROBABILITY)
    oral_contrast = bool(rng.random() < ORAL_CONTRAST_PROBABILITY)
    brown_fat = bool(rng.random() < BROWN_FAT_PROBABILITY)
    return Habitus(
        build, height, shift, fat_mm, muscle_mm, arms_down, table, contrast, oral_contrast,
        brown_fat,
    )  # fmt: skip


@dataclass(frozen=True)
class TorsoOutline:
    """The outline's knots that later sections build on (patient frame, mm)."""

    half_depth_mm: list[float]  # of the torso's outside, per TORSO_KNOTS_Z_MM
    center_y_mm: list[float]
    neck_half_width_mm: list[float]  # of the neck's outside, per NECK_KNOTS_Z_MM
    neck_half_depth_mm: list[float]
    neck_center_y_mm: list[float]
    neck_fat_mm: float

    @property
    def back_y_mm(self) -> float:
        """The torso's most posterior point (where it lies on the table)."""
        return max(b + c for b, c in zip(self.half_depth_mm, self.center_y_mm))


def shoulder_half_width_mm() -> float:
    """Half width of the torso's inner frame at the shoulders."""
    return TORSO_INNER_HALF_WIDTH_MM[SHOULDER_KNOT]


def add_body_outline(stack: LayerStack, rng: np.random.Generator, habitus: Habitus) -> TorsoOutline:
    """Paint the outline in fat (torso, neck, head, thighs, arms, shoulders): muscles and
    organs are carved out of it later."""
    frame, fat, muscle = habitus.frame, habitus.fat_mm, habitus.muscle_mm
    half_width = [a + muscle + fat for a in TORSO_INNER_HALF_WIDTH_MM]
    half_depth = [b + muscle + fat * k for b, k in zip(TORSO_INNER_HALF_DEPTH_MM, BELLY_FAT_FACTOR)]
    center_y = [TORSO_CENTER_Y_MM - (fat * (k - 1.0)) * 0.5 for k in BELLY_FAT_FACTOR]
    neck_fat = NECK_FAT_FRACTION * fat
    neck_half_width = [
        half_width[-1] * NECK_BASE_WIDTH_FRACTION + NECK_BASE_WIDTH_MM,
        62 + neck_fat, 56 + neck_fat, 60 + neck_fat, 64, 66,
    ]  # fmt: skip
    neck_half_depth = [
        half_depth[-1] * NECK_BASE_DEPTH_FRACTION,
        60 + neck_fat, 58 + neck_fat, 72 + neck_fat * 0.5, 80, 82,
    ]  # fmt: skip
    neck_center_y = [center_y[-1], *NECK_CENTER_Y_MM]
    stack.add("body", frame.tube(TORSO_KNOTS_Z_MM, half_width, half_depth, 0.0, center_y), "fat")
    neck = frame.tube(NECK_KNOTS_Z_MM, neck_half_width, neck_half_depth, 0.0, neck_center_y)
    stack.add("neck", neck, "fat")
    stack.add("head", frame.ellipsoid(HEAD_CENTER_MM, HEAD_RADII_MM), "fat")
    thigh_fat = THIGH_FAT_FRACTION * fat
    for side in SIDES:
        thigh = frame.tube(
            THIGH_KNOTS_Z_MM,
            [a + thigh_fat for a in THIGH_HALF_WIDTH_MM],
            [b + thigh_fat for b in THIGH_HALF_DEPTH_MM],
            [side * x for x in THIGH_CENTER_X_MM],
            THIGH_CENTER_Y_MM,
        )
        stack.add(f"thigh_{side}", thigh, "fat")
    if habitus.arms_down:
        _add_arms(stack, rng, habitus)
    half_width_sh = shoulder_half_width_mm()
    for side in SIDES:
        center = (side * (half_width_sh + SHOULDER_OFFSET_X_MM), SHOULDER_Y_MM, SHOULDER_Z_MM)
        rx, ry, rz = SHOULDER_RADII_MM
        fat_radii = (rx + fat * SHOULDER_FAT_FRACTION, ry + fat * SHOULDER_FAT_FRACTION, rz)
        stack.add(f"shoulder_{side}", frame.ellipsoid(center, fat_radii), "fat")
        stack.add(f"deltoid_{side}", frame.ellipsoid(center, DELTOID_RADII_MM), "muscle")
    return TorsoOutline(
        half_depth, center_y, neck_half_width, neck_half_depth, neck_center_y, neck_fat
    )


def _add_arms(stack: LayerStack, rng: np.random.Generator, habitus: Habitus) -> None:
    """Both arms down beside the torso: fat, muscle, humerus, forearm bones."""
    frame = habitus.frame
    for side in SIDES:
        x0 = side * (shoulder_half_width_mm() + habitus.muscle_mm + habitus.fat_mm + ARM_GAP_MM)
        joints = [(x0 + side * dx, y, z) for dx, y, z in ARM_JOINTS_MM]
        for (p0, p1), (r0, r1) in zip(zip(joints, joints[1:]), ARM_SEGMENT_RADII_MM):
            fat_r0, fat_r1 = (
                r0 + ARM_FAT_FRACTION * habitus.fat_mm,
                r1 + ARM_FAT_FRACTION * habitus.fat_mm,
            )
            stack.add(f"arm_{side}", frame.capsule(p0, p1, fat_r0, fat_r1), "fat")
            stack.add(f"arm_muscle_{side}", frame.capsule(p0, p1, r0, r1), "muscle")
        shoulder, elbow, wrist = joints
        humerus = frame.capsule(shoulder, elbow, HUMERUS_RADIUS_MM)
        stack.add(f"humerus_{side}", humerus, "cortical_bone")
        marrow = frame.capsule(shoulder, elbow, HUMERUS_MARROW_RADIUS_MM)
        stack.add(f"humerus_marrow_{side}", marrow, "fatty_marrow")
        forearm = frame.capsule(elbow, wrist, *FOREARM_BONE_RADII_MM)
        stack.add(f"forearm_bone_{side}", forearm, "mixed_bone")
        if rng.random() < INJECTION_PROBABILITY:
            injection_suv = draw_value(rng, *INJECTION_SUV_RANGE, True)
            site = (elbow[0], elbow[1] + INJECTION_OFFSET_Y_MM, elbow[2])
            shape = frame.ellipsoid(site, INJECTION_RADII_MM)
            stack.add(f"injection_{side}", shape, "muscle", suv=injection_suv)


def add_muscles(
    stack: LayerStack, rng: np.random.Generator, habitus: Habitus, outline: TorsoOutline
) -> None:
    """The muscle wall, neck and thigh muscles, the visceral cavity (carved out of the wall),
    brown fat, and the muscles inside: gluteal, paraspinal, psoas, sternocleidomastoid."""
    frame, muscle = habitus.frame, habitus.muscle_mm
    wall_half_width = [a + muscle for a in TORSO_INNER_HALF_WIDTH_MM]
    wall_half_depth = [b + muscle for b in TORSO_INNER_HALF_DEPTH_MM]
    wall = frame.tube(TORSO_KNOTS_Z_MM, wall_half_width, wall_half_depth, 0.0, TORSO_CENTER_Y_MM)
    stack.add("muscle_wall", wall, "muscle")
    neck_fat = outline.neck_fat_mm
    neck_muscle = frame.tube(
        NECK_KNOTS_Z_MM,
        [v - neck_fat for v in outline.neck_half_width_mm[:4]]
        + list(NECK_MUSCLE_TOP_HALF_WIDTH_MM),
        [v - neck_fat for v in outline.neck_half_depth_mm[:4]]
        + list(NECK_MUSCLE_TOP_HALF_DEPTH_MM),
        0.0,
        outline.neck_center_y_mm,
    )
    stack.add("neck_muscle", neck_muscle, "muscle")
    for side in SIDES:
        thigh = frame.tube(
            THIGH_MUSCLE_KNOTS_Z_MM,
            THIGH_HALF_WIDTH_MM,
            THIGH_HALF_DEPTH_MM,
            [side * x for x in THIGH_CENTER_X_MM],
            THIGH_CENTER_Y_MM,
        )
        stack.add(f"thigh_muscle_{side}", thigh, "muscle")
    cavity = frame.tube(
        TORSO_KNOTS_Z_MM[:-1],
        TORSO_INNER_HALF_WIDTH_MM[:-1],
        TORSO_INNER_HALF_DEPTH_MM[:-1],
        0.0,
        TORSO_CENTER_Y_MM,
    )
    stack.add("visceral", cavity, "visceral_fat")
    if habitus.brown_fat:
        brown_suv = draw_value(rng, *BROWN_FAT_SUV_RANGE, True)
        for side in SIDES:
            for name, ((x, y, z), radii) in (
                ("brown_fat", BROWN_FAT_SUPRACLAVICULAR_MM),
                ("brown_fat_pv", BROWN_FAT_PARAVERTEBRAL_MM),
            ):
                shape = frame.ellipsoid((side * x, y, z), radii)
                stack.add(f"{name}_{side}", shape, "fat", suv=brown_suv)
    for side in SIDES:
        _add_inner_muscles(stack, frame, side)


# Muscles inside the body wall, per side (x mirrored).
GLUTEAL_MM = ((85, 62, 70), (55, 32, 70))  # centre, radii
PARASPINAL_KNOTS_Z_MM = (120, 300, 450, 600)
PARASPINAL_HALF_WIDTH_MM = (26, 28, 24, 20)
PARASPINAL_HALF_DEPTH_MM = (22, 24, 20, 16)
PARASPINAL_CENTER_X_MM = 32
PARASPINAL_CENTER_Y_MM = (92, 92, 98, 88)
PSOAS_JOINTS_MM = ((28, 42, 300), (52, 28, 150), (72, 8, 40))  # origin, bend, insertion
PSOAS_RADII_MM = ((10, 22), (22, 14))
STERNOCLEIDOMASTOID_MM = ((52, 22, 790), (20, -42, 628), 9, 8)  # mastoid, sternum, radii


def _add_inner_muscles(stack: LayerStack, frame: PatientFrame, side: int) -> None:
    def mirrored(p: tuple[float, float, float]) -> tuple[float, float, float]:
        return (side * p[0], p[1], p[2])

    center, radii = GLUTEAL_MM
    stack.add(f"gluteal_{side}", frame.ellipsoid(mirrored(center), radii), "muscle")
    paraspinal = frame.tube(
        PARASPINAL_KNOTS_Z_MM,
        PARASPINAL_HALF_WIDTH_MM,
        PARASPINAL_HALF_DEPTH_MM,
        side * PARASPINAL_CENTER_X_MM,
        PARASPINAL_CENTER_Y_MM,
    )
    stack.add(f"paraspinal_{side}", paraspinal, "muscle")
    origin, bend, insertion = (mirrored(p) for p in PSOAS_JOINTS_MM)
    (r0, r1), (r2, r3) = PSOAS_RADII_MM
    stack.add(f"psoas_a_{side}", frame.capsule(origin, bend, r0, r1), "muscle")
    stack.add(f"psoas_b_{side}", frame.capsule(bend, insertion, r2, r3), "muscle")
    mastoid, sternum, r_top, r_bottom = STERNOCLEIDOMASTOID_MM
    scm = frame.capsule(mirrored(mastoid), mirrored(sternum), r_top, r_bottom)
    stack.add(f"scm_{side}", scm, "muscle")
