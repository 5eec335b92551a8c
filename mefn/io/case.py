"""A co-registered PET/CT study as mefn sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mefn.io.volume import Geometry, Volume

__all__ = ["Case"]


@dataclass(frozen=True, eq=False)
class Case:
    """One PET/CT study: the CT (HU) and PET (SUVbw) volumes, each on its own grid.

    ``output_geometry`` is the grid results are written on: the CT grid, except for
    AutoPET-style inputs (CTres + SUV) where it is the shared PET grid.
    ``provenance`` records where each volume came from and how it was converted
    (files, layout, SUV conversion parameters) for reports.
    """

    case_id: str
    ct: Volume
    pet: Volume
    label: Volume | None = None
    layout: str = "explicit"
    output_geometry: Geometry | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def target_geometry(self) -> Geometry:
        return self.output_geometry if self.output_geometry is not None else self.ct.geometry
