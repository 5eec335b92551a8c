"""The skeleton of a phantom: spine (with discs), pelvis, femurs, shoulder girdle.

Positions and sizes are in mm of the patient frame
(:class:`~mefn.data.phantoms.frame.PatientFrame`); per-side bones are given for the left
side (x > 0) and mirrored.
"""

from __future__ import annotations

import numpy as np

from mefn.data.phantoms.frame import CapsuleMM, EllipsoidMM, PatientFrame
from mefn.data.phantoms.shapes import Array
from mefn.data.phantoms.tissues import LayerStack

__all__ = ["SPINE_CENTER_Y_MM", "SPINE_KNOTS_Z_MM", "add_skeleton"]

# Vertebral bodies: an elliptic tube through knots along z, from L5 to C1.
SPINE_KNOTS_Z_MM = (120, 200, 280, 360, 440, 520, 600, 640, 700, 760, 790)
SPINE_CENTER_Y_MM = (50, 45, 45, 50, 60, 70, 68, 52, 25, 20, 18)
SPINE_HALF_WIDTH_MM = (26, 26, 24, 22, 20, 18, 17, 14, 12, 12, 10)
SPINE_HALF_DEPTH_MM = (19, 19, 18, 17, 16, 15, 15, 12, 9, 9, 8)
VERTEBRAL_CORTEX_MM = 3  # the marrow's semi-axes are this much smaller
# Discs: the vertebral index along z, lumbar 5 (36 mm), thoracic 12 (27 mm), cervical 7 (17 mm)
DISC_LEVELS_Z_MM = (120.0, 296.0, 620.0, 770.0)
DISC_LEVELS_INDEX = (0.0, 5.0, 17.0, 24.0)
DISC_SHARPNESS = 4.0  # how abruptly a disc replaces bone around each integer index
DISC_COSINE_THRESHOLD = 0.75
ARCH_HALF_SIZE_MM = (16, 13)  # vertebral arch (x, y), behind the body
ARCH_BEHIND_BODY_MM = 14
CANAL_HALF_SIZE_MM = (8, 7)
CANAL_FORWARD_MM = 1

SACRUM = EllipsoidMM((0, 78, 115), (45, 18, 55))
SACRUM_ANGLES_DEG = (30, 0, 0)
# per side, in painting order: (name, tissue, shape of the left-hand bone)
PELVIS_AND_FEMUR = (
    ("ilium", "cortical_bone", EllipsoidMM((95, 35, 170), (60, 12, 50), 35.0)),
    ("ilium_marrow", "marrow", EllipsoidMM((95, 35, 170), (56, 8, 46), 35.0)),
    ("acetabulum", "mixed_bone", EllipsoidMM((80, 10, 62), (30, 30, 35))),
    ("pubic_ramus", "mixed_bone", CapsuleMM((12, -55, 2), (65, -20, 30), 10)),
    ("femoral_head", "cortical_bone", EllipsoidMM((88, 5, 50), (23, 23, 23))),
    ("femoral_head_marrow", "marrow", EllipsoidMM((88, 5, 50), (20, 20, 20))),
    ("femoral_neck", "mixed_bone", CapsuleMM((88, 5, 50), (125, 15, 20), 15, 14)),
    ("trochanter", "mixed_bone", EllipsoidMM((130, 20, 20), (20, 20, 25))),
    ("femur", "cortical_bone", CapsuleMM((128, 15, 10), (100, 5, -440), 14)),
    ("femur_marrow", "fatty_marrow", CapsuleMM((128, 15, 10), (100, 5, -440), 8)),
)
CLAVICLE_MEDIAL_MM = (15, -55, 612)
CLAVICLE_LATERAL_MM = (5, 10, 628)  # x beyond the shoulder frame's half width
CLAVICLE_RADIUS_MM = 8
SCAPULA = EllipsoidMM((105, 88, 530), (55, 8, 70), -25.0)
HUMERAL_HEAD_OFFSET_X_MM = 22  # beyond the shoulder frame's half width
HUMERAL_HEAD_Y_MM, HUMERAL_HEAD_Z_MM = 15, 585
HUMERAL_HEAD_RADIUS_MM, HUMERAL_HEAD_MARROW_RADIUS_MM = 22, 18


