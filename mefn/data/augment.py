"""Training patches: positive/negative sampling from cached cases and augmentation.

Sampling crops a patch from the memory-mapped case (only the patch is read). Physical
augmentations act in HU and SUV (scanner calibration, resolution, noise), then the patch is
normalised and MONAI's random flips and affine transforms act on the tensors with the label.
Every random choice comes from the ``numpy.random.Generator`` passed in, so a seed fixes
the whole stream.

MONAI's random intensity transforms (RandScaleIntensity, RandGaussianSmooth, RandGaussianNoise,
RandAdjustContrast) are not used: each draws from its own ``np.random.RandomState``, not the one
Generator a resumed run restores, and none computes the same values (GaussianSmooth's kernel is
not scipy's, AdjustContrast rescales from the minimum, the PET noise here grows with sqrt(SUV)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mefn.data.cache import CachedCase
from mefn.data.preprocess import PreprocessConfig, normalise

__all__ = ["AugmentConfig", "PatchSampler", "crop_patch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training patches (probabilities per patch)."""

    flip_prob: float = 0.5
    affine_prob: float = 0.3
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    suv_scale_range: tuple[float, float] = (0.7, 1.4)
    pet_blur_prob: float = 0.3
    pet_blur_sigma_mm: tuple[float, float] = (1.0, 3.5)
    pet_noise_prob: float = 0.4
    pet_noise_rel: float = 0.15
    ct_noise_prob: float = 0.3
    ct_noise_hu: float = 25.0
    ct_shift_hu: float = 30.0
    gamma_prob: float = 0.15


def crop_patch(
    array: np.ndarray, start: np.ndarray, size: tuple[int, int, int], fill: float
) -> np.ndarray:
    """``array[start : start + size]`` padded with ``fill`` where it leaves the array."""
    out = np.full(size, fill, dtype=np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.asarray(size), array.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = array[
        tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
    ]
    return out


#: A hot structure smaller than this (voxels of the model grid) is noise, not a structure.
HOT_MIN_STRUCTURE_VOXELS = 8


def _by_structure(
    case: CachedCase, hot: np.ndarray, hot_suv: float
) -> tuple[np.ndarray, np.ndarray]:
    """``hot`` (flat indices) grouped by the connected structure of unlabelled voxels above
    ``hot_suv`` that holds them, structures under HOT_MIN_STRUCTURE_VOXELS left out: the
    regrouped indices and where each structure's run starts. Empty when no structure is left.
    """
    import cc3d

    uptake = (np.asarray(case.suv, dtype=np.float32) > hot_suv) & (np.asarray(case.label) == 0)
    structures = cc3d.connected_components(uptake, connectivity=26)
    sizes = np.bincount(structures.ravel())
    which = structures.ravel()[hot]
    keep = (which > 0) & (sizes[which] >= HOT_MIN_STRUCTURE_VOXELS)
    hot, which = hot[keep], which[keep]
    order = np.argsort(which, kind="stable")
    hot, which = hot[order], which[order]
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]]) if which.size else which
    return hot, starts.astype(np.int64)


