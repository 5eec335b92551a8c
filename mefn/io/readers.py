"""Reading one image file (NIfTI, MetaImage, NRRD) or a DICOM series folder into a Volume.

SimpleITK reads the files, so the geometry (direction cosines included: flipped and oblique
axes) comes through exactly. Before trusting SimpleITK we check what it does not:
a gzip stream that ends early (SimpleITK 2.5.7 zero-fills a truncated ``.nii.gz``), a
NIfTI whose data is shorter than its header promises, and a file that is not an image at all.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mefn.errors import InputError
from mefn.io.volume import Geometry, Volume

__all__ = [
    "IMAGE_SUFFIXES",
    "image_suffix",
    "image_stem",
    "is_image_file",
    "read_image_info",
    "read_volume",
    "read_volumes",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

_NIFTI_DTYPE_BYTES = {
    2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4,
    1024: 8, 1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4,
}  # fmt: skip


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The image suffix of ``path`` (``.nii.gz``, ``.mha``...), or None."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return image_suffix(path) is not None


def image_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its image suffix (``case_0000.nii.gz`` -> ``case_0000``)."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: -len(suffix)] if suffix else Path(name).stem


def _normalise_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    m = modality.strip().upper()
    if m in ("PET", "PT"):
        return "PT"
    if m in ("CT", "SEG"):
        return m
    raise InputError(f"modality must be CT, PT (PET) or SEG, found {modality!r}")


# --- checks SimpleITK does not make ---------------------------------------------------------


def _decompressed_head_and_size(path: Path) -> tuple[bytes, int]:
    """First 544 bytes and total size of a gzip file's content, reading it to its end."""
    head = b""
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 22)
                if not chunk:
                    break
                if len(head) < 544:
                    head += chunk[: 544 - len(head)]
                total += len(chunk)
    except gzip.BadGzipFile:
        raise InputError(
            f"{path} is not gzip-compressed although its name ends in .gz; it may be a text "
            "or HTML page saved under the wrong name: download or export the image again"
        ) from None
    except (EOFError, zlib.error, OSError) as exc:
        raise InputError(
            f"{path} is truncated or corrupt (the gzip stream ends early: {exc}); "
            "copy or download the file again"
        ) from None
    return head, total


