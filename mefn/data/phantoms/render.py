"""Rendering a phantom's analytic scene on a scanner grid: CT, PET and labels.

- **CT** (HU, float32): tissue values with partial volume, a slight in-plane blur, Gaussian
  noise (spatially correlated by the same blur), air outside the body.
- **PET** (SUVbw, float32): the tissue activity averaged over each voxel, a smooth organ
  texture, a Gaussian point-spread function, then noise whose standard deviation is
  ``cv * sqrt(SUV + 0.02)`` (Poisson-like: relative noise grows as counts fall), correlated
  over about a voxel, and clipped at 0.
- **Labels** (uint8): a voxel is labelled when its centre lies inside a lesion's analytic
  support (equivalently: when more than half of it is covered, with the renderer's
  partial-volume ramp). A necrotic core is cold but still labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from mefn.data.phantoms import streams
from mefn.data.phantoms.lesions import Lesion
from mefn.data.phantoms.shapes import Layer, SmoothField, block_coords, grid_block, paint_layers
from mefn.io.volume import Geometry, Volume

__all__ = [
    "PhantomScene",
    "Scanner",
    "draw_scanner",
    "lesion_table",
    "render_ct",
    "render_labels",
    "render_pet",
]

AIR_HU = -1000.0
CT_RANGE_HU = (-1024.0, 3071.0)  # what a 12-bit CT stores
FWHM_PER_SIGMA = 2.3548
PET_NOISE_FLOOR_SUV = 0.02  # keeps some noise where there is no activity

# Scanner properties, drawn per study.
PSF_FWHM_RANGE_MM = (4.0, 7.0)
PET_NOISE_CV_RANGE = (0.08, 0.35)  # drawn log-uniformly: the count level varies
PET_NOISE_CORRELATION_RANGE_VOX = (0.4, 0.9)
PET_TEXTURE_AMPLITUDE_RANGE = (0.03, 0.12)
PET_TEXTURE_WAVES = 10
PET_TEXTURE_WAVELENGTH_RANGE_MM = (30.0, 150.0)
CT_NOISE_RANGE_HU = (5.0, 30.0)
CT_BLUR_RANGE_MM = (0.3, 0.8)


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


@dataclass(frozen=True)
class Scanner:
    """The imaging of one study: PET resolution, noise and texture; CT noise and blur."""

    psf_fwhm_mm: float
    noise_cv: float
    noise_corr_vox: float
    texture_amplitude: float
    texture: SmoothField
    ct_noise_hu: float
    ct_blur_mm: float

    def meta(self) -> dict[str, Any]:
        """What a study's metadata records of the scanner (the texture's waves left out)."""
        return {
            "psf_fwhm_mm": self.psf_fwhm_mm,
            "noise_cv": self.noise_cv,
            "noise_corr_vox": self.noise_corr_vox,
            "texture_amplitude": self.texture_amplitude,
            "ct_noise_hu": self.ct_noise_hu,
            "ct_blur_mm": self.ct_blur_mm,
        }


def draw_scanner(rng: np.random.Generator) -> Scanner:
    cv_lo, cv_hi = PET_NOISE_CV_RANGE
    return Scanner(
        psf_fwhm_mm=float(rng.uniform(*PSF_FWHM_RANGE_MM)),
        noise_cv=float(math.exp(rng.uniform(math.log(cv_lo), math.log(cv_hi)))),
        noise_corr_vox=float(rng.uniform(*PET_NOISE_CORRELATION_RANGE_VOX)),
        texture_amplitude=float(rng.uniform(*PET_TEXTURE_AMPLITUDE_RANGE)),
        texture=SmoothField.random(rng, PET_TEXTURE_WAVES, PET_TEXTURE_WAVELENGTH_RANGE_MM),
        ct_noise_hu=float(rng.uniform(*CT_NOISE_RANGE_HU)),
        ct_blur_mm=float(rng.uniform(*CT_BLUR_RANGE_MM)),
    )


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
    hu = np.full(geometry.shape, AIR_HU, dtype=np.float32)
    layers = list(scene.layers) + [lay for les in scene.lesions for lay in les.layers()]
    paint_layers(hu, geometry, layers, "hu")
    sigma_vox = np.asarray([scene.ct_blur_mm / s for s in geometry.spacing_mm])
    axial = int(np.argmax(np.abs(geometry.direction_matrix[2, :])))
    sigma_vox[axial] = 0.0
    hu = ndimage.gaussian_filter(hu, sigma=sigma_vox, mode="nearest")
    if scene.noise:
        rng = np.random.default_rng([scene.seed, streams.CT_NOISE_STREAM, stream])
        noise = _correlated_noise(rng, geometry.shape, sigma_vox)
        level = scene.ct_noise_hu
        if scene.ct_voxel_volume_ml > 0:  # averaging over larger voxels lowers the noise
            level *= min(1.0, math.sqrt(scene.ct_voxel_volume_ml / geometry.voxel_volume_ml))
        hu += np.float32(level) * noise
    np.clip(hu, *CT_RANGE_HU, out=hu)
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


def render_pet(
    scene: PhantomScene,
    geometry: Geometry,
    rng: np.random.Generator,
    scanner: Scanner,
    keep_truth: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The scene's PET (SUV) on ``geometry``: organ texture, PSF blur, Poisson-like noise,
    clipped at 0; and the activity before texture, blur and noise when ``keep_truth``."""
    act = np.zeros(geometry.shape, dtype=np.float32)
    layers = list(scene.layers) + [lay for les in scene.lesions for lay in les.layers()]
    paint_layers(act, geometry, layers, "suv")
    truth = act.copy() if keep_truth else None
    full = (slice(0, geometry.shape[0]), slice(0, geometry.shape[1]), slice(0, geometry.shape[2]))
    act *= np.float32(1.0) + np.float32(scanner.texture_amplitude) * scanner.texture(
        *block_coords(geometry, full)
    )
    sigma_vox = np.asarray([scanner.psf_fwhm_mm / FWHM_PER_SIGMA / s for s in geometry.spacing_mm])
    act = ndimage.gaussian_filter(act, sigma=sigma_vox, mode="constant")
    if scene.noise:
        noise = _correlated_noise(rng, geometry.shape, np.full(3, scanner.noise_corr_vox))
        floor = np.float32(PET_NOISE_FLOOR_SUV)
        std = np.float32(scanner.noise_cv) * np.sqrt(np.maximum(act, 0.0) + floor)
        act += std * noise
    np.maximum(act, 0.0, out=act)
    return act, truth


def lesion_table(
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