def add_skeleton(stack: LayerStack, frame: PatientFrame, shoulder_half_width_mm: float) -> None:
    """Spine, sacrum, pelvis, femurs, clavicles, scapulae and humeral heads."""
    _add_spine(stack, frame)
    stack.add(
        "sacrum", frame.ellipsoid(SACRUM.center, SACRUM.radii, SACRUM_ANGLES_DEG), "mixed_bone"
    )
    for side in (-1, 1):
        for name, tissue, part in PELVIS_AND_FEMUR:
            stack.add(name, frame.place(part, side), tissue)
        lx, ly, lz = CLAVICLE_LATERAL_MM
        clavicle = CapsuleMM(
            CLAVICLE_MEDIAL_MM, (shoulder_half_width_mm + lx, ly, lz), CLAVICLE_RADIUS_MM
        )
        stack.add("clavicle", frame.place(clavicle, side), "mixed_bone")
        stack.add("scapula", frame.place(SCAPULA, side), "mixed_bone")
        head_center = (
            shoulder_half_width_mm + HUMERAL_HEAD_OFFSET_X_MM,
            HUMERAL_HEAD_Y_MM,
            HUMERAL_HEAD_Z_MM,
        )
        for name, tissue, radius in (
            ("humeral_head", "cortical_bone", HUMERAL_HEAD_RADIUS_MM),
            ("humeral_head_marrow", "marrow", HUMERAL_HEAD_MARROW_RADIUS_MM),
        ):
            head = EllipsoidMM(head_center, (radius, radius, radius))
            stack.add(name, frame.place(head, side), tissue)


def _add_spine(stack: LayerStack, frame: PatientFrame) -> None:
    """Vertebral bodies whose cortex and marrow turn into disc at each level, arch, canal."""
    cortex_hu, cortex_suv = stack.tissues["cortical_bone"]
    marrow_hu, marrow_suv = stack.tissues["marrow"]
    disc_hu, disc_suv = stack.tissues["disc"]
    levels_z = np.array([frame.z(v) for v in DISC_LEVELS_Z_MM], dtype=np.float64)
    levels_index = np.array(DISC_LEVELS_INDEX)

    def disc_weight(z: Array) -> Array:
        index = np.interp(z, levels_z, levels_index).astype(np.float32)
        cosine = np.cos(np.float32(2 * np.pi) * index) - np.float32(DISC_COSINE_THRESHOLD)
        return np.clip(cosine * DISC_SHARPNESS, 0.0, 1.0)

    def vertebra_hu(x: Array, y: Array, z: Array) -> Array:
        return np.float32(cortex_hu) + np.float32(disc_hu - cortex_hu) * disc_weight(z)

    def marrow_hu_at(x: Array, y: Array, z: Array) -> Array:
        return np.float32(marrow_hu) + np.float32(disc_hu - marrow_hu) * disc_weight(z)

    def marrow_suv_at(x: Array, y: Array, z: Array) -> Array:
        return np.float32(marrow_suv) + np.float32(disc_suv - marrow_suv) * disc_weight(z)

    z_knots, center_y = SPINE_KNOTS_Z_MM, SPINE_CENTER_Y_MM
    body = frame.tube(z_knots, SPINE_HALF_WIDTH_MM, SPINE_HALF_DEPTH_MM, 0.0, center_y)
    stack.add("vertebra", body, "cortical_bone", hu=vertebra_hu, suv=cortex_suv)
    marrow = frame.tube(
        z_knots,
        [a - VERTEBRAL_CORTEX_MM for a in SPINE_HALF_WIDTH_MM],
        [b - VERTEBRAL_CORTEX_MM for b in SPINE_HALF_DEPTH_MM],
        0.0,
        center_y,
    )
    stack.add("vertebra_marrow", marrow, "marrow", hu=marrow_hu_at, suv=marrow_suv_at)
    arch_y = [c + b + ARCH_BEHIND_BODY_MM for c, b in zip(center_y, SPINE_HALF_DEPTH_MM)]
    n = len(z_knots)
    arch_a, arch_b = ARCH_HALF_SIZE_MM
    arch = frame.tube(z_knots, [arch_a] * n, [arch_b] * n, 0.0, arch_y)
    stack.add("vertebral_arch", arch, "mixed_bone")
    canal_a, canal_b = CANAL_HALF_SIZE_MM
    canal_y = [c - CANAL_FORWARD_MM for c in arch_y]
    stack.add(
        "spinal_canal",
        frame.tube(z_knots, [canal_a] * n, [canal_b] * n, 0.0, canal_y),
        "spinal_cord",
    )
