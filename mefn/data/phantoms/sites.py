"""Where a phantom's lesions can grow (:class:`Site`) and points well inside its tissues.

Positions are in mm of the patient frame (:class:`~mefn.data.phantoms.frame.PatientFrame`);
a site's sampler returns world coordinates. Sites named ``near`` one point are mirrored to
either side at random unless they sit on the midline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mefn.data.phantoms.abdomen import AbdomenLayout
from mefn.data.phantoms.frame import PatientFrame, Point
from mefn.data.phantoms.skeleton import SPINE_CENTER_Y_MM, SPINE_KNOTS_Z_MM
from mefn.data.phantoms.thorax import LUNGS_MM

__all__ = ["Site", "landmarks", "lesion_sites"]

Sampler = Callable[[np.random.Generator], Point]


@dataclass
class Site:
    """Where lesions of one kind can grow: a sampler of centres and the tissue around them."""

    name: str
    sample: Sampler
    tissue: str
    diameter_mm: tuple[float, float]
    max_radius_mm: float = 1e9


def _in_ellipsoid(frame: PatientFrame, center: Point, radii: Point, shrink: float) -> Sampler:
    """Uniform in the ellipsoid ``center``, ``radii`` shrunk by ``shrink``."""

    def sample(rng: np.random.Generator) -> Point:
        while True:
            u = rng.uniform(-1, 1, size=3)
            if u @ u <= 1:
                break
        return frame.point(*(c + shrink * r * ui for c, r, ui in zip(center, radii, u)))

    return sample


def _near(frame: PatientFrame, center: Point, jitter: Point, sides: bool = True) -> Sampler:
    """Uniform in the box ``center`` +- ``jitter``, on a random side when ``sides``."""

    def sample(rng: np.random.Generator) -> Point:
        side = rng.choice([-1, 1]) if sides else 1
        return frame.point(
            *(
                (side * center[0] if i == 0 else center[i]) + rng.uniform(-j, j)
                for i, j in enumerate(jitter)
            )
        )

    return sample


LUNG_SITE_SHIFT_X_MM = 8  # lesions sit a little lateral of the lung's centre
LUNG_SITE_SHRINK = 0.7
SPINE_SITE_Z_RANGE_MM = (130, 700)  # vertebral bodies from L5 to C7
SPINE_SITE_JITTER_MM = (5, 4)  # x, y around the vertebral body's centre
BONE_SITE_SPINE_FRACTION = 0.55  # of bone lesions; then the ilium, then the femoral head
BONE_SITE_ILIUM_UNTIL = 0.8
ILIUM_SITE_MM = ((95, 35, 170), (20, 5, 25))  # centre (x mirrored), jitter
FEMORAL_HEAD_SITE_MM = ((88, 5, 45), (5, 5, 5))


def _lung_sampler(frame: PatientFrame) -> Sampler:
    def sample(rng: np.random.Generator) -> Point:
        side = int(rng.choice([-1, 1]))
        (cx, cy, cz), radii = LUNGS_MM[side]
        center = (cx + side * LUNG_SITE_SHIFT_X_MM, cy, cz)
        return _in_ellipsoid(frame, center, radii, LUNG_SITE_SHRINK)(rng)

    return sample


def _bone_sampler(frame: PatientFrame) -> Sampler:
    """The spine (most), the ilium or a femoral head."""
    knots_z, center_y = SPINE_KNOTS_Z_MM[:9], SPINE_CENTER_Y_MM[:9]
    jitter_x, jitter_y = SPINE_SITE_JITTER_MM

    def vertebra(rng: np.random.Generator) -> Point:
        z = float(rng.uniform(*SPINE_SITE_Z_RANGE_MM))
        cy = float(np.interp(z, list(knots_z), list(center_y)))
        return frame.point(
            rng.uniform(-jitter_x, jitter_x), cy + rng.uniform(-jitter_y, jitter_y), z
        )

    def sample(rng: np.random.Generator) -> Point:
        u = rng.random()
        if u < BONE_SITE_SPINE_FRACTION:
            return vertebra(rng)
        side = rng.choice([-1, 1])
        (x, y, z), (jx, jy, jz) = (
            ILIUM_SITE_MM if u < BONE_SITE_ILIUM_UNTIL else FEMORAL_HEAD_SITE_MM
        )
        return frame.point(
            side * x + rng.uniform(-jx, jx), y + rng.uniform(-jy, jy), z + rng.uniform(-jz, jz)
        )

    return sample


def lesion_sites(
    frame: PatientFrame,
    abdomen: AbdomenLayout,
    shoulder_half_width_mm: float,
    fat_mm: float,
    muscle_mm: float,
    arms_down: bool,
) -> dict[str, Site]:
    """Lesion sites of whole-body and head-and-neck studies (centres in world mm)."""
    wall = shoulder_half_width_mm + muscle_mm
    sites = _wholebody_sites(frame, abdomen, wall, fat_mm) + _headneck_sites(frame)
    if arms_down:
        arm = (shoulder_half_width_mm + muscle_mm + fat_mm + 50, 20, 450)
        sites.append(Site("arm", _near(frame, arm, (8, 8, 100)), "muscle", (15, 60), 30))
    return {s.name: s for s in sites}


def _wholebody_sites(
    frame: PatientFrame, abdomen: AbdomenLayout, wall_mm: float, fat_mm: float
) -> list[Site]:
    def near(center: Point, jitter: Point, sides: bool = True) -> Sampler:
        return _near(frame, center, jitter, sides)

    liver = _in_ellipsoid(frame, abdomen.liver_center_mm, abdomen.liver_radii_mm, 0.65)
    spleen = _in_ellipsoid(frame, abdomen.spleen_center_mm, (30, 42, 52), 0.5)
    soft_tissue = near((wall_mm + fat_mm * 0.5, 0, 300), (2, 60, 150))
    # name, sampler, tissue around, diameter range (mm), largest radius (mm)
    return [
        Site("lung", _lung_sampler(frame), "lung", (5, 40), 30),
        Site("liver", liver, "liver", (8, 60), 40),
        Site("spleen", spleen, "spleen", (8, 35), 20),
        Site(
            "node_mediastinal", near((0, 10, 560), (28, 18, 40), False), "visceral_fat", (6, 40), 22
        ),
        Site("node_hilar", near((45, 25, 515), (8, 8, 15)), "visceral_fat", (6, 30), 15),
        Site("node_axillary", near((wall_mm - 12, 10, 560), (12, 20, 30)), "fat", (6, 40), 22),
        Site("node_supraclavicular", near((45, -10, 625), (12, 12, 10)), "fat", (6, 30), 15),
        Site("node_cervical", near((36, -8, 700), (6, 10, 45)), "muscle", (6, 35), 18),
        Site("node_retroperitoneal", near((28, 22, 260), (8, 10, 70)), "visceral_fat", (6, 40), 22),
        Site("node_iliac", near((60, 20, 90), (12, 12, 25)), "visceral_fat", (6, 35), 18),
        Site("node_inguinal", near((80, -55, -10), (15, 10, 15)), "fat", (6, 35), 18),
        Site("bone", _bone_sampler(frame), "marrow", (8, 45), 18),
        Site("muscle", near((32, 92, 350), (6, 8, 150)), "muscle", (10, 50), 22),
        Site("soft_tissue", soft_tissue, "fat", (8, 35), max(6.0, fat_mm * 0.5 + 8)),
        Site("limb", near((97, 5, -200), (20, 20, 120)), "muscle", (25, 90), 55),
    ]


def _headneck_sites(frame: PatientFrame) -> list[Site]:
    def near(center: Point, jitter: Point, sides: bool = True) -> Sampler:
        return _near(frame, center, jitter, sides)

    # name, sampler, tissue around, diameter range (mm), largest radius (mm)
    return [
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


def landmarks(
    frame: PatientFrame, abdomen: AbdomenLayout, fat_mm: float, muscle_mm: float
) -> dict[str, tuple[Point, str]]:
    """Points well inside one tissue (for tests and sanity checks): name -> (world mm, tissue)."""
    lx, ly, lz = abdomen.liver_center_mm
    kx, ky, kz = abdomen.kidney_centers_mm[1]
    out: dict[str, tuple[Point, str]] = {
        "liver": (frame.point(lx - 20, ly, lz - 10), "liver"),
        "spleen": (frame.point(*abdomen.spleen_center_mm), "spleen"),
        "kidney": (frame.point(kx + 12, ky, kz + 30), "kidney"),
        "bladder": (frame.point(*abdomen.bladder_center_mm), "bladder"),
        "lung": (frame.point(-95, -20, 560), "lung"),
        "aorta": (frame.point(15, 54, 500), "blood"),
        "thigh_muscle": (frame.point(70, -40, -150), "muscle"),
        "gluteal_muscle": (frame.point(95, 75, 70), "muscle"),
        "white_matter": (frame.point(32, -10, 860), "brain_white"),
        "femur_marrow": (frame.point(115, 10, -200), "fatty_marrow"),
    }
    if fat_mm >= 20:  # the middle of the fat layer in front of the upper abdomen
        out["subcutaneous_fat"] = (frame.point(0, 5 - (95 + muscle_mm + fat_mm / 2), 440), "fat")
    return out
