"""The thorax of a phantom: lungs with vessels, sternum, ribs, heart, great vessels.

Positions and sizes are in mm of the patient frame
(:class:`~mefn.data.phantoms.frame.PatientFrame`); x is mirrored per side.
"""

from __future__ import annotations

import numpy as np

from mefn.data.phantoms.frame import PatientFrame, Point
from mefn.data.phantoms.shapes import Array, RibCage, rotation_matrix
from mefn.data.phantoms.tissues import LayerStack

__all__ = ["LUNGS_MM", "add_great_vessels", "add_heart", "add_lungs_and_ribs"]

# side: (centre, radii)
LUNGS_MM: dict[int, tuple[Point, Point]] = {
    -1: ((-72, 15, 522), (62, 78, 120)),
    1: ((72, 15, 517), (60, 78, 115)),
}
LUNG_HU_GRADIENT_RANGE = (20, 90)  # HU more posterior (dependent lung) over one radius
LUNG_GRADIENT_ORIGIN_Y_MM = 15
LUNG_GRADIENT_RADIUS_MM = 78
HILUM_MM = (42, 22, 520)
VESSELS_PER_LUNG = 10
VESSEL_LENGTH_RANGE_MM = (50, 95)
VESSEL_Y_SHORTENING = 0.8
VESSEL_ROOT_RADIUS_RANGE_MM = (3, 5)
VESSEL_TIP_RADIUS_MM = 1.2
STERNUM_MM = ((0, -88, 530), (15, 8, 70))
RIB_TUBE_KNOTS_Z_MM = (360, 440, 520, 580, 615)
RIB_TUBE_HALF_WIDTH_MM = (130, 143, 148, 145, 120)
RIB_TUBE_HALF_DEPTH_MM = (88, 96, 96, 90, 75)
RIB_TUBE_CENTER_Y_MM = 7.0
RIB_THICKNESS_MM = 9.0
RIB_PERIOD_MM = 27.0
RIB_HEIGHT_RANGE_MM = (9, 12)
RIB_SLOPE = 0.45
RIB_FRONT_Y_MM = -60  # the costal cartilage in front of it is left out

HEART_CENTER_MM: Point = (18.0, -22.0, 472.0)
HEART_RADII_MM = (60, 48, 56)
HEART_ANGLE_RANGES_DEG = ((-10, 10), (10, 30), (25, 45))  # about x, y, z
LV_OFFSET_MM = (18.0, 4.0, -6.0)  # of the left ventricle from the heart's centre (rotated)
LV_MYOCARDIUM_RADII_MM = (32, 30, 44)
LV_CAVITY_RADII_MM = (21, 19, 32)
MYOCARDIUM_GRADIENT_RANGE = (-0.35, 0.35)  # relative uptake change over the length scale
MYOCARDIUM_GRADIENT_LENGTH_MM = 35.0
MYOCARDIUM_UPTAKE_CLIP = (0.3, 1.7)

AORTA_MM = ((10, -12, 500), (5, -12, 560), (0, 20, 592), (15, 52, 565), (15, 55, 440),
            (8, 35, 300), (0, 25, 200))  # fmt: skip
AORTA_RADII_MM = (15, 15, 13, 12, 12, 10, 9)
# per side (x mirrored): (start, end, radius at start, radius at end)
ILIAC_ARTERIES_MM = (((0, 25, 200), (55, 22, 100), 7, 6), ((55, 22, 100), (80, -20, 10), 6, 5))
CAROTID_MM = ((22, -8, 595), (26, -4, 770), 4, 4)
JUGULAR_MM = ((32, -4, 610), (38, 6, 785), 6, 6)
IVC_MM = (((-20, 20, 200), (-22, 28, 400), 10, 12), ((-22, 28, 400), (-12, 0, 448), 12, 12))


