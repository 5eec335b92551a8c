"""A randomised adult anatomy for FDG PET/CT phantoms, as ordered layers of analytic shapes.

Positions are written in a patient frame (mm): x to the patient's left, y posterior, z
superior (LPS), with z = 0 at the pubic symphysis. :class:`_Frame` scales that frame (body
height, build) and moves it into the scanner's world coordinates, so every study places the
patient somewhere else in the field of view.

Tissue values (CT HU, FDG SUV) are drawn per study from the ranges of REFERENCE.md, widened
by :data:`WIDEN` on each side so that the model also sees values a little beyond them.
Layers are painted in order: later layers replace earlier ones (with partial volume), so an
organ is carved out of whatever it is painted over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mefn.data.phantom_shapes import (
    Array,
    Box,
    Capsule,
    Ellipsoid,
    EllipticTube,
    Layer,
    RibCage,
    Shape,
    SmoothField,
    Value,
    rotation_matrix,
)

__all__ = ["Anatomy", "Site", "TISSUE_RANGES", "WIDEN", "build_anatomy"]

Point = tuple[float, float, float]
WIDEN = 0.15

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


def _draw(rng: np.random.Generator, lo: float, hi: float, log: bool = False) -> float:
    if log and lo > 0:
        llo, lhi = math.log(lo), math.log(hi)
        w = WIDEN * (lhi - llo)
        return float(math.exp(rng.uniform(llo - w, lhi + w)))
    w = WIDEN * (hi - lo)
    return float(rng.uniform(lo - w, hi + w))


@dataclass
class Site:
    """Where lesions of one kind can grow: a sampler of centres and the tissue around them."""

    name: str
    sample: Callable[[np.random.Generator], Point]
    tissue: str
    diameter_mm: tuple[float, float]
    max_radius_mm: float = 1e9


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


class _Frame:
    """Patient frame -> world: scale (build in x, y; height in z), then translate."""

    def __init__(self, sf: float, sh: float, shift: Point) -> None:
        self.sf, self.sh, self.shift = sf, sh, shift

    def p(self, x: float, y: float, z: float) -> Point:
        tx, ty, tz = self.shift
        return (x * self.sf + tx, y * self.sf + ty, z * self.sh + tz)

    def r(self, rx: float, ry: float, rz: float) -> Point:
        return (rx * self.sf, ry * self.sf, rz * self.sh)

    def z(self, z: float) -> float:
        return z * self.sh + self.shift[2]

    def ell(self, c: Point, radii: Point, angles: Point | None = None) -> Ellipsoid:
        rot = None if angles is None else tuple(rotation_matrix(angles).ravel())
        return Ellipsoid(self.p(*c), self.r(*radii), rot)

    def cap(self, p0: Point, p1: Point, r0: float, r1: float | None = None) -> Capsule:
        return Capsule(self.p(*p0), self.p(*p1), r0 * self.sf, (r0 if r1 is None else r1) * self.sf)

    def tube(
        self,
        z: Sequence[float],
        a: Sequence[float],
        b: Sequence[float],
        cx: Sequence[float] | float = 0.0,
        cy: Sequence[float] | float = 0.0,
    ) -> EllipticTube:
        n = len(z)
        cxl = [float(cx)] * n if isinstance(cx, float | int) else list(cx)
        cyl = [float(cy)] * n if isinstance(cy, float | int) else list(cy)
        tx, ty, _ = self.shift
        return EllipticTube(
            tuple(self.z(v) for v in z),
            tuple(v * self.sf for v in a),
            tuple(v * self.sf for v in b),
            tuple(v * self.sf + tx for v in cxl),
            tuple(v * self.sf + ty for v in cyl),
        )


def build_anatomy(rng: np.random.Generator, contrast: bool | None = None) -> Anatomy:
    """A random patient: tissue values, body habitus and position, optional arms and contrast."""
    sf = float(rng.uniform(0.88, 1.1))
    sh = float(rng.uniform(0.9, 1.1))
    shift = (
        float(rng.uniform(-40, 40)),
        float(rng.uniform(-40, 40)),
        float(rng.uniform(-1400, 200)),
    )
    fr = _Frame(sf, sh, shift)
    t_fat = float(np.exp(rng.uniform(np.log(5.0), np.log(45.0))))
    t_musc = float(rng.uniform(8, 18))
    arms_down = bool(rng.random() < 0.45)
    has_table = bool(rng.random() < 0.75)
    if contrast is None:
        contrast = bool(rng.random() < 0.35)
    oral_contrast = bool(rng.random() < 0.2)
    brown_fat = bool(rng.random() < 0.06)

    tissues: dict[str, tuple[float, float]] = {}
    for name, ((hlo, hhi), (slo, shi), log) in TISSUE_RANGES.items():
        hu_lo, hu_hi = CONTRAST_HU[name] if contrast and name in CONTRAST_HU else (hlo, hhi)
        hu_value = _draw(rng, hu_lo, hu_hi)
        suv_value = _draw(rng, slo, shi, log) if shi > 0 else 0.0
        tissues[name] = (hu_value, max(suv_value, 0.05) if shi > 0 else 0.0)
    # Dependent relations: white matter cooler and a little less dense than grey matter.
    g_hu, g_suv = tissues["brain_grey"]
    tissues["brain_white"] = (g_hu - rng.uniform(5, 12), g_suv * rng.uniform(0.3, 0.45))
    if oral_contrast:
        tissues["bowel_content"] = (float(rng.uniform(150, 400)), tissues["bowel_content"][1])
    tissues["air"] = (-1000.0, 0.0)
    tissues["gas"] = (float(rng.uniform(-1000, -900)), 0.0)

    def hu(name: str) -> float:
        return tissues[name][0]

    def suv(name: str) -> float:
        return tissues[name][1]

    layers: list[Layer] = []

    def add(
        name: str,
        shape: Shape,
        tissue: str | None = None,
        h: Value | None = None,
        s: Value | None = None,
    ) -> None:
        t = tissue or name
        layers.append(Layer(name, shape, hu(t) if h is None else h, suv(t) if s is None else s))

    # --- body outline -----------------------------------------------------------------------
    zk = [-60, 0, 80, 160, 220, 300, 380, 440, 500, 560, 600, 625]
    a_in = [140, 145, 140, 135, 125, 125, 135, 140, 145, 145, 140, 100]
    b_in = [85, 85, 85, 85, 85, 90, 95, 95, 95, 90, 80, 60]
    belly = [1.0, 1.0, 1.15, 1.3, 1.4, 1.35, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6]
    a_body = [a + t_musc + t_fat for a in a_in]
    b_body = [b + t_musc + t_fat * k for b, k in zip(b_in, belly)]
    cy_body = [5 - (t_fat * (k - 1.0)) * 0.5 for k in belly]
    # neck (outline directly), then the head as an ellipsoid
    neck_fat = 0.4 * t_fat
    zn = [625, 650, 700, 745, 780, 800]
    an = [a_body[-1] * 0.7 + 20, 62 + neck_fat, 56 + neck_fat, 60 + neck_fat, 64, 66]
    bn = [b_body[-1] * 0.9, 60 + neck_fat, 58 + neck_fat, 72 + neck_fat * 0.5, 80, 82]
    cyn = [cy_body[-1], 0, -2, -8, -6, -2]
    torso = fr.tube(zk, a_body, b_body, 0.0, cy_body)
    neck = fr.tube(zn, an, bn, 0.0, cyn)
    head = fr.ell((0, 2, 848), (78, 98, 92))
    add("body", torso, "fat")
    add("neck", neck, "fat")
    add("head", head, "fat")
    thigh_fat = 0.8 * t_fat
    for side in (-1, 1):
        thigh = fr.tube(
            [-470, -300, -120, -20, 30],
            [45 + thigh_fat, 55 + thigh_fat, 64 + thigh_fat, 70 + thigh_fat, 66 + thigh_fat],
            [48 + thigh_fat, 56 + thigh_fat, 64 + thigh_fat, 70 + thigh_fat, 66 + thigh_fat],
            [side * 96, side * 98, side * 100, side * 98, side * 88],
            [0, 0, 5, 8, 8],
        )
        add(f"thigh_{side}", thigh, "fat")
    a_sh = a_in[-3]  # half width of the chest frame at the shoulders
    if arms_down:
        for side in (-1, 1):
            x0 = side * (a_sh + t_musc + t_fat + 35)
            pts = [(x0, 15, 585), (x0 + side * 15, 25, 330), (x0 + side * 10, 5, 90)]
            for (p0, p1), (r0, r1) in zip(zip(pts, pts[1:]), [(46, 38), (38, 30)]):
                add(f"arm_{side}", fr.cap(p0, p1, r0 + 0.5 * t_fat, r1 + 0.5 * t_fat), "fat")
                add(f"arm_muscle_{side}", fr.cap(p0, p1, r0, r1), "muscle")
            add(f"humerus_{side}", fr.cap(pts[0], pts[1], 12), "cortical_bone")
            add(f"humerus_marrow_{side}", fr.cap(pts[0], pts[1], 7), "fatty_marrow")
            add(f"forearm_bone_{side}", fr.cap(pts[1], pts[2], 9, 7), "mixed_bone")
            if rng.random() < 0.12:  # paravenous injection: a classic hot spot
                inj = _draw(rng, 5.0, 60.0, True)
                add(
                    f"injection_{side}",
                    fr.ell((pts[1][0], pts[1][1] - 20, pts[1][2]), (8, 6, 12)),
                    "muscle",
                    s=inj,
                )
    # shoulders (deltoid and humeral heads), whatever the arms do
    for side in (-1, 1):
        xs = side * (a_sh + 20)
        add(
            f"shoulder_{side}",
            fr.ell((xs, 15, 585), (42 + t_fat * 0.6, 45 + t_fat * 0.6, 45)),
            "fat",
        )
        add(f"deltoid_{side}", fr.ell((xs, 15, 585), (40, 42, 42)), "muscle")

    # --- muscle wall, visceral cavity ----------------------------------------------------------
    add(
        "muscle_wall",
        fr.tube(zk, [a + t_musc for a in a_in], [b + t_musc for b in b_in], 0.0, 5.0),
        "muscle",
    )
    add(
        "neck_muscle",
        fr.tube(
            zn,
            [v - neck_fat for v in an[:4]] + [58, 60],
            [v - neck_fat for v in bn[:4]] + [70, 72],
            0.0,
            cyn,
        ),
        "muscle",
    )
    for side in (-1, 1):
        add(
            f"thigh_muscle_{side}",
            fr.tube(
                [-470, -300, -120, -20, 20],
                [45, 55, 64, 70, 66],
                [48, 56, 64, 70, 66],
                [side * 96, side * 98, side * 100, side * 98, side * 88],
                [0, 0, 5, 8, 8],
            ),
            "muscle",
        )
    add("visceral", fr.tube(zk[:-1], a_in[:-1], b_in[:-1], 0.0, 5.0), "visceral_fat")
    if brown_fat:
        bf = _draw(rng, 3.0, 12.0, True)
        for side in (-1, 1):
            add(f"brown_fat_{side}", fr.ell((side * 55, 5, 628), (28, 20, 18)), "fat", s=bf)
            add(f"brown_fat_pv_{side}", fr.ell((side * 28, 62, 520), (10, 12, 60)), "fat", s=bf)

    # --- muscles inside: paraspinal, psoas, gluteal -------------------------------------------
    for side in (-1, 1):
        add(f"gluteal_{side}", fr.ell((side * 85, 62, 70), (55, 32, 70)), "muscle")
        add(
            f"paraspinal_{side}",
            fr.tube(
                [120, 300, 450, 600],
                [26, 28, 24, 20],
                [22, 24, 20, 16],
                side * 32,
                [92, 92, 98, 88],
            ),
            "muscle",
        )
        add(f"psoas_a_{side}", fr.cap((side * 28, 42, 300), (side * 52, 28, 150), 10, 22), "muscle")
        add(f"psoas_b_{side}", fr.cap((side * 52, 28, 150), (side * 72, 8, 40), 22, 14), "muscle")
        add(f"scm_{side}", fr.cap((side * 52, 22, 790), (side * 20, -42, 628), 9, 8), "muscle")

    # --- thorax ------------------------------------------------------------------------------
    lung_grad = float(rng.uniform(20, 90))
    lung_hu = hu("lung")
    lung_y0 = fr.p(0, 15, 0)[1]
    lung_ry = 78 * sf

    def lung_value(x: Array, y: Array, z: Array) -> Array:
        return lung_hu + lung_grad * (y - np.float32(lung_y0)) / np.float32(lung_ry)

    lungs: dict[int, tuple[Point, Point]] = {
        -1: ((-72, 15, 522), (62, 78, 120)),
        1: ((72, 15, 517), (60, 78, 115)),
    }
    for side, (c, r) in lungs.items():
        add(f"lung_{side}", fr.ell(c, r), "lung", h=lung_value)
        hilum = (side * 42, 22, 520)
        for _ in range(10):
            d = rng.normal(size=3)
            d[0] = abs(d[0]) * side
            d /= np.linalg.norm(d)
            length = float(rng.uniform(50, 95))
            end = (
                hilum[0] + d[0] * length,
                hilum[1] + d[1] * length * 0.8,
                hilum[2] + d[2] * length,
            )
            add(f"lung_vessel_{side}", fr.cap(hilum, end, float(rng.uniform(3, 5)), 1.2), "blood")
    add("sternum", fr.ell((0, -88, 530), (15, 8, 70)), "mixed_bone")
    rib_tube = fr.tube(
        [360, 440, 520, 580, 615], [130, 143, 148, 145, 120], [88, 96, 96, 90, 75], 0.0, 7.0
    )
    add(
        "ribs",
        RibCage(rib_tube, 9.0 * sf, 27.0 * sh, float(rng.uniform(9, 12)), 0.45, fr.p(0, -60, 0)[1]),
        "mixed_bone",
    )
    heart_rot = (
        float(rng.uniform(-10, 10)),
        float(rng.uniform(10, 30)),
        float(rng.uniform(25, 45)),
    )
    heart_c = (18.0, -22.0, 472.0)
    add("heart", fr.ell(heart_c, (60, 48, 56), heart_rot), "blood")
    rot = rotation_matrix(heart_rot)
    lv_off = rot @ np.array([18.0, 4.0, -6.0])
    lv_c = (heart_c[0] + lv_off[0], heart_c[1] + lv_off[1], heart_c[2] + lv_off[2])
    myo = suv("myocardium")
    myo_grad = float(rng.uniform(-0.35, 0.35))
    myo_dir = rng.normal(size=3)
    myo_dir /= np.linalg.norm(myo_dir)
    lv_world = fr.p(*lv_c)

    def myo_value(x: Array, y: Array, z: Array) -> Array:
        proj = (
            (x - np.float32(lv_world[0])) * np.float32(myo_dir[0])
            + (y - np.float32(lv_world[1])) * np.float32(myo_dir[1])
            + (z - np.float32(lv_world[2])) * np.float32(myo_dir[2])
        )
        return np.float32(myo) * np.clip(
            1.0 + np.float32(myo_grad) * proj / np.float32(35.0), 0.3, 1.7
        )

    add("lv_myocardium", fr.ell(lv_c, (32, 30, 44), heart_rot), "myocardium", s=myo_value)
    add("lv_cavity", fr.ell(lv_c, (21, 19, 32), heart_rot), "blood")
    aorta = [
        (10, -12, 500),
        (5, -12, 560),
        (0, 20, 592),
        (15, 52, 565),
        (15, 55, 440),
        (8, 35, 300),
        (0, 25, 200),
    ]
    radii = [15, 15, 13, 12, 12, 10, 9]
    for (p0, p1), (r0, r1) in zip(zip(aorta, aorta[1:]), zip(radii, radii[1:])):
        add("aorta", fr.cap(p0, p1, r0, r1), "blood")
    for side in (-1, 1):
        add("iliac_artery", fr.cap((0, 25, 200), (side * 55, 22, 100), 7, 6), "blood")
        add("iliac_artery", fr.cap((side * 55, 22, 100), (side * 80, -20, 10), 6, 5), "blood")
        add("carotid", fr.cap((side * 22, -8, 595), (side * 26, -4, 770), 4), "blood")
        add("jugular", fr.cap((side * 32, -4, 610), (side * 38, 6, 785), 6), "blood")
    add("ivc", fr.cap((-20, 20, 200), (-22, 28, 400), 10, 12), "blood")
    add("ivc", fr.cap((-22, 28, 400), (-12, 0, 448), 12), "blood")

    # --- abdomen -----------------------------------------------------------------------------
    liver_rot = (0.0, 0.0, float(rng.uniform(-20, -5)))
    liver_c, liver_r = (-62.0, 0.0, 380.0), (88.0, 80.0, 72.0)
    add("liver", fr.ell(liver_c, liver_r, liver_rot))
    add("liver", fr.ell((10, -40, 400), (55, 30, 38)))
    if rng.random() < 0.6:
        add("gallbladder", fr.ell((-55, -55, 330), (14, 14, 28)))
    spleen_c = (85.0, 45.0, 390.0)
    add("spleen", fr.ell(spleen_c, (30, 42, 52), (0, 0, 30)))
    add("stomach", fr.ell((45, -20, 405), (45, 35, 45)), "stomach_wall")
    add("stomach_content", fr.ell((45, -20, 405), (38, 28, 38)), "bowel_content")
    add("stomach_gas", fr.ell((45, -30, 422), (22, 12, 12)), "gas")
    for p0, p1, r0, r1 in [
        ((-15, 20, 330), (30, 25, 345), 12, 11),
        ((30, 25, 345), (70, 40, 360), 11, 8),
    ]:
        add("pancreas", fr.cap(p0, p1, r0, r1))
    urine_suv = suv("urine")
    kidneys = {-1: (-70.0, 55.0, 285.0), 1: (70.0, 55.0, 300.0)}
    for side, c in kidneys.items():
        add(f"kidney_{side}", fr.ell(c, (28, 30, 55), (15, 0, side * 15.0)), "kidney")
        pel = (c[0] - side * 12, c[1] - 5, c[2])
        add(
            f"renal_pelvis_{side}",
            fr.ell(pel, (9, 11, 20)),
            "urine",
            s=urine_suv * float(rng.uniform(0.3, 1.5)),
        )
    ureter_phase = float(rng.uniform(0, 2 * np.pi))
    ureter_period = float(rng.uniform(25, 60))

    def ureter_value(x: Array, y: Array, z: Array) -> Array:
        w = np.cos(z / np.float32(ureter_period) + np.float32(ureter_phase))
        return np.float32(urine_suv) * np.clip(w * 1.5 - 0.3, 0.05, 1.0)

    for side in (-1, 1):
        pts = [
            (side * 55, 48, 285),
            (side * 45, 38, 200),
            (side * 55, 45, 110),
            (side * 25, -25, 40),
        ]
        for p0, p1 in zip(pts, pts[1:]):
            add("ureter", fr.cap(p0, p1, 3.0), "urine", s=ureter_value)
    bl_r = (float(rng.uniform(30, 60)), float(rng.uniform(25, 50)), float(rng.uniform(25, 50)))
    bl_c: Point = (0.0, -45.0, 20.0 + bl_r[2])
    add("pelvic_organ", fr.ell((0, 10, bl_c[2] - bl_r[2] + 5), (22, 18, 20)))
    add("bladder_wall", fr.ell(bl_c, (bl_r[0] + 3, bl_r[1] + 3, bl_r[2] + 3)), "muscle")
    add("bladder", fr.ell(bl_c, bl_r))
    # bowel: colon frame, rectum, then a random walk of small bowel
    _bowel(rng, fr, add, tissues)

    # --- skeleton ----------------------------------------------------------------------------
    _skeleton(rng, fr, add, tissues, a_sh)

    # --- head and neck -----------------------------------------------------------------------
    _head_neck(rng, fr, add, tissues)

    if has_table:
        top = (
            fr.p(0, 0, 0)[1]
            + max(b + c for b, c in zip(b_body, cy_body)) * sf
            + float(rng.uniform(2, 15))
        )
        zlo, zhi = fr.z(-700), fr.z(1100)
        center = (shift[0], top + 20.0, (zlo + zhi) / 2)
        layers.append(Layer("table", Box(center, (240.0, 20.0, (zhi - zlo) / 2)), hu("table"), 0.0))
        layers.append(
            Layer(
                "table_core",
                Box(center, (236.0, 16.0, (zhi - zlo) / 2)),
                float(rng.uniform(-950, -750)),
                0.0,
            )
        )
        table_top = top
    else:
        table_top = float("inf")

    # --- landmarks and lesion sites ----------------------------------------------------------
    ls = _landmarks(fr, tissues, liver_c, spleen_c, kidneys, bl_c, t_fat, t_musc)
    sites = _sites(fr, lungs, liver_c, liver_r, spleen_c, a_sh, t_fat, t_musc, arms_down)
    outline = [
        layer.shape.bounds()
        for layer in layers
        if layer.name.split("_")[0] in ("body", "neck", "head", "thigh", "arm", "shoulder")
    ]
    body_lo = np.min([b[0] for b in outline], axis=0)
    body_hi = np.max([b[1] for b in outline], axis=0)
    return Anatomy(
        layers=layers,
        tissues=tissues,
        landmarks=ls,
        sites=sites,
        z_landmarks_mm={
            "knee": fr.z(-450),
            "mid_thigh": fr.z(-220),
            "pelvis_floor": fr.z(-70),
            "pubis": fr.z(0),
            "diaphragm": fr.z(450),
            "lung_apex": fr.z(640),
            "upper_thorax": fr.z(600),
            "larynx": fr.z(690),
            "oropharynx": fr.z(745),
            "skull_base": fr.z(790),
            "vertex": fr.z(940),
        },
        body_lo_mm=(float(body_lo[0]), float(body_lo[1]), float(body_lo[2])),
        body_hi_mm=(float(body_hi[0]), float(body_hi[1]), float(body_hi[2])),
        table_top_y_mm=table_top,
        params={
            "build": sf,
            "height": sh,
            "fat_mm": t_fat,
            "arms_down": arms_down,
            "table": has_table,
            "contrast": bool(contrast),
            "oral_contrast": oral_contrast,
            "brown_fat": brown_fat,
        },
    )


def _bowel(
    rng: np.random.Generator,
    fr: _Frame,
    add: Callable[..., None],
    tissues: dict[str, tuple[float, float]],
) -> None:
    wall_lo, wall_hi = TISSUE_RANGES["bowel_wall"][1]
    stool_hu = tissues["stool"][0]
    mottle = SmoothField.random(rng, 6, (8.0, 25.0))

    def stool_value(x: Array, y: Array, z: Array) -> Array:
        return np.float32(stool_hu) + np.float32(60.0) * mottle(x, y, z)

    colon = [
        (-90, 0, 150),
        (-100, 10, 300),
        (-85, -25, 338),
        (-30, -62, 312),
        (40, -62, 322),
        (92, 0, 378),
        (100, 25, 260),
        (95, 20, 150),
        (40, 45, 100),
        (5, 62, 105),
        (0, 70, 50),
        (0, 70, -20),
    ]
    for p0, p1 in zip(colon, colon[1:]):
        r = float(rng.uniform(16, 24))
        wall = _draw(rng, wall_lo, wall_hi, True)
        add("colon", fr.cap(p0, p1, r), "bowel_wall", s=wall)
        add("colon_content", fr.cap(p0, p1, r - 4), "stool", h=stool_value, s=tissues["stool"][1])
        if rng.random() < 0.45:
            t0, t1 = sorted(rng.uniform(0, 1, size=2))
            q0 = tuple(a + t0 * (b - a) for a, b in zip(p0, p1))
            q1 = tuple(a + t1 * (b - a) for a, b in zip(p0, p1))
            add("colon_gas", fr.cap(q0, q1, r - 6), "gas")  # type: ignore[arg-type]
    # small bowel: a random walk in the mid abdomen
    pos = np.array([rng.uniform(-50, 50), rng.uniform(-50, 0), rng.uniform(150, 260)])
    lo, hi = np.array([-75.0, -75.0, 120.0]), np.array([75.0, 25.0, 290.0])
    for _ in range(int(rng.integers(18, 32))):
        step = rng.normal(size=3)
        step *= float(rng.uniform(18, 30)) / np.linalg.norm(step)
        nxt = np.clip(pos + step, lo, hi)
        r = float(rng.uniform(9, 14))
        wall = _draw(rng, wall_lo, wall_hi, True)
        add("small_bowel", fr.cap(tuple(pos), tuple(nxt), r), "bowel_wall", s=wall)
        if rng.random() < 0.15:
            add("small_bowel_gas", fr.cap(tuple(pos), tuple(nxt), r - 3), "gas")
        else:
            add("small_bowel_content", fr.cap(tuple(pos), tuple(nxt), r - 3), "bowel_content")
        pos = nxt


def _skeleton(
    rng: np.random.Generator,
    fr: _Frame,
    add: Callable[..., None],
    tissues: dict[str, tuple[float, float]],
    a_sh: float,
) -> None:
    cortex_hu, cortex_suv = tissues["cortical_bone"]
    marrow_hu, marrow_suv = tissues["marrow"]
    disc_hu, disc_suv = tissues["disc"]
    # vertebral index along z: lumbar 5 (36 mm), thoracic 12 (27 mm), cervical 7 (17 mm)
    zv = np.array([fr.z(v) for v in (120.0, 296.0, 620.0, 770.0)], dtype=np.float64)
    iv = np.array([0.0, 5.0, 17.0, 24.0])

    def disc_weight(z: Array) -> Array:
        v = np.interp(z, zv, iv).astype(np.float32)
        return np.clip((np.cos(np.float32(2 * np.pi) * v) - np.float32(0.75)) * 4.0, 0.0, 1.0)

    def vert_cortex(x: Array, y: Array, z: Array) -> Array:
        return np.float32(cortex_hu) + np.float32(disc_hu - cortex_hu) * disc_weight(z)

    def vert_marrow(x: Array, y: Array, z: Array) -> Array:
        return np.float32(marrow_hu) + np.float32(disc_hu - marrow_hu) * disc_weight(z)

    def vert_marrow_suv(x: Array, y: Array, z: Array) -> Array:
        return np.float32(marrow_suv) + np.float32(disc_suv - marrow_suv) * disc_weight(z)

    sz = [120, 200, 280, 360, 440, 520, 600, 640, 700, 760, 790]
    scy = [50, 45, 45, 50, 60, 70, 68, 52, 25, 20, 18]
    sa = [26, 26, 24, 22, 20, 18, 17, 14, 12, 12, 10]
    sb = [19, 19, 18, 17, 16, 15, 15, 12, 9, 9, 8]
    add("vertebra", fr.tube(sz, sa, sb, 0.0, scy), "cortical_bone", h=vert_cortex, s=cortex_suv)
    add(
        "vertebra_marrow",
        fr.tube(sz, [a - 3 for a in sa], [b - 3 for b in sb], 0.0, scy),
        "marrow",
        h=vert_marrow,
        s=vert_marrow_suv,
    )
    post_cy = [c + b + 14 for c, b in zip(scy, sb)]
    add("vertebral_arch", fr.tube(sz, [16] * len(sz), [13] * len(sz), 0.0, post_cy), "mixed_bone")
    add(
        "spinal_canal",
        fr.tube(sz, [8] * len(sz), [7] * len(sz), 0.0, [c - 1 for c in post_cy]),
        "spinal_cord",
    )
    # pelvis
    add("sacrum", fr.ell((0, 78, 115), (45, 18, 55), (30, 0, 0)), "mixed_bone")
    for side in (-1, 1):
        ang = (0.0, 0.0, side * 35.0)
        add("ilium", fr.ell((side * 95, 35, 170), (60, 12, 50), ang), "cortical_bone")
        add("ilium_marrow", fr.ell((side * 95, 35, 170), (56, 8, 46), ang), "marrow")
        add("acetabulum", fr.ell((side * 80, 10, 62), (30, 30, 35)), "mixed_bone")
        add("pubic_ramus", fr.cap((side * 12, -55, 2), (side * 65, -20, 30), 10), "mixed_bone")
        add("femoral_head", fr.ell((side * 88, 5, 50), (23, 23, 23)), "cortical_bone")
        add("femoral_head_marrow", fr.ell((side * 88, 5, 50), (20, 20, 20)), "marrow")
        add("femoral_neck", fr.cap((side * 88, 5, 50), (side * 125, 15, 20), 15, 14), "mixed_bone")
        add("trochanter", fr.ell((side * 130, 20, 20), (20, 20, 25)), "mixed_bone")
        add("femur", fr.cap((side * 128, 15, 10), (side * 100, 5, -440), 14), "cortical_bone")
        add("femur_marrow", fr.cap((side * 128, 15, 10), (side * 100, 5, -440), 8), "fatty_marrow")
        # shoulder girdle
        add(
            "clavicle", fr.cap((side * 15, -55, 612), (side * (a_sh + 5), 10, 628), 8), "mixed_bone"
        )
        add(
            "scapula",
            fr.ell((side * 105, 88, 530), (55, 8, 70), (0, 0, -side * 25.0)),
            "mixed_bone",
        )
        add("humeral_head", fr.ell((side * (a_sh + 22), 15, 585), (22, 22, 22)), "cortical_bone")
        add("humeral_head_marrow", fr.ell((side * (a_sh + 22), 15, 585), (18, 18, 18)), "marrow")


def _head_neck(
    rng: np.random.Generator,
    fr: _Frame,
    add: Callable[..., None],
    tissues: dict[str, tuple[float, float]],
) -> None:
    # skull, brain
    add("skull", fr.ell((0, 8, 855), (72, 90, 80)), "cortical_bone")
    add("brain", fr.ell((0, 8, 855), (66, 84, 74)), "brain_grey")
    add("white_matter", fr.ell((0, 8, 860), (58, 76, 64)), "brain_white")
    for side in (-1, 1):
        add("ventricle", fr.ell((side * 9, 5, 872), (6, 28, 11)), "csf")
    add(
        "cerebellum",
        fr.ell((0, 42, 815), (42, 28, 22)),
        "brain_grey",
        s=tissues["brain_grey"][1] * float(rng.uniform(0.7, 0.9)),
    )
    add("skull_base", fr.ell((0, 12, 790), (55, 60, 9)), "cortical_bone")
    for side in (-1, 1):
        add("eye", fr.ell((side * 32, -72, 830), (12, 12, 12)))
        add("maxillary_sinus", fr.ell((side * 30, -50, 795), (15, 17, 17)), "air")
    add("nasal_cavity", fr.ell((0, -66, 805), (9, 20, 24)), "air")
    # mandible, teeth, tongue
    arc = [(42 * math.sin(t), -28 - 40 * math.cos(t), 745.0) for t in np.linspace(-1.25, 1.25, 9)]
    for p0, p1 in zip(arc, arc[1:]):
        add("mandible", fr.cap(p0, p1, 8), "cortical_bone")
    for side, end in ((-1, arc[0]), (1, arc[-1])):
        add("mandible_ramus", fr.cap(end, (side * 48, 5, 798), 7), "cortical_bone")
    teeth = [(34 * math.sin(t), -28 - 34 * math.cos(t), 762.0) for t in np.linspace(-1.1, 1.1, 7)]
    for p0, p1 in zip(teeth, teeth[1:]):
        add("teeth", fr.cap(p0, p1, 5), "teeth")
    add("tongue", fr.ell((0, -35, 758), (22, 28, 14)))
    add(
        "lingual_tonsil",
        fr.ell((0, -14, 738), (16, 9, 9)),
        "tonsil",
        s=tissues["tonsil"][1] * float(rng.uniform(0.6, 1.0)),
    )
    for side in (-1, 1):
        add("parotid", fr.ell((side * 48, 10, 775), (13, 20, 22)))
        add("submandibular", fr.ell((side * 32, -35, 730), (11, 10, 9)), "salivary")
        add(
            "tonsil",
            fr.ell((side * 16, 3, 748), (7, 10, 13)),
            s=tissues["tonsil"][1] * float(rng.uniform(0.8, 1.2)),
        )
        add("thyroid", fr.ell((side * 17, -20, 650), (8, 9, 20)))
    # larynx and airway
    add("larynx", fr.ell((0, -20, 692), (18, 16, 20)), "cartilage")
    add("larynx_soft", fr.ell((0, -20, 692), (15, 13, 18)), "muscle")
    for side in (-1, 1):
        add("vocal_cord", fr.ell((side * 5, -18, 690), (4, 10, 4)))
    airway = [
        (0, -2, 792),
        (0, 0, 750),
        (0, -6, 715),
        (0, -18, 690),
        (0, -22, 640),
        (0, -2, 580),
        (0, 18, 540),
    ]
    radii = [8, 9, 8, 7, 8, 8, 8]
    for (p0, p1), (r0, r1) in zip(zip(airway, airway[1:]), zip(radii, radii[1:])):
        add("airway", fr.cap(p0, p1, r0, r1), "air")
    for side in (-1, 1):
        add("bronchus", fr.cap((0, 18, 540), (side * 45, 25, 518), 7, 5), "air")


def _landmarks(
    fr: _Frame,
    tissues: dict[str, tuple[float, float]],
    liver_c: Point,
    spleen_c: Point,
    kidneys: dict[int, Point],
    bladder_c: Point,
    t_fat: float,
    t_musc: float,
) -> dict[str, tuple[Point, str]]:
    """Points well inside one tissue (for tests and sanity checks)."""
    out: dict[str, tuple[Point, str]] = {
        "liver": (fr.p(liver_c[0] - 20, liver_c[1], liver_c[2] - 10), "liver"),
        "spleen": (fr.p(*spleen_c), "spleen"),
        "kidney": (fr.p(kidneys[1][0] + 12, kidneys[1][1], kidneys[1][2] + 30), "kidney"),
        "bladder": (fr.p(*bladder_c), "bladder"),
        "lung": (fr.p(-95, -20, 560), "lung"),
        "aorta": (fr.p(15, 54, 500), "blood"),
        "thigh_muscle": (fr.p(70, -40, -150), "muscle"),
        "gluteal_muscle": (fr.p(95, 75, 70), "muscle"),
        "white_matter": (fr.p(32, -10, 860), "brain_white"),
        "femur_marrow": (fr.p(115, 10, -200), "fatty_marrow"),
    }
    if t_fat >= 20:  # the middle of the fat layer in front of the upper abdomen
        out["subcutaneous_fat"] = (fr.p(0, 5 - (95 + t_musc + t_fat / 2), 440), "fat")
    return out


def _sites(
    fr: _Frame,
    lungs: dict[int, tuple[Point, Point]],
    liver_c: Point,
    liver_r: Point,
    spleen_c: Point,
    a_sh: float,
    t_fat: float,
    t_musc: float,
    arms_down: bool,
) -> dict[str, Site]:
    """Lesion sites of whole-body and head-and-neck studies (centres in world mm)."""

    def in_ellipsoid(c: Point, r: Point, shrink: float) -> Callable[[np.random.Generator], Point]:
        def sample(rng: np.random.Generator) -> Point:
            while True:
                u = rng.uniform(-1, 1, size=3)
                if u @ u <= 1:
                    break
            return fr.p(*(ci + shrink * ri * ui for ci, ri, ui in zip(c, r, u)))

        return sample

    def near(c: Point, jitter: Point, sides: bool = True) -> Callable[[np.random.Generator], Point]:
        def sample(rng: np.random.Generator) -> Point:
            side = rng.choice([-1, 1]) if sides else 1
            return fr.p(
                *(
                    (side * c[0] if i == 0 else c[i]) + rng.uniform(-j, j)
                    for i, j in enumerate(jitter)
                )
            )

        return sample

    def lung(rng: np.random.Generator) -> Point:
        side = int(rng.choice([-1, 1]))
        c, r = lungs[side]
        return in_ellipsoid((c[0] + side * 8, c[1], c[2]), r, 0.7)(rng)

    def vertebra(rng: np.random.Generator) -> Point:
        z = float(rng.uniform(130, 700))
        cy = float(
            np.interp(
                z,
                [120, 200, 280, 360, 440, 520, 600, 640, 700],
                [50, 45, 45, 50, 60, 70, 68, 52, 25],
            )
        )
        return fr.p(rng.uniform(-5, 5), cy + rng.uniform(-4, 4), z)

    def bone(rng: np.random.Generator) -> Point:
        u = rng.random()
        if u < 0.55:
            return vertebra(rng)
        side = rng.choice([-1, 1])
        if u < 0.8:
            return fr.p(
                side * 95 + rng.uniform(-20, 20),
                35 + rng.uniform(-5, 5),
                170 + rng.uniform(-25, 25),
            )
        return fr.p(side * 88 + rng.uniform(-5, 5), 5 + rng.uniform(-5, 5), 45 + rng.uniform(-5, 5))

    wall = a_sh + t_musc
    sites = [
        Site("lung", lung, "lung", (5, 40), 30),
        Site("liver", in_ellipsoid(liver_c, liver_r, 0.65), "liver", (8, 60), 40),
        Site("spleen", in_ellipsoid(spleen_c, (30, 42, 52), 0.5), "spleen", (8, 35), 20),
        Site(
            "node_mediastinal", near((0, 10, 560), (28, 18, 40), False), "visceral_fat", (6, 40), 22
        ),
        Site("node_hilar", near((45, 25, 515), (8, 8, 15)), "visceral_fat", (6, 30), 15),
        Site("node_axillary", near((wall - 12, 10, 560), (12, 20, 30)), "fat", (6, 40), 22),
        Site("node_supraclavicular", near((45, -10, 625), (12, 12, 10)), "fat", (6, 30), 15),
        Site("node_cervical", near((36, -8, 700), (6, 10, 45)), "muscle", (6, 35), 18),
        Site("node_retroperitoneal", near((28, 22, 260), (8, 10, 70)), "visceral_fat", (6, 40), 22),
        Site("node_iliac", near((60, 20, 90), (12, 12, 25)), "visceral_fat", (6, 35), 18),
        Site("node_inguinal", near((80, -55, -10), (15, 10, 15)), "fat", (6, 35), 18),
        Site("bone", bone, "marrow", (8, 45), 18),
        Site("muscle", near((32, 92, 350), (6, 8, 150)), "muscle", (10, 50), 22),
        Site(
            "soft_tissue",
            near((wall + t_fat * 0.5, 0, 300), (2, 60, 150)),
            "fat",
            (8, 35),
            max(6.0, t_fat * 0.5 + 8),
        ),
        Site("limb", near((97, 5, -200), (20, 20, 120)), "muscle", (25, 90), 55),
        # head and neck
        Site("oropharynx", near((12, 0, 745), (6, 8, 10)), "tonsil", (12, 50), 28),
        Site("base_of_tongue", near((0, -18, 738), (10, 6, 8), False), "tonsil", (12, 45), 24),
        Site("larynx", near((5, -20, 692), (5, 5, 10)), "muscle", (12, 40), 20),
        Site("hypopharynx", near((14, -5, 705), (4, 6, 12)), "muscle", (12, 40), 20),
        Site("oral_cavity", near((12, -42, 755), (8, 10, 6)), "tongue", (10, 40), 20),
        Site("nasopharynx", near((0, 0, 792), (6, 5, 6), False), "muscle", (12, 40), 20),
        Site("node_level_II", near((36, -6, 735), (6, 10, 15)), "muscle", (8, 40), 20),
        Site("node_level_III", near((38, -6, 695), (6, 10, 15)), "muscle", (8, 35), 18),
        Site("node_level_IV", near((36, -8, 655), (6, 10, 12)), "muscle", (8, 30), 16),
        Site("node_level_Ib", near((26, -45, 738), (6, 6, 8)), "salivary", (8, 25), 13),
        Site("node_retropharyngeal", near((18, 18, 770), (3, 4, 8)), "muscle", (6, 20), 10),
    ]
    if arms_down:
        sites.append(
            Site(
                "arm",
                near((a_sh + t_musc + t_fat + 50, 20, 450), (8, 8, 100)),
                "muscle",
                (15, 60),
                30,
            )
        )
    return {s.name: s for s in sites}
