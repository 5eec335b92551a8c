"""Reading, writing and checking PET/CT images (the only package that imports SimpleITK/nibabel)."""

from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume

__all__ = ["Case", "Geometry", "Volume"]
