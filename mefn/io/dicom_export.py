"""DICOM outputs: the mask as a DICOM SEG, the uncertainty map as a DICOM Parametric Map.

Both objects are built with highdicom on the grid of the source CT series: one frame per CT
slice (empty SEG frames are left out), each frame referencing its CT image, in the CT's
frame of reference, study and patient. The source CT is read again, headers only, from the
files a :class:`~mefn.io.case.Case` was loaded from (``case.provenance["ct"]``).

Segments (SEG type BINARY), one per non-background label, with coded terms from the DICOM
lesion segmentation types (CID 7159), category SCT 49755003 "Morphologically Abnormal
Structure":

- ``lesion`` / ``tumour`` / ``tumor``: SCT 108369006 "Neoplasm" (AutoPET-style models);
- ``GTVp``: SCT 372087000 "Neoplasm, Primary" (HECKTOR primary tumour);
- ``GTVn``: SCT 14799000 "Neoplasm, Secondary", anatomic region SCT 59441001 "Lymph node"
  (HECKTOR lymph node metastasis);
- any other name: SCT 52988006 "Lesion", labelled with that name.

The Parametric Map stores the uncertainty u as float32 with a real world value mapping of
slope 1 (unit UCUM "1", no units) and the quantity "Evidential uncertainty" in the private
coding scheme ``99MEFN`` (DICOM has no code for it).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mefn import __version__
from mefn.errors import GeometryError, InputError
from mefn.fileutil import atomic_path
from mefn.io.case import Case
from mefn.io.discovery import CaseFiles
from mefn.io.volume import Geometry

__all__ = [
    "AlgorithmInfo",
    "SegmentCode",
    "is_dicom_ct",
    "read_source_ct",
    "require_dicom_ct",
    "segment_code",
    "write_dicom_seg",
    "write_parametric_map",
]

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 901
PM_SERIES_NUMBER = 902
PRIVATE_SCHEME = "99MEFN"

# (code value, coding scheme, meaning)
_CodeTuple = tuple[str, str, str]
_ABNORMAL: _CodeTuple = ("49755003", "SCT", "Morphologically Abnormal Structure")
_NEOPLASM: _CodeTuple = ("108369006", "SCT", "Neoplasm")
_PRIMARY: _CodeTuple = ("372087000", "SCT", "Neoplasm, Primary")
_SECONDARY: _CodeTuple = ("14799000", "SCT", "Neoplasm, Secondary")
_LYMPH_NODE: _CodeTuple = ("59441001", "SCT", "Lymph node")
_LESION: _CodeTuple = ("52988006", "SCT", "Lesion")
_NO_UNITS: _CodeTuple = ("1", "UCUM", "no units")
_UNCERTAINTY: _CodeTuple = ("uncertainty", PRIVATE_SCHEME, "Evidential uncertainty")
_ERROR_PROBABILITY: _CodeTuple = ("p_wrong", PRIVATE_SCHEME, "Probability of a wrong label")

# Type 2 attributes highdicom copies from the source: present (maybe empty) in a valid CT.
# Short String (SH, at most 16 characters) attributes highdicom copies from the CT: some
# archives (the IBSI sarcoma series among them) carry longer ones, which a validator rejects.
_SH_COPIED = ("StudyID", "AccessionNumber")
_TYPE2_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class SegmentCode:
    """The coded terms of one segment: category, type and (optionally) anatomic region."""

    category: _CodeTuple
    type: _CodeTuple
    anatomic_region: _CodeTuple | None = None


_LABEL_CODES: dict[str, SegmentCode] = {
    "lesion": SegmentCode(_ABNORMAL, _NEOPLASM),
    "tumour": SegmentCode(_ABNORMAL, _NEOPLASM),
    "tumor": SegmentCode(_ABNORMAL, _NEOPLASM),
    "gtvp": SegmentCode(_ABNORMAL, _PRIMARY),
    "gtvn": SegmentCode(_ABNORMAL, _SECONDARY, _LYMPH_NODE),
}


def segment_code(label_name: str) -> SegmentCode:
    """The coded terms for a model's label name (case-insensitive; unknown: "Lesion")."""
    return _LABEL_CODES.get(label_name.strip().lower(), SegmentCode(_ABNORMAL, _LESION))


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made the outputs: the model (weights name) and the mefn version.

    ``weights_sha256`` (when known) becomes the DeviceSerialNumber and an algorithm
    parameter, so an output can be traced to the exact weights.
    """

    model_name: str
    software_version: str = __version__
    weights_sha256: str = ""
    adapter: str | None = None

    def parameters(self) -> dict[str, str]:
        params = {"model": self.model_name}
        if self.weights_sha256:
            params["weights_sha256"] = self.weights_sha256
        if self.adapter:
            params["adapter"] = self.adapter
        return params

    @property
    def serial(self) -> str:
        return self.weights_sha256[:16] or "unknown"


# --- the source CT ----------------------------------------------------------------------------


def is_dicom_ct(files: CaseFiles) -> bool:
    """True when the case's CT is a DICOM series (a folder, a series UID or a DICOM file)."""
    from mefn.io.dicom import is_dicom_file
    from mefn.io.readers import image_suffix

    if files.is_4d:
        return False
    if files.ct_series is not None or files.ct.is_dir():
        return True
    return files.ct.is_file() and image_suffix(files.ct) is None and is_dicom_file(files.ct)


