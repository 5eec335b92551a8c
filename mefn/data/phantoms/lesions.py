"""Synthetic lesions: irregular analytic shapes with heterogeneous uptake and CT appearance.

A lesion's support is ``{p : sdf(p) < 0}`` for a :class:`LesionShape`: a union of one to
four "lobes", each a sphere whose radius varies with direction,
``r(u) = r_l (1 + sum_m a_m sin(f_m . u + phi_m))`` (``|sum a_m| <= 0.35``). That support is
what the labels rasterise (a voxel is labelled when its centre is inside) and what
``volume_true_ml`` measures (counted on a fine grid, about 60 samples across the lesion).

Uptake inside is ``1.1 * background + (peak - 1.1 * background) * h(p)`` with a smooth random
texture ``h`` in [0.35, 1], so every non-necrotic voxel is hotter than the surrounding
tissue before blur and noise; a necrotic core (a scaled copy of the main lobe) is cold and
stays inside the label.

Uptake is also drawn so that the lesion is FDG-avid *as imaged*: a small sphere loses
contrast to the scanner's resolution (the recovery coefficient of :func:`recovery_coefficient`),
so the drawn activity is raised until the expected maximum after blurring reaches at least
``max(2, c * background)`` with ``c`` about 1.6 to 2.2 (the faint end of what readers label in
AutoPET; contrast below that is not delineated consistently, so labels there would be noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mefn.data.phantoms.anatomy import Anatomy
from mefn.data.phantoms.frame import Point
from mefn.data.phantoms.shapes import Array, Layer, SmoothField
from mefn.data.phantoms.sites import Site

__all__ = ["Lesion", "LesionShape", "sample_lesions"]

# Whole-body lesion sites and their relative frequencies.
WHOLEBODY_SITES: dict[str, float] = {
    "lung": 0.17,
    "liver": 0.13,
    "spleen": 0.02,
    "node_mediastinal": 0.1,
    "node_hilar": 0.03,
    "node_axillary": 0.07,
    "node_supraclavicular": 0.03,
    "node_cervical": 0.06,
    "node_retroperitoneal": 0.07,
    "node_iliac": 0.04,
    "node_inguinal": 0.05,
    "bone": 0.1,
    "muscle": 0.04,
    "soft_tissue": 0.03,
    "limb": 0.04,
    "arm": 0.02,
}
PRIMARY_SITES: dict[str, float] = {
    "oropharynx": 0.4,
    "base_of_tongue": 0.15,
    "larynx": 0.13,
    "hypopharynx": 0.12,
    "oral_cavity": 0.1,
    "nasopharynx": 0.1,
}
NODE_SITES: dict[str, float] = {
    "node_level_II": 0.45,
    "node_level_III": 0.25,
    "node_level_IV": 0.1,
    "node_level_Ib": 0.1,
    "node_retropharyngeal": 0.1,
}


@dataclass(frozen=True)
class LesionShape:
    """A union of direction-modulated spheres: lobes (cx, cy, cz, r) and waves (fx, fy, fz, phase, a)."""

    lobes: tuple[tuple[float, float, float, float], ...]
    waves: tuple[tuple[float, float, float, float, float], ...]

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        out: Array | None = None
        for cx, cy, cz, r in self.lobes:
            dx, dy, dz = x - np.float32(cx), y - np.float32(cy), z - np.float32(cz)
            rho = np.sqrt(dx * dx + dy * dy + dz * dz)
            inv = 1.0 / np.maximum(rho, np.float32(1e-6))
            mod: Array | float = 1.0
            for fx, fy, fz, phase, amp in self.waves:
                mod = mod + np.float32(amp) * np.sin(
                    (np.float32(fx) * dx + np.float32(fy) * dy + np.float32(fz) * dz) * inv
                    + np.float32(phase)
                )
            d = rho - np.float32(r) * mod
            out = d if out is None else np.minimum(out, d)
        assert out is not None  # a shape always has a lobe
        return out

    def bounds(self) -> tuple[Array, Array]:
        grow = 1.0 + sum(abs(w[4]) for w in self.waves)
        lo = np.min(
            [[cx - r * grow, cy - r * grow, cz - r * grow] for cx, cy, cz, r in self.lobes], axis=0
        )
        hi = np.max(
            [[cx + r * grow, cy + r * grow, cz + r * grow] for cx, cy, cz, r in self.lobes], axis=0
        )
        return lo, hi

    def transformed(self, scale: float, center: Point) -> LesionShape:
        """Scaled by ``scale`` about the first lobe's centre, then moved to ``center``."""
        ox, oy, oz, _ = self.lobes[0]
        lobes = tuple(
            (
                center[0] + (cx - ox) * scale,
                center[1] + (cy - oy) * scale,
                center[2] + (cz - oz) * scale,
                r * scale,
            )
            for cx, cy, cz, r in self.lobes
        )
        return LesionShape(lobes, self.waves)

    def bounding_radius(self) -> float:
        lo, hi = self.bounds()
        c = np.asarray(self.lobes[0][:3])
        return float(max(np.max(np.abs(hi - c)), np.max(np.abs(c - lo))))

    def volume_ml(self, samples: int = 60) -> float:
        """Volume of the support, counted on a grid of ``samples`` points across its box."""
        lo, hi = self.bounds()
        h = float(np.max(hi - lo)) / samples
        axes = [np.arange(a + h / 2, b, h, dtype=np.float32) for a, b in zip(lo, hi)]
        x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
        inside = int(np.count_nonzero(self.sdf(x, y, z) < 0))
        return inside * h**3 / 1000.0


