"""Test helpers: hand-made RTSTRUCT files and highdicom SEGs on tiny synthetic CT series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from support import new_dataset, write_series

from mefn.io.volume import Geometry

# Tags highdicom needs on its source images, beyond those write_series sets.
SOURCE_TAGS: dict[str, Any] = {
    "PatientName": "Tiny^Test",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20240301",
    "StudyTime": "100000",
    "AccessionNumber": "A1",
    "ReferringPhysicianName": "",
    "StudyID": "1",
    "SeriesNumber": 1,
}


def square(lo: tuple[float, float], hi: tuple[float, float], k: float) -> np.ndarray:
    """The corners of an axis-aligned rectangle in continuous (i, j) indices on slice k."""
    (i0, j0), (i1, j1) = lo, hi
    return np.array([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k]], dtype=np.float64)


def to_world(geometry: Geometry, index_points: np.ndarray) -> np.ndarray:
    return geometry.index_to_world(index_points)


def write_rtstruct(
    path: Path,
    rois: dict[str, Sequence[np.ndarray]],
    kinds: dict[str, str] | None = None,
    modality: str = "RTSTRUCT",
) -> Path:
    """An RTSTRUCT holding, per ROI name, contours given as (N, 3) LPS points."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import generate_uid

    ds = new_dataset("1.2.840.10008.5.1.4.1.1.481.3")
    ds.Modality = modality
    ds.PatientID = "P1"
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    frame = generate_uid()
    roi_items, contour_items = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = frame
        roi_items.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        sequence = []
        for points in contours:
            c = Dataset()
            c.ContourGeometricType = (kinds or {}).get(name, "CLOSED_PLANAR")
            c.NumberOfContourPoints = len(points)
            c.ContourData = [f"{v:.6f}" for v in np.asarray(points).ravel()]
            sequence.append(c)
        item.ContourSequence = DicomSequence(sequence)
        contour_items.append(item)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, shape: tuple[int, int, int] = (9, 8, 7), **kwargs: Any) -> Path:
    """A tiny oblique CT series (HU-like values) that highdicom accepts as source images."""
    from pydicom.uid import generate_uid

    stored = np.random.default_rng(3).integers(-1000, 200, shape).astype(np.int16)
    tags = dict(SOURCE_TAGS, FrameOfReferenceUID=generate_uid())
    return write_series(folder, stored, "CT", tags=tags, **kwargs)


def write_seg(
    path: Path,
    series: Path,
    labels: np.ndarray,
    segment_type: str = "BINARY",
    overlap: np.ndarray | None = None,
) -> Path:
    """A highdicom SEG of ``labels[i, j, k]`` (values 1..n = segments) on a written series.

    ``overlap``: an extra mask added to segment 1 (overlapping the others where they are).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    row = np.asarray(sources[0].ImageOrientationPatient[:3], dtype=np.float64)
    col = np.asarray(sources[0].ImageOrientationPatient[3:], dtype=np.float64)
    normal = np.cross(row, col)
    sources.sort(key=lambda d: float(normal @ np.asarray(d.ImagePositionPatient, np.float64)))
    numbers = [int(n) for n in np.unique(labels) if n > 0]
    frames = np.transpose(labels, (2, 1, 0))  # (slices, rows = j, columns = i)
    stacked = np.stack([frames == n for n in numbers], axis=-1).astype(np.uint8)
    if overlap is not None:
        stacked[..., 0] |= np.transpose(overlap, (2, 1, 0)).astype(np.uint8)
    if segment_type == "FRACTIONAL":
        pixels: np.ndarray = stacked.astype(np.float32) * 0.8
    else:
        pixels = stacked
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"lesion {n}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in numbers
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=segment_type,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mefn tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(path)
    return path
