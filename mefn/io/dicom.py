"""DICOM series: discovery in a folder, slice ordering, CT to HU and PET to SUVbw.

Tags are read with pydicom. A series is the set of files sharing a SeriesInstanceUID;
slices are sorted by their position along the slice normal (the cross product of the two
ImageOrientationPatient cosines), not by file name or InstanceNumber. The volume keeps the
exact DICOM geometry: ``direction`` columns are the row cosine (i axis), the column cosine
(j axis) and the normal (k axis), in LPS.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mefn.errors import InputError
from mefn.io.suv import (
    GE_SCAN_DATETIME,
    PHILIPS_ACTIVITY_FACTOR,
    PHILIPS_SUV_FACTOR,
    SuvConversion,
    slice_factors,
    suv_parameters,
)
from mefn.io.volume import Geometry, Volume

__all__ = [
    "DicomSeries",
    "find_dicom_series",
    "is_dicom_file",
    "read_dicom_series",
    "select_series",
    "suv_tags",
]

logger = logging.getLogger(__name__)

_SERIES_TAGS = (
    "Modality",
    "Units",
    "DecayCorrection",
    "PatientWeight",
    "PatientSize",
    "PatientSex",
    "SUVType",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "FrameReferenceTime",
    "ActualFrameDuration",
    "Manufacturer",
)
_RADIOPHARMACEUTICAL_TAGS = (
    "RadiopharmaceuticalStartDateTime",
    "RadiopharmaceuticalStartTime",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "Radiopharmaceutical",
)
_SLICE_TAGS = (
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "FrameReferenceTime",
    "ActualFrameDuration",
)
_PRIVATE = {
    GE_SCAN_DATETIME: (0x0009, 0x100D),
    PHILIPS_SUV_FACTOR: (0x7053, 0x1000),
    PHILIPS_ACTIVITY_FACTOR: (0x7053, 0x1009),
}


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder: its UID, modality and files (unsorted).

    ``corrected_image``: the values of CorrectedImage (0028,0051) of its first file, upper
    case (``("DECY", "ATTN", "SCAT")`` for a usual PET); ``None`` when the tag is absent.
    """

    uid: str
    modality: str
    files: tuple[Path, ...]
    description: str = ""
    patient_id: str = ""
    corrected_image: tuple[str, ...] | None = None

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def attenuation_corrected(self) -> bool | None:
        """True when CorrectedImage lists ATTN, False when it is there without ATTN (a
        non-attenuation-corrected image), None when the series does not say."""
        if self.corrected_image is None:
            return None
        return "ATTN" in self.corrected_image

    def describe(self) -> str:
        """``'description' UID (N files[, AC|NAC])``, for messages and logs."""
        ac = {True: ", AC", False: ", NAC", None: ""}[self.attenuation_corrected]
        return f"{self.description!r} {self.uid} ({self.n_files} files{ac})"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICM preamble or has a .dcm/.ima suffix."""
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _candidate_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            if is_dicom_file(p):
                out.append(p)
    return out


def find_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every image series under ``folder`` (recursively), grouped by SeriesInstanceUID.

    Files that are not DICOM, or DICOM objects without pixel data (RTSTRUCT, SEG...), are
    skipped. Sorted by modality then UID.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    groups: dict[str, list[Path]] = {}
    info: dict[str, tuple[str, str, str, tuple[str, ...] | None]] = {}
    for path in _candidate_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, struct.error):
            logger.debug("skipping %s: not a readable DICOM file", path)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        modality = str(ds.get("Modality", "") or "").upper()
        if not uid or "Rows" not in ds or modality in ("RTSTRUCT", "SEG", "SR", "RTPLAN"):
            continue
        groups.setdefault(uid, []).append(path)
        if uid not in info:
            info[uid] = (
                modality,
                str(ds.get("SeriesDescription", "")),
                str(ds.get("PatientID", "")),
                _corrected_image(ds),
            )
    series = [
        DicomSeries(
            uid=uid,
            modality=info[uid][0],
            files=tuple(files),
            description=info[uid][1],
            patient_id=info[uid][2],
            corrected_image=info[uid][3],
        )
        for uid, files in groups.items()
    ]
    return sorted(series, key=lambda s: (s.modality, s.uid))


def _corrected_image(ds: Any) -> tuple[str, ...] | None:
    """CorrectedImage (0028,0051), a multi-valued CS, as upper-case values; None if absent."""
    if "CorrectedImage" not in ds:
        return None
    value = ds.CorrectedImage
    items = [value] if isinstance(value, str) or value is None else list(value)
    return tuple(t for v in items if v is not None and (t := str(v).strip().upper()))


def _norm_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    m = modality.strip().upper()
    return "PT" if m in ("PET", "PT") else m


# PET standing: attenuation-corrected series first, then those that do not say, then NAC.
_STANDING = {True: 2, None: 1, False: 0}
_STANDING_WORDS = {
    True: "attenuation-corrected (CorrectedImage lists ATTN)",
    None: "without CorrectedImage",
    False: "not attenuation-corrected",
}


def select_series(
    series: Sequence[DicomSeries],
    modality: str | None,
    where: Path,
    uid: str | None = None,
    *,
    choice: str | None = None,
    option: str | None = None,
) -> DicomSeries:
    """The one series of ``modality`` (or with ``uid``); InputError when none or ambiguous.

    ``uid`` is an exact SeriesInstanceUID, of any modality. ``choice`` picks among the
    series of ``modality``: its SeriesInstanceUID or, failing that, a SeriesDescription
    that exactly one of them has (case and surrounding spaces ignored).

    Otherwise, among several series of one modality: for PET, the attenuation-corrected
    ones (CorrectedImage lists ATTN) win over those without the tag, which win over
    non-corrected ones (a NAC image is not quantitative: its SUV would be wrong); then the
    one with most files (the whole-body image, not a localiser), with a warning. Several
    left of equal standing and size: InputError listing them and naming ``option``, the
    flag that picks one (default ``--pet-series`` for PET).
    """
    if uid is not None:
        for s in series:
            if s.uid == uid:
                return s
        raise InputError(f"no DICOM series with SeriesInstanceUID {uid} under {where}")
    want = _norm_modality(modality)
    what = "PET" if want == "PT" else (want or "image")
    pool = [s for s in series if want is None or s.modality == want]
    if not pool:
        found = ", ".join(f"{s.modality} ({s.n_files} files)" for s in series) or "none"
        raise InputError(f"no {want or 'image'} DICOM series under {where}; found series: {found}")
    if choice is not None:
        return _chosen_series(pool, choice, what, where)
    if len(pool) == 1:
        return pool[0]
    if option is None and want == "PT":
        option = "--pet-series"
    preferred = ""  # why some series were set aside before the size rule
    if want == "PT":
        best = max(_STANDING[s.attenuation_corrected] for s in pool)
        top = [s for s in pool if _STANDING[s.attenuation_corrected] == best]
        if len(top) < len(pool):
            others = "; ".join(s.describe() for s in pool if s not in top)
            preferred = f"; {_STANDING_WORDS[top[0].attenuation_corrected]}, preferred to {others}"
            pool = top
    pool = sorted(pool, key=lambda s: -s.n_files)
    if len(pool) > 1 and pool[0].n_files == pool[1].n_files:
        tied = sorted(
            (s for s in pool if s.n_files == pool[0].n_files), key=lambda s: (s.description, s.uid)
        )
        alike = "size and attenuation correction" if want == "PT" else "size"
        fix = (
            f"choose one with {option} followed by its SeriesInstanceUID or SeriesDescription"
            if option is not None
            else "put each series in its own folder"
        )
        raise InputError(
            f"{where} holds {len(tied)} {what} series of equal {alike} "
            f"({'; '.join(s.describe() for s in tied)}); {fix}"
        )
    if len(pool) > 1:
        logger.warning(
            "%s holds %d %s series; using the largest, %s, over %s%s",
            where,
            len(pool),
            what,
            pool[0].describe(),
            "; ".join(s.describe() for s in pool[1:]),
            preferred,
        )
    elif preferred:
        logger.info("%s: using %s series %s%s", where, what, pool[0].describe(), preferred)
    return pool[0]


def _chosen_series(pool: Sequence[DicomSeries], choice: str, what: str, where: Path) -> DicomSeries:
    """The series of ``pool`` whose UID is ``choice``, else the one described so."""
    for s in pool:
        if s.uid == choice.strip():
            logger.info("%s: using %s %s, chosen by its UID", where, what, s.describe())
            return s
    key = choice.strip().casefold()
    named = [s for s in pool if s.description.strip().casefold() == key]
    if len(named) == 1:
        logger.info("%s: using %s %s, chosen by its description", where, what, named[0].describe())
        return named[0]
    listing = "; ".join(s.describe() for s in (named or pool))
    if named:
        raise InputError(
            f"{len(named)} {what} series under {where} are described {choice!r} ({listing}); "
            "choose one by its SeriesInstanceUID instead"
        )
    raise InputError(
        f"no {what} series under {where} has SeriesInstanceUID or SeriesDescription "
        f"{choice!r}; its {what} series are: {listing}"
    )


def _private_value(ds: Any, tag: tuple[int, int]) -> Any:
    element = ds.get(tag)
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        text = value.rstrip(b"\x00 ").decode("ascii", errors="ignore").strip()
        if text and all(c in "0123456789.+-eE" for c in text):
            return text
        if len(value) == 8 and tag != _PRIVATE[GE_SCAN_DATETIME]:
            return struct.unpack("<d", value)[0]
        return text or None
    return value


def suv_tags(ds: Any) -> dict[str, Any]:
    """The series-level tags SUV conversion needs, flattened to DICOM keywords.

    Includes the first RadiopharmaceuticalInformationSequence item and the GE/Philips
    private tags under the keys of :mod:`mefn.io.suv`.
    """
    tags: dict[str, Any] = {k: ds.get(k) for k in _SERIES_TAGS}
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    item = seq[0] if seq else {}
    for k in _RADIOPHARMACEUTICAL_TAGS:
        tags[k] = item.get(k) if item else None
    for key, tag in _PRIVATE.items():
        tags[key] = _private_value(ds, tag)
    return tags


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray
    ds: Any


def _vec(ds: Any, key: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(key)
    if value is None or len(value) != n:
        raise InputError(f"DICOM file {path} lacks a valid {key}; cannot place the slice")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _read_slices(files: Sequence[Path]) -> list[Any]:
    import pydicom

    out = []
    for path in files:
        try:
            out.append(pydicom.dcmread(path))
        except Exception as exc:  # pydicom raises many types on a damaged file
            raise InputError(
                f"cannot read DICOM file {path} ({type(exc).__name__}: {exc}); "
                "is the file complete?"
            ) from None
    return out


def _pixels(ds: Any, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # missing decoder, damaged data
        raise InputError(
            f"cannot decode the pixel data of {path} ({type(exc).__name__}: {exc}); "
            "a compressed transfer syntax may need pylibjpeg or gdcm installed"
        ) from None
    if arr.ndim != 2:
        raise InputError(
            f"DICOM file {path} holds {arr.shape} pixels; expected one 2D slice per file "
            "(multi-frame / enhanced objects are not supported: convert them first)"
        )
    return arr


def read_dicom_series(
    path: str | os.PathLike[str],
    modality: str | None = None,
    series_uid: str | None = None,
) -> Volume:
    """A CT (HU) or PET (SUVbw) volume from a DICOM series folder.

    ``modality`` (``"CT"`` or ``"PT"``) or ``series_uid`` selects the series when the folder
    holds several. PET is converted to SUVbw (:mod:`mefn.io.suv`); the conversion
    parameters go in ``Volume.meta["suv"]``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"DICOM folder {folder} does not exist; check the path")
    found = find_dicom_series(folder)
    if not found:
        raise InputError(
            f"no DICOM image series found under {folder}; expected .dcm files (or files "
            "with the DICM preamble)"
        )
    series = select_series(found, modality, folder, series_uid)
    datasets = _read_slices(series.files)
    return _assemble(series, datasets, folder)


