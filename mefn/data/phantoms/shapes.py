"""Analytic shapes in patient space (LPS mm) and their partial-volume rendering on any grid.

A shape is an implicit function: :meth:`Shape.sdf` gives an approximate signed distance in
mm (negative inside) at physical points, and :meth:`Shape.bounds` an axis-aligned box that
holds the whole shape. A :class:`Layer` paints one shape with one CT value (HU) and one PET
value (SUV), either constants or functions of position (texture, gradients).

Rendering (:func:`paint_layers`) visits each layer only inside the block of voxels that its
bounds cover, computes the signed distance ``d`` at the voxel centres and turns it into a
partial-volume fraction with a linear ramp one voxel wide::

    fraction = clip(0.5 - d / w, 0, 1),   w = (sx * sy * sz) ** (1/3)

then blends ``value <- value + fraction * (layer value - value)``. So a voxel whose centre
lies on the surface is half filled, and a voxel is more than half inside a shape exactly
when its centre is inside (``d < 0``): that is the rule used for labels too.

Coordinates are built by broadcasting: on an axis-aligned grid the x, y and z coordinates
of a block are 1D arrays shaped ``(n, 1, 1)``, ``(1, n, 1)``, ``(1, 1, n)`` and only the
arithmetic that mixes them reaches full 3D, which keeps whole-body grids fast.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mefn.io.volume import Geometry

__all__ = [
    "Block",
    "Box",
    "Capsule",
    "Ellipsoid",
    "EllipticTube",
    "Field",
    "Layer",
    "RibCage",
    "Shape",
    "SmoothField",
    "block_coords",
    "grid_block",
    "paint_layers",
    "rotation_matrix",
]

Array = np.ndarray
Coords = tuple[Array, Array, Array]
Value = float | Callable[[Array, Array, Array], Array]
Block = tuple[slice, slice, slice]


class Shape(Protocol):
    def sdf(self, x: Array, y: Array, z: Array) -> Array: ...

    def bounds(self) -> tuple[Array, Array]: ...


def rotation_matrix(angles_deg: Sequence[float]) -> Array:
    """Rotation about x, then y, then z (degrees), as a 3x3 matrix acting on column vectors."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _norm(*parts: Array) -> Array:
    total = parts[0] * parts[0]
    for p in parts[1:]:
        total = total + p * p
    return np.sqrt(total)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with semi-axes ``radii`` (mm) along the columns of ``rotation``.

    The distance is Quilez's first-order approximation ``k0 (k0 - 1) / k1``: exact on a
    sphere, within a few per cent of the true distance near the surface otherwise.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: tuple[float, ...] | None = None

    def _local(self, x: Array, y: Array, z: Array) -> Coords:
        cx, cy, cz = self.center
        dx, dy, dz = x - np.float32(cx), y - np.float32(cy), z - np.float32(cz)
        if self.rotation is None:
            return dx, dy, dz
        r = np.asarray(self.rotation, dtype=np.float32).reshape(3, 3)
        return (
            r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
        )

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        qx, qy, qz = self._local(x, y, z)
        rx, ry, rz = (np.float32(r) for r in self.radii)
        k0 = _norm(qx / rx, qy / ry, qz / rz)
        k1 = _norm(qx / (rx * rx), qy / (ry * ry), qz / (rz * rz))
        ratio = np.divide(
            k0,
            k1,
            out=np.full(np.broadcast(k0, k1).shape, min(self.radii), np.float32),
            where=k1 > 1e-9,
        )
        return (k0 - 1.0) * ratio

    def bounds(self) -> tuple[Array, Array]:
        radii = np.asarray(self.radii, dtype=np.float64)
        if self.rotation is None:
            half = radii
        else:
            r = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
            half = np.sqrt(((r * radii[None, :]) ** 2).sum(axis=1))
        c = np.asarray(self.center, dtype=np.float64)
        return c - half, c + half