class PatchSampler:
    """Draws augmented ``(image (2, *patch), label (1, *patch))`` patches from cached cases."""

    def __init__(
        self,
        cases: list[CachedCase],
        patch_size_vox: tuple[int, int, int],
        preprocess: PreprocessConfig,
        augment: AugmentConfig,
        pos_fraction: float,
        rng: np.random.Generator,
        hot_negative_fraction: float = 0.0,
        hot_suv: float = 3.0,
        hot_balance: str = "voxel",
    ) -> None:
        if not cases:
            raise ValueError("no training cases to sample from")
        self.cases = cases
        self.patch = tuple(int(p) for p in patch_size_vox)
        self.preprocess = preprocess
        self.augment = augment
        self.pos_fraction = pos_fraction
        self.rng = rng
        self.hot_negative_fraction = hot_negative_fraction
        # Hard negatives: voxels with physiological uptake (brain, heart, kidneys, bladder ...)
        # above ``hot_suv`` outside any label, where a PET-only reading would see a lesion
        # (candidates found once, when the case was cached).
        # ``hot_balance`` "voxel": every candidate voxel alike, so the largest structures
        # (brain, liver, bladder) take most hard negatives; "structure": first a connected hot
        # structure of at least HOT_MIN_STRUCTURE_VOXELS, all alike, then a voxel in it, so a
        # small gland weighs as much as the brain.
        if hot_balance not in ("voxel", "structure"):
            raise ValueError(f"hot_balance must be voxel or structure, found {hot_balance!r}")
        self.hot_indices: list[np.ndarray] = []
        self.hot_starts: list[np.ndarray] = []  # "structure": where each structure's run starts
        if hot_negative_fraction > 0:
            self.hot_indices = [c.hot_indices[c.hot_suv > hot_suv] for c in cases]
            if hot_balance == "structure":
                grouped = [
                    _by_structure(c, idx, hot_suv) for c, idx in zip(cases, self.hot_indices)
                ]
                self.hot_indices = [g[0] for g in grouped]
                self.hot_starts = [g[1] for g in grouped]

    # --- sampling --------------------------------------------------------------------------
    def _centre(
        self, case: CachedCase, hot: np.ndarray | None = None, starts: np.ndarray | None = None
    ) -> np.ndarray:
        rng = self.rng
        classes = [c for c, idx in case.fg_indices.items() if idx.size]
        draw = rng.random()
        if hot is not None and hot.size and draw >= 1.0 - self.hot_negative_fraction:
            if starts is None:
                flat = hot[int(rng.integers(hot.size))]
            else:  # a structure first, then a voxel of it
                k = int(rng.integers(starts.size))
                stop = int(starts[k + 1]) if k + 1 < starts.size else hot.size
                flat = hot[int(rng.integers(int(starts[k]), stop))]
            return np.asarray(np.unravel_index(int(flat), case.shape))
        if classes and draw < self.pos_fraction:
            cls = classes[int(rng.integers(len(classes)))]
            flat = case.fg_indices[cls][int(rng.integers(case.fg_indices[cls].size))]
            centre = np.asarray(np.unravel_index(int(flat), case.shape))
            jitter = rng.integers(-(np.asarray(self.patch) // 4), np.asarray(self.patch) // 4 + 1)
            return centre + jitter
        flat = case.body_indices[int(rng.integers(case.body_indices.size))]
        return np.asarray(np.unravel_index(int(flat), case.shape))

    def sample_raw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, CachedCase]:
        """One un-augmented patch in physical units: (HU, SUV, label, case)."""
        which = int(self.rng.integers(len(self.cases)))
        case = self.cases[which]
        hot = self.hot_indices[which] if self.hot_indices else None
        starts = self.hot_starts[which] if self.hot_starts else None
        start = self._centre(case, hot, starts) - np.asarray(self.patch) // 2
        ct = crop_patch(case.ct_hu, start, self.patch, -1000.0)  # type: ignore[arg-type]
        pet = crop_patch(case.suv, start, self.patch, 0.0)  # type: ignore[arg-type]
        lab = crop_patch(case.label, start, self.patch, 0.0).astype(np.uint8)  # type: ignore[arg-type]
        return ct, pet, lab, case

    # --- augmentation ---------------------------------------------------------------------
    def _physical(self, ct: np.ndarray, pet: np.ndarray, spacing: tuple[float, ...]) -> None:
        a, rng = self.augment, self.rng
        pet *= rng.uniform(*a.suv_scale_range)
        if rng.random() < a.pet_blur_prob:
            sigma_mm = rng.uniform(*a.pet_blur_sigma_mm)
            pet[...] = ndimage.gaussian_filter(pet, [sigma_mm / s for s in spacing])
        if rng.random() < a.pet_noise_prob:
            scale = a.pet_noise_rel * rng.uniform(0.3, 1.0)
            pet += (
                rng.normal(0.0, 1.0, pet.shape).astype(np.float32)
                * scale
                * np.sqrt(np.maximum(pet, 0.0) * np.maximum(pet.mean(), 0.1))
            )
            np.maximum(pet, 0.0, out=pet)
        if rng.random() < a.gamma_prob:
            peak = max(float(pet.max()), 1e-3)
            pet[...] = peak * (pet / peak) ** rng.uniform(0.8, 1.25)
        ct += rng.uniform(-a.ct_shift_hu, a.ct_shift_hu)
        if rng.random() < a.ct_noise_prob:
            ct += rng.normal(0.0, rng.uniform(0.2, 1.0) * a.ct_noise_hu, ct.shape).astype(
                np.float32
            )

    def _spatial(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, rng = self.augment, self.rng
        for axis in range(3):
            if rng.random() < a.flip_prob:
                image = np.flip(image, axis=axis + 1)
                label = np.flip(label, axis=axis)
        if rng.random() < a.affine_prob:
            image, label = self._affine(image, label)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def _affine(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from mefn.model._monai import import_monai

        import_monai()  # MONAI without transformers, as everywhere in mefn (first use only)
        from monai.transforms import Affine

        a, rng = self.augment, self.rng
        angles = [float(np.deg2rad(rng.uniform(-a.rotate_deg, a.rotate_deg))) for _ in range(3)]
        scale = float(rng.uniform(*a.scale_range))
        affine = Affine(
            rotate_params=angles,
            scale_params=(scale, scale, scale),
            padding_mode="border",
            image_only=True,
        )
        img_t = torch.from_numpy(np.ascontiguousarray(image))
        out = affine(img_t, mode="bilinear")
        lab_t = torch.from_numpy(np.ascontiguousarray(label[None]).astype(np.float32))
        lab = affine(lab_t, mode="nearest", padding_mode="zeros")
        return (
            np.asarray(out, dtype=np.float32),
            np.asarray(lab, dtype=np.float32)[0].round().astype(np.uint8),
        )

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented, normalised patch: image (2, *patch) float32, label (1, *patch) int64."""
        ct, pet, lab, case = self.sample_raw()
        self._physical(ct, pet, case.grid.spacing_mm)
        image = normalise(ct, pet, self.preprocess)
        image, lab = self._spatial(image, lab)
        return image.astype(np.float32), lab[None].astype(np.int64)

    def batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        items = [self.sample() for _ in range(batch_size)]
        return np.stack([i[0] for i in items]), np.stack([i[1] for i in items])