def _placed_slices(
    series: DicomSeries, datasets: list[Any], folder: Path, orient: np.ndarray, rows: int, cols: int
) -> list[_Slice]:
    """The slices with their positions, checked for one orientation and one size."""
    slices = []
    for path, ds in zip(series.files, datasets):
        o = _vec(ds, "ImageOrientationPatient", 6, path)
        if not np.allclose(o, orient, atol=1e-4):
            raise InputError(
                f"DICOM series {series.uid} in {folder} mixes slice orientations "
                f"({orient.round(4).tolist()} vs {o.round(4).tolist()} in {path.name}); "
                "separate the series"
            )
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise InputError(
                f"DICOM series {series.uid} in {folder} mixes slice sizes "
                f"({rows}x{cols} vs {ds.Rows}x{ds.Columns} in {path.name})"
            )
        slices.append(_Slice(path, _vec(ds, "ImagePositionPatient", 3, path), ds))
    return slices


def _slice_spacing_mm(
    slices: Sequence[_Slice], heights: np.ndarray, series: DicomSeries, folder: Path
) -> float:
    """The median gap of sorted slice heights (mm); SliceThickness (or 1) for one slice."""
    if len(slices) == 1:
        return float(slices[0].ds.get("SliceThickness") or 1.0)
    gaps = np.diff(heights)
    if np.any(gaps < 1e-3):
        dup = slices[int(np.argmin(gaps)) + 1].path.name
        raise InputError(
            f"DICOM series {series.uid} in {folder} has two slices at the same position "
            f"({dup}); a multi-frame or dynamic series must be split first"
        )
    dz = float(np.median(gaps))
    deviation = float(np.max(np.abs(gaps - dz)))
    if deviation > 0.05 * dz:
        logger.warning(
            "DICOM series %s: slice spacing varies %.3f-%.3f mm; using the median %.4f mm",
            series.uid,
            gaps.min(),
            gaps.max(),
            dz,
        )
    if deviation > 0.25 * dz:
        raise InputError(
            f"DICOM series {series.uid} in {folder} has uneven slice spacing "
            f"({gaps.min():.3f}-{gaps.max():.3f} mm); a slice is missing or the series "
            "mixes acquisitions"
        )
    return dz