@dataclass(frozen=True)
class EllipticTube:
    """A tube along z whose elliptic cross-section (centre, semi-axes) varies with z.

    ``z_mm``, ``a_mm`` (x semi-axis), ``b_mm`` (y semi-axis), ``cx_mm``, ``cy_mm`` are knots,
    linearly interpolated; the tube is closed by flat caps at the first and last knot.
    """

    z_mm: tuple[float, ...]
    a_mm: tuple[float, ...]
    b_mm: tuple[float, ...]
    cx_mm: tuple[float, ...]
    cy_mm: tuple[float, ...]

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        zk = np.asarray(self.z_mm, dtype=np.float32)
        a = np.interp(z, zk, np.asarray(self.a_mm)).astype(np.float32)
        b = np.interp(z, zk, np.asarray(self.b_mm)).astype(np.float32)
        qx = x - np.interp(z, zk, np.asarray(self.cx_mm)).astype(np.float32)
        qy = y - np.interp(z, zk, np.asarray(self.cy_mm)).astype(np.float32)
        k0 = _norm(qx / a, qy / b)
        k1 = _norm(qx / (a * a), qy / (b * b))
        inner = np.minimum(a, b)
        ratio = np.divide(
            k0, k1, out=np.broadcast_to(inner, np.broadcast(k0, k1).shape).copy(), where=k1 > 1e-9
        )
        d = (k0 - 1.0) * ratio
        caps = np.maximum(np.float32(zk[0]) - z, z - np.float32(zk[-1]))
        return np.maximum(d, caps)

    def bounds(self) -> tuple[Array, Array]:
        a = np.asarray(self.a_mm)
        b = np.asarray(self.b_mm)
        cx = np.asarray(self.cx_mm)
        cy = np.asarray(self.cy_mm)
        lo = np.array([(cx - a).min(), (cy - b).min(), min(self.z_mm)])
        hi = np.array([(cx + a).max(), (cy + b).max(), max(self.z_mm)])
        return lo, hi


