"""Moved to :mod:`mefn.data.phantoms.anatomy` (and its sections); this old path stays
importable."""

from mefn.data.phantoms.anatomy import Anatomy, build_anatomy  # noqa: F401
from mefn.data.phantoms.frame import Point  # noqa: F401
from mefn.data.phantoms.sites import Site  # noqa: F401
from mefn.data.phantoms.tissues import CONTRAST_HU, TISSUE_RANGES, WIDEN  # noqa: F401