def _convert_to_suv(
    array: np.ndarray, first: Any, slices: Sequence[_Slice], folder: Path, meta: dict[str, Any]
) -> None:
    """Scale a PET array to SUVbw in place, series tags from ``first`` (the first file read),
    slice tags from the sorted ``slices``; the conversion parameters go into ``meta``."""
    tags = suv_tags(first)
    per_slice = [{k: s.ds.get(k) for k in _SLICE_TAGS} for s in slices]
    conversion = suv_parameters(tags, per_slice)
    factors = _slice_factors(conversion, per_slice, tags)
    array *= factors[None, None, :].astype(np.float32)
    meta["suv"] = conversion.to_json()
    if conversion.decay_correction == "NONE":  # one factor per slice
        meta["suv"]["slice_factor_range"] = [float(factors.min()), float(factors.max())]
    logger.info(
        "PET %s: %s -> SUVbw, factor %.6g (%s)",
        folder,
        conversion.units,
        conversion.factor,
        conversion.decay_correction or "no decay",
    )


def _assemble(series: DicomSeries, datasets: list[Any], folder: Path) -> Volume:
    first = datasets[0]
    first_path = series.files[0]
    orient = _vec(first, "ImageOrientationPatient", 6, first_path)
    row, col = orient[:3], orient[3:]
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    rows, cols = int(first.Rows), int(first.Columns)
    spacing_rc = _vec(first, "PixelSpacing", 2, first_path)

    slices = _placed_slices(series, datasets, folder, orient, rows, cols)
    slices.sort(key=lambda s: float(s.position @ normal))
    heights = np.array([float(s.position @ normal) for s in slices])
    dz = _slice_spacing_mm(slices, heights, series, folder)

    array = np.empty((cols, rows, len(slices)), dtype=np.float32)
    slopes = []
    for k, s in enumerate(slices):
        slope = float(s.ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(s.ds.get("RescaleIntercept", 0.0) or 0.0)
        slopes.append(slope)
        values = _pixels(s.ds, s.path).astype(np.float64) * slope + intercept
        array[:, :, k] = values.T  # pixel_array is [row (j), column (i)]

    direction = np.stack([row, col, normal], axis=1)
    geometry = Geometry(
        shape=array.shape,  # type: ignore[arg-type]
        spacing_mm=(float(spacing_rc[1]), float(spacing_rc[0]), dz),
        origin_mm=tuple(slices[0].position),  # type: ignore[arg-type]
        direction=tuple(direction.ravel()),
    )
    meta: dict[str, Any] = {
        "source": str(folder),
        "format": "DICOM",
        "series_uid": series.uid,
        "series_description": series.description,
        "n_slices": len(slices),
        "manufacturer": str(first.get("Manufacturer", "")),
        "rescale_slopes": sorted(set(slopes)),
    }
    units = {"CT": "HU", "PT": "SUVbw"}.get(series.modality or "")
    if series.modality == "PT":
        _convert_to_suv(array, first, slices, folder, meta)
    return Volume(array=array, geometry=geometry, modality=series.modality, units=units, meta=meta)


def _slice_factors(
    conversion: SuvConversion, per_slice: Sequence[Mapping[str, Any]], tags: Mapping[str, Any]
) -> np.ndarray:
    """The SUV factor of each slice (sorted): per slice only for DecayCorrection NONE."""
    return np.asarray(slice_factors(conversion, per_slice, tags), dtype=np.float64)