def require_dicom_ct(files: CaseFiles) -> None:
    """Raise :class:`InputError` unless the case's CT is a DICOM series (see --dicom)."""
    if not is_dicom_ct(files):
        raise InputError(
            f"DICOM outputs need a DICOM CT series as input, but case {files.case_id} has the "
            f"CT {files.ct} ({files.layout} layout); give the DICOM study folder, or drop --dicom"
        )


def read_source_ct(case: Case) -> list[Any]:
    """The CT series' datasets of a DICOM case (headers only), in the volume's slice order.

    Read again from the folder and SeriesInstanceUID recorded in ``case.provenance["ct"]``
    and checked against ``case.target_geometry``: :class:`InputError` when the CT was not
    DICOM, :class:`GeometryError` when the outputs' grid is not the CT's.
    """
    import pydicom

    from mefn.io.dicom import find_dicom_series, select_series

    ct = case.provenance.get("ct", {})
    if ct.get("format") != "DICOM" or not ct.get("source") or not ct.get("series_uid"):
        source = ct.get("source") or case.provenance.get("files", {}).get("ct", "unknown")
        raise InputError(
            f"DICOM outputs need a DICOM CT series as input, but case {case.case_id} has the "
            f"CT {source}; give the DICOM study folder, or drop --dicom"
        )
    folder = Path(ct["source"])
    series = select_series(find_dicom_series(folder), "CT", folder, uid=str(ct["series_uid"]))
    datasets = []
    for path in series.files:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises many types on a damaged file
            raise InputError(
                f"cannot read DICOM file {path} again ({type(exc).__name__}: {exc}); "
                "was the CT series changed while segmenting?"
            ) from None
    return _ordered_sources(datasets, case.target_geometry)


