"""Reading, writing and checking PET/CT images (the only package that imports SimpleITK/nibabel).

SimpleITK, nibabel and pydicom are imported inside the functions that need them, so
importing :mod:`mefn.io` stays cheap.
"""

from mefn.io.case import Case
from mefn.io.dicom_refs import read_dicom_seg, read_reference, read_rtstruct
from mefn.io.discovery import CaseFiles, find_case_files, find_cases, load_case
from mefn.io.geometry import check_pair, reference_grid, resample_to
from mefn.io.readers import read_volume, read_volumes
from mefn.io.volume import Geometry, Volume

__all__ = [
    "Case",
    "CaseFiles",
    "Geometry",
    "Volume",
    "check_pair",
    "find_case_files",
    "find_cases",
    "load_case",
    "read_dicom_seg",
    "read_reference",
    "read_rtstruct",
    "read_volume",
    "read_volumes",
    "reference_grid",
    "resample_to",
]
