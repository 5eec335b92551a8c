"""Dataset indexers for the AutoPET (both releases) and HECKTOR layouts, and patient splits.

Layouts (see REFERENCE.md):

- ``autopet``: ``<root>/PETCT_<id>/<study folder>/{CTres, SUV, SEG}.nii.gz`` (the NIfTI
  release; study folder names contain spaces).
- ``nnunet``: ``<root>/imagesTr/<tracer>_<patient>_<study>_0000.nii.gz`` (CT or CTres),
  ``_0001.nii.gz`` (PET in SUV) and ``<root>/labelsTr/<name>.nii.gz`` (AutoPET 2024 on, and
  phantoms written with ``--layout nnunet``).
- ``hecktor``: ``<root>/imagesTr/<Centre>-<nnn>__CT.nii.gz``, ``__PT.nii.gz`` and
  ``<root>/labelsTr/<Centre>-<nnn>.nii.gz``.
- ``sts``: ``<root>/<case>/CT/image.nii.gz``, ``CT/mask.nii.gz`` (the reference, on the CT
  grid), ``PET/image.nii.gz`` (SUV, on its own grid) and ``PET/mask.nii.gz`` (unused): the
  real soft-tissue-sarcoma crops of ``../shared/data/sts`` (TCIA Soft-tissue-Sarcoma, IBSI).
  One study per patient.

Folds: a YAML file ``{folds: [[case, ...], ...]}`` (e.g. ``configs/datasets/sts_folds.yaml``)
fixes a k-fold split by patient; :func:`split_by_fold` holds one fold out.

The train/validation split is by patient and deterministic: a patient goes to validation
when the SHA-256 of ``"<seed>:<patient>"`` falls below ``val_fraction``; adding cases never
moves an existing patient to the other side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mefn.errors import InputError

__all__ = [
    "DatasetEntry",
    "detect_layout",
    "index_dataset",
    "load_folds",
    "split_by_fold",
    "split_by_patient",
]

NII = ".nii.gz"


@dataclass(frozen=True)
class DatasetEntry:
    case_id: str
    patient_id: str
    ct: Path
    pet: Path
    label: Path | None
    layout: str


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _images_dir(root: Path) -> Path:
    return root / "imagesTr" if (root / "imagesTr").is_dir() else root


def _labels_dir(root: Path) -> Path:
    return root / "labelsTr" if (root / "labelsTr").is_dir() else root / "labels"


def _label_file(labels: Path, case_id: str) -> Path:
    """``labels/<case>.nii.gz``, else ``labels/<case>.dcm`` (DICOM SEG or RTSTRUCT, read onto
    the CT grid by :func:`mefn.io.discovery.load_case`); the NIfTI path when neither exists."""
    nifti = labels / f"{case_id}{NII}"
    dicom = labels / f"{case_id}.dcm"
    return dicom if not nifti.is_file() and dicom.is_file() else nifti


def detect_layout(root: Path) -> str:
    images = _images_dir(root)
    if any(images.glob(f"*__CT{NII}")):
        return "hecktor"
    if any(images.glob(f"*_0000{NII}")):
        return "nnunet"
    if any(p.is_dir() for p in root.glob("PETCT_*")) or any(root.glob(f"*/SUV{NII}")):
        return "autopet"
    if any(root.glob(f"*/CT/image{NII}")):
        return "sts"
    raise InputError(
        f"{root} holds no known dataset layout: expected imagesTr/*_0000.nii.gz (nnU-Net), "
        "imagesTr/*__CT.nii.gz (HECKTOR), PETCT_*/<study>/SUV.nii.gz (AutoPET) or "
        "<case>/CT/image.nii.gz with PET/image.nii.gz (sarcoma crops)"
    )


def _nnunet_patient(case_id: str) -> str:
    parts = case_id.split("_")
    # AutoPET nnU-Net names: <tracer>_<patient>_<study>; phantoms: <tracer>_<patient>_<study> too
    return "_".join(parts[:2]) if len(parts) >= 3 else case_id


def index_dataset(
    root: str | Path, layout: str = "auto", require_labels: bool = True
) -> list[DatasetEntry]:
    """All cases under ``root``, sorted by case id."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    entries: list[DatasetEntry] = []
    if layout == "nnunet":
        labels = _labels_dir(root)
        for ct in sorted(_images_dir(root).glob(f"*_0000{NII}")):
            case_id = _stem(ct)[: -len("_0000")]
            pet = ct.with_name(f"{case_id}_0001{NII}")
            label = _label_file(labels, case_id)
            entries.append(_entry(case_id, _nnunet_patient(case_id), ct, pet, label, layout))
    elif layout == "hecktor":
        labels = _labels_dir(root)
        for ct in sorted(_images_dir(root).glob(f"*__CT{NII}")):
            case_id = _stem(ct)[: -len("__CT")]
            pet = ct.with_name(f"{case_id}__PT{NII}")
            label = _label_file(labels, case_id)
            entries.append(_entry(case_id, case_id, ct, pet, label, layout))
    elif layout == "autopet":
        for suv in sorted(root.glob(f"*/*/SUV{NII}")) + sorted(root.glob(f"*/SUV{NII}")):
            study = suv.parent
            ct = study / f"CTres{NII}"
            patient = study.parent.name if study.parent != root else study.name
            case_id = f"{patient}_{study.name}" if study.parent != root else study.name
            entries.append(_entry(case_id, patient, ct, suv, study / f"SEG{NII}", layout))
    elif layout == "sts":
        for ct in sorted(root.glob(f"*/CT/image{NII}")):
            case = ct.parent.parent
            pet = case / "PET" / f"image{NII}"
            entries.append(
                _entry(case.name, case.name, ct, pet, ct.with_name(f"mask{NII}"), layout)
            )
    else:
        raise InputError(f"unknown layout {layout!r}; use auto, autopet, nnunet, hecktor or sts")
    if require_labels:
        missing = [e.case_id for e in entries if e.label is None]
        if missing:
            raise InputError(
                f"{len(missing)} case(s) in {root} have no label (first: {missing[0]}); "
                "training needs labelsTr/<case>.nii.gz or SEG.nii.gz for every case"
            )
    return entries


