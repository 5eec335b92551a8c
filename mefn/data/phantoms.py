"""Synthetic FDG PET/CT studies with known lesions, for training, tests and demos.

:func:`generate_study` draws a patient (:mod:`mefn.data.phantom_anatomy`), lesions
(:mod:`mefn.data.phantom_lesions`) and two scanner grids, then renders the analytic scene
directly on each grid with partial volume (:mod:`mefn.data.phantom_shapes`):

- **CT** (HU, float32): tissue values, a slight in-plane blur, Gaussian noise of 5-30 HU
  (spatially correlated by the same blur), air -1000 outside the body, a couch in most
  studies, optional portal-venous contrast.
- **PET** (SUVbw, float32): the tissue activity averaged over each voxel, a smooth organ
  texture, a Gaussian point-spread function of 4-7 mm FWHM, then noise whose standard
  deviation is ``cv * sqrt(SUV + 0.02)`` (Poisson-like: relative noise grows as counts fall;
  ``cv`` is drawn per study, i.e. the count level varies), correlated over about a voxel,
  and clipped at 0.
- **Labels** (uint8, one per grid): a voxel is labelled when its centre lies inside a
  lesion's analytic support (equivalently: when more than half of it is covered, with the
  renderer's partial-volume ramp). Whole body: 1 = lesion. Head and neck: 1 = GTVp,
  2 = GTVn. A necrotic core is cold but still labelled.

The two grids share the patient frame but not their spacing, shape, origin or (sometimes)
direction; directions include flipped axes and slight obliquity. The field of view is the
scanned body (whole body, or skull base to upper thorax) or, in a random fraction of
studies (``fov="crop"``), a box of a few centimetres around a lesion.

Everything is drawn from ``numpy.random.default_rng([seed, stream])`` with one stream per
purpose, so a seed always gives the same study, and changing the grid options leaves the
patient and lesions of that seed unchanged (apart from the lesion minimum size, which
follows the PET voxel size).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from mefn.config import from_dict, to_dict
from mefn.data.phantom_anatomy import Anatomy, build_anatomy
from mefn.data.phantom_lesions import Lesion, sample_lesions
from mefn.data.phantom_shapes import (
    Layer,
    SmoothField,
    block_coords,
    grid_block,
    paint_layers,
    rotation_matrix,
)
from mefn.errors import ConfigError
from mefn.io.volume import Geometry, Volume

__all__ = [
    "KINDS",
    "PhantomOptions",
    "PhantomScene",
    "PhantomStudy",
    "generate_study",
    "render_ct",
    "study_layers",
    "render_labels",
]

log = logging.getLogger(__name__)

KINDS = ("wholebody", "headneck")
OUTLINE = ("body", "neck", "head", "thigh", "arm", "shoulder")  # layers that make the outline
DEFAULT_MAX_VOXELS = 16_000_000
SMALL_MAX_VOXELS = 400_000

# random-number streams
_ANATOMY, _LESIONS, _GRIDS, _CT_NOISE, _PET_NOISE, _SCANNER, _NAMES = range(7)


@dataclass(frozen=True)
class PhantomOptions:
    """Options of :func:`generate_study` (all optional keyword arguments).

    - ``fov``: ``"random"`` (a crop in about 15 % of studies), ``"full"`` or ``"crop"``.
    - ``crop_mm``: side of the crop box (drawn in 40-160 mm when unset).
    - ``max_voxels``: cap on the CT grid's voxel count (the PET grid gets half); spacings
      are coarsened (slices first, to 5 mm, then in-plane, to 3 mm) until the grid fits.
      Default 16 million.
    - ``small``: a quick study for tests and training: ``max_voxels`` 400 thousand.
    - ``n_lesions``: force the number of lesions (head and neck: 0 = none, else a primary
      plus ``n_lesions - 1`` nodes).
    - ``contrast``: force contrast-enhanced CT on or off.
    - ``noise``: add CT and PET noise (off gives the noise-free images, for tests).
    - ``keep_truth``: keep the PET activity before blur and noise (``PhantomStudy.pet_truth``).
    """

    fov: Literal["random", "full", "crop"] = "random"
    crop_mm: float | None = None
    max_voxels: int | None = None
    small: bool = False
    n_lesions: int | None = None
    contrast: bool | None = None
    noise: bool = True
    keep_truth: bool = False

    def __post_init__(self) -> None:
        if self.crop_mm is not None and not 10 <= self.crop_mm <= 2000:
            raise ConfigError(
                f"crop_mm must be between 10 and 2000 mm, found {self.crop_mm}; "
                "give the side of the crop box in mm"
            )
        if self.max_voxels is not None and self.max_voxels < 1000:
            raise ConfigError(
                f"max_voxels must be at least 1000, found {self.max_voxels}; "
                "use small=True for quick studies"
            )
        if self.n_lesions is not None and not 0 <= self.n_lesions <= 20:
            raise ConfigError(f"n_lesions must be between 0 and 20, found {self.n_lesions}")

    @property
    def voxel_cap(self) -> int:
        if self.max_voxels is not None:
            return self.max_voxels
        return SMALL_MAX_VOXELS if self.small else DEFAULT_MAX_VOXELS


@dataclass(frozen=True)
class PhantomScene:
    """The analytic scene behind a study, to render it on further grids (e.g. CTres)."""

    layers: tuple[Layer, ...]
    lesions: tuple[Lesion, ...]
    seed: int
    ct_noise_hu: float
    ct_blur_mm: float
    noise: bool
    ct_voxel_volume_ml: float = 0.0  # the CT grid's voxel, the one ct_noise_hu is for


@dataclass(frozen=True, eq=False)
class PhantomStudy:
    """A synthetic PET/CT study with its ground truth.

    ``lesions`` holds one dict per lesion present in the images: ``site``, ``label``,
    ``center_mm`` (LPS), ``diameter_mm`` (equivalent sphere of the analytic volume),
    ``volume_true_ml`` (analytic), ``volume_ml`` and ``n_voxels_pet`` (labelled on the PET
    grid), ``n_voxels_ct``, ``suv_max`` and ``suv_mean`` (final PET within the PET label),
    ``suv_peak_true`` (the activity drawn before blur and noise), ``background_suv``,
    ``necrotic``, ``ct_appearance`` and ``hu``.
    """

    ct: Volume
    pet: Volume
    label_ct: Volume
    label_pet: Volume
    lesions: list[dict[str, Any]]
    meta: dict[str, Any]
    pet_truth: Volume | None = None
    scene: PhantomScene | None = field(default=None, repr=False)


# --- grids --------------------------------------------------------------------------------------
_DIRECTIONS: list[tuple[tuple[float, float, float], float]] = [
    ((1, 1, 1), 0.42),
    ((-1, -1, 1), 0.25),
    ((1, -1, 1), 0.1),
    ((1, 1, -1), 0.1),
    ((-1, 1, 1), 0.05),
    ((-1, -1, -1), 0.08),
]


def _direction(rng: np.random.Generator) -> np.ndarray:
    p = np.asarray([w for _, w in _DIRECTIONS])
    signs = _DIRECTIONS[int(rng.choice(len(_DIRECTIONS), p=p / p.sum()))][0]
    d = np.diag(np.asarray(signs, dtype=np.float64))
    if rng.random() < 0.1:  # slightly oblique: gantry tilt or a rotated reformat
        angles = rng.uniform(-6, 6, size=3) * np.asarray([1.0, 0.3, 1.0])
        d = rotation_matrix(angles) @ d
    return d


def _geometry(
    direction: np.ndarray,
    spacing: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    cap: int,
    max_slice_mm: float = 5.0,
    max_inplane_mm: float = 3.0,
) -> Geometry:
    """A grid of the given direction covering the world box [lo, hi], at most ``cap`` voxels."""
    center = (lo + hi) / 2
    # extents along the grid's own axes (the box is axis-aligned in world)
    extent = np.abs(direction.T) @ (hi - lo)
    spacing = spacing.astype(np.float64).copy()

    def shape_for(s: np.ndarray) -> np.ndarray:
        return np.maximum(np.ceil(extent / s).astype(int), 1)

    shape = shape_for(spacing)
    axial = int(np.argmax(np.abs(direction[2, :])))
    # coarsen slices first (to max_slice_mm), then in-plane (to max_inplane_mm), then all
    for axes, limit in (
        ([axial], max_slice_mm),
        ([a for a in range(3) if a != axial], max_inplane_mm),
    ):
        if np.prod(shape) <= cap:
            break
        factor = (float(np.prod(shape)) / cap) ** (1 / len(axes))
        for a in axes:
            spacing[a] = max(spacing[a], min(limit, spacing[a] * factor))
        shape = shape_for(spacing)
    while np.prod(shape) > cap:
        spacing *= (float(np.prod(shape)) / cap) ** (1 / 3) * 1.001
        shape = shape_for(spacing)
    origin = center - direction @ (spacing * (shape - 1) / 2)
    return Geometry(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(direction.ravel()),
    )


def _axial_spacing(
    rng: np.random.Generator,
    inplane: tuple[float, float],
    axial: tuple[float, float],
    direction: np.ndarray,
) -> np.ndarray:
    s = rng.uniform(*inplane)
    spacing = np.array([s, s, s * 0.0 + rng.uniform(*axial)])
    # the axis that runs (mostly) along z gets the slice spacing
    k = int(np.argmax(np.abs(direction[2, :])))
    out = np.full(3, s)
    out[k] = spacing[2]
    return out


def _scan_range(rng: np.random.Generator, anatomy: Anatomy, kind: str) -> tuple[float, float]:
    z = anatomy.z_landmarks_mm
    if kind == "headneck":
        bottom = rng.uniform(z["upper_thorax"] - 60, z["upper_thorax"] + 10)
        top = rng.uniform(z["skull_base"] + 20, z["vertex"] + 10)
        return float(bottom), float(top)
    u = rng.random()
    bottom = z["pelvis_floor"] if u < 0.4 else z["mid_thigh"] if u < 0.9 else z["knee"]
    top = z["skull_base"] if rng.random() < 0.5 else z["vertex"] + 10
    return float(bottom + rng.uniform(-30, 30)), float(top + rng.uniform(-20, 10))


def _body_extent(anatomy: Anatomy, z_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The body's bounding box (LPS mm) within the scanned z range, from a coarse rendering."""
    lo = np.asarray(anatomy.body_lo_mm, dtype=np.float64)
    hi = np.asarray(anatomy.body_hi_mm, dtype=np.float64)
    lo[2], hi[2] = max(lo[2], z_range[0]), min(hi[2], z_range[1])
    if hi[2] <= lo[2]:
        lo[2], hi[2] = z_range
        return lo, hi
    step = 8.0
    shape = np.maximum(np.ceil((hi - lo) / step).astype(int), 1)
    origin = lo + step / 2
    geo = Geometry(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        spacing_mm=(step, step, step),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
    )
    occ = np.zeros(geo.shape, dtype=np.float32)
    outline = [lay for lay in anatomy.layers if lay.name.split("_")[0] in OUTLINE]
    paint_layers(occ, geo, [Layer(lay.name, lay.shape, 1.0, None) for lay in outline], "hu")
    inside = np.argwhere(occ > 0.01)
    if inside.size == 0:
        return lo, hi
    world = geo.index_to_world(np.stack([inside.min(axis=0) - 0.5, inside.max(axis=0) + 0.5]))
    out_lo, out_hi = world.min(axis=0), world.max(axis=0)
    out_lo[2], out_hi[2] = z_range
    return out_lo, out_hi


