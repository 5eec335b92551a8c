from __future__ import annotations

from pathlib import Path

import pytest

from mefn.data.datasets import detect_layout, index_dataset, split_by_patient
from mefn.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def _sts_tree(root, cases):
    for case in cases:
        for part in ("CT/image", "CT/mask", "PET/image", "PET/mask"):
            _touch(root / case / f"{part}.nii.gz")
    return root


def test_sts_layout_is_detected_and_indexed_with_the_ct_mask_as_label(tmp_path) -> None:
    from mefn.data.datasets import detect_layout, index_dataset

    root = _sts_tree(tmp_path / "sts", ["STS_002", "STS_001"])
    assert detect_layout(root) == "sts"
    entries = index_dataset(root)
    assert [e.case_id for e in entries] == ["STS_001", "STS_002"]
    assert entries[0].patient_id == "STS_001"
    assert entries[0].ct == root / "STS_001" / "CT" / "image.nii.gz"
    assert entries[0].pet == root / "STS_001" / "PET" / "image.nii.gz"
    assert entries[0].label == root / "STS_001" / "CT" / "mask.nii.gz"
    (root / "STS_002" / "CT" / "mask.nii.gz").unlink()
    with pytest.raises(InputError, match=r"1 case\(s\) .* have no label \(first: STS_002\)"):
        index_dataset(root)


def test_folds_hold_one_fold_out_and_refuse_bad_files(tmp_path) -> None:
    from mefn.data.datasets import index_dataset, load_folds, split_by_fold

    root = _sts_tree(tmp_path / "sts", ["A", "B", "C", "D", "E"])
    entries = index_dataset(root, layout="sts")
    folds_file = tmp_path / "folds.yaml"
    folds_file.write_text("folds:\n  - [A, C]\n  - [B, D]\n")
    folds = load_folds(folds_file)
    assert folds == [["A", "C"], ["B", "D"]]
    train, val = split_by_fold(entries, folds, 1)
    assert [e.case_id for e in val] == ["B", "D"]
    assert [e.case_id for e in train] == ["A", "C", "E"]  # E is in no fold: it trains
    with pytest.raises(InputError, match=r"fold must be in 0\.\.1 or 'all' .*, found 2"):
        split_by_fold(entries, folds, 2)
    train, val = split_by_fold(entries, folds, "all")  # the final model: every case trains
    assert [e.case_id for e in train] == ["A", "B", "C", "D", "E"] and val == []
    with pytest.raises(InputError, match="found 'every'"):
        split_by_fold(entries, folds, "every")
    with pytest.raises(InputError, match=r"not in the dataset \(first: B\)"):
        split_by_fold([e for e in entries if e.case_id != "B"], folds, 0)
    folds_file.write_text("folds:\n  - [A, C]\n  - [C, D]\n")
    with pytest.raises(InputError, match="case C is in fold 0 and fold 1"):
        load_folds(folds_file)
    folds_file.write_text("folds: [A, B]\n")
    with pytest.raises(InputError, match="at least 2 non-empty lists of case ids"):
        load_folds(folds_file)
    with pytest.raises(InputError, match="does not exist"):
        load_folds(tmp_path / "nope.yaml")


def test_the_sts_folds_cover_the_shared_sarcoma_cases_once(shared_data) -> None:
    from mefn.data.datasets import index_dataset, load_folds, split_by_fold

    entries = index_dataset(shared_data / "sts")
    folds = load_folds(REPO_ROOT / "configs" / "datasets" / "sts_folds.yaml")
    assert len(folds) == 5 and all(len(f) == 5 for f in folds)
    assert sorted(c for f in folds for c in f) == [e.case_id for e in entries]
    for k in range(5):
        train, val = split_by_fold(entries, folds, k)
        assert len(train) == 20 and {e.case_id for e in val} == set(folds[k])
