"""Reference masks stored as DICOM: RTSTRUCT contours and DICOM SEG.

RTSTRUCT (:func:`read_rtstruct`): the closed planar contours of one ROI are rasterised onto
a reference grid (the CT the contours were drawn on). Contour points (LPS mm) become
continuous voxel indices of the grid; each contour must lie in one slice of the grid (within
:data:`SLICE_TOLERANCE_VOX`). A voxel is inside when its centre is inside: each row of voxel
centres is scanned and toggled at every polygon edge it crosses, so the contours of one slice
combine by the even-odd rule: a contour inside another of the same ROI is a hole, disjoint
contours are islands, overlapping contours cancel where they overlap (XOR). Centres exactly
on the outline: an edge counts for a row when exactly one of its end points has ``j <=`` the
row (half-open), and a crossing toggles the centres strictly right of it; so a centre on a
left or high-j edge is outside, on a right or low-j edge inside. Indices are rounded to
:data:`INDEX_DECIMALS` decimals first, so float noise does not decide those cases.
MIRP's ``poly2grid`` also ray-casts along rows and counts crossings before each centre; on
STS_004 and STS_042 of the shared data this gives MIRP's ``CT/mask.nii.gz`` voxel for voxel.

DICOM SEG (:func:`read_dicom_seg`, read with highdicom): segment numbers become label values
(BINARY and LABELMAP; FRACTIONAL segments are thresholded at 0.5; overlapping segments are an
:class:`~mefn.errors.InputError`). highdicom stacks the frames by their ImagePositionPatient;
without a reference the volume is on the SEG's own grid (the span of its frames, slices
without a frame empty). With a reference, the SEG's voxels are placed onto the reference's
voxels (axes may be permuted or flipped, the SEG may cover part of the grid): spacing and
orientation must agree and every SEG voxel must sit on a reference voxel (within
:data:`PLACE_TOLERANCE_VOX`), else :class:`~mefn.errors.GeometryError`, or with
``resample=True`` a nearest-neighbour resampling onto the reference.

:func:`read_reference` dispatches on the file: an image file (NIfTI, MHA, NRRD) is read as it
is, a DICOM file by its Modality (SEG or RTSTRUCT).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mefn.errors import GeometryError, InputError
from mefn.io.volume import Geometry, Volume

__all__ = [
    "INDEX_DECIMALS",
    "PLACE_TOLERANCE_VOX",
    "SLICE_TOLERANCE_VOX",
    "RoiContours",
    "dicom_modality",
    "is_dicom_reference",
    "rasterise_contours",
    "read_dicom_seg",
    "read_reference",
    "read_rtstruct",
    "rtstruct_roi_names",
]

logger = logging.getLogger(__name__)

# How far (in voxels along k) a contour may lie from the nearest slice centre of the grid.
SLICE_TOLERANCE_VOX = 0.25
# Continuous voxel indices are rounded to this many decimals before filling (as MIRP does).
INDEX_DECIMALS = 5
# How far (in voxels) a SEG voxel may sit from a reference voxel and still be placed on it.
PLACE_TOLERANCE_VOX = 0.05
_FRACTIONAL_THRESHOLD = 0.5


def _geometry(reference: Volume | Geometry) -> Geometry:
    return reference.geometry if isinstance(reference, Volume) else reference


# --- polygon fill ---------------------------------------------------------------------------


def _fill_slice(polygons: Sequence[np.ndarray], nx: int, ny: int) -> np.ndarray:
    """Even-odd fill of closed polygons given in continuous (i, j) indices, shape (nx, ny).

    Voxel (i, j) is inside when an odd number of polygon edges cross the row ``j`` at
    ``x < i``. An edge counts for row ``j`` when exactly one of its end points has ``y <= j``
    (half-open), so a vertex on a row is counted once.
    """
    starts = np.concatenate([p for p in polygons], axis=0)
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons], axis=0)
    out = np.zeros((ny, nx + 1), dtype=np.int64)
    rows = np.arange(ny, dtype=np.float64)
    y0, y1 = starts[:, 1][:, None], ends[:, 1][:, None]
    x0, x1 = starts[:, 0][:, None], ends[:, 0][:, None]
    crosses = (y0 <= rows[None, :]) != (y1 <= rows[None, :])  # (edges, rows)
    edge, row = np.nonzero(crosses)
    if edge.size == 0:
        return np.zeros((nx, ny), dtype=bool)
    ya, yb = y0[edge, 0], y1[edge, 0]
    xa, xb = x0[edge, 0], x1[edge, 0]
    x_cross = xa + (rows[row] - ya) * (xb - xa) / (yb - ya)
    # the first voxel centre strictly right of the crossing; crossings right of the grid drop
    first = np.clip(np.floor(x_cross).astype(np.int64) + 1, 0, nx)
    np.add.at(out, (row, first), 1)
    inside = (np.cumsum(out[:, :nx], axis=1) % 2).astype(bool)
    return inside.T


def rasterise_contours(contours: Sequence[np.ndarray], geometry: Geometry) -> np.ndarray:
    """A boolean mask on ``geometry`` of closed planar contours given in LPS mm.

    Each contour is an (N, 3) array of points (N >= 3). The contours of one slice combine by
    the even-odd rule (holes, islands). Raises :class:`GeometryError` when a contour is not in
    one slice of the grid (its plane is oblique to the slices, or between two slices).
    Contours wholly outside the grid are left out (logged); parts outside are clipped.
    """
    nx, ny, nz = geometry.shape
    by_slice: dict[int, list[np.ndarray]] = {}
    outside = 0
    for n, points in enumerate(contours):
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 3:
            raise InputError(
                f"contour {n} has shape {pts.shape}; expected (N, 3) LPS points with N >= 3"
            )
        index = np.round(geometry.world_to_index(pts), INDEX_DECIMALS)
        k_values = index[:, 2]
        k = int(np.rint(np.median(k_values)))
        if np.max(np.abs(k_values - k)) > SLICE_TOLERANCE_VOX:
            spread = float(np.ptp(k_values))
            raise GeometryError(
                f"contour {n} does not lie in one slice of the reference grid: its points span "
                f"{spread:.2f} slices and sit up to {np.max(np.abs(k_values - k)):.2f} slices from "
                f"slice {k}; rasterise onto the image the contours were drawn on"
            )
        if k < 0 or k >= nz:
            outside += 1
            continue
        by_slice.setdefault(k, []).append(index[:, :2])
    if outside:
        logger.info("%d of %d contours lie outside the reference grid", outside, len(contours))
    mask = np.zeros((nx, ny, nz), dtype=bool)
    for k, polygons in by_slice.items():
        mask[:, :, k] = _fill_slice(polygons, nx, ny)
    return mask


# --- RTSTRUCT -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoiContours:
    """The closed planar contours (LPS mm) of one RTSTRUCT ROI."""

    number: int
    name: str
    contours: tuple[np.ndarray, ...]


def _dcmread(path: Path, what: str, stop_before_pixels: bool = True) -> Any:
    import pydicom

    if not path.is_file():
        raise InputError(f"{what} {path} does not exist; check the path")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many types for a bad file
        raise InputError(
            f"cannot read {what} {path} as DICOM ({type(exc).__name__}: {exc}); "
            "check the file is complete"
        ) from None


def _read_of_modality(path: Path, what: str, modality: str, expected: str) -> Any:
    """The DICOM file ``path`` (header only), which must be of ``modality``."""
    ds = _dcmread(path, what)
    found = str(ds.get("Modality", "") or "").upper()
    if found != modality:
        raise InputError(
            f"{path} is a DICOM {found or 'object without Modality'}, expected {expected}"
        )
    return ds


def _rtstruct_dataset(path: Path) -> Any:
    return _read_of_modality(path, "RTSTRUCT", "RTSTRUCT", "an RTSTRUCT")


def _roi_names(ds: Any) -> dict[int, str]:
    return {
        int(item.ROINumber): str(item.get("ROIName", "") or f"ROI {item.ROINumber}")
        for item in ds.get("StructureSetROISequence", [])
    }


def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """The ROI names of an RTSTRUCT file, in file order."""
    return list(_roi_names(_rtstruct_dataset(Path(path))).values())


def _select_roi(names: dict[int, str], roi: str | None, path: Path) -> int:
    listing = ", ".join(repr(n) for n in names.values()) or "none"
    if not names:
        raise InputError(f"{path} holds no ROI (empty StructureSetROISequence)")
    if roi is None:
        if len(names) == 1:
            return next(iter(names))
        raise InputError(
            f"{path} holds {len(names)} ROIs ({listing}); choose one by name "
            "(roi= in mefn.io.read_reference / read_rtstruct, --reference-roi in mefn evaluate)"
        )
    exact = [number for number, name in names.items() if name == roi]
    if not exact:
        exact = [number for number, name in names.items() if name.lower() == roi.lower()]
    if not exact:
        raise InputError(f"{path} holds no ROI named {roi!r}; its ROIs are {listing}")
    if len(exact) > 1:
        raise InputError(f"{path} holds {len(exact)} ROIs named {roi!r}; keep one")
    return exact[0]


def read_roi_contours(path: str | os.PathLike[str], roi: str | None = None) -> RoiContours:
    """The closed planar contours of one ROI (by name; without a name, the only ROI)."""
    path = Path(path)
    ds = _rtstruct_dataset(path)
    names = _roi_names(ds)
    number = _select_roi(names, roi, path)
    contours: list[np.ndarray] = []
    skipped = 0
    for item in ds.get("ROIContourSequence", []):
        if int(item.get("ReferencedROINumber", -1)) != number:
            continue
        for contour in item.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "") or "").upper()
            data = contour.get("ContourData")
            if kind != "CLOSED_PLANAR" or data is None:
                skipped += 1
                continue
            points = np.asarray([float(v) for v in data], dtype=np.float64)
            if points.size % 3 != 0 or points.size < 9:
                raise InputError(
                    f"{path}: a contour of ROI {names[number]!r} holds {points.size} "
                    "coordinates; expected 3 per point and at least 3 points"
                )
            contours.append(points.reshape(-1, 3))
    if skipped:
        logger.info("%s: %d non-closed contours of %r skipped", path, skipped, names[number])
    if not contours:
        raise InputError(
            f"{path}: ROI {names[number]!r} has no closed planar contour to rasterise"
            + (f" ({skipped} open or point contours)" if skipped else "")
            + "; choose another ROI"
        )
    return RoiContours(number=number, name=names[number], contours=tuple(contours))


def read_rtstruct(
    path: str | os.PathLike[str], reference: Volume | Geometry, roi: str | None = None
) -> Volume:
    """One ROI of an RTSTRUCT rasterised onto ``reference``'s grid (uint8, 1 inside).

    ``roi`` names the ROI (exact name, else case-insensitive); without it the file must hold
    a single ROI, else :class:`InputError` lists the names. See the module text for the
    filling rule.
    """
    path = Path(path)
    geometry = _geometry(reference)
    found = read_roi_contours(path, roi)
    mask = rasterise_contours(found.contours, geometry)
    if not mask.any():
        lo, hi = geometry.extent_mm()
        raise GeometryError(
            f"ROI {found.name!r} of {path} does not cover any voxel centre of the reference "
            f"grid (z {lo[2]:.1f} to {hi[2]:.1f} mm); is it the image the contours were drawn on?"
        )
    return Volume(
        array=mask.astype(np.uint8),
        geometry=geometry,
        modality="SEG",
        units="label",
        meta={"source": str(path), "format": "RTSTRUCT", "roi": found.name},
    )


# --- DICOM SEG ------------------------------------------------------------------------------


def _seg_read(path: Path) -> Any:
    import highdicom as hd

    _read_of_modality(path, "DICOM SEG", "SEG", "a SEG")
    try:
        return hd.seg.segread(path)
    except Exception as exc:  # highdicom raises ValueError, AttributeError... on bad files
        raise InputError(
            f"cannot read {path} as a DICOM SEG ({type(exc).__name__}: {exc}); "
            "check the file is a valid Segmentation object"
        ) from None


def _seg_labels(seg: Any, path: Path) -> Any:
    """A highdicom Volume of label values (segment numbers) with axes (slice, row, column)."""
    seg_type = str(getattr(seg.segmentation_type, "value", seg.segmentation_type)).upper()
    numbers = list(seg.segment_numbers)
    if not numbers:
        raise InputError(f"{path} holds no segment")
    try:
        if seg_type == "FRACTIONAL":
            stacked = seg.get_volume(rescale_fractional=True)
            binary = stacked.array >= _FRACTIONAL_THRESHOLD
            labels = np.zeros(binary.shape[:3], dtype=np.uint16)
            for channel, number in enumerate(numbers):
                on = binary[..., channel]
                if np.any(on & (labels > 0)):
                    raise InputError(
                        f"{path}: segment {number} overlaps another segment (fractional >= "
                        f"{_FRACTIONAL_THRESHOLD}); a label map needs disjoint segments"
                    )
                labels[on] = number
            return stacked.with_array(labels, channels=None)
        return seg.get_volume(combine_segments=True, relabel=False)
    except InputError:
        raise
    except RuntimeError as exc:
        if "overlap" in str(exc).lower():
            raise InputError(
                f"{path}: its segments overlap; a label map needs disjoint segments "
                "(split the SEG, or read it with highdicom segment by segment)"
            ) from None
        raise InputError(f"cannot build a volume from {path} ({exc})") from None
    except ValueError as exc:
        raise InputError(
            f"cannot build a volume from {path} ({exc}); expected frames forming a regular 3D stack"
        ) from None


def _seg_volume(hd_volume: Any, path: Path) -> Volume:
    """A highdicom Volume (axes slice, row, column) as a mefn Volume (axes i=column, j=row, k)."""
    affine = np.asarray(hd_volume.affine, dtype=np.float64)
    # highdicom's affine maps (slice, row, column) indices to LPS; mefn's i is the column
    # index (along the row cosine), j the row index, k the slice
    lps = np.eye(4)
    lps[:3, :3] = affine[:3, [2, 1, 0]]
    lps[:3, 3] = affine[:3, 3]
    array = np.transpose(np.asarray(hd_volume.array), (2, 1, 0))
    if np.linalg.det(lps[:3, :3]) < 0:
        # highdicom may stack the slices against the normal (row x column cosines); flip k
        # so the SEG's own grid is oriented as mefn reads the DICOM series it was drawn on
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (array.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
        array = array[:, :, ::-1]
    array = np.ascontiguousarray(array)
    geometry = Geometry.from_affine_lps(lps, tuple(array.shape))  # type: ignore[arg-type]
    dtype = np.uint8 if array.size == 0 or int(array.max()) <= 255 else np.uint16
    return Volume(
        array=array.astype(dtype),
        geometry=geometry,
        modality="SEG",
        units="label",
        meta={"source": str(path), "format": "DICOM SEG"},
    )


def _place_on(volume: Volume, target: Geometry, path: Path) -> Volume | None:
    """``volume`` pasted onto ``target`` when its voxels coincide with target voxels, else None.

    Axes may be flipped or permuted between the two grids; spacing must agree per axis, to
    within :data:`PLACE_TOLERANCE_VOX` at the far corner.
    """
    src = volume.geometry
    src_axes = src.direction_matrix * np.asarray(src.spacing_mm)[None, :]
    tgt_axes = target.direction_matrix * np.asarray(target.spacing_mm)[None, :]
    # target index steps per source index step: must be a signed permutation matrix
    steps = np.linalg.solve(tgt_axes, src_axes)
    rounded = np.rint(steps)
    if not (np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)):
        return None
    far = np.abs(steps - rounded) @ (np.asarray(src.shape, dtype=np.float64) - 1.0)
    start = target.world_to_index(src.origin_mm)
    if np.any(far > PLACE_TOLERANCE_VOX) or np.any(
        np.abs(start - np.rint(start)) > PLACE_TOLERANCE_VOX
    ):
        return None
    source_axis = [int(np.flatnonzero(rounded[t])[0]) for t in range(3)]
    sign = [int(rounded[t, source_axis[t]]) for t in range(3)]
    array = np.transpose(volume.array, source_axis)
    offset = np.rint(start).astype(int)
    for t in range(3):
        if sign[t] < 0:
            array = np.flip(array, axis=t)
            offset[t] -= array.shape[t] - 1
    out = np.zeros(target.shape, dtype=volume.array.dtype)
    dst, cut = [], []
    for t in range(3):
        lo, hi = max(offset[t], 0), min(offset[t] + array.shape[t], target.shape[t])
        if hi <= lo:
            lo = hi = 0
        dst.append(slice(lo, hi))
        cut.append(slice(lo - offset[t], hi - offset[t]) if hi > lo else slice(0, 0))
    out[tuple(dst)] = array[tuple(cut)]
    lost = int(np.count_nonzero(volume.array)) - int(np.count_nonzero(out))
    if lost:
        logger.warning("%s: %d labelled voxels lie outside the reference grid", path, lost)
    return volume.with_array(out, geometry=target)


def read_dicom_seg(
    path: str | os.PathLike[str],
    reference: Volume | Geometry | None = None,
    resample: bool = False,
) -> Volume:
    """A DICOM SEG as a label volume: segment numbers become voxel values (uint8/uint16).

    Without ``reference``: on the SEG's own grid. With it: placed onto the reference grid
    frame by frame; a SEG whose voxels do not coincide with the reference's raises
    :class:`GeometryError`, unless ``resample=True`` (nearest neighbour).
    """
    path = Path(path)
    seg = _seg_read(path)
    volume = _seg_volume(_seg_labels(seg, path), path)
    if reference is None:
        return volume
    target = _geometry(reference)
    placed = _place_on(volume, target, path)
    if placed is not None:
        return placed
    if resample:
        from mefn.io.geometry import resample_to

        return resample_to(volume, target, interpolation="nearest")
    g = volume.geometry
    raise GeometryError(
        f"DICOM SEG {path} is on another grid than the reference (SEG spacing "
        f"{tuple(round(s, 4) for s in g.spacing_mm)} mm, origin "
        f"{tuple(round(o, 2) for o in g.origin_mm)} mm; reference spacing "
        f"{tuple(round(s, 4) for s in target.spacing_mm)} mm, origin "
        f"{tuple(round(o, 2) for o in target.origin_mm)} mm); give the image it was drawn on, "
        "or resample=True to resample it nearest-neighbour"
    )


# --- dispatch -------------------------------------------------------------------------------


def dicom_modality(path: str | os.PathLike[str]) -> str:
    """The Modality tag of a DICOM file (upper case; empty when absent)."""
    ds = _dcmread(Path(path), "DICOM file")
    return str(ds.get("Modality", "") or "").upper()


def is_dicom_reference(path: str | os.PathLike[str]) -> bool:
    """True for a file without an image suffix that looks like DICOM (.dcm or DICM preamble)."""
    from mefn.io.dicom import is_dicom_file
    from mefn.io.readers import image_suffix

    p = Path(path)
    return p.is_file() and image_suffix(p) is None and is_dicom_file(p)


def read_reference(
    path: str | os.PathLike[str],
    reference: Volume | Geometry | None = None,
    roi: str | None = None,
) -> Volume:
    """A reference mask from an image file, a DICOM SEG or an RTSTRUCT.

    NIfTI / MHA / NRRD are read as they are (their own grid; ``reference`` is not used).
    A DICOM file is read by its Modality: SEG with :func:`read_dicom_seg` (placed onto
    ``reference`` when given), RTSTRUCT with :func:`read_rtstruct` (``reference`` required:
    the grid to rasterise onto; ``roi`` picks the ROI).
    """
    from mefn.io.readers import IMAGE_SUFFIXES, image_suffix, read_volume

    p = Path(path)
    if not p.exists():
        raise InputError(f"reference {p} does not exist; check the path")
    if image_suffix(p) is not None or p.is_dir():
        return read_volume(p, modality="SEG")
    if not is_dicom_reference(p):
        raise InputError(
            f"{p} is not a reference mask: expected an image ({', '.join(IMAGE_SUFFIXES)}) "
            "or a DICOM SEG / RTSTRUCT file"
        )
    modality = dicom_modality(p)
    if modality == "SEG":
        return read_dicom_seg(p, reference)
    if modality == "RTSTRUCT":
        if reference is None:
            raise InputError(
                f"{p} is an RTSTRUCT: contours need a grid to be rasterised onto; "
                "pass reference= (the CT, or the prediction's grid)"
            )
        return read_rtstruct(p, reference, roi=roi)
    raise InputError(
        f"{p} is a DICOM {modality or 'object without Modality'}; a reference mask must be "
        "a SEG or an RTSTRUCT (or an image file)"
    )
