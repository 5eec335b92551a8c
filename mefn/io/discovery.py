"""Finding the CT, PET (and label) of a study in every input form mefn accepts.

Forms (DESIGN.md, "File contracts"); ``layout`` names them:

- ``4d``: one 2-volume 4D NIfTI (volume 0 CT, volume 1 PET);
- ``nnunet``: ``<case>_0000`` (CT) + ``<case>_0001`` (PET), given either file or the stem;
  label ``labelsTr/<case>`` beside ``imagesTr`` when present;
- ``hecktor``: ``<case>__CT`` + ``<case>__PT`` (either file); label ``labelsTr/<case>``;
- ``autopet``: a study folder with ``CTres`` (else ``CT``) and ``SUV`` (else ``PET``), label
  ``SEG``; results go on the shared PET grid;
- ``dicom``: a folder of DICOM series (one CT and one PT, told apart by their tags);
- ``explicit``: ``ct=`` and ``pet=`` given.

:func:`find_case_files` only looks at names and headers; :func:`load_case` reads the images,
checks them (:func:`mefn.io.geometry.check_pair`) and records where everything came from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mefn.errors import InputError
from mefn.io.case import Case
from mefn.io.readers import (
    IMAGE_SUFFIXES,
    image_stem,
    image_suffix,
    read_image_info,
    read_volume,
    read_volumes,
)
from mefn.io.volume import Volume

__all__ = ["LAYOUTS", "CaseFiles", "find_case_files", "find_cases", "load_case"]

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("4d", "nnunet", "hecktor", "autopet", "dicom", "explicit")

_AUTOPET_CT = ("CTres", "CT")
_AUTOPET_PET = ("SUV", "PET")
_AUTOPET_NAMES = {"CT", "CTRES", "SUV", "PET", "SEG"}


@dataclass(frozen=True)
class CaseFiles:
    """Where one study's images are, before reading them.

    ``ct`` and ``pet`` are files, or DICOM folders (``ct_series`` / ``pet_series`` give
    the SeriesInstanceUID when known); for ``is_4d`` both name the same 4D file.
    ``output_on_pet``: results go on the PET grid (AutoPET), else on the CT grid.
    """

    case_id: str
    ct: Path
    pet: Path
    label: Path | None = None
    layout: str = "explicit"
    is_4d: bool = False
    output_on_pet: bool = False
    ct_series: str | None = None
    pet_series: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "layout": self.layout,
            "ct": str(self.ct),
            "pet": str(self.pet),
            "label": str(self.label) if self.label is not None else None,
            "is_4d": self.is_4d,
            "output_on_pet": self.output_on_pet,
            "ct_series": self.ct_series,
            "pet_series": self.pet_series,
        }


# --- helpers --------------------------------------------------------------------------------


def _find_image(folder: Path, stem: str) -> Path | None:
    """``folder/<stem><suffix>`` for the first image suffix that exists."""
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _label_beside(image: Path, case_id: str) -> Path | None:
    """``labelsTr/<case>`` (or labelsTs) beside an ``imagesTr`` folder, or in the same folder."""
    folder = image.parent
    candidates = []
    if folder.name.startswith("images"):
        candidates.append(folder.parent / ("labels" + folder.name[len("images") :]))
    candidates.append(folder.parent / "labelsTr")
    for c in candidates:
        if c.is_dir():
            found = _find_image(c, case_id)
            if found is not None:
                return found
    return None


def _looked_for(folder: Path, stem: str) -> str:
    return f"{folder / stem}{{{','.join(IMAGE_SUFFIXES)}}}"


def _partner(image: Path, case_id: str, mine: str, other: str, layout: str) -> CaseFiles:
    folder = image.parent
    partner = _find_image(folder, case_id + other)
    if partner is None:
        kind = "PET" if other in ("_0001", "__PT") else "CT"
        raise InputError(
            f"found {image.name} but not its {kind}: looked for "
            f"{_looked_for(folder, case_id + other)}; put both files side by side"
        )
    ct, pet = (image, partner) if mine in ("_0000", "__CT") else (partner, image)
    return CaseFiles(
        case_id=case_id, ct=ct, pet=pet, label=_label_beside(ct, case_id), layout=layout
    )


def _autopet_study(folder: Path) -> CaseFiles | None:
    ct = next((p for n in _AUTOPET_CT if (p := _find_image(folder, n)) is not None), None)
    pet = next((p for n in _AUTOPET_PET if (p := _find_image(folder, n)) is not None), None)
    if ct is None and pet is None:
        return None
    if ct is None or pet is None:
        missing = "PET (SUV or PET)" if pet is None else "CT (CTres or CT)"
        wanted = _AUTOPET_PET if pet is None else _AUTOPET_CT
        raise InputError(
            f"AutoPET study folder {folder} has no {missing}: looked for "
            + " and ".join(_looked_for(folder, n) for n in wanted)
        )
    parent = folder.parent.name
    case_id = f"{parent}_{folder.name}" if parent.startswith("PETCT_") else folder.name
    return CaseFiles(
        case_id=case_id,
        ct=ct,
        pet=pet,
        label=_find_image(folder, "SEG"),
        layout="autopet",
        output_on_pet=True,
    )


def _dicom_case(folder: Path, pet_series: str | None = None) -> CaseFiles | None:
    """The CT and PT series of a DICOM study folder (None when it holds no DICOM image).

    ``pet_series`` (a SeriesInstanceUID or a SeriesDescription) picks the PET series;
    otherwise :func:`mefn.io.dicom.select_series` prefers the attenuation-corrected one.
    """
    from mefn.io.dicom import find_dicom_series, select_series

    series = find_dicom_series(folder)
    if not series:
        return None
    modalities = {s.modality for s in series}
    if "CT" not in modalities or "PT" not in modalities:
        have = ", ".join(sorted(modalities))
        raise InputError(
            f"DICOM folder {folder} must hold a CT and a PT series, found {have}; "
            "add the missing series or pass --ct and --pet"
        )
    ct = select_series(series, "CT", folder)
    pet = select_series(series, "PT", folder, choice=pet_series)
    return CaseFiles(
        case_id=folder.name,
        ct=folder,
        pet=folder,
        layout="dicom",
        ct_series=ct.uid,
        pet_series=pet.uid,
    )


def _has_dicom(folder: Path) -> bool:
    from mefn.io.dicom import is_dicom_file

    for root, _dirs, files in os.walk(folder):
        names = (f for f in files if not f.startswith(".") and image_suffix(f) is None)
        if any(is_dicom_file(Path(root) / f) for f in names):
            return True
    return False


def _case_id_from_file(path: Path) -> str:
    stem = image_stem(path) if image_suffix(path) else path.name
    for suffix in ("_0000", "_0001", "__CT", "__PT"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


# --- one case -------------------------------------------------------------------------------


def _from_file(path: Path) -> CaseFiles:
    stem = image_stem(path)
    for mine, other, layout in (
        ("_0000", "_0001", "nnunet"),
        ("_0001", "_0000", "nnunet"),
        ("__CT", "__PT", "hecktor"),
        ("__PT", "__CT", "hecktor"),
    ):
        if stem.endswith(mine):
            return _partner(path, stem[: -len(mine)], mine, other, layout)
    if stem.upper() in _AUTOPET_NAMES:
        found = _autopet_study(path.parent)
        if found is not None:
            return found
    dim, size = read_image_info(path)
    if dim == 4 and size[3] == 2:
        return CaseFiles(case_id=stem, ct=path, pet=path, layout="4d", is_4d=True)
    if dim == 4:
        raise InputError(
            f"{path} is 4D with {size[3]} volumes; a CT+PET 4D image must hold exactly 2 "
            "(volume 0 CT, volume 1 PET)"
        )
    raise InputError(
        f"{path} is a single {dim}D image and its partner cannot be found from its name: "
        "name the pair <case>_0000 (CT) / <case>_0001 (PET) or <case>__CT / <case>__PT, "
        "or pass --ct and --pet"
    )


def _from_stem(path: Path) -> CaseFiles:
    folder, stem = path.parent, path.name
    for ct_suffix, pet_suffix, layout in (
        ("_0000", "_0001", "nnunet"),
        ("__CT", "__PT", "hecktor"),
    ):
        ct = _find_image(folder, stem + ct_suffix)
        pet = _find_image(folder, stem + pet_suffix)
        if ct is not None and pet is not None:
            return CaseFiles(
                case_id=stem, ct=ct, pet=pet, label=_label_beside(ct, stem), layout=layout
            )
        if ct is not None:
            return _partner(ct, stem, ct_suffix, pet_suffix, layout)
        if pet is not None:
            return _partner(pet, stem, pet_suffix, ct_suffix, layout)
    raise InputError(
        f"{path} does not exist, and no case files start with it: looked for "
        f"{_looked_for(folder, stem + '_0000')} and {_looked_for(folder, stem + '__CT')}"
    )


def _from_folder(folder: Path, pet_series: str | None = None) -> CaseFiles:
    study = _autopet_study(folder)
    if study is not None:
        return study
    if _has_dicom(folder):
        found = _dicom_case(folder, pet_series)
        if found is not None:
            return found
    cases = _cases_in_flat_folder(folder)
    if len(cases) == 1:
        return cases[0]
    if len(cases) > 1:
        raise InputError(
            f"{folder} holds {len(cases)} cases, not one; give one case's file, or use "
            "find_cases / a batch run over the folder"
        )
    raise InputError(
        f"{folder} holds no study: expected an AutoPET study (CTres/CT + SUV/PET), DICOM "
        "series (CT + PT), or <case>_0000/_0001 or <case>__CT/__PT files"
    )


def find_case_files(
    path: str | os.PathLike[str] | None = None,
    ct: str | os.PathLike[str] | None = None,
    pet: str | os.PathLike[str] | None = None,
    label: str | os.PathLike[str] | None = None,
    case_id: str | None = None,
    pet_series: str | None = None,
) -> CaseFiles:
    """Locate the CT, PET and label of one study from any accepted input form.

    Give ``path`` (a file of the pair, a case stem, a 4D NIfTI, an AutoPET study folder or
    a DICOM folder), or ``ct`` and ``pet``. ``label`` and ``case_id`` override what is found.
    ``pet_series`` picks the PET among several DICOM series (``--pet-series``): a
    SeriesInstanceUID, or a SeriesDescription that only one PET series has; without it the
    attenuation-corrected series is preferred (:func:`mefn.io.dicom.select_series`).
    """
    if path is not None and (ct is not None or pet is not None):
        raise InputError("give an input path or ct= and pet=, not both")
    if path is None:
        if ct is None or pet is None:
            raise InputError(
                "give an input path, or both ct= and pet= (found only "
                f"{'ct' if ct is not None else 'pet'})"
                if (ct is not None or pet is not None)
                else "no input given: pass an input path, or ct= and pet="
            )
        ct_path, pet_path = Path(ct), Path(pet)
        for what, p in (("CT", ct_path), ("PET", pet_path)):
            if not p.exists():
                raise InputError(f"{what} {p} does not exist; check the path")
        files = CaseFiles(
            case_id=_case_id_from_file(ct_path),
            ct=ct_path,
            pet=pet_path,
            layout="explicit",
            pet_series=_explicit_pet_series(pet_path, pet_series),
        )
    else:
        p = Path(path)
        if p.is_dir():
            files = _from_folder(p, pet_series)
        elif p.is_file():
            if image_suffix(p) is None:
                from mefn.io.dicom import is_dicom_file

                if is_dicom_file(p):
                    files = _from_folder(p.parent, pet_series)
                else:
                    raise InputError(
                        f"{p} is not an image file; expected one of {', '.join(IMAGE_SUFFIXES)}, "
                        "a DICOM folder or an AutoPET study folder"
                    )
            else:
                files = _from_file(p)
        else:
            files = _from_stem(p)
        if pet_series is not None and files.layout != "dicom":
            raise InputError(
                f"a PET series ({pet_series!r}) was chosen, but {p} is a {files.layout} case, "
                "not DICOM series; drop --pet-series or give the DICOM study folder"
            )
    changes: dict[str, Any] = {}
    if label is not None:
        if not Path(label).exists():
            raise InputError(f"label {label} does not exist; check the path")
        changes["label"] = Path(label)
    if case_id is not None:
        changes["case_id"] = case_id
    if changes:
        from dataclasses import replace

        files = replace(files, **changes)
    return files


def _explicit_pet_series(pet: Path, pet_series: str | None) -> str | None:
    """The UID of the series ``pet_series`` picks in the DICOM folder ``pet`` (None: none
    asked for; the PET is then read as it is, its series chosen by the usual rule)."""
    if pet_series is None:
        return None
    from mefn.io.dicom import find_dicom_series, select_series

    series = find_dicom_series(pet) if pet.is_dir() else []
    if not series:
        raise InputError(
            f"a PET series ({pet_series!r}) was chosen, but the PET {pet} is not a folder of "
            "DICOM series; give the folder, or drop --pet-series"
        )
    return select_series(series, "PT", pet, choice=pet_series).uid


# --- many cases -----------------------------------------------------------------------------


def _cases_in_flat_folder(folder: Path) -> list[CaseFiles]:
    """nnU-Net or HECKTOR pairs directly inside ``folder``."""
    out: list[CaseFiles] = []
    if not folder.is_dir():
        return out
    seen: set[str] = set()
    for p in sorted(folder.iterdir()):
        if not p.is_file() or image_suffix(p) is None or p.name.startswith("."):
            continue
        stem = image_stem(p)
        for ct_suffix, pet_suffix, layout in (
            ("_0000", "_0001", "nnunet"),
            ("__CT", "__PT", "hecktor"),
        ):
            if stem.endswith(ct_suffix):
                case = stem[: -len(ct_suffix)]
                if case not in seen:
                    seen.add(case)
                    out.append(_partner(p, case, ct_suffix, pet_suffix, layout))
    return out


def find_cases(folder: str | os.PathLike[str], pet_series: str | None = None) -> list[CaseFiles]:
    """Every case in a folder holding many: nnU-Net ``imagesTr``-style, HECKTOR, an AutoPET
    root (``PETCT_*/<study>``) or several study / DICOM folders. Sorted by case id; empty
    when none is found. A CT without its PET raises :class:`InputError`.

    ``pet_series`` picks the PET series of every DICOM study (as in
    :func:`find_case_files`; over several studies a SeriesDescription is the useful form).
    A folder whose subfolders each hold one series of a single study (``study/ct``,
    ``study/pet``) is that one study.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the folder holding the cases")
    cases: list[CaseFiles] = []
    for sub in ("", "imagesTr", "imagesTs"):
        cases.extend(_cases_in_flat_folder(root / sub if sub else root))
    if not cases:
        study_dirs: list[Path] = []
        for child in sorted(c for c in root.iterdir() if c.is_dir()):
            if _autopet_study(child) is not None or _has_image_dicom(child):
                study_dirs.append(child)
            else:
                study_dirs.extend(
                    g
                    for g in sorted(c for c in child.iterdir() if c.is_dir())
                    if _autopet_study(g) is not None
                )
        if study_dirs and not any(_autopet_study(d) or _holds_ct_and_pet(d) for d in study_dirs):
            # one study's series in subfolders of their own: the folder is the study
            found = _dicom_case(root, pet_series)
            return [found] if found is not None else []
        for d in study_dirs:
            found = _autopet_study(d) or _dicom_case(d, pet_series)
            if found is not None:
                cases.append(found)
    if pet_series is not None and cases and all(c.layout != "dicom" for c in cases):
        raise InputError(
            f"a PET series ({pet_series!r}) was chosen, but the cases in {root} are not DICOM "
            "series; drop --pet-series"
        )
    return sorted(cases, key=lambda c: c.case_id)