def _random_unit_shape(rng: np.random.Generator, irregular: float) -> LesionShape:
    """A lesion of radius about 1 at the origin; ``irregular`` in [0, 1] scales lobes and bumps."""
    lobes = [(0.0, 0.0, 0.0, 1.0)]
    for _ in range(int(rng.integers(0, 4)) if irregular > 0.3 else 0):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        off = float(rng.uniform(0.35, 0.7))
        lobes.append((d[0] * off, d[1] * off, d[2] * off, float(rng.uniform(0.4, 0.75))))
    waves = []
    n_waves = int(rng.integers(2, 6))
    budget = 0.35 * irregular
    for _ in range(n_waves):
        f = rng.normal(size=3)
        f *= float(rng.uniform(1.5, 4.5)) / np.linalg.norm(f)
        amp = budget / n_waves * float(rng.uniform(0.5, 1.0))
        waves.append((float(f[0]), float(f[1]), float(f[2]), float(rng.uniform(0, 2 * np.pi)), amp))
    return LesionShape(tuple(lobes), tuple(waves))


@dataclass(frozen=True)
class Lesion:
    """One lesion: where, which label, its shape, uptake and CT appearance."""

    site: str
    label: int
    center_mm: Point
    shape: LesionShape
    core: LesionShape | None
    diameter_mm: float
    volume_true_ml: float
    suv_peak: float
    background_suv: float
    heterogeneity: float
    texture: SmoothField
    core_suv: float
    hu: float
    core_hu: float
    ct_appearance: str

    def layers(self) -> list[Layer]:
        low = np.float32(1.1 * self.background_suv)
        span = np.float32(self.suv_peak) - low
        het = np.float32(self.heterogeneity)
        tex = self.texture
        hu = np.float32(self.hu)
        hu_span = np.float32(min(15.0, abs(self.hu) * 0.2 + 3.0))

        def uptake(x: Array, y: Array, z: Array) -> Array:
            h = np.clip(1.0 + het * (tex(x, y, z) - 1.5), 0.35, 1.0)
            return low + span * h

        def density(x: Array, y: Array, z: Array) -> Array:
            return hu + hu_span * tex(x, y, z)

        out = [Layer(f"lesion_{self.site}", self.shape, density, uptake, ("lesion",))]
        if self.core is not None:
            out.append(
                Layer(f"necrosis_{self.site}", self.core, self.core_hu, self.core_suv, ("lesion",))
            )
        return out


def recovery_coefficient(diameter_mm: float, sigma_mm: float) -> float:
    """Centre value of a unit-activity sphere after a 3D Gaussian blur of ``sigma_mm``.

    ``erf(a) - 2 a exp(-a^2) / sqrt(pi)`` with ``a = r / (sqrt(2) sigma)``: the fraction of the
    Gaussian's mass inside the sphere, which is what the blurred centre voxel keeps.
    """
    if sigma_mm <= 0:
        return 1.0
    a = 0.5 * diameter_mm / (math.sqrt(2.0) * sigma_mm)
    return float(math.erf(a) - 2.0 * a * math.exp(-a * a) / math.sqrt(math.pi))


# Texture level reached near a lesion's hottest point (h in [0.35, 1]; see Lesion.layers).
_TEXTURE_NEAR_MAX = 0.85
_SUV_CAP = 40.0