def _vector(ds: Any, key: str, n: int) -> np.ndarray:
    value = ds.get(key)
    if value is None or len(value) != n:
        raise InputError(
            f"source CT image {ds.get('SOPInstanceUID', '?')} lacks a valid {key}; "
            "DICOM outputs need the CT's geometry tags"
        )
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _ordered_sources(datasets: Sequence[Any], geometry: Geometry) -> list[Any]:
    """``datasets`` sorted along the slice normal, checked to lie on ``geometry``.

    Missing Type 2 patient/study attributes are added empty and over-long Short Strings are
    cut to 16 characters (highdicom copies them), on copies; a missing FrameOfReferenceUID is an :class:`InputError`.
    """
    if not datasets:
        raise InputError("no source CT images given; DICOM outputs reference the CT series")
    first = datasets[0]
    uid = str(first.get("SeriesInstanceUID", "?"))
    if not first.get("FrameOfReferenceUID"):
        raise InputError(
            f"CT series {uid} has no FrameOfReferenceUID; a DICOM SEG or Parametric Map shares "
            "the CT's frame of reference, so the CT must carry one (or drop --dicom)"
        )
    orient = _vector(first, "ImageOrientationPatient", 6)
    row, col = orient[:3] / np.linalg.norm(orient[:3]), orient[3:] / np.linalg.norm(orient[3:])
    normal = np.cross(row, col)
    ordered = sorted(
        datasets, key=lambda ds: float(_vector(ds, "ImagePositionPatient", 3) @ normal)
    )
    shape = (int(first.Columns), int(first.Rows), len(ordered))
    direction = geometry.direction_matrix
    spacing = _vector(first, "PixelSpacing", 2)  # row spacing (j), column spacing (i)
    mismatch = ""
    if tuple(geometry.shape) != shape:
        mismatch = f"shape {tuple(geometry.shape)} vs the CT's {shape}"
    elif not (
        np.allclose(direction[:, 0], row, atol=1e-4)
        and np.allclose(direction[:, 1], col, atol=1e-4)
    ):
        mismatch = "orientation differs from the CT's"
    elif not np.allclose(geometry.spacing_mm[:2], (spacing[1], spacing[0]), rtol=1e-4):
        mismatch = f"spacing {geometry.spacing_mm[:2]} mm vs the CT's {(spacing[1], spacing[0])}"
    else:
        corners = geometry.index_to_world(np.array([[0, 0, k] for k in range(shape[2])]))
        positions = np.array([_vector(ds, "ImagePositionPatient", 3) for ds in ordered])
        offset = np.abs(positions - corners)
        in_plane = float(np.max(np.abs((positions - corners) @ np.stack([row, col], axis=1))))
        along = float(np.max(np.abs((positions - corners) @ normal)))
        if in_plane > 0.01 * min(geometry.spacing_mm[:2]) or along > 0.5 * geometry.spacing_mm[2]:
            mismatch = f"slice positions are up to {float(offset.max()):.3f} mm off the CT's"
    if mismatch:
        raise GeometryError(
            f"the outputs' grid is not the grid of CT series {uid} ({mismatch}); DICOM outputs "
            "must lie on the source CT grid: pass the CT the case was segmented on"
        )
    out = []
    for ds in ordered:
        missing = [key for key in _TYPE2_COPIED if key not in ds]
        long = [key for key in _SH_COPIED if len(str(ds.get(key, ""))) > 16]
        if missing or long:
            ds = copy.deepcopy(ds)  # the caller's datasets stay as they were
            for key in missing:
                setattr(ds, key, "")
            for key in long:
                setattr(ds, key, str(ds.get(key))[:16])
        out.append(ds)
    return out


def _frames(volume: np.ndarray, geometry: Geometry, what: str) -> np.ndarray:
    """A mefn ``(i, j, k)`` array as DICOM frames ``(k, rows = j, columns = i)``."""
    if volume.shape != tuple(geometry.shape):
        raise GeometryError(
            f"the {what} has shape {volume.shape} but its grid is {tuple(geometry.shape)}; "
            "give the array on the grid it was computed on"
        )
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))


def _code(code: _CodeTuple) -> Any:
    from highdicom.sr import CodedConcept

    value, scheme, meaning = code
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _save(dataset: Any, path: str | os.PathLike[str]) -> Path:
    import pydicom

    path = Path(path)
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, dataset, enforce_file_format=True)
    return path


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(
    what: str,
    factory: Any,
    sources: Sequence[Any],
    algorithm: AlgorithmInfo,
    *,
    series_number: int,
    content_label: str,
    content: str,
    series: str,
    **kwargs: Any,
) -> Any:
    """``factory`` (a highdicom class) on ``sources`` with the series, content and device
    attributes every mefn output carries; ``content`` and ``series`` name it in the
    content and series descriptions. A failure becomes an InputError naming ``what``."""
    import highdicom as hd

    try:
        return factory(
            source_images=sources,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="mefn",
            manufacturer_model_name=_short(algorithm.model_name),
            software_versions=algorithm.software_version,
            device_serial_number=algorithm.serial,
            content_label=content_label,
            content_description=_short(f"mefn {algorithm.model_name} {content}"),
            series_description=_short(f"mefn {series} ({algorithm.model_name})"),
            **kwargs,
        )
    except (ValueError, AttributeError) as exc:
        raise InputError(
            f"cannot build a {what} on CT series {sources[0].SeriesInstanceUID} "
            f"({type(exc).__name__}: {exc}); the CT headers are incomplete"
        ) from None


# --- the objects ------------------------------------------------------------------------------


