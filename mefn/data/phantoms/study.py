"""Synthetic FDG PET/CT studies with known lesions, for training, tests and demos.

:func:`generate_study` draws a patient (:mod:`mefn.data.phantoms.anatomy`), lesions
(:mod:`mefn.data.phantoms.lesions`) and two scanner grids (:mod:`mefn.data.phantoms.grids`),
then renders the analytic scene directly on each grid with partial volume
(:mod:`mefn.data.phantoms.shapes`, :mod:`mefn.data.phantoms.render`):

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

from mefn.config import from_dict, to_dict
from mefn.data.phantoms import render, streams
from mefn.data.phantoms.anatomy import Anatomy, build_anatomy
from mefn.data.phantoms.grids import body_point, draw_grid_choices, scan_range, study_grids
from mefn.data.phantoms.lesions import Lesion, sample_lesions
from mefn.data.phantoms.shapes import Layer
from mefn.errors import ConfigError
from mefn.io.volume import Geometry, Volume

__all__ = ["KINDS", "PhantomOptions", "PhantomStudy", "generate_study", "study_layers"]

log = logging.getLogger(__name__)

KINDS = ("wholebody", "headneck")
DEFAULT_MAX_VOXELS = 16_000_000
SMALL_MAX_VOXELS = 400_000
CROP_PROBABILITY = 0.15  # of fov "random"
CROP_RANGE_MM = (40, 160)  # side of the crop box when crop_mm is unset
CROP_ON_LESION_PROBABILITY = 0.85  # else around a random point of the body
MIN_LESION_DIAMETER_MM = 4.0
MIN_LESION_DIAMETER_PET_VOXELS = 1.25  # lesions are at least this many PET voxels across


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
    scene: render.PhantomScene | None = field(default=None, repr=False)


def study_layers(seed: int, **options: Any) -> tuple[Layer, ...]:
    """The anatomy's layers of ``generate_study(seed, kind, **options)`` (any kind), in
    painting order, without rendering anything: what lies where in that study."""
    opts = from_dict(PhantomOptions, options, where="phantom options")
    return tuple(_anatomy(int(seed), opts.contrast).layers)


def _anatomy(seed: int, contrast: bool | None) -> Anatomy:
    return build_anatomy(np.random.default_rng([seed, streams.ANATOMY_STREAM]), contrast)


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
    scan = _plan_scan(seed, kind, opts, anatomy)
    scene = render.PhantomScene(
        layers=tuple(anatomy.layers),
        lesions=tuple(scan.lesions),
        seed=seed,
        ct_noise_hu=scan.scanner.ct_noise_hu,
        ct_blur_mm=scan.scanner.ct_blur_mm,
        noise=opts.noise,
        ct_voxel_volume_ml=scan.ct_geometry.voxel_volume_ml,
    )
    ct_geo, pet_geo = scan.ct_geometry, scan.pet_geometry
    ct = render.render_ct(scene, ct_geo)
    pet_rng = np.random.default_rng([seed, streams.PET_NOISE_STREAM])
    pet_arr, truth = render.render_pet(scene, pet_geo, pet_rng, scan.scanner, opts.keep_truth)
    label_ct, ct_masks = render.render_labels(scan.lesions, ct_geo)
    label_pet, pet_masks = render.render_labels(scan.lesions, pet_geo)
    table = render.lesion_table(scan.lesions, pet_arr, pet_geo, pet_masks, ct_masks)
    seconds = time.perf_counter() - start
    log.debug("phantom seed %d (%s): %d lesions in %.1f s", seed, kind, len(table), seconds)
    return PhantomStudy(
        ct=ct,
        pet=Volume(pet_arr, pet_geo, modality="PT", units="SUVbw"),
        label_ct=Volume(label_ct, ct_geo, modality="SEG", units="label"),
        label_pet=Volume(label_pet, pet_geo, modality="SEG", units="label"),
        lesions=table,
        meta=_study_meta(seed, kind, opts, anatomy, scan, seconds),
        pet_truth=None if truth is None else Volume(truth, pet_geo, modality="PT", units="SUVbw"),
        scene=scene,
    )


@dataclass(frozen=True)
class _Scan:
    """What was scanned: field of view, z range, the two grids, the scanner, the lesions."""

    fov: str
    z_range_mm: tuple[float, float]
    ct_geometry: Geometry
    pet_geometry: Geometry
    scanner: render.Scanner
    lesions: list[Lesion]


def _plan_scan(seed: int, kind: str, opts: PhantomOptions, anatomy: Anatomy) -> _Scan:
    """Scan range, field of view, grids and lesions. A full field of view gets its grids
    first, so that lesions are drawn large enough to be seen on the PET; a crop is placed
    around a lesion (usually), so its grids come after the lesions."""
    rng_grid = np.random.default_rng([seed, streams.GRIDS_STREAM])
    z_range = scan_range(rng_grid, anatomy, kind)
    fov = opts.fov
    if fov == "random":
        fov = "crop" if rng_grid.random() < CROP_PROBABILITY else "full"
    crop_mm = opts.crop_mm if opts.crop_mm is not None else float(rng_grid.uniform(*CROP_RANGE_MM))
    scanner = render.draw_scanner(np.random.default_rng([seed, streams.SCANNER_STREAM]))
    choice = draw_grid_choices(rng_grid, kind)
    cap = opts.voxel_cap
    if fov == "full":
        ct_geo, pet_geo = study_grids(rng_grid, choice, anatomy, kind, z_range, None, crop_mm, cap)
        pet_spacing = float(max(pet_geo.spacing_mm))
    else:
        pet_spacing = float(np.max(choice["pet_sp"]))
    lesions = sample_lesions(
        np.random.default_rng([seed, streams.LESIONS_STREAM]),
        anatomy,
        kind,
        z_range,
        opts.n_lesions,
        min_diameter_mm=max(MIN_LESION_DIAMETER_MM, MIN_LESION_DIAMETER_PET_VOXELS * pet_spacing),
        resolution_mm=math.hypot(
            scanner.psf_fwhm_mm / render.FWHM_PER_SIGMA, pet_spacing / math.sqrt(12.0)
        ),
    )
    if fov == "crop":
        if lesions and rng_grid.random() < CROP_ON_LESION_PROBABILITY:
            crop_center = np.asarray(lesions[int(rng_grid.integers(len(lesions)))].center_mm)
        else:
            crop_center = body_point(rng_grid, anatomy, z_range)
        ct_geo, pet_geo = study_grids(
            rng_grid, choice, anatomy, kind, z_range, crop_center, crop_mm, cap
        )
    return _Scan(fov, z_range, ct_geo, pet_geo, scanner, lesions)


def _study_meta(
    seed: int, kind: str, opts: PhantomOptions, anatomy: Anatomy, scan: _Scan, seconds: float
) -> dict[str, Any]:
    z_lo, z_hi = scan.z_range_mm
    return {
        "seed": seed,
        "kind": kind,
        "options": to_dict(opts),
        "fov": scan.fov,
        "scan_range_mm": [round(z_lo, 2), round(z_hi, 2)],
        "patient": anatomy.params,
        "tissues": {k: [round(v[0], 2), round(v[1], 3)] for k, v in anatomy.tissues.items()},
        "landmarks": {
            k: {"point_mm": list(p), "tissue": t} for k, (p, t) in anatomy.landmarks.items()
        },
        "scanner": scan.scanner.meta(),
        "seconds": round(seconds, 3),
    }
