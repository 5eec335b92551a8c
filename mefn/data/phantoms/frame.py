"""The patient frame of the phantom anatomy and its move into the scanner's world.

Anatomy is written in a patient frame (mm): x to the patient's left, y posterior, z
superior (LPS), with z = 0 at the pubic symphysis. :class:`PatientFrame` scales that frame
(build in x and y, height in z) and then translates it, so every study places a differently
sized patient somewhere else in the field of view. Its shape constructors take patient-frame
points and sizes and return shapes in world coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from mefn.data.phantoms.shapes import Capsule, Ellipsoid, EllipticTube, rotation_matrix

__all__ = ["CapsuleMM", "EllipsoidMM", "PatientFrame", "Point"]

Point = tuple[float, float, float]


class EllipsoidMM(NamedTuple):
    """An ellipsoid in the patient frame: centre, semi-axes, optional rotation about z (deg)."""

    center: Point
    radii: Point
    angle_z_deg: float | None = None


class CapsuleMM(NamedTuple):
    """A capsule in the patient frame: end points and radii (``r1`` defaults to ``r0``)."""

    p0: Point
    p1: Point
    r0: float
    r1: float | None = None


@dataclass(frozen=True)
class PatientFrame:
    """Patient frame -> world: scale (``build`` in x, y; ``height`` in z), then translate."""

    build: float
    height: float
    shift_mm: Point

    def point(self, x: float, y: float, z: float) -> Point:
        tx, ty, tz = self.shift_mm
        return (x * self.build + tx, y * self.build + ty, z * self.height + tz)

    def size(self, sx: float, sy: float, sz: float) -> Point:
        """Lengths along x, y, z (radii, half sizes) scaled like the frame."""
        return (sx * self.build, sy * self.build, sz * self.height)

    def z(self, z: float) -> float:
        return z * self.height + self.shift_mm[2]

    def ellipsoid(self, center: Point, radii: Point, angles_deg: Point | None = None) -> Ellipsoid:
        rotation = None if angles_deg is None else tuple(rotation_matrix(angles_deg).ravel())
        return Ellipsoid(self.point(*center), self.size(*radii), rotation)

    def capsule(self, p0: Point, p1: Point, r0: float, r1: float | None = None) -> Capsule:
        end_radius = r0 if r1 is None else r1
        return Capsule(self.point(*p0), self.point(*p1), r0 * self.build, end_radius * self.build)

    def tube(
        self,
        z: Sequence[float],
        a: Sequence[float],
        b: Sequence[float],
        cx: Sequence[float] | float = 0.0,
        cy: Sequence[float] | float = 0.0,
    ) -> EllipticTube:
        """A tube with knots at ``z``: semi-axes ``a`` (x), ``b`` (y), centre ``cx``, ``cy``."""
        n = len(z)
        cx_knots = [float(cx)] * n if isinstance(cx, float | int) else list(cx)
        cy_knots = [float(cy)] * n if isinstance(cy, float | int) else list(cy)
        tx, ty, _ = self.shift_mm
        return EllipticTube(
            tuple(self.z(v) for v in z),
            tuple(v * self.build for v in a),
            tuple(v * self.build for v in b),
            tuple(v * self.build + tx for v in cx_knots),
            tuple(v * self.build + ty for v in cy_knots),
        )

    def place(self, part: EllipsoidMM | CapsuleMM, side: int = 1) -> Ellipsoid | Capsule:
        """``part`` in world coordinates; ``side`` -1 mirrors it in x (the right-hand copy)."""
        if isinstance(part, EllipsoidMM):
            cx, cy, cz = part.center
            angles = None if part.angle_z_deg is None else (0.0, 0.0, side * part.angle_z_deg)
            return self.ellipsoid((side * cx, cy, cz), part.radii, angles)
        (x0, y0, z0), (x1, y1, z1) = part.p0, part.p1
        return self.capsule((side * x0, y0, z0), (side * x1, y1, z1), part.r0, part.r1)