def _entry(
    case_id: str, patient: str, ct: Path, pet: Path, label: Path, layout: str
) -> DatasetEntry:
    if not ct.is_file():
        raise InputError(f"case {case_id}: CT {ct} is missing")
    if not pet.is_file():
        raise InputError(f"case {case_id}: PET {pet} is missing beside {ct.name}")
    return DatasetEntry(case_id, patient, ct, pet, label if label.is_file() else None, layout)


def load_folds(path: str | Path) -> list[list[str]]:
    """The folds of a YAML file ``{folds: [[case, ...], ...]}``: case ids, no case twice."""
    from mefn.config import read_yaml

    path = Path(path)
    data = read_yaml(path, "folds file", InputError)
    folds = data.get("folds") if isinstance(data, dict) else None
    if not (
        isinstance(folds, list)
        and len(folds) >= 2
        and all(isinstance(f, list) and f and all(isinstance(c, str) for c in f) for f in folds)
    ):
        raise InputError(
            f"folds file {path} must hold 'folds:', a list of at least 2 non-empty lists of "
            "case ids"
        )
    seen: dict[str, int] = {}
    for k, fold in enumerate(folds):
        for case in fold:
            if case in seen:
                raise InputError(
                    f"folds file {path}: case {case} is in fold {seen[case]} and fold {k}; "
                    "a case belongs to one fold"
                )
            seen[case] = k
    return [list(f) for f in folds]


def split_by_fold(
    entries: list[DatasetEntry], folds: list[list[str]], fold: int | str
) -> tuple[list[DatasetEntry], list[DatasetEntry]]:
    """(train, held out): fold ``fold`` of ``folds`` (by patient) held out, the others train;
    ``fold="all"``: every case trains, none is held out.

    Cases of ``entries`` in no fold train; a fold case missing from ``entries`` is an error
    (the split would silently change)."""
    if fold != "all" and not (
        isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < len(folds)
    ):
        raise InputError(
            f"fold must be in 0..{len(folds) - 1} or 'all' (train on every case), found {fold!r}"
        )
    known = {e.patient_id for e in entries}
    missing = sorted(c for f in folds for c in f if c not in known)
    if missing:
        raise InputError(
            f"{len(missing)} case(s) of the folds are not in the dataset (first: {missing[0]}); "
            "use the dataset the folds were made for"
        )
    held = set() if fold == "all" else set(folds[int(fold)])
    train = [e for e in entries if e.patient_id not in held]
    val = [e for e in entries if e.patient_id in held]
    return train, val


def _validation_score(patient: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_by_patient(
    entries: list[DatasetEntry], val_fraction: float, seed: int = 0
) -> tuple[list[DatasetEntry], list[DatasetEntry]]:
    """(train, validation), no patient on both sides; at least one case on each side."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be between 0 and 1, found {val_fraction}")
    patients = sorted({e.patient_id for e in entries})
    val_patients = {p for p in patients if _validation_score(p, seed) < val_fraction}
    if not val_patients and len(patients) > 1:
        val_patients = {min(patients, key=lambda p: _validation_score(p, seed))}
    if len(val_patients) == len(patients) and len(patients) > 1:
        val_patients.discard(max(patients, key=lambda p: _validation_score(p, seed)))
    train = [e for e in entries if e.patient_id not in val_patients]
    val = [e for e in entries if e.patient_id in val_patients]
    return train, val
