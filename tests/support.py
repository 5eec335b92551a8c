"""Test helpers shared across test folders: tiny DICOM series and PET/CT volumes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mefn.io.volume import Volume

# An oblique orientation: rows along (cos 20°, sin 20°, 0), columns along (0, cos 10°, -sin 10°)
# rotated to be orthogonal to the row cosine.
_A = np.deg2rad(20.0)
ROW = np.array([np.cos(_A), np.sin(_A), 0.0])
_col = np.array([-np.sin(_A), np.cos(_A), 0.3])
COL = (_col - (_col @ ROW) * ROW) / np.linalg.norm(_col - (_col @ ROW) * ROW)
NORMAL = np.cross(ROW, COL)

# The tags of a complete FDG PET series: 70 kg, 368.08 MBq at 10:00:00, scan at 11:00:00.
PET_TAGS: dict[str, Any] = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "PatientWeight": "70",
    "PatientSize": "1.75",
    "PatientSex": "M",
    "SeriesDate": "20240301",
    "SeriesTime": "110000",
    "AcquisitionDate": "20240301",
    "AcquisitionTime": "110000",
    "RadiopharmaceuticalStartTime": "100000",
    "RadionuclideTotalDose": "368080000",
    "RadionuclideHalfLife": "6586.2",
}
# Bq/mL that make SUV 1 with PET_TAGS: 70000 g / (368.08e6 Bq * 2^(-3600/6586.2)).
BQML_PER_SUV = 368.08e6 * 2.0 ** (-3600.0 / 6586.2) / 70000.0

# the SUV reference objects of shared/data/suv_dro
DRO_IDS = (
    "DRO_0_0",
    "DRO_1_0",
    "DRO_2_0",
    "DRO_2_3",
    "DRO_2_4",
    "DRO_3_0",
    "DRO_3_2",
    "DRO_4_0",
    "DRO_5_0",
)


def dro_row(shared_data: Path, dro: str) -> dict[str, str]:
    """The row of reference object ``dro`` in ``suv_dro/DRO_list.csv`` (expected SUVs)."""
    import csv

    with open(shared_data / "suv_dro" / "DRO_list.csv", newline="") as fh:
        return next(r for r in csv.DictReader(fh) if r["ID"] == dro)


def new_dataset(sop_class_uid: str) -> Any:
    """An empty pydicom Dataset of ``sop_class_uid`` with its file meta (explicit VR little
    endian) and a fresh SOPInstanceUID, ready for ``pydicom.dcmwrite``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_series(
    folder: Path,
    stored: np.ndarray,
    modality: str,
    *,
    spacing: tuple[float, float, float] = (1.5, 2.0, 3.0),
    origin: Sequence[float] = (-20.0, 15.0, 40.0),
    row: np.ndarray = ROW,
    col: np.ndarray = COL,
    slopes: Sequence[float] | None = None,
    intercept: float = 0.0,
    tags: dict[str, Any] | None = None,
    series_uid: str | None = None,
    shuffle: bool = True,
    skip: Sequence[int] = (),
) -> Path:
    """Write ``stored[i, j, k]`` (int16) as one file per slice k; returns ``folder``.

    Voxel (i, j, k) sits at ``origin + i sx row + j sy col + k sz normal``. Files are named
    in shuffled order so readers must sort by position.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = stored.shape
    normal = np.cross(row, col)
    uid = series_uid or generate_uid()
    study = generate_uid()
    order = np.random.default_rng(0).permutation(nz) if shuffle else np.arange(nz)
    tags = dict(tags or {})
    rp_keys = (
        "RadiopharmaceuticalStartTime",
        "RadiopharmaceuticalStartDateTime",
        "RadionuclideTotalDose",
        "RadionuclideHalfLife",
    )
    for n, k in enumerate(order):
        if k in skip:
            continue
        ds = new_dataset(
            "1.2.840.10008.5.1.4.1.1.128" if modality == "PT" else "1.2.840.10008.5.1.4.1.1.2"
        )
        ds.Modality = modality
        ds.SeriesInstanceUID = uid
        ds.StudyInstanceUID = study
        ds.PatientID = "P1"
        ds.SeriesDescription = f"tiny {modality}"
        ds.InstanceNumber = int(k) + 1
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]
        pos = np.asarray(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.10f}" for v in pos]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (j), column spacing (i)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = slopes[k] if slopes is not None else 1.0
        ds.RescaleIntercept = intercept
        item = Dataset()
        for key, value in tags.items():
            if key in rp_keys:
                setattr(item, key, value)
            elif key.startswith("("):
                group, elem = (int(x, 16) for x in key.strip("()").split(","))
                vr, val = value
                ds.add_new((group, elem), vr, val)
            else:
                setattr(ds, key, value)
        if len(item):
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([item])
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype("<i2")).tobytes()
        pydicom.dcmwrite(folder / f"im{n:03d}.dcm", ds, enforce_file_format=True)
    return folder


def ct_pet_pair(
    ct_origin: tuple[float, float, float] = (-30.0, -25.0, -20.0),
    pet_origin: tuple[float, float, float] = (-28.0, -22.0, -18.0),
) -> tuple[Volume, Volume]:
    """A small CT (HU, 13x11x9 at 2.5 mm, flipped x) and PET (SUV, 9x7x7 at 4 mm) that overlap."""
    rng = np.random.default_rng(1)
    ct = rng.uniform(-1000, 200, size=(13, 11, 9)).astype(np.float32)
    pet = rng.uniform(0, 12, size=(9, 7, 7)).astype(np.float32)
    ct_vol = Volume.from_array(
        ct,
        spacing_mm=(2.5, 2.5, 2.5),
        origin_mm=(ct_origin[0] + 12 * 2.5, ct_origin[1], ct_origin[2]),
        direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1),
    )
    pet_vol = Volume.from_array(pet, spacing_mm=(4.0, 4.0, 4.0), origin_mm=pet_origin)
    return ct_vol, pet_vol


TINY_MODEL: dict[str, Any] = {
    "architecture": "mefn",
    "num_classes": 2,
    "base_width": 4,
    "depth": 3,
    "attention_heads": 2,
}
# the same model as a model-config YAML file's text
TINY_MODEL_YAML = "".join(f"{key}: {value}\n" for key, value in TINY_MODEL.items())


def tiny_case(folder: Path) -> Any:
    """The CT/PET pair of :func:`ct_pet_pair` written as NIfTI under ``folder`` and loaded."""
    from mefn.io.discovery import load_case
    from mefn.io.sitk_bridge import write_volume

    ct, pet = ct_pet_pair()
    write_volume(ct, folder / "t_0000.nii.gz")
    write_volume(pet, folder / "t_0001.nii.gz")
    return load_case(folder / "t_0000.nii.gz")


def make_tiny_weights(folder: Path, model: dict[str, Any] | None = None) -> Path:
    """A real (untrained, seeded) MEFN saved as weights + card at 8 mm model spacing."""
    import json

    import torch
    from safetensors.torch import save_file

    from mefn.config import from_dict
    from mefn.data.preprocess import PreprocessConfig
    from mefn.model import ModelConfig, build_model
    from mefn.training import TrainConfig, model_card

    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, model or TINY_MODEL)
    net = build_model(cfg)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "tiny.safetensors"))
    train_cfg = TrainConfig(
        preprocess=PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0)), patch_size_vox=(32, 32, 32)
    )
    (folder / "tiny.json").write_text(json.dumps(model_card(train_cfg, cfg)))
    return folder / "tiny.safetensors"


def tiny_phantom_config(folder: Path) -> Path:
    """Four small nnU-Net-layout phantoms (one lesion each) under ``folder / "data"`` and a
    training config over them with half for validation: the validation split the pipeline
    scripts score."""
    from mefn.data.phantom_layouts import write_phantoms

    data = folder / "data"
    write_phantoms(data, n=4, layout="nnunet", seed=5, small=True, n_lesions=1)
    config = folder / "train.yaml"
    config.write_text(f"data:\n  root: {data}\n  layout: nnunet\n  val_fraction: 0.5\n")
    return config


def load_pipeline(script: Path) -> ModuleType:
    """``pipelines/<name>.py`` imported as ``pipelines.<name>``, as ``python -m`` runs it.

    The repository root is not on pytest's path (only ``tests/`` is), so the ``pipelines``
    package is registered from the folder beside ``script`` first; its scripts then import
    their siblings (``from pipelines import _bench``) as they do when run."""
    folder = Path(script).resolve().parent
    if "pipelines" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "pipelines", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["pipelines"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"pipelines.{Path(script).stem}")
