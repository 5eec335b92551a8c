"""The files of a prediction: :func:`output_paths` names them, :func:`save_prediction`
writes them (masks and maps as NIfTI, optionally DICOM SEG and Parametric Map, the report
as JSON), atomically. Both are re-exported by :mod:`mefn.inference`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mefn.errors import InputError, OutputError
from mefn.io.volume import Volume
from mefn.registry import default_labels

if TYPE_CHECKING:  # pragma: no cover
    from mefn.inference import Prediction
    from mefn.io.case import Case

__all__ = ["output_paths", "save_prediction"]


def output_paths(
    outdir: Path, case_id: str, extra: bool = False, dicom: bool = False
) -> dict[str, Path]:
    """The files :func:`save_prediction` writes for one case (``dicom``: also the DICOM SEG
    of the mask and the Parametric Map of the uncertainty)."""
    paths = {
        "mask": outdir / f"{case_id}_mask.nii.gz",
        "uncertainty": outdir / f"{case_id}_uncertainty.nii.gz",
        "report": outdir / f"{case_id}_report.json",
    }
    if extra:
        paths["probabilities"] = outdir / f"{case_id}_probabilities.nii.gz"
        paths["uncertainty_ct"] = outdir / f"{case_id}_uncertainty_ct.nii.gz"
        paths["uncertainty_pet"] = outdir / f"{case_id}_uncertainty_pet.nii.gz"
        paths["evidential_u"] = outdir / f"{case_id}_evidential_u.nii.gz"
    if dicom:
        paths["seg"] = outdir / f"{case_id}_seg.dcm"
        paths["uncertainty_pm"] = outdir / f"{case_id}_uncertainty_pm.dcm"
    return paths


def save_prediction(
    prediction: Prediction,
    outdir: str | Path,
    case: Case | None = None,
    overwrite: bool = False,
    extra: bool = False,
    dicom: bool = False,
) -> dict[str, Path]:
    """Write mask, uncertainty (and extras) and the report, atomically; return the paths.

    ``dicom``: also the mask as a DICOM SEG and the uncertainty as a DICOM Parametric Map,
    both referencing the case's CT series (:mod:`mefn.io.dicom_export`); the case must have
    been loaded from DICOM (else :class:`InputError`).

    Every target is checked before anything is written, so an existing output without
    ``overwrite`` (or, with ``dicom``, a case that is not DICOM) leaves the folder untouched.
    """
    from mefn.fileutil import atomic_write_text, check_writable_dir

    sources: list[Any] = []
    if dicom:  # before the output folder is made: the CT must be a DICOM series
        from mefn.io.dicom_export import read_source_ct

        if case is None:
            raise InputError(
                "DICOM outputs need the Case the prediction was made for (its CT series); "
                "pass case= to save_prediction"
            )
        sources = read_source_ct(case)
    outdir = check_writable_dir(outdir)
    paths = output_paths(outdir, prediction.case_id, extra=extra, dicom=dicom)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{existing[0]} already exists; pass --overwrite to replace it or choose another -o"
        )
    _write_volumes(prediction, paths, extra)
    if dicom:
        _write_dicom(prediction, paths, sources)
    atomic_write_text(paths["report"], json.dumps(prediction.report(case), indent=1))
    return paths


def _write_volumes(prediction: Prediction, paths: dict[str, Path], extra: bool) -> None:
    """The mask, the uncertainty map and, with ``extra``, the probabilities, the CT and PET
    opinions' uncertainty and (when the uncertainty map is the calibrated error probability)
    the fused evidential u, as NIfTI on the prediction's grid."""
    from mefn.io.sitk_bridge import write_volume

    geo = prediction.geometry
    write_volume(Volume(prediction.mask.astype(np.uint8), geo), paths["mask"], dtype=np.uint8)
    write_volume(
        Volume(prediction.uncertainty.astype(np.float32), geo),
        paths["uncertainty"],
        dtype=np.float32,
    )
    if not extra:
        return
    if prediction.probabilities is not None:
        from mefn.io.writers import write_multichannel

        write_multichannel(prediction.probabilities, geo, paths["probabilities"])
    for key in ("uncertainty_ct", "uncertainty_pet", "evidential_u"):
        arr = getattr(prediction, key)
        if arr is not None:
            write_volume(Volume(arr.astype(np.float32), geo), paths[key], dtype=np.float32)


def _write_dicom(prediction: Prediction, paths: dict[str, Path], sources: list[Any]) -> None:
    """The mask as a DICOM SEG and the uncertainty as a Parametric Map over ``sources``."""
    from mefn.io.dicom_export import AlgorithmInfo, write_dicom_seg, write_parametric_map

    settings = prediction.settings
    algorithm = AlgorithmInfo(
        model_name=Path(str(settings.get("model") or "unknown")).stem,
        weights_sha256=str(settings.get("model_sha256") or ""),
        adapter=str(settings["adapter"]) if settings.get("adapter") else None,
    )
    labels = settings.get("labels") or default_labels(max(2, int(prediction.mask.max()) + 1))
    geo = prediction.geometry
    write_dicom_seg(prediction.mask, geo, sources, paths["seg"], labels, algorithm)
    write_parametric_map(
        prediction.uncertainty, geo, sources, paths["uncertainty_pm"], algorithm,
        calibrated=prediction.evidential_u is not None,
    )  # fmt: skip