def _holds_ct_and_pet(folder: Path) -> bool:
    from mefn.io.dicom import find_dicom_series

    return {"CT", "PT"} <= {s.modality for s in find_dicom_series(folder)}


def _has_image_dicom(folder: Path) -> bool:
    return _autopet_study(folder) is None and _has_dicom(folder)


# --- loading --------------------------------------------------------------------------------


def _read(path: Path, modality: str, series: str | None) -> Volume:
    if series is not None:
        from mefn.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series)
    return read_volume(path, modality=modality)


def load_case(
    path: str | os.PathLike[str] | None = None,
    *,
    ct: str | os.PathLike[str] | None = None,
    pet: str | os.PathLike[str] | None = None,
    label: str | os.PathLike[str] | None = None,
    case_id: str | None = None,
    files: CaseFiles | None = None,
    check_units: bool = True,
) -> Case:
    """Read one study into a :class:`Case`: CT in HU, PET in SUVbw, optional label.

    Give ``path`` or ``ct`` + ``pet`` (see :func:`find_case_files`), or ``files`` already
    found. The pair is checked (:func:`mefn.io.geometry.check_pair`): no overlap raises
    :class:`~mefn.errors.GeometryError`, CT not in HU or PET not in SUV
    :class:`~mefn.errors.InputError`.
    """
    from mefn.io.geometry import check_pair

    if files is None:
        files = find_case_files(path, ct=ct, pet=pet, label=label, case_id=case_id)
    else:
        if label is not None or case_id is not None:
            from dataclasses import replace

            files = replace(
                files,
                label=Path(label) if label is not None else files.label,
                case_id=case_id or files.case_id,
            )
    if files.is_4d:
        volumes = read_volumes(files.ct)
        if len(volumes) != 2:
            raise InputError(
                f"{files.ct} holds {len(volumes)} volumes; a CT+PET 4D image must hold 2 "
                "(volume 0 CT, volume 1 PET)"
            )
        ct_vol = volumes[0].with_array(volumes[0].array, modality="CT")
        pet_vol = volumes[1].with_array(volumes[1].array, modality="PT")
    else:
        ct_vol = _read(files.ct, "CT", files.ct_series)
        pet_vol = _read(files.pet, "PT", files.pet_series)
    if ct_vol.modality not in (None, "CT"):
        raise InputError(f"{files.ct} holds a {ct_vol.modality} image where a CT was expected")
    if pet_vol.modality not in (None, "PT"):
        raise InputError(f"{files.pet} holds a {pet_vol.modality} image where a PET was expected")
    pair = check_pair(ct_vol, pet_vol, check_units=check_units)
    if ct_vol.units is None:
        ct_vol = ct_vol.with_array(ct_vol.array, modality="CT", units="HU")
    if pet_vol.units is None:
        pet_vol = pet_vol.with_array(pet_vol.array, modality="PT", units="SUVbw")
    label_vol = None
    if files.label is not None:
        from mefn.io.dicom_refs import read_reference

        # an image file is read as it is; a DICOM SEG or RTSTRUCT lands on the CT grid
        label_vol = read_reference(files.label, reference=ct_vol.geometry)
    output_geometry = pet_vol.geometry if files.output_on_pet else None
    provenance: dict[str, Any] = {
        "layout": files.layout,
        "files": files.to_json(),
        "overlap": pair.to_json(),
        "ct": {k: v for k, v in ct_vol.meta.items() if k != "volume"},
        "pet": {k: v for k, v in pet_vol.meta.items() if k != "volume"},
    }
    if "suv" in pet_vol.meta:
        provenance["suv_conversion"] = pet_vol.meta["suv"]
    logger.debug("loaded case %s (%s)", files.case_id, files.layout)
    return Case(
        case_id=files.case_id,
        ct=ct_vol,
        pet=pet_vol,
        label=label_vol,
        layout=files.layout,
        output_geometry=output_geometry,
        provenance=provenance,
    )
