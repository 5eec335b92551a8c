"""Reading image files: round trips with flipped and oblique grids, and every bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mefn.errors import InputError
from mefn.io.readers import image_stem, read_volume, read_volumes
from mefn.io.sitk_bridge import to_sitk, write_volume
from mefn.io.volume import Volume


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


DIRECTIONS = {
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "oblique": _rotation(25.0, -12.0),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
}


def _volume(direction: np.ndarray, dtype: type = np.float32) -> Volume:
    rng = np.random.default_rng(3)
    array = rng.normal(0, 100, size=(33, 34, 35)).astype(dtype)
    return Volume.from_array(
        array, spacing_mm=(0.8, 1.25, 3.0), origin_mm=(-120.5, 33.25, -601.0), direction=direction
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_round_trip_keeps_array_and_geometry(tmp_path: Path, suffix: str, kind: str) -> None:
    vol = _volume(DIRECTIONS[kind])
    path = write_volume(vol, tmp_path / f"image{suffix}")
    back = read_volume(path, modality="CT")
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.shape == (33, 34, 35)
    np.testing.assert_allclose(back.spacing_mm, vol.spacing_mm, rtol=1e-6)
    np.testing.assert_allclose(back.geometry.origin_mm, vol.geometry.origin_mm, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-6)
    # the same voxel lands on the same point in the patient
    np.testing.assert_allclose(
        back.geometry.index_to_world([32, 0, 17]),
        vol.geometry.index_to_world([32, 0, 17]),
        atol=1e-3,
    )
    assert back.modality == "CT" and back.meta["source"] == str(path)


def test_integer_labels_keep_their_dtype(tmp_path: Path) -> None:
    vol = _volume(DIRECTIONS["oblique"])
    labels = vol.with_array((vol.array > 50).astype(np.uint8))
    back = read_volume(write_volume(labels, tmp_path / "seg.nii.gz"), modality="SEG")
    assert back.array.dtype == np.uint8 and back.units == "label"
    np.testing.assert_array_equal(back.array, labels.array)


def test_image_stem() -> None:
    assert image_stem("/a/case  x_0000.nii.gz") == "case  x_0000"
    assert image_stem("b.mha") == "b"


def _nifti(tmp_path: Path, name: str = "ok.nii.gz") -> Path:
    return write_volume(_volume(np.eye(3)), tmp_path / name)


def test_truncated_nii_gz_is_refused(tmp_path: Path) -> None:
    whole = _nifti(tmp_path).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole[:4096])
    with pytest.raises(InputError, match=r"cut\.nii\.gz is truncated or corrupt .*download"):
        read_volume(cut)


def test_nii_gz_with_too_little_data_is_refused(tmp_path: Path) -> None:
    # a complete gzip stream whose content is shorter than the header promises
    raw = gzip.decompress(_nifti(tmp_path).read_bytes())
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(
        InputError, match=r"is truncated: its header needs 157432 bytes .* holds 78716"
    ):
        read_volume(short)


def test_truncated_uncompressed_nii_is_refused(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "ok.nii")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="is truncated: its header needs"):
        read_volume(path)


def test_text_file_named_nii_gz(tmp_path: Path) -> None:
    path = tmp_path / "page.nii.gz"
    path.write_text("<html>404 not found</html>\n")
    with pytest.raises(InputError, match="is not gzip-compressed .* text or HTML page"):
        read_volume(path)


def test_text_file_named_nii(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii"
    path.write_text("x" * 1000)
    with pytest.raises(InputError, match="is not a NIfTI image"):
        read_volume(path)


def test_garbage_mha(tmp_path: Path) -> None:
    path = tmp_path / "bad.mha"
    path.write_text("this is not a MetaImage header\n")
    with pytest.raises(InputError, match=r"cannot read .*bad\.mha as an image"):
        read_volume(path)


def test_two_d_image_is_refused(tmp_path: Path) -> None:
    import SimpleITK as sitk

    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 11), np.float32)), str(path))
    with pytest.raises(InputError, match=r"expected a 3D image .* found 2D of size \(11, 9\)"):
        read_volume(path)


def test_nan_values_are_refused(tmp_path: Path) -> None:
    vol = _volume(np.eye(3))
    vol.array[1, 2, 3] = np.nan
    vol.array[4, 5, 6] = np.inf
    path = write_volume(vol, tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="holds 2 non-finite values"):
        read_volume(path)


def test_four_d_with_two_volumes(tmp_path: Path) -> None:
    import SimpleITK as sitk

    a, b = _volume(DIRECTIONS["flipped"]), _volume(DIRECTIONS["flipped"])
    b = b.with_array(b.array * 2)
    path = tmp_path / "pair.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([to_sitk(a), to_sitk(b)]), str(path))
    vols = read_volumes(path)
    assert len(vols) == 2
    np.testing.assert_array_equal(vols[1].array, b.array)
    np.testing.assert_allclose(vols[0].geometry.direction, a.geometry.direction, atol=1e-6)
    with pytest.raises(InputError, match="is 4D with 2 volumes; expected one 3D image"):
        read_volume(path)


def test_missing_empty_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)"):
        read_volume(tmp_path / "empty.nii.gz")
    (tmp_path / "image.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match="has no image suffix"):
        read_volume(tmp_path / "image.png")
    with pytest.raises(InputError, match="modality must be CT, PT"):
        read_volume(tmp_path / "nope.nii.gz", modality="MR")


def test_nifti_scaling_is_applied_in_float32(tmp_path: Path) -> None:
    import nibabel as nib

    stored = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    image = nib.Nifti1Image(stored, np.diag([-2.0, -2.0, 3.0, 1.0]))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    vol = read_volume(tmp_path / "scaled.nii.gz")
    assert vol.array.dtype == np.float32
    assert float(vol.array[2, 3, 4]) == 59 * 2.0 - 1024.0  # stored 2*20 + 3*5 + 4 = 59
    # RAS diag(-2, -2, 3) is LPS diag(2, 2, 3): identity direction, spacing (2, 2, 3)
    assert vol.spacing_mm == pytest.approx((2.0, 2.0, 3.0))
    np.testing.assert_allclose(vol.geometry.direction, np.eye(3).ravel(), atol=1e-7)
