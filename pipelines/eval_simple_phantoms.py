"""Score weights on simple PET/CT phantoms written apart from mefn's phantom generator.

    python -m pipelines.eval_simple_phantoms                      # bundled weights, card settings
    python -m pipelines.eval_simple_phantoms --tta none --lesion-threshold 0.4 --min-lesion-ml 0.5

The weights are trained on ``mefn.data.phantoms`` studies only; these two phantoms share no code
with that generator, so they check that what was learnt is hot lesions, not the generator:

- **NEMA IEC body phantom**: the body-shaped tank (D-shaped section 300 x 230 mm, 180 mm
  long), a 50 mm lung insert (-800 HU, no activity), six hot spheres of 10, 13, 17, 22, 28 and
  37 mm on a 57 mm ring, at sphere-to-background ratios of 4:1 and 8:1.
- **Torso**: skin fat, muscle, lungs, heart, liver, kidneys, bladder, spine and aorta with
  the uptake of an FDG scan, and eight lesions (lung, liver, nodes, bone, axilla, a 50 mm
  mass with a necrotic core), each SUV 4-10.

Each is painted on a fine grid, blurred by a Gaussian point-spread function, sampled on the
PET grid (several spacings, a flipped orientation) with multiplicative correlated noise; CT
on its own grid. Scored with the AutoPET 2022 metrics per phantom and, per lesion, whether it
is detected (one predicted voxel is enough) and the share of its voxels found.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mefn.io.case import Case

from pipelines._bench import command_line, git_commit

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Sphere:
    """A lesion: an ellipsoid at ``centre`` (mm) with ``radii`` (mm), its SUV and HU."""

    name: str
    centre: Vec3
    radii: Vec3
    suv: float
    hu: float
    necrotic: bool = False


@dataclass(frozen=True)
class Scan:
    """How a phantom is imaged: PET grid, resolution, noise, orientation."""

    pet_spacing_mm: Vec3 = (4.0, 4.0, 4.0)
    ct_spacing_mm: Vec3 = (1.0, 1.0, 2.0)
    psf_fwhm_mm: float = 6.0
    noise_cv: float = 0.12
    flip_xy: bool = False
    seed: int = 0


NEMA_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)

TORSO_LESIONS = (
    Sphere("lung", (-70, -10, 120), (8, 7.2, 8.8), 6.0, 30),
    Sphere("liver", (-60, 10, -40), (13, 11.7, 14.3), 7.0, 40),
    Sphere("mediastinal node", (15, 0, 90), (7, 6.3, 7.7), 5.0, 40),
    Sphere("para-aortic node", (20, 30, -90), (10, 9, 11), 8.0, 40),
    Sphere("bone", (0, 85, 20), (8, 7.2, 8.8), 6.0, 300),
    Sphere("mass, necrotic", (80, -20, -130), (25, 22.5, 27.5), 10.0, 35, necrotic=True),
    Sphere("axillary node", (-140, 0, 150), (9, 8.1, 9.9), 4.0, 40),
    Sphere("small lung", (75, 20, 60), (5, 4.5, 5.5), 5.0, 30),
)


def _mesh(shape: tuple[int, ...], spacing: Vec3, lo: np.ndarray) -> list[np.ndarray]:
    axes = [np.arange(n) * s + o + s / 2 for n, s, o in zip(shape, spacing, lo)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _inside(xyz: list[np.ndarray], centre: Vec3, radii: Vec3) -> np.ndarray:
    x, y, z = xyz
    return (
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    ) <= 1.0


def paint_nema(
    spacing: Vec3, ratio: float, background_suv: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HU, SUV and sphere labels (1-6) of the NEMA IEC body phantom, and the grid's corner."""
    extent = np.array([320.0, 260.0, 200.0])  # multiples of 1.25 mm (see image)
    lo = -extent / 2
    shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing))
    x, y, z = _mesh(shape, spacing, lo)
    # D-shaped section: a half ellipse (anterior, y < 0 in LPS) on a rectangle
    body = (np.abs(x) <= 150) & (y <= 70) & (y >= -115) & (np.abs(z) <= 90)
    body &= (y >= -45) | ((x / 150) ** 2 + ((y + 45) / 70) ** 2 <= 1)
    body &= (y <= 45) | (((np.abs(x) - 75).clip(0) / 75) ** 2 + ((y - 45) / 25) ** 2 <= 1)
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    suv = np.where(body, background_suv, 0.0).astype(np.float32)
    lung = (x**2 + y**2 <= 25.0**2) & (np.abs(z) <= 90)
    hu[lung], suv[lung] = -800.0, 0.0
    label = np.zeros(shape, np.uint8)
    for k, d in enumerate(NEMA_DIAMETERS_MM):
        a = np.deg2rad(60.0 * k)
        sphere = _inside([x, y, z], (57 * np.cos(a), 57 * np.sin(a), 20.0), (d / 2,) * 3)
        hu[sphere], suv[sphere], label[sphere] = 0.0, ratio * background_suv, k + 1
    return hu, suv, label, lo


