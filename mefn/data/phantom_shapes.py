"""Moved to :mod:`mefn.data.phantoms.shapes`; this old path stays importable."""

from mefn.data.phantoms.shapes import (  # noqa: F401
    Array,
    Block,
    Box,
    Capsule,
    Ellipsoid,
    EllipticTube,
    Field,
    Layer,
    RibCage,
    Shape,
    SmoothField,
    Value,
    block_coords,
    grid_block,
    paint_layers,
    rotation_matrix,
    voxel_width_mm,
)