def _nifti_needed_bytes(head: bytes, path: Path) -> int:
    """Bytes a NIfTI-1/2 file needs (vox_offset + data) from its header; InputError if none."""
    if len(head) < 348:
        raise InputError(
            f"{path} is too short to be a NIfTI image ({len(head)} bytes); "
            "the file is empty or truncated: copy it again"
        )
    for endian in ("<", ">"):
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "hh", head[70:74])
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            dims = struct.unpack(endian + "8q", head[16:80])
            datatype, bitpix = struct.unpack(endian + "hh", head[12:16])
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        raise InputError(
            f"{path} is not a NIfTI image (no valid header: sizeof_hdr is neither 348 nor 540); "
            "is it a text file or another format under a .nii name?"
        )
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: NIfTI header gives {ndim} dimensions; the file is corrupt")
    n = 1
    for d in dims[1 : ndim + 1]:
        n *= max(int(d), 1)
    nbytes = _NIFTI_DTYPE_BYTES.get(int(datatype), max(int(bitpix), 8) // 8)
    return int(vox_offset) + n * nbytes


def check_file_complete(path: str | os.PathLike[str]) -> None:
    """Raise InputError when a NIfTI (or any ``.gz``) file is truncated or not what it claims.

    A ``.gz`` file is decompressed to its end; a NIfTI's size is compared with what its
    header needs.
    """
    path = Path(path)
    suffix = image_suffix(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        head, size = _decompressed_head_and_size(path)
    elif suffix == ".nii":
        with open(path, "rb") as fh:
            head = fh.read(544)
        size = path.stat().st_size
    else:
        return
    if suffix in (".nii.gz", ".nii"):
        needed = _nifti_needed_bytes(head, path)
        if size < needed:
            raise InputError(
                f"{path} is truncated: its header needs {needed} bytes of image data, the "
                f"file holds {size}; copy or download it again"
            )


# --- reading --------------------------------------------------------------------------------


def _sitk_read(path: Path) -> Any:
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else "unknown reason"
        raise InputError(
            f"cannot read {path} as an image ({reason}); expected NIfTI, MetaImage, NRRD or a "
            "DICOM folder: check the file is complete and of that format"
        ) from None


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); copy or download it again")


def _geometry_from_sitk_nd(image: Any, path: Path) -> Geometry:
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    return Geometry(
        shape=tuple(image.GetSize()[:3]),  # type: ignore[arg-type]
        spacing_mm=tuple(image.GetSpacing()[:3]),  # type: ignore[arg-type]
        origin_mm=tuple(image.GetOrigin()[:3]),  # type: ignore[arg-type]
        direction=tuple(direction.ravel()),
    )


def _finite(array: np.ndarray, path: Path, what: str = "") -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise InputError(
                f"{path}{what} holds {int(bad.sum())} non-finite values (NaN or infinity) of "
                f"{array.size}; replace them (e.g. with 0) before use"
            )


def _to_volumes(image: Any, path: Path) -> list[Volume]:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path} holds {image.GetNumberOfComponentsPerPixel()}-component (vector/RGB) "
            "pixels; expected a scalar image"
        )
    dim = image.GetDimension()
    if dim < 3:
        raise InputError(
            f"expected a 3D image in {path}, found {dim}D of size {tuple(image.GetSize())}; "
            "give a volume, not a single slice"
        )
    if dim > 4:
        raise InputError(f"expected a 3D image in {path}, found {dim}D")
    geometry = _geometry_from_sitk_nd(image, path)
    array = sitk.GetArrayFromImage(image)  # [t, k, j, i] or [k, j, i]
    if dim == 3:
        arrays = [array]
    else:
        arrays = [array[t] for t in range(array.shape[0])]
    out = []
    for t, a in enumerate(arrays):
        vol_array = np.ascontiguousarray(a.transpose(2, 1, 0))
        _finite(vol_array, path, f" (volume {t})" if dim == 4 else "")
        out.append(Volume(array=vol_array, geometry=geometry))
    return out


def _nifti_array(image: Any) -> np.ndarray:
    """The stored voxels, scaled by scl_slope/inter when the header asks for it.

    Unscaled data keep their dtype (labels stay integers); scaled integers become float32
    (not nibabel's float64, which would double the memory of a large CT).
    """
    proxy = image.dataobj
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if slope == 1.0 and inter == 0.0:
        return np.asanyarray(proxy)
    disk = np.dtype(image.get_data_dtype())
    out_dtype = np.float64 if disk == np.float64 else np.float32
    return np.asarray(image.get_fdata(dtype=out_dtype, caching="unchanged"))


def _read_nifti(path: Path) -> list[Volume]:
    """NIfTI: geometry from SimpleITK's header reader, voxels from nibabel.

    SimpleITK 2.5.7 reads NaN voxels of a NIfTI file as 0, which would hide them from the
    non-finite check; nibabel returns them as they are stored (scl_slope/inter applied).
    """
    import nibabel as nib
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        image = nib.load(str(path))
        data = _nifti_array(image)
    except Exception as exc:  # ITK RuntimeError, nibabel ImageFileError, zlib/EOF errors
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(
            f"cannot read {path} as a NIfTI image ({lines[-1] if lines else type(exc).__name__}); "
            "check the file is complete: copy or download it again"
        ) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3:
        raise InputError(
            f"expected a 3D image in {path}, found {data.ndim}D of size {tuple(data.shape)}; "
            "give a volume, not a single slice"
        )
    if data.ndim > 4:
        raise InputError(f"expected a 3D image in {path}, found {data.ndim}D {tuple(data.shape)}")
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise InputError(f"{path} holds {data.dtype} pixels; expected a scalar real image")
    dim = reader.GetDimension()
    if dim < 3:
        raise InputError(f"expected a 3D image in {path}, found {dim}D")
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    geometry = Geometry(
        shape=tuple(data.shape[:3]),  # type: ignore[arg-type]
        spacing_mm=tuple(reader.GetSpacing()[:3]),  # type: ignore[arg-type]
        origin_mm=tuple(reader.GetOrigin()[:3]),  # type: ignore[arg-type]
        direction=tuple(direction.ravel()),
    )
    if tuple(reader.GetSize()[:3]) != geometry.shape:
        raise InputError(
            f"{path}: header size {tuple(reader.GetSize())} disagrees with the data "
            f"{tuple(data.shape)}; the file is corrupt"
        )
    arrays = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    out = []
    for t, a in enumerate(arrays):
        array = np.ascontiguousarray(a)
        _finite(array, path, f" (volume {t})" if data.ndim == 4 else "")
        out.append(Volume(array=array, geometry=geometry))
    return out