def write_dicom_seg(
    mask: np.ndarray,
    geometry: Geometry,
    source_images: Sequence[Any],
    path: str | os.PathLike[str],
    labels: Mapping[str, str],
    algorithm: AlgorithmInfo,
) -> Path:
    """Write ``mask`` (integer labels on ``geometry``, the CT's grid) as a BINARY DICOM SEG.

    ``labels`` maps each label value (``"1"``, ``"2"``...) to its name (the model card's
    labels; ``"0"`` is background and gets no segment). Every named label gets a segment,
    empty or not. ``source_images`` are the CT datasets (any order, headers suffice).
    Written atomically; returns ``path``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = _frames(np.asarray(mask), geometry, "mask")
    named: dict[int, str] = {}
    for key, name in labels.items():
        try:
            value = int(key)
        except ValueError:
            raise InputError(
                f"label {key!r} ({name}) is not an integer label value; expected labels "
                "such as {'0': 'background', '1': 'lesion'}"
            ) from None
        if value > 0:
            named[value] = str(name)
    if not named:
        raise InputError(
            f"the labels {dict(labels)} name no foreground class; expected e.g. {{'1': 'lesion'}}"
        )
    present = {int(v) for v in np.unique(frames)} - {0}
    unnamed = sorted(present - set(named))
    if unnamed or (frames < 0).any():
        found = unnamed or sorted(int(v) for v in np.unique(frames[frames < 0]))
        raise InputError(
            f"the mask holds label(s) {found} that the labels {dict(labels)} do not name; "
            "pass the labels of the model that made the mask"
        )
    sources = _ordered_sources(source_images, geometry)
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name="mefn",
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.software_version,
        source="mefn",
        parameters=algorithm.parameters(),
    )
    descriptions = []
    for number in sorted(named):
        coded = segment_code(named[number])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=_short(named[number]),
                segmented_property_category=_code(coded.category),
                segmented_property_type=_code(coded.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
                anatomic_regions=(
                    [_code(coded.anatomic_region)] if coded.anatomic_region is not None else None
                ),
            )
        )
    # A label map whose values are the segment numbers; labels without a segment number
    # in the mask simply give empty segments.
    pixel = frames.astype(np.uint8 if max(named) < 256 else np.uint16, copy=False)
    seg = _build(
        "DICOM SEG",
        hd.seg.Segmentation,
        sources,
        algorithm,
        series_number=SEG_SERIES_NUMBER,
        content_label="MEFN_MASK",
        content="tumour mask",
        series="mask",
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
    )
    return _save(seg, path)


def write_parametric_map(
    uncertainty: np.ndarray,
    geometry: Geometry,
    source_images: Sequence[Any],
    path: str | os.PathLike[str],
    algorithm: AlgorithmInfo,
    calibrated: bool = False,
) -> Path:
    """Write the voxel uncertainty (float in [0, 1] on ``geometry``, the CT's grid) as a
    float32 DICOM Parametric Map referencing ``source_images`` (the CT datasets).
    ``calibrated``: the map is the calibrated probability that the voxel's label is wrong
    (:class:`mefn.confidence.VoxelErrorMap`), not the evidential u; the value mapping says so.

    Written atomically; returns ``path``.
    """
    import highdicom as hd

    frames = _frames(np.asarray(uncertainty), geometry, "uncertainty map").astype(
        np.float32, copy=False
    )
    if not np.all(np.isfinite(frames)):
        raise InputError("the uncertainty map holds NaN or infinite values; expected u in [0, 1]")
    low, high = float(frames.min()), float(frames.max())
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"the uncertainty map spans {low:.4g}-{high:.4g}; expected u in [0, 1] "
            "(the fused opinion's uncertainty mass)"
        )
    sources = _ordered_sources(source_images, geometry)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="p_wrong" if calibrated else "u",
        lut_explanation="calibrated probability that the voxel's label is wrong"
        if calibrated
        else "evidential uncertainty u = K / S of the fused opinion",
        unit=_code(_NO_UNITS),
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=_code(_ERROR_PROBABILITY if calibrated else _UNCERTAINTY),
    )
    pm = _build(
        "DICOM Parametric Map",
        hd.pm.ParametricMap,
        sources,
        algorithm,
        series_number=PM_SERIES_NUMBER,
        content_label="MEFN_UNCERTAINTY",
        content="voxel uncertainty",
        series="uncertainty",
        pixel_array=frames,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME, name="mefn private codes"
            )
        ],
    )
    # General Series Laterality is Type 2C for a multi-frame object without Frame Anatomy:
    # the CT's, or empty (unknown).
    pm.Laterality = sources[0].get("Laterality", "")
    return _save(pm, path)