@dataclass(frozen=True)
class Capsule:
    """A segment from ``p0`` to ``p1`` swept by a sphere whose radius goes from ``r0`` to ``r1``."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        p0 = np.asarray(self.p0, dtype=np.float32)
        v = np.asarray(self.p1, dtype=np.float32) - p0
        vv = float(v @ v)
        dx, dy, dz = x - p0[0], y - p0[1], z - p0[2]
        if vv < 1e-12:
            return _norm(dx, dy, dz) - np.float32(self.r0)
        t = np.clip((dx * v[0] + dy * v[1] + dz * v[2]) / np.float32(vv), 0.0, 1.0)
        dist = _norm(dx - t * v[0], dy - t * v[1], dz - t * v[2])
        return dist - (np.float32(self.r0) + t * np.float32(self.r1 - self.r0))

    def bounds(self) -> tuple[Array, Array]:
        p0 = np.asarray(self.p0, dtype=np.float64)
        p1 = np.asarray(self.p1, dtype=np.float64)
        r = max(self.r0, self.r1)
        return np.minimum(p0, p1) - r, np.maximum(p0, p1) + r


@dataclass(frozen=True)
class Box:
    """An axis-aligned box (LPS) with rounded-free edges: centre and half sizes in mm."""

    center: tuple[float, float, float]
    half_mm: tuple[float, float, float]

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        cx, cy, cz = self.center
        hx, hy, hz = self.half_mm
        return np.maximum(
            np.maximum(
                np.abs(x - np.float32(cx)) - np.float32(hx),
                np.abs(y - np.float32(cy)) - np.float32(hy),
            ),
            np.abs(z - np.float32(cz)) - np.float32(hz),
        )

    def bounds(self) -> tuple[Array, Array]:
        c = np.asarray(self.center, dtype=np.float64)
        h = np.asarray(self.half_mm, dtype=np.float64)
        return c - h, c + h


@dataclass(frozen=True)
class RibCage:
    """Ribs: bands of an elliptic shell (inside a tube), periodic along a tilted z.

    A point belongs to a rib when it lies within ``thickness_mm`` inside the tube's wall and
    within ``height_mm / 2`` of the centre of a band; bands repeat every ``period_mm`` along
    ``z - slope * (y - cy)`` (ribs run lower at the front). The front ``gap`` fraction of the
    cross-section (the costal cartilage and sternum) is left out.
    """

    tube: EllipticTube
    thickness_mm: float
    period_mm: float
    height_mm: float
    slope: float
    front_y_mm: float

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        d_tube = self.tube.sdf(x, y, z)
        half = np.float32(self.thickness_mm / 2.0)
        d_shell = np.abs(d_tube + half) - half
        u = z - np.float32(self.slope) * y
        phase = np.mod(u, np.float32(self.period_mm)) - np.float32(self.period_mm / 2.0)
        d_band = np.abs(phase) - np.float32(self.height_mm / 2.0)
        d_front = np.float32(self.front_y_mm) - y
        return np.maximum(np.maximum(d_shell, d_band), d_front)

    def bounds(self) -> tuple[Array, Array]:
        return self.tube.bounds()


@dataclass(frozen=True)
class SmoothField:
    """A smooth random field of unit variance: a sum of plane waves in patient space.

    ``f(p) = sqrt(2 / n) * sum_m cos(k_m . p + phi_m)``, with ``n`` wave vectors of random
    directions and wavelengths in ``wavelength_mm``.
    """

    waves: tuple[tuple[float, float, float, float], ...]

    @classmethod
    def random(
        cls, rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float]
    ) -> SmoothField:
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = np.exp(rng.uniform(np.log(wavelength_mm[0]), np.log(wavelength_mm[1]), size=n))
        k = dirs * (2 * np.pi / lam)[:, None]
        phase = rng.uniform(0, 2 * np.pi, size=n)
        return cls(
            tuple((float(a), float(b), float(c), float(p)) for (a, b, c), p in zip(k, phase))
        )

    def __call__(self, x: Array, y: Array, z: Array) -> Array:
        out: Array | None = None
        for kx, ky, kz, phase in self.waves:
            wave = np.cos(
                np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(phase)
            )
            out = wave if out is None else out + wave
        if out is None:
            return np.zeros((1, 1, 1), np.float32)
        return out * np.float32(np.sqrt(2.0 / len(self.waves)))


Field = Callable[[Array, Array, Array], Array]


@dataclass(frozen=True)
class Layer:
    """One shape painted with a CT value (HU) and a PET value (SUV); ``None`` leaves that image."""

    name: str
    shape: Shape
    hu: Value | None
    suv: Value | None
    tags: tuple[str, ...] = field(default=())


def grid_block(geometry: Geometry, lo: Array, hi: Array, pad: int = 1) -> Block | None:
    """The index block of ``geometry`` that covers the world box [lo, hi] (None if outside)."""
    corners = np.array(list(itertools.product(*zip(lo, hi))), dtype=np.float64)
    idx = geometry.world_to_index(corners)
    start = np.floor(idx.min(axis=0)).astype(int) - pad
    stop = np.ceil(idx.max(axis=0)).astype(int) + pad + 1
    start = np.maximum(start, 0)
    stop = np.minimum(stop, np.asarray(geometry.shape))
    if np.any(stop <= start):
        return None
    return (
        slice(int(start[0]), int(stop[0])),
        slice(int(start[1]), int(stop[1])),
        slice(int(start[2]), int(stop[2])),
    )


def block_coords(geometry: Geometry, block: Block) -> Coords:
    """LPS coordinates (float32, broadcastable) of the voxel centres of ``block``."""
    aff = geometry.affine_lps
    axes = [
        np.arange(s.start, s.stop, dtype=np.float64).reshape(
            [-1 if d == n else 1 for d in range(3)]
        )
        for n, s in enumerate(block)
    ]
    coords = []
    for row in range(3):
        total: Array = np.asarray(aff[row, 3])
        for col in range(3):
            if abs(aff[row, col]) > 1e-9:
                total = total + aff[row, col] * axes[col]
        coords.append(np.asarray(total, dtype=np.float32).reshape(np.shape(total) or (1, 1, 1)))
    return coords[0], coords[1], coords[2]


def _value(value: Value, coords: Coords) -> Array | float:
    if callable(value):
        return value(*coords)
    return float(value)


def voxel_width_mm(geometry: Geometry) -> float:
    """The width of the partial-volume ramp: the geometric mean voxel spacing."""
    sx, sy, sz = geometry.spacing_mm
    return float((sx * sy * sz) ** (1.0 / 3.0))


def paint_layers(target: Array, geometry: Geometry, layers: Sequence[Layer], channel: str) -> None:
    """Paint ``layers`` in order into ``target`` (float32 on ``geometry``), in place.

    ``channel`` is ``"hu"`` or ``"suv"``: which of each layer's values to paint.
    """
    width = np.float32(voxel_width_mm(geometry))
    for layer in layers:
        value = layer.hu if channel == "hu" else layer.suv
        if value is None:
            continue
        lo, hi = layer.shape.bounds()
        block = grid_block(geometry, lo, hi)
        if block is None:
            continue
        coords = block_coords(geometry, block)
        d = layer.shape.sdf(*coords)
        frac = np.clip(np.float32(0.5) - d / width, 0.0, 1.0)
        if not np.any(frac):
            continue
        sub = target[block]
        v = _value(value, coords)
        frac = np.broadcast_to(frac, sub.shape)
        sub += frac * (np.asarray(v, dtype=np.float32) - sub)