def paint_torso(
    spacing: Vec3, uptake_scale: float = 1.0, liver_suv: float = 2.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HU, SUV and lesion labels (1-8, TORSO_LESIONS order) of the torso, and the corner."""
    extent = np.array([400.0, 300.0, 420.0])  # multiples of 1.25 mm (see image)
    lo = -extent / 2
    shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing))
    xyz = _mesh(shape, spacing, lo)
    x, y, z = xyz
    hu = np.full(shape, -1000.0, np.float32)
    suv = np.zeros(shape, np.float32)

    def put(where: np.ndarray, h: float, s: float) -> None:
        hu[where], suv[where] = h, s

    body = ((x / 170) ** 2 + (y / 115) ** 2 <= 1) & (np.abs(z) < 200)
    put(body, -100, 0.4 * uptake_scale)  # subcutaneous fat
    put(((x / 155) ** 2 + (y / 100) ** 2 <= 1) & (np.abs(z) < 200), 50, 0.8 * uptake_scale)
    put(_inside(xyz, (-65, 0, 110), (55, 75, 90)), -850, 0.45 * uptake_scale)
    put(_inside(xyz, (70, 0, 110), (50, 75, 90)), -850, 0.45 * uptake_scale)
    put(_inside(xyz, (25, -25, 55), (45, 40, 40)), 40, 4.5)  # myocardium
    put(_inside(xyz, (-55, 10, -40), (80, 70, 60)), 60, liver_suv)
    put(_inside(xyz, (-70, 45, -110), (25, 20, 45)), 35, 3.0)  # kidneys
    put(_inside(xyz, (70, 45, -110), (25, 20, 45)), 35, 3.0)
    put(_inside(xyz, (0, 0, -185), (45, 35, 30)), 10, 25.0)  # bladder
    spine = (x**2 + (y - 85) ** 2 <= 18**2) & (np.abs(z) < 200)
    put(spine, 700, 0.8)
    put((x**2 + (y - 85) ** 2 <= 12**2) & (np.abs(z) < 200), 250, 1.8)  # marrow
    put(((x - 15) ** 2 + (y - 45) ** 2 <= 12**2) & (np.abs(z) < 200), 45, 1.8)  # aorta
    hu[~body], suv[~body] = -1000.0, 0.0
    label = np.zeros(shape, np.uint8)
    for k, lesion in enumerate(TORSO_LESIONS):
        inside = _inside(xyz, lesion.centre, lesion.radii)
        put(inside, lesion.hu, lesion.suv)
        label[inside] = k + 1
        if lesion.necrotic:  # labelled, as readers contour a necrotic mass whole
            core = _inside(xyz, lesion.centre, tuple(0.5 * r for r in lesion.radii))
            suv[core] = 1.0
    return hu, suv, label, lo


def image(kind: str, scan: Scan, **paint: Any) -> tuple[Case, np.ndarray]:
    """The phantom ``kind`` ("nema" or "torso") imaged by ``scan``: the case (outputs on the
    PET grid) and its lesion labels on that grid."""
    from scipy import ndimage

    from mefn.io.case import Case
    from mefn.io.volume import Volume

    painter = {"nema": paint_nema, "torso": paint_torso}[kind]
    rng = np.random.default_rng(scan.seed)
    hu, _, _, lo = painter(scan.ct_spacing_mm, **paint)
    hu += rng.normal(0.0, 10.0, hu.shape).astype(np.float32)
    fine = 1.25  # activity painted at 1.25 mm (every extent is a multiple), blurred, then
    # averaged onto the PET grid: voxel extents match, so PET, label and CT stay registered
    _, suv_fine, label_fine, _ = painter((fine, fine, fine), **paint)
    suv_fine = ndimage.gaussian_filter(suv_fine, scan.psf_fwhm_mm / 2.3548 / fine)
    extent = np.asarray(suv_fine.shape) * fine
    shape = [max(int(round(e / s)), 1) for e, s in zip(extent, scan.pet_spacing_mm)]
    spacing = tuple(float(e / n) for e, n in zip(extent, shape))
    zoom = [n / m for n, m in zip(shape, suv_fine.shape)]
    suv = ndimage.zoom(suv_fine, zoom, order=1, grid_mode=True, mode="nearest")
    label = ndimage.zoom(label_fine, zoom, order=0, grid_mode=True, mode="nearest")
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, suv.shape), 0.7)
    suv = np.clip(suv * (1 + scan.noise_cv * noise / noise.std()), 0, None).astype(np.float32)
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    ct_origin = tuple(float(v) for v in lo + np.asarray(scan.ct_spacing_mm) / 2)
    ct = Volume.from_array(hu, scan.ct_spacing_mm, ct_origin, identity, "CT", "HU")
    origin = [float(v) for v in lo + np.asarray(spacing) / 2]
    direction = identity
    if scan.flip_xy:  # the same image stored with i and j reversed (an RAS-like header)
        suv = np.ascontiguousarray(suv[::-1, ::-1])
        label = np.ascontiguousarray(label[::-1, ::-1])
        for a in (0, 1):
            origin[a] += (suv.shape[a] - 1) * spacing[a]
        direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    pet = Volume.from_array(suv, spacing, tuple(origin), direction, "PT", "SUVbw")
    case = Case(case_id=kind, ct=ct, pet=pet, output_geometry=pet.geometry)
    return case, label


#: (name, phantom, scan, paint options)
PHANTOMS: tuple[tuple[str, str, Scan, dict[str, Any]], ...] = (
    ("nema 4:1, 4 mm", "nema", Scan(), {"ratio": 4.0}),
    ("nema 8:1, 4 mm", "nema", Scan(), {"ratio": 8.0}),
    ("nema 4:1, 2 mm, 5 mm PSF", "nema", Scan((2.0, 2.0, 2.0), psf_fwhm_mm=5.0), {"ratio": 4.0}),
    ("torso, 4.07 x 4.07 x 3 mm", "torso", Scan((4.07, 4.07, 3.0), (1.0, 1.0, 3.0), 6.5), {}),
    ("torso, flipped", "torso", Scan((4.07, 4.07, 3.0), (1.0, 1.0, 3.0), 6.5, flip_xy=True), {}),
    ("torso, 2 mm", "torso", Scan((2.0, 2.0, 2.0), (1.0, 1.0, 3.0), 5.0), {}),
    ("torso, noisy", "torso", Scan((4.07, 4.07, 3.0), (1.0, 1.0, 3.0), 6.5, 0.3, seed=3), {}),
    (
        "torso, hot background",
        "torso",
        Scan((4.07, 4.07, 3.0), (1.0, 1.0, 3.0), 6.5),
        {"uptake_scale": 1.5, "liver_suv": 3.0},
    ),
)


def lesion_names(kind: str) -> list[str]:
    if kind == "nema":
        return [f"sphere {d:g} mm" for d in NEMA_DIAMETERS_MM]
    return [lesion.name for lesion in TORSO_LESIONS]


def phantom_case(kind: str, scan: Scan, paint: dict[str, Any]) -> Case:
    """The phantom of :func:`image`, its lesion labels (on the PET grid, the output grid) as
    the case's reference."""
    from mefn.io.volume import Volume

    case, label = image(kind, scan, **paint)
    return replace(case, label=Volume(label, case.pet.geometry, modality="SEG", units="label"))


def score(mask: np.ndarray, label: np.ndarray, spacing: Vec3, kind: str) -> dict[str, Any]:
    """AutoPET 2022 metrics of the phantom, and per lesion: detected, share of voxels found."""
    from mefn.metrics.autopet import autopet_case_metrics

    m = autopet_case_metrics((label > 0).astype(np.uint8), mask, spacing, 2022)
    return {**m.to_dict(), "lesions": lesion_recall(mask, label, kind)}


def lesion_recall(mask: np.ndarray, label: np.ndarray, kind: str) -> list[dict[str, Any]]:
    """Per lesion of the phantom: its voxels, whether it is detected, the share found."""
    per_lesion = []
    for k, name in enumerate(lesion_names(kind), start=1):
        inside = label == k
        found = mask[inside] > 0
        per_lesion.append(
            {
                "lesion": name,
                "voxels": int(inside.sum()),
                "detected": bool(found.any()),
                "recall": float(found.mean()) if found.size else float("nan"),
            }
        )
    return per_lesion


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--tta", default=None, help="mirroring axes (default: the card's)")
    parser.add_argument("--lesion-threshold", type=float, default=None)
    parser.add_argument("--min-lesion-ml", type=float, default=None)
    # the PET check, as `mefn segment`'s (default: the card's)
    parser.add_argument("--min-lesion-suv", type=float, default=None)
    parser.add_argument("--min-lesion-contrast", type=float, default=None)
    parser.add_argument("--pet-refine", default=None, help="fraction, or none")
    parser.add_argument("--pet-refine-mm", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--out", default=None, help="write simple_phantoms.json here")
    args = parser.parse_args()

    from mefn.cli.segment import pet_check_overrides
    from mefn.inference import Predictor, parse_tta_axes

    predictor = Predictor(
        args.model,
        device="cpu",
        threads=args.threads,
        tta_axes=None if args.tta is None else parse_tta_axes(args.tta),
        lesion_threshold=args.lesion_threshold,
        min_lesion_ml=args.min_lesion_ml,
        pet_check=pet_check_overrides(args),
    )
    from mefn.metrics.scoring import score_cases

    rows = []
    for name, kind, scan, paint in PHANTOMS:
        (scored,) = score_cases(
            predictor,
            [phantom_case(kind, scan, paint)],
            "autopet2022",
            extra=lambda _c, p, ref, kind=kind: {"lesions": lesion_recall(p.mask, ref, kind)},
        )
        row = {"phantom": name, **scored.metrics.to_dict(), **scored.extra}
        row["seconds"] = round(scored.seconds, 2)
        row["timings"] = scored.timings
        rows.append(row)
        found = sum(les["detected"] for les in row["lesions"])
        print(
            f"{name:28s} Dice {row['dice']:.3f}  FPV {row['fpv_ml']:6.2f} mL  "
            f"FNV {row['fnv_ml']:6.2f} mL  lesions found {found}/{len(row['lesions'])}  "
            f"({scored.seconds:.1f} s)",
            flush=True,
        )
        missed = [les["lesion"] for les in row["lesions"] if not les["detected"]]
        if missed:
            print(f"{'':28s} missed: {', '.join(missed)}", flush=True)
    summary = {
        "mean_dice": float(np.mean([r["dice"] for r in rows])),
        "mean_fpv_ml": float(np.mean([r["fpv_ml"] for r in rows])),
        "mean_fnv_ml": float(np.mean([r["fnv_ml"] for r in rows])),
        "lesions_detected": sum(les["detected"] for r in rows for les in r["lesions"]),
        "lesions": sum(len(r["lesions"]) for r in rows),
    }
    print(
        f"mean Dice {summary['mean_dice']:.3f}  FPV {summary['mean_fpv_ml']:.2f} mL  FNV "
        f"{summary['mean_fnv_ml']:.2f} mL  lesions found {summary['lesions_detected']}/"
        f"{summary['lesions']}"
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "command": command_line("pipelines.eval_simple_phantoms"),
            "commit": git_commit(),
            "settings": predictor.settings(),
            "definitions": "AutoPET 2022 per phantom (every phantom has lesions)",
            "summary": summary,
            "phantoms": rows,
        }
        (out / "simple_phantoms.json").write_text(json.dumps(record, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
