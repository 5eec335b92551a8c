"""The two scanner grids of a phantom study: directions, spacings, scan range, field of view.

The CT and PET grids share the patient frame but not their spacing, shape, origin or
(sometimes) direction; directions include flipped axes and slight obliquity. The field of
view is the scanned body (whole body, or skull base to upper thorax) or a box of a few
centimetres around a point (a lesion, usually).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mefn.data.phantoms.anatomy import OUTLINE_LAYERS, Anatomy
from mefn.data.phantoms.shapes import Layer, paint_layers, rotation_matrix
from mefn.io.volume import Geometry

__all__ = ["body_extent", "body_point", "draw_grid_choices", "scan_range", "study_grids"]

SAME_DIRECTION_PROBABILITY = 0.8  # PET on the CT's direction
# kind: (in-plane spacing range, slice spacing range) of the CT, mm
CT_SPACING_RANGES_MM = {
    "headneck": ((0.75, 1.25), (1.5, 3.3)),
    "wholebody": ((0.8, 1.6), (1.5, 5.0)),
}
PET_SPACING_RANGES_MM = ((2.0, 5.0), (2.0, 5.0))

# (axis signs of the direction matrix, relative frequency)
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


def scan_range(rng: np.random.Generator, anatomy: Anatomy, kind: str) -> tuple[float, float]:
    z = anatomy.z_landmarks_mm
    if kind == "headneck":
        bottom = rng.uniform(z["upper_thorax"] - 60, z["upper_thorax"] + 10)
        top = rng.uniform(z["skull_base"] + 20, z["vertex"] + 10)
        return float(bottom), float(top)
    u = rng.random()
    bottom = z["pelvis_floor"] if u < 0.4 else z["mid_thigh"] if u < 0.9 else z["knee"]
    top = z["skull_base"] if rng.random() < 0.5 else z["vertex"] + 10
    return float(bottom + rng.uniform(-30, 30)), float(top + rng.uniform(-20, 10))


def body_extent(anatomy: Anatomy, z_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
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
    outline = [lay for lay in anatomy.layers if lay.name.split("_")[0] in OUTLINE_LAYERS]
    paint_layers(occ, geo, [Layer(lay.name, lay.shape, 1.0, None) for lay in outline], "hu")
    boxes = ndimage.find_objects((occ > 0.01).astype(np.uint8))
    if not boxes:
        return lo, hi
    first = np.array([b.start for b in boxes[0]]) - 0.5
    last = np.array([b.stop - 1 for b in boxes[0]]) + 0.5
    world = geo.index_to_world(np.stack([first, last]))
    out_lo, out_hi = world.min(axis=0), world.max(axis=0)
    out_lo[2], out_hi[2] = z_range
    return out_lo, out_hi


def body_point(
    rng: np.random.Generator, anatomy: Anatomy, z_range: tuple[float, float]
) -> np.ndarray:
    lo, hi = body_extent(anatomy, z_range)
    c = (lo + hi) / 2
    half = (hi - lo) / 2
    return np.array(
        [
            c[0] + rng.uniform(-0.5, 0.5) * half[0],
            c[1] + rng.uniform(-0.5, 0.5) * half[1],
            rng.uniform(*z_range),
        ]
    )


def draw_grid_choices(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    ct_dir = _direction(rng)
    pet_dir = ct_dir if rng.random() < SAME_DIRECTION_PROBABILITY else _direction(rng)
    inplane_mm, slice_mm = CT_SPACING_RANGES_MM[kind]
    ct_sp = _axial_spacing(rng, inplane_mm, slice_mm, ct_dir)
    pet_sp = _axial_spacing(rng, *PET_SPACING_RANGES_MM, pet_dir)
    return {"ct_dir": ct_dir, "pet_dir": pet_dir, "ct_sp": ct_sp, "pet_sp": pet_sp}


def study_grids(
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
        lo, hi = body_extent(anatomy, z_range)
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