def _body_point(
    rng: np.random.Generator, anatomy: Anatomy, z_range: tuple[float, float]
) -> np.ndarray:
    lo, hi = _body_extent(anatomy, z_range)
    c = (lo + hi) / 2
    half = (hi - lo) / 2
    return np.array(
        [
            c[0] + rng.uniform(-0.5, 0.5) * half[0],
            c[1] + rng.uniform(-0.5, 0.5) * half[1],
            rng.uniform(*z_range),
        ]
    )


def _grid_choices(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    ct_dir = _direction(rng)
    pet_dir = ct_dir if rng.random() < 0.8 else _direction(rng)
    if kind == "headneck":
        ct_sp = _axial_spacing(rng, (0.75, 1.25), (1.5, 3.3), ct_dir)
    else:
        ct_sp = _axial_spacing(rng, (0.8, 1.6), (1.5, 5.0), ct_dir)
    pet_sp = _axial_spacing(rng, (2.0, 5.0), (2.0, 5.0), pet_dir)
    return {"ct_dir": ct_dir, "pet_dir": pet_dir, "ct_sp": ct_sp, "pet_sp": pet_sp}


def _grids(
    rng: np.random.Generator,
    choice: dict[str, np.ndarray],
    anatomy: Anatomy,
    kind: str,
    z_range: tuple[float, float],
    crop_center: np.ndarray | None,
    crop_mm: float,
    cap: int,
) -> tuple[Geometry, Geometry]:
    if crop_center is not None:
        size = crop_mm * rng.uniform(0.8, 1.2, size=3)
        c = crop_center + rng.uniform(-0.2, 0.2, size=3) * size
        ct_lo, ct_hi = c - size / 2, c + size / 2
        grow = rng.uniform(0, 25, size=3)
        pet_lo, pet_hi = ct_lo - grow, ct_hi + grow
    else:
        lo, hi = _body_extent(anatomy, z_range)
        if np.isfinite(anatomy.table_top_y_mm) and rng.random() < 0.7:
            hi[1] = max(hi[1], anatomy.table_top_y_mm + 40)
        if kind == "headneck":  # the neck and head, not the shoulders, set the width
            half = min((hi[0] - lo[0]) / 2, rng.uniform(110, 220))
            cx = (lo[0] + hi[0]) / 2
            lo[0], hi[0] = cx - half, cx + half
        ct_lo = lo - np.array([*rng.uniform(5, 60, size=2), rng.uniform(0, 20)])
        ct_hi = hi + np.array([*rng.uniform(5, 60, size=2), rng.uniform(0, 20)])
        pet_lo = lo - np.array([*rng.uniform(20, 150, size=2), rng.uniform(0, 30)])
        pet_hi = hi + np.array([*rng.uniform(20, 150, size=2), rng.uniform(0, 30)])
    ct_geo = _geometry(choice["ct_dir"], choice["ct_sp"], ct_lo, ct_hi, cap)
    pet_geo = _geometry(
        choice["pet_dir"], choice["pet_sp"], pet_lo, pet_hi, max(cap // 2, 1000), 6.0, 6.0
    )
    return ct_geo, pet_geo


# --- rendering ---------------------------------------------------------------------------------
def _kernel_norm(sigma: float) -> float:
    """sqrt(sum of squared weights) of scipy's 1D Gaussian kernel of ``sigma`` voxels."""
    if sigma <= 0:
        return 1.0
    delta = np.zeros(int(8 * sigma) * 2 + 3)
    delta[len(delta) // 2] = 1.0
    k = ndimage.gaussian_filter1d(delta, sigma, mode="constant")
    return float(np.sqrt(np.sum(k**2)))


def _correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray
) -> np.ndarray:
    """Unit-variance noise smoothed by a Gaussian of ``sigma_vox`` (per axis)."""
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    if np.any(sigma_vox > 0):
        noise = ndimage.gaussian_filter(noise, sigma=sigma_vox, mode="wrap")
        noise /= np.float32(np.prod([_kernel_norm(float(s)) for s in sigma_vox]))
    return noise


def render_ct(scene: PhantomScene, geometry: Geometry, stream: int = 0) -> Volume:
    """The scene's CT (HU, float32) on ``geometry``: partial volume, blur, noise.

    The noise level is the study's, reduced for voxels larger than the CT's own
    (``ct_noise_hu`` is for the original CT voxel; averaging over a larger voxel lowers it).
    """
    hu = np.full(geometry.shape, -1000.0, dtype=np.float32)
    layers = list(scene.layers) + [lay for les in scene.lesions for lay in les.layers()]
    paint_layers(hu, geometry, layers, "hu")
    sigma_vox = np.asarray([scene.ct_blur_mm / s for s in geometry.spacing_mm])
    axial = int(np.argmax(np.abs(geometry.direction_matrix[2, :])))
    sigma_vox[axial] = 0.0
    hu = ndimage.gaussian_filter(hu, sigma=sigma_vox, mode="nearest")
    if scene.noise:
        rng = np.random.default_rng([scene.seed, _CT_NOISE, stream])
        noise = _correlated_noise(rng, geometry.shape, sigma_vox)
        level = scene.ct_noise_hu
        if scene.ct_voxel_volume_ml > 0:  # averaging over larger voxels lowers the noise
            level *= min(1.0, math.sqrt(scene.ct_voxel_volume_ml / geometry.voxel_volume_ml))
        hu += np.float32(level) * noise
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return Volume(hu, geometry, modality="CT", units="HU")


def render_labels(
    lesions: tuple[Lesion, ...] | list[Lesion], geometry: Geometry
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """uint8 label map (a voxel is labelled when its centre is inside a lesion) and, per
    lesion, its voxel mask within its block (None when outside the grid)."""
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    masks: list[np.ndarray | None] = []
    for lesion in lesions:
        lo, hi = lesion.shape.bounds()
        block = grid_block(geometry, lo, hi)
        if block is None:
            masks.append(None)
            continue
        inside = lesion.shape.sdf(*block_coords(geometry, block)) < 0
        inside = np.broadcast_to(inside, labels[block].shape)
        labels[block][inside] = lesion.label
        full = np.zeros(geometry.shape, dtype=bool)
        full[block] = inside
        masks.append(full)
    return labels, masks


def _render_pet(
    scene: PhantomScene,
    geometry: Geometry,
    rng: np.random.Generator,
    scanner: dict[str, Any],
    keep_truth: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    act = np.zeros(geometry.shape, dtype=np.float32)
    layers = list(scene.layers) + [lay for les in scene.lesions for lay in les.layers()]
    paint_layers(act, geometry, layers, "suv")
    truth = act.copy() if keep_truth else None
    texture = SmoothField(tuple(tuple(w) for w in scanner["texture_waves"]))  # type: ignore[misc]
    full = (slice(0, geometry.shape[0]), slice(0, geometry.shape[1]), slice(0, geometry.shape[2]))
    act *= np.float32(1.0) + np.float32(scanner["texture_amplitude"]) * texture(
        *block_coords(geometry, full)
    )
    sigma_vox = np.asarray([scanner["psf_fwhm_mm"] / 2.3548 / s for s in geometry.spacing_mm])
    act = ndimage.gaussian_filter(act, sigma=sigma_vox, mode="constant")
    if scene.noise:
        noise = _correlated_noise(rng, geometry.shape, np.full(3, scanner["noise_corr_vox"]))
        std = np.float32(scanner["noise_cv"]) * np.sqrt(np.maximum(act, 0.0) + np.float32(0.02))
        act += std * noise
    np.maximum(act, 0.0, out=act)
    return act, truth


def _lesion_table(
    lesions: list[Lesion],
    pet: np.ndarray,
    pet_geo: Geometry,
    pet_masks: list[np.ndarray | None],
    ct_masks: list[np.ndarray | None],
) -> list[dict[str, Any]]:
    table = []
    for lesion, pm, cm in zip(lesions, pet_masks, ct_masks):
        n_pet = int(pm.sum()) if pm is not None else 0
        n_ct = int(cm.sum()) if cm is not None else 0
        if n_pet == 0 and n_ct == 0:
            continue
        values = pet[pm] if pm is not None and n_pet else np.zeros(0, np.float32)
        table.append(
            {
                "site": lesion.site,
                "label": lesion.label,
                "center_mm": [round(float(v), 3) for v in lesion.center_mm],
                "diameter_mm": round(lesion.diameter_mm, 3),
                "volume_true_ml": round(lesion.volume_true_ml, 4),
                "volume_ml": round(n_pet * pet_geo.voxel_volume_ml, 4),
                "n_voxels_pet": n_pet,
                "n_voxels_ct": n_ct,
                "suv_max": round(float(values.max()), 4) if values.size else None,
                "suv_mean": round(float(values.mean()), 4) if values.size else None,
                "suv_peak_true": round(lesion.suv_peak, 4),
                "background_suv": round(lesion.background_suv, 4),
                "necrotic": lesion.core is not None,
                "ct_appearance": lesion.ct_appearance,
                "hu": round(lesion.hu, 2),
            }
        )
    return table


def study_layers(seed: int, **options: Any) -> tuple[Layer, ...]:
    """The anatomy's layers of ``generate_study(seed, kind, **options)`` (any kind), in
    painting order, without rendering anything: what lies where in that study."""
    opts = from_dict(PhantomOptions, options, where="phantom options")
    return tuple(_anatomy(int(seed), opts.contrast).layers)


def _anatomy(seed: int, contrast: bool | None) -> Any:
    return build_anatomy(np.random.default_rng([seed, _ANATOMY]), contrast)


def generate_study(
    seed: int, kind: Literal["wholebody", "headneck"] = "wholebody", **options: Any
) -> PhantomStudy:
    """A synthetic FDG PET/CT study, the same for the same ``seed``, ``kind`` and options.

    ``options`` are those of :class:`PhantomOptions`; an unknown one is a ConfigError that
    suggests the nearest name.
    """
    start = time.perf_counter()
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, found {seed!r}")
    seed = int(seed)
    opts = from_dict(PhantomOptions, options, where="phantom options")

    anatomy = _anatomy(seed, opts.contrast)
    rng_grid = np.random.default_rng([seed, _GRIDS])
    z_range = _scan_range(rng_grid, anatomy, kind)
    fov = opts.fov
    if fov == "random":
        fov = "crop" if rng_grid.random() < 0.15 else "full"
    crop_mm = opts.crop_mm if opts.crop_mm is not None else float(rng_grid.uniform(40, 160))

    rng_scan = np.random.default_rng([seed, _SCANNER])
    scanner: dict[str, Any] = {
        "psf_fwhm_mm": float(rng_scan.uniform(4.0, 7.0)),
        "noise_cv": float(math.exp(rng_scan.uniform(math.log(0.08), math.log(0.35)))),
        "noise_corr_vox": float(rng_scan.uniform(0.4, 0.9)),
        "texture_amplitude": float(rng_scan.uniform(0.03, 0.12)),
        "texture_waves": [list(w) for w in SmoothField.random(rng_scan, 10, (30.0, 150.0)).waves],
        "ct_noise_hu": float(rng_scan.uniform(5.0, 30.0)),
        "ct_blur_mm": float(rng_scan.uniform(0.3, 0.8)),
    }
    choice = _grid_choices(rng_grid, kind)
    if fov == "full":  # the grids first, so that lesions are drawn large enough to be seen
        ct_geo, pet_geo = _grids(
            rng_grid, choice, anatomy, kind, z_range, None, crop_mm, opts.voxel_cap
        )
        pet_spacing = float(max(pet_geo.spacing_mm))
    else:
        pet_spacing = float(np.max(choice["pet_sp"]))
    lesions = sample_lesions(
        np.random.default_rng([seed, _LESIONS]),
        anatomy,
        kind,
        z_range,
        opts.n_lesions,
        min_diameter_mm=max(4.0, 1.25 * pet_spacing),
        resolution_mm=math.hypot(scanner["psf_fwhm_mm"] / 2.3548, pet_spacing / math.sqrt(12.0)),
    )
    if fov == "crop":
        if lesions and rng_grid.random() < 0.85:
            crop_center = np.asarray(lesions[int(rng_grid.integers(len(lesions)))].center_mm)
        else:
            crop_center = _body_point(rng_grid, anatomy, z_range)
        ct_geo, pet_geo = _grids(
            rng_grid, choice, anatomy, kind, z_range, crop_center, crop_mm, opts.voxel_cap
        )
    scene = PhantomScene(
        layers=tuple(anatomy.layers),
        lesions=tuple(lesions),
        seed=seed,
        ct_noise_hu=scanner["ct_noise_hu"],
        ct_blur_mm=scanner["ct_blur_mm"],
        noise=opts.noise,
        ct_voxel_volume_ml=ct_geo.voxel_volume_ml,
    )
    ct = render_ct(scene, ct_geo)
    pet_arr, truth = _render_pet(
        scene, pet_geo, np.random.default_rng([seed, _PET_NOISE]), scanner, opts.keep_truth
    )
    label_ct, ct_masks = render_labels(lesions, ct_geo)
    label_pet, pet_masks = render_labels(lesions, pet_geo)
    table = _lesion_table(lesions, pet_arr, pet_geo, pet_masks, ct_masks)
    seconds = time.perf_counter() - start
    meta = {
        "seed": seed,
        "kind": kind,
        "options": to_dict(opts),
        "fov": fov,
        "scan_range_mm": [round(z_range[0], 2), round(z_range[1], 2)],
        "patient": anatomy.params,
        "tissues": {k: [round(v[0], 2), round(v[1], 3)] for k, v in anatomy.tissues.items()},
        "landmarks": {
            k: {"point_mm": list(p), "tissue": t} for k, (p, t) in anatomy.landmarks.items()
        },
        "scanner": {k: v for k, v in scanner.items() if k != "texture_waves"},
        "seconds": round(seconds, 3),
    }
    log.debug("phantom seed %d (%s): %d lesions in %.1f s", seed, kind, len(table), seconds)
    return PhantomStudy(
        ct=ct,
        pet=Volume(pet_arr, pet_geo, modality="PT", units="SUVbw"),
        label_ct=Volume(label_ct, ct_geo, modality="SEG", units="label"),
        label_pet=Volume(label_pet, pet_geo, modality="SEG", units="label"),
        lesions=table,
        meta=meta,
        pet_truth=None if truth is None else Volume(truth, pet_geo, modality="PT", units="SUVbw"),
        scene=scene,
    )


def __getattr__(name: str) -> Any:
    # The writers live in mefn.data.phantom_layouts (which imports this module); they are
    # offered here too, imported on first use.
    if name in ("write_phantoms", "write_study"):
        from mefn.data import phantom_layouts

        return getattr(phantom_layouts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
