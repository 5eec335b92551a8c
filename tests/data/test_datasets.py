from __future__ import annotations

from pathlib import Path

import pytest

from mefn.data.datasets import detect_layout, index_dataset, split_by_patient
from mefn.errors import InputError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_nnunet_layout_with_spaces_and_patients(tmp_path):
    for name in ["fdg_p1_2001-01-01", "fdg_p1_2002-02-02", "psma_p2  x_2003-03-03"]:
        _touch(tmp_path / "imagesTr" / f"{name}_0000.nii.gz")
        _touch(tmp_path / "imagesTr" / f"{name}_0001.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{name}.nii.gz")
    assert detect_layout(tmp_path) == "nnunet"
    entries = index_dataset(tmp_path)
    assert [e.case_id for e in entries] == [
        "fdg_p1_2001-01-01",
        "fdg_p1_2002-02-02",
        "psma_p2  x_2003-03-03",
    ]
    assert entries[0].patient_id == entries[1].patient_id == "fdg_p1"
    assert entries[2].pet.name == "psma_p2  x_2003-03-03_0001.nii.gz"


def test_hecktor_layout(tmp_path):
    for name in ["CHUM-001", "CHUP-002"]:
        _touch(tmp_path / "imagesTr" / f"{name}__CT.nii.gz")
        _touch(tmp_path / "imagesTr" / f"{name}__PT.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{name}.nii.gz")
    entries = index_dataset(tmp_path)
    assert [e.layout for e in entries] == ["hecktor", "hecktor"]
    assert entries[1].ct.name == "CHUP-002__CT.nii.gz" and entries[1].label is not None


def test_autopet_layout(tmp_path):
    study = tmp_path / "PETCT_0af7ffe12a" / "08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698"
    for f in ["CTres", "SUV", "SEG", "CT", "PET"]:
        _touch(study / f"{f}.nii.gz")
    (entry,) = index_dataset(tmp_path)
    assert entry.layout == "autopet" and entry.patient_id == "PETCT_0af7ffe12a"
    assert entry.ct.name == "CTres.nii.gz" and entry.pet.name == "SUV.nii.gz"


def test_missing_pet_and_labels_are_reported(tmp_path):
    _touch(tmp_path / "imagesTr" / "a_b_c_0000.nii.gz")
    with pytest.raises(InputError, match="PET .* is missing"):
        index_dataset(tmp_path)
    _touch(tmp_path / "imagesTr" / "a_b_c_0001.nii.gz")
    with pytest.raises(InputError, match="have no label"):
        index_dataset(tmp_path)
    assert index_dataset(tmp_path, require_labels=False)[0].label is None


def test_unknown_layout(tmp_path):
    _touch(tmp_path / "something.txt")
    with pytest.raises(InputError, match="no known dataset layout"):
        index_dataset(tmp_path)


def test_split_is_by_patient_deterministic_and_stable(tmp_path):
    for p in range(40):
        for s in range(2):
            name = f"fdg_pat{p:02d}_study{s}"
            _touch(tmp_path / "imagesTr" / f"{name}_0000.nii.gz")
            _touch(tmp_path / "imagesTr" / f"{name}_0001.nii.gz")
            _touch(tmp_path / "labelsTr" / f"{name}.nii.gz")
    entries = index_dataset(tmp_path)
    train, val = split_by_patient(entries, 0.25, seed=3)
    assert not {e.patient_id for e in train} & {e.patient_id for e in val}
    assert 4 <= len({e.patient_id for e in val}) <= 18
    assert split_by_patient(entries, 0.25, seed=3) == (train, val)
    # adding patients never moves an existing one across
    _, val_small = split_by_patient(entries[:40], 0.25, seed=3)
    assert {e.patient_id for e in val_small} <= {e.patient_id for e in val}
    with pytest.raises(InputError, match="val_fraction"):
        split_by_patient(entries, 1.5)