def read_volumes(path: str | os.PathLike[str]) -> list[Volume]:
    """Every 3D volume of an image file: one for a 3D image, N for a 4D image of N volumes."""
    path = Path(path)
    _check_path(path)
    if image_suffix(path) is None:
        raise InputError(
            f"{path} has no image suffix; expected one of {', '.join(IMAGE_SUFFIXES)} "
            "or a DICOM folder"
        )
    check_file_complete(path)
    if image_suffix(path) in (".nii", ".nii.gz"):
        volumes = _read_nifti(path)
    else:
        volumes = _to_volumes(_sitk_read(path), path)
    meta = {"source": str(path), "format": image_suffix(path)}
    return [v.with_array(v.array, meta=dict(meta, volume=i)) for i, v in enumerate(volumes)]


def read_image_info(path: str | os.PathLike[str]) -> tuple[int, tuple[int, ...]]:
    """Dimension and size of an image file from its header only (fast, no pixel data)."""
    import SimpleITK as sitk

    path = Path(path)
    _check_path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(
            f"cannot read the header of {path} ({lines[-1] if lines else 'unknown reason'}); "
            "expected NIfTI, MetaImage or NRRD"
        ) from None
    return reader.GetDimension(), tuple(int(s) for s in reader.GetSize())


def read_volume(path: str | os.PathLike[str], modality: str | None = None) -> Volume:
    """A 3D volume from NIfTI (.nii, .nii.gz), MetaImage (.mha/.mhd), NRRD (.nrrd/.nhdr) or
    a DICOM series folder (or one file of it).

    ``modality`` (``"CT"``, ``"PT"``, ``"SEG"``) sets the volume's modality; it also picks
    the series in a DICOM folder holding several. DICOM CT comes back in HU and PET in SUVbw;
    for other formats the units are what the file holds (``units`` stays None except for
    SEG: ``"label"``). A 4D file of one volume is read as 3D; a 4D file of several volumes
    raises (use :func:`read_volumes` or :func:`mefn.io.discovery.load_case`).
    """
    path = Path(path)
    modality = _normalise_modality(modality)
    _check_path(path)
    if path.is_dir() or (path.is_file() and image_suffix(path) is None and _is_dicom(path)):
        from mefn.io.dicom import read_dicom_series

        if path.is_dir():
            vol = read_dicom_series(path, modality=None if modality == "SEG" else modality)
        else:
            vol = _read_dicom_file_series(path, modality)
        _finite(vol.array, path)
        if modality is not None and vol.modality != modality:
            raise InputError(f"{path} holds a {vol.modality} series, expected {modality}")
        return vol
    volumes = read_volumes(path)
    if len(volumes) != 1:
        raise InputError(
            f"{path} is 4D with {len(volumes)} volumes; expected one 3D image. A CT+PET 4D "
            "NIfTI (volume 0 CT, volume 1 PET) is read as a case: mefn.io.discovery.load_case"
        )
    units = "label" if modality == "SEG" else None
    return volumes[0].with_array(volumes[0].array, modality=modality, units=units)


def _is_dicom(path: Path) -> bool:
    from mefn.io.dicom import is_dicom_file

    return is_dicom_file(path)


def _read_dicom_file_series(path: Path, modality: str | None) -> Volume:
    """The series of one DICOM file, read from its folder."""
    import pydicom

    from mefn.io.dicom import read_dicom_series

    try:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    except Exception as exc:  # pydicom raises many types
        raise InputError(f"cannot read DICOM file {path} ({type(exc).__name__}: {exc})") from None
    return read_dicom_series(path.parent, series_uid=uid)