def _visible_peak(
    rng: np.random.Generator, peak: float, bg_suv: float, diameter_mm: float, sigma_mm: float
) -> float:
    """``peak`` raised so the blurred lesion's maximum is at least ``max(2, c * bg)``."""
    c = float(rng.uniform(1.6, 2.2))
    target = max(2.0, c * bg_suv)
    rc = max(recovery_coefficient(diameter_mm, sigma_mm), 0.05)
    low = 1.1 * bg_suv
    # blurred max ~ bg + (low + span * h - bg) * rc with span = peak - low
    needed = low + (bg_suv + (target - bg_suv) / rc - low) / _TEXTURE_NEAR_MAX
    return float(min(max(peak, needed), max(_SUV_CAP, peak)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _choose(rng: np.random.Generator, weights: dict[str, float], allowed: Sequence[str]) -> str:
    names = [n for n in weights if n in allowed]
    p = np.asarray([weights[n] for n in names])
    return str(rng.choice(names, p=p / p.sum()))


def _ct_appearance(
    rng: np.random.Generator, site: Site, anatomy: Anatomy, contrast: bool
) -> tuple[float, str]:
    tissue_hu = anatomy.tissues[site.tissue][0]
    name = site.name
    if name == "lung":
        if rng.random() < 0.2:
            return float(rng.uniform(-450, -100)), "part-solid"
        return float(rng.uniform(20, 50)), "solid"
    if name in ("liver", "spleen"):
        drop = rng.uniform(-50, -15) if contrast else rng.uniform(-30, 5)
        return float(tissue_hu + drop), "hypodense" if drop < -10 else "isodense"
    if name == "bone":
        u = rng.random()
        if u < 0.45:
            return float(rng.uniform(20, 80)), "lytic"
        if u < 0.75:
            return float(rng.uniform(500, 1100)), "sclerotic"
        return float(tissue_hu), "isodense"
    if name in ("muscle", "arm") or (name == "limb" and rng.random() < 0.4):
        return float(anatomy.tissues["muscle"][0] + rng.uniform(-15, 10)), "isodense"
    if name.startswith("node_level") or name in PRIMARY_SITES:
        return float(rng.uniform(35, 70)), "soft tissue"
    return float(rng.uniform(20, 50)), "soft tissue"


def _make_lesion(
    rng: np.random.Generator,
    site: Site,
    label: int,
    anatomy: Anatomy,
    min_diameter_mm: float,
    suv_range: tuple[float, float],
    necrosis_p: float,
    resolution_mm: float = 0.0,
) -> Lesion:
    lo, hi = site.diameter_mm
    hi = min(hi, 2 * site.max_radius_mm)
    lo = min(max(lo, min_diameter_mm), hi)
    diameter = _log_uniform(rng, lo, max(hi, lo * 1.001))
    irregular = float(rng.uniform(0.0, 1.0)) if diameter > 8 else float(rng.uniform(0.0, 0.4))
    unit = _random_unit_shape(rng, irregular)
    unit_volume = unit.volume_ml()  # of the radius-1 shape, in mm^3 / 1000
    target_volume = math.pi / 6 * diameter**3 / 1000.0
    scale = (target_volume / unit_volume) ** (1 / 3)
    center = site.sample(rng)
    shape = unit.transformed(scale, center)
    volume = unit_volume * scale**3
    bg_hu, bg_suv = anatomy.tissues[site.tissue]
    peak = _log_uniform(rng, *suv_range)
    if rng.random() < 0.15:  # faint: just above what readers delineate
        peak = bg_suv * float(rng.uniform(1.6, 2.4))
    peak = max(peak, 1.3 * bg_suv + 0.2, suv_range[0] if label else 0.0)
    peak = _visible_peak(rng, peak, bg_suv, diameter, resolution_mm)
    texture = SmoothField.random(rng, 8, (max(4.0, diameter / 3), max(8.0, diameter)))
    core = None
    core_suv = core_hu = 0.0
    if diameter >= 18 and rng.random() < necrosis_p:
        main = LesionShape(unit.lobes[:1], unit.waves)
        core = main.transformed(scale * float(rng.uniform(0.35, 0.65)), center)
        core_suv = bg_suv * float(rng.uniform(0.3, 1.0))
        core_hu = float(rng.uniform(5, 25))
    hu, appearance = _ct_appearance(rng, site, anatomy, bool(anatomy.params.get("contrast")))
    return Lesion(
        site=site.name,
        label=label,
        center_mm=center,
        shape=shape,
        core=core,
        diameter_mm=(6 * volume * 1000 / math.pi) ** (1 / 3),
        volume_true_ml=volume,
        suv_peak=float(peak),
        background_suv=float(bg_suv),
        heterogeneity=float(rng.uniform(0.05, 0.3)),
        texture=texture,
        core_suv=core_suv,
        hu=hu,
        core_hu=core_hu,
        ct_appearance=appearance,
    )


def _fits(lesion: Lesion, others: list[Lesion], z_range: tuple[float, float]) -> bool:
    c = np.asarray(lesion.center_mm)
    r = lesion.shape.bounding_radius()
    if not z_range[0] + 0.5 * r <= c[2] <= z_range[1] - 0.5 * r:
        return False
    return all(
        np.linalg.norm(c - np.asarray(o.center_mm)) > r + o.shape.bounding_radius() + 2.0
        for o in others
    )


def sample_lesions(
    rng: np.random.Generator,
    anatomy: Anatomy,
    kind: str,
    z_range_mm: tuple[float, float],
    n_lesions: int | None,
    min_diameter_mm: float,
    resolution_mm: float = 0.0,
) -> list[Lesion]:
    """Lesions for one study, non-overlapping, with centres inside the scanned z range.

    Whole body: none in about 30 % of studies, else 1 to 8 (label 1), lymph nodes sometimes
    in clusters. Head and neck: a primary (label 1, GTVp) in about 93 % of studies and 0-4
    nodes (label 2, GTVn), mostly on the primary's side. ``n_lesions`` forces the count.
    ``resolution_mm`` is the imaged PET's Gaussian sigma (PSF and voxel), which sets how much
    uptake a small lesion needs to stay FDG-avid after blurring (0: no such floor).
    """
    lesions: list[Lesion] = []
    in_range = [
        name for name, site in anatomy.sites.items() if _site_reachable(site, rng, z_range_mm)
    ]
    if kind == "headneck":
        plan: list[tuple[str, int]] = []
        want_primary = rng.random() < 0.93
        n_nodes = 0 if rng.random() < 0.25 else int(rng.integers(1, 5))
        if n_lesions is not None:
            want_primary = n_lesions > 0
            n_nodes = max(0, n_lesions - 1)
        if want_primary and any(s in in_range for s in PRIMARY_SITES):
            plan.append((_choose(rng, PRIMARY_SITES, in_range), 1))
        for _ in range(n_nodes):
            if any(s in in_range for s in NODE_SITES):
                plan.append((_choose(rng, NODE_SITES, in_range), 2))
        for site_name, label in plan:
            suv = (4.0, 25.0) if label == 1 else (2.5, 20.0)
            _place(
                rng,
                anatomy,
                anatomy.sites[site_name],
                label,
                lesions,
                z_range_mm,
                min_diameter_mm,
                suv,
                0.2 if label == 1 else 0.3,
                resolution_mm,
            )
        return lesions
    if n_lesions is None:
        n_lesions = 0 if rng.random() < 0.3 else min(8, int(rng.geometric(0.45)))
    allowed = [s for s in WHOLEBODY_SITES if s in in_range]
    if not allowed:
        return lesions
    previous: str | None = None
    for _ in range(n_lesions):
        if previous is not None and previous.startswith("node") and rng.random() < 0.35:
            name = previous  # lymphoma-like clusters at one station
        else:
            name = _choose(rng, WHOLEBODY_SITES, allowed)
        _place(
            rng,
            anatomy,
            anatomy.sites[name],
            1,
            lesions,
            z_range_mm,
            min_diameter_mm,
            (2.0, 25.0),
            0.25,
            resolution_mm,
        )
        previous = name
    return lesions


def _site_reachable(site: Site, rng: np.random.Generator, z_range: tuple[float, float]) -> bool:
    probe = np.random.default_rng(int(rng.integers(2**31)))
    zs = [site.sample(probe)[2] for _ in range(8)]
    return any(z_range[0] + 5 <= z <= z_range[1] - 5 for z in zs)


def _place(
    rng: np.random.Generator,
    anatomy: Anatomy,
    site: Site,
    label: int,
    lesions: list[Lesion],
    z_range: tuple[float, float],
    min_diameter_mm: float,
    suv_range: tuple[float, float],
    necrosis_p: float,
    resolution_mm: float = 0.0,
) -> None:
    for _ in range(40):
        lesion = _make_lesion(
            rng, site, label, anatomy, min_diameter_mm, suv_range, necrosis_p, resolution_mm
        )
        if _fits(lesion, lesions, z_range):
            lesions.append(lesion)
            return