def add_lungs_and_ribs(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    """Lungs (denser at the back) with vessels fanning out from the hila, sternum, ribs."""
    gradient_hu = float(rng.uniform(*LUNG_HU_GRADIENT_RANGE))
    lung_hu = stack.hu("lung")
    origin_y = frame.point(0, LUNG_GRADIENT_ORIGIN_Y_MM, 0)[1]
    radius_y = LUNG_GRADIENT_RADIUS_MM * frame.build

    def lung_value(x: Array, y: Array, z: Array) -> Array:
        return lung_hu + gradient_hu * (y - np.float32(origin_y)) / np.float32(radius_y)

    for side, (center, radii) in LUNGS_MM.items():
        stack.add(f"lung_{side}", frame.ellipsoid(center, radii), "lung", hu=lung_value)
        hilum = (side * HILUM_MM[0], HILUM_MM[1], HILUM_MM[2])
        for _ in range(VESSELS_PER_LUNG):
            direction = rng.normal(size=3)
            direction[0] = abs(direction[0]) * side  # towards the lung's own side
            direction /= np.linalg.norm(direction)
            length = float(rng.uniform(*VESSEL_LENGTH_RANGE_MM))
            end = (
                hilum[0] + direction[0] * length,
                hilum[1] + direction[1] * length * VESSEL_Y_SHORTENING,
                hilum[2] + direction[2] * length,
            )
            root_radius = float(rng.uniform(*VESSEL_ROOT_RADIUS_RANGE_MM))
            vessel = frame.capsule(hilum, end, root_radius, VESSEL_TIP_RADIUS_MM)
            stack.add(f"lung_vessel_{side}", vessel, "blood")
    stack.add("sternum", frame.ellipsoid(*STERNUM_MM), "mixed_bone")
    rib_tube = frame.tube(
        RIB_TUBE_KNOTS_Z_MM, RIB_TUBE_HALF_WIDTH_MM, RIB_TUBE_HALF_DEPTH_MM, 0.0,
        RIB_TUBE_CENTER_Y_MM,
    )  # fmt: skip
    ribs = RibCage(
        rib_tube,
        RIB_THICKNESS_MM * frame.build,
        RIB_PERIOD_MM * frame.height,
        float(rng.uniform(*RIB_HEIGHT_RANGE_MM)),
        RIB_SLOPE,
        frame.point(0, RIB_FRONT_Y_MM, 0)[1],
    )
    stack.add("ribs", ribs, "mixed_bone")


def add_heart(stack: LayerStack, rng: np.random.Generator, frame: PatientFrame) -> None:
    """The heart (blood pool) at a random tilt, with the left ventricle's myocardium, whose
    uptake varies along a random direction."""
    angles = tuple(float(rng.uniform(*r)) for r in HEART_ANGLE_RANGES_DEG)
    heart_angles: Point = (angles[0], angles[1], angles[2])
    stack.add("heart", frame.ellipsoid(HEART_CENTER_MM, HEART_RADII_MM, heart_angles), "blood")
    offset = rotation_matrix(heart_angles) @ np.array(LV_OFFSET_MM)
    cx, cy, cz = HEART_CENTER_MM
    lv_center = (cx + offset[0], cy + offset[1], cz + offset[2])
    myocardium_suv = stack.suv("myocardium")
    gradient = float(rng.uniform(*MYOCARDIUM_GRADIENT_RANGE))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    lv_world = frame.point(*lv_center)
    clip_lo, clip_hi = MYOCARDIUM_UPTAKE_CLIP

    def myocardium_value(x: Array, y: Array, z: Array) -> Array:
        along = (
            (x - np.float32(lv_world[0])) * np.float32(direction[0])
            + (y - np.float32(lv_world[1])) * np.float32(direction[1])
            + (z - np.float32(lv_world[2])) * np.float32(direction[2])
        )
        relative = 1.0 + np.float32(gradient) * along / np.float32(MYOCARDIUM_GRADIENT_LENGTH_MM)
        return np.float32(myocardium_suv) * np.clip(relative, clip_lo, clip_hi)

    myocardium = frame.ellipsoid(lv_center, LV_MYOCARDIUM_RADII_MM, heart_angles)
    stack.add("lv_myocardium", myocardium, "myocardium", suv=myocardium_value)
    stack.add("lv_cavity", frame.ellipsoid(lv_center, LV_CAVITY_RADII_MM, heart_angles), "blood")


def add_great_vessels(stack: LayerStack, frame: PatientFrame) -> None:
    """Aorta, iliac arteries, carotids, jugulars and the inferior vena cava."""
    for (p0, p1), (r0, r1) in zip(
        zip(AORTA_MM, AORTA_MM[1:]), zip(AORTA_RADII_MM, AORTA_RADII_MM[1:])
    ):
        stack.add("aorta", frame.capsule(p0, p1, r0, r1), "blood")
    for side in (-1, 1):
        for name, vessels in (
            ("iliac_artery", ILIAC_ARTERIES_MM),
            ("carotid", (CAROTID_MM,)),
            ("jugular", (JUGULAR_MM,)),
        ):
            for (x0, y0, z0), (x1, y1, z1), r0, r1 in vessels:
                shape = frame.capsule((side * x0, y0, z0), (side * x1, y1, z1), r0, r1)
                stack.add(name, shape, "blood")
    for p0, p1, r0, r1 in IVC_MM:
        stack.add("ivc", frame.capsule(p0, p1, r0, r1), "blood")
