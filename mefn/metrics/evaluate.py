"""Folder-level evaluation: match predictions to references, score, write CSV/JSON/PNG.

Matching is by file name: the case of a reference ``<case>.nii.gz`` (or ``.nii``) is
predicted by ``<case>.nii.gz`` or ``<case>_mask.nii.gz`` (what ``mefn segment`` writes).
In the prediction folder, ``*_uncertainty.nii.gz``, ``*_probabilities.nii.gz`` and files
that are not NIfTI are ignored. A missing prediction, a prediction without reference, or
two candidates for one case is an :class:`InputError` naming the case.

A reference may also be ``<case>.dcm``: an RTSTRUCT (rasterised onto the prediction's grid,
which is the CT grid the contours were drawn on; ``reference_roi`` names the ROI when the
file holds several) or a DICOM SEG (its frames placed onto the prediction's grid; a SEG
whose voxels are not voxels of that grid is a :class:`GeometryError`: resample the
prediction onto the SEG's source image). Such a reference has no NIfTI header: the AutoPET
voxel volume is the prediction's.

Uncertainty maps are ``<case>_uncertainty.nii.gz`` (or ``<case>.nii.gz``) in the
uncertainty folder; probability maps ``<case>_probabilities.nii.gz`` (4D, one volume per
class) in the probability folder, or, without one, in the uncertainty folder when every
case has one there. Without probabilities, calibration uses ``1 - u`` as the confidence
(see :mod:`mefn.metrics.calibration`).

Outputs (atomic): ``per_case.csv`` (NaN as an empty field), ``summary.json`` (NaN and
infinities as null), ``per_case_details.json`` (voxel counts, lesion detection and
calibration per case) and, with uncertainty maps, ``reliability.png``,
``risk_coverage.png``; ``per_case_dice.png`` always.

With uncertainty maps, ``summary.json`` also holds ``trust`` (:mod:`mefn.metrics.trust`): the
map's reliability near lesions (``voxel_reliability_near_lesions.png``) and, when every
case's ``<case>_report.json`` (beside its prediction, as ``mefn segment`` writes it) gives
lesion confidences, the lesion-level AUROC, ECE and risk-coverage (``lesions.csv``,
``lesion_reliability.png``, ``lesion_risk_coverage.png``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mefn.errors import GeometryError, InputError
from mefn.fileutil import atomic_write_text, check_writable_dir

if TYPE_CHECKING:  # pragma: no cover
    from mefn.metrics.autopet import AutopetCaseMetrics
    from mefn.metrics.calibration import CalibrationCounts, LesionUnits
    from mefn.metrics.lesions import LesionDetection
    from mefn.metrics.trust import BinnedReliability

__all__ = [
    "CasePaths",
    "AUTOPET_COLUMNS",
    "HECKTOR_COLUMNS",
    "case_name",
    "match_cases",
    "match_predictions",
    "attach_maps",
    "evaluate_autopet",
    "evaluate_hecktor",
]

logger = logging.getLogger(__name__)

AUTOPET_COLUMNS = ("case", "dice", "fpv_ml", "fnv_ml", "fp_voxels", "fn_voxels")
HECKTOR_COLUMNS = (
    "case",
    "dice_gtvp",
    "dice_gtvn",
    "tp_gtvp",
    "tp_gtvn",
    "vol_sum_gtvp",
    "vol_sum_gtvn",
)
_NIFTI = (".nii.gz", ".nii")
_DICOM = ".dcm"
_MAP_SUFFIXES = ("_uncertainty", "_probabilities")


@dataclass(frozen=True)
class CasePaths:
    """The files of one case to evaluate."""

    case: str
    reference: Path
    prediction: Path
    uncertainty: Path | None = None
    probabilities: Path | None = None


def case_name(path: str | os.PathLike[str]) -> str | None:
    """``name`` of ``name.nii.gz`` / ``name.nii``; None for other files."""
    name = Path(path).name
    for ext in _NIFTI:
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def _nifti_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist or is not a folder")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path)
        if name is None or not path.is_file():
            continue
        if name in out:
            raise InputError(
                f"case {name}: both {out[name].name} and {path.name} in {folder}; keep one"
            )
        out[name] = path
    return out


def _reference_files(folder: Path) -> dict[str, Path]:
    """``<case>.nii.gz`` / ``.nii`` and ``<case>.dcm`` (SEG or RTSTRUCT) references."""
    out = _nifti_files(folder, "reference")
    for path in sorted(folder.iterdir()):
        name = path.name
        if not name.lower().endswith(_DICOM) or len(name) <= len(_DICOM) or not path.is_file():
            continue
        case = name[: -len(_DICOM)]
        if case in out:
            raise InputError(
                f"case {case}: both {out[case].name} and {path.name} in {folder}; keep one"
            )
        out[case] = path
    return dict(sorted(out.items()))


def _is_dicom_reference(path: Path) -> bool:
    return path.name.lower().endswith(_DICOM)


def match_cases(
    reference_dir: str | os.PathLike[str], prediction_dir: str | os.PathLike[str]
) -> list[CasePaths]:
    """Pair every reference ``<case>.nii.gz`` (or ``.dcm``) of a folder with its prediction."""
    refs = _reference_files(Path(reference_dir))
    if not refs:
        raise InputError(f"no .nii.gz or .dcm reference found in {reference_dir}")
    return match_predictions(refs, prediction_dir, where=str(reference_dir))


def match_predictions(
    references: dict[str, Path],
    prediction_dir: str | os.PathLike[str],
    where: str = "the references",
) -> list[CasePaths]:
    """Pair references (case -> path) with predictions; error on missing, extra or ambiguous."""
    preds = {
        n: p
        for n, p in _nifti_files(Path(prediction_dir), "prediction").items()
        if not n.endswith(_MAP_SUFFIXES)
    }
    used: set[str] = set()
    cases: list[CasePaths] = []
    missing: list[str] = []
    for case, ref in references.items():
        candidates = [n for n in (case, f"{case}_mask") if n in preds]
        if not candidates:
            missing.append(case)
            continue
        if len(candidates) > 1:
            raise InputError(
                f"case {case}: two predictions "
                f"({', '.join(preds[c].name for c in candidates)}); keep one"
            )
        used.add(candidates[0])
        cases.append(CasePaths(case, ref, preds[candidates[0]]))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            f"case {missing[0]}{more}: no prediction {missing[0]}.nii.gz or "
            f"{missing[0]}_mask.nii.gz in {prediction_dir}; predict every reference case"
        )
    extra = sorted(set(preds) - used)
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise InputError(
            f"case {extra[0]}{more}: prediction {preds[extra[0]].name} has no reference in "
            f"{where}; remove it or add the reference"
        )
    return cases


def attach_maps(
    cases: Sequence[CasePaths],
    uncertainty_dir: str | os.PathLike[str] | None = None,
    probability_dir: str | os.PathLike[str] | None = None,
) -> list[CasePaths]:
    """Add uncertainty (and probability) map paths to each case; error naming a missing one."""
    out = list(cases)
    if uncertainty_dir is not None:
        files = _nifti_files(Path(uncertainty_dir), "uncertainty")
        new = []
        for c in out:
            name = next((n for n in (f"{c.case}_uncertainty", c.case) if n in files), None)
            if name is None:
                raise InputError(
                    f"case {c.case}: no uncertainty map {c.case}_uncertainty.nii.gz in {uncertainty_dir}"
                )
            new.append(CasePaths(c.case, c.reference, c.prediction, files[name], c.probabilities))
        out = new
    if probability_dir is not None:
        files = _nifti_files(Path(probability_dir), "probability")
        new = []
        for c in out:
            name = next((n for n in (f"{c.case}_probabilities", c.case) if n in files), None)
            if name is None:
                raise InputError(
                    f"case {c.case}: no probability map {c.case}_probabilities.nii.gz in {probability_dir}"
                )
            new.append(CasePaths(c.case, c.reference, c.prediction, c.uncertainty, files[name]))
        out = new
    elif uncertainty_dir is not None:
        files = _nifti_files(Path(uncertainty_dir), "uncertainty")
        if all(f"{c.case}_probabilities" in files for c in out):
            out = [
                CasePaths(
                    c.case,
                    c.reference,
                    c.prediction,
                    c.uncertainty,
                    files[f"{c.case}_probabilities"],
                )
                for c in out
            ]
    return out


# --- writing ---------------------------------------------------------------------------------


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row[c]) for c in columns])
    atomic_write_text(path, buf.getvalue())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


# --- DICOM references ------------------------------------------------------------------------


def _dicom_reference_like(path: Path, prediction: Any, case: str, roi: str | None) -> Any:
    """A SEG / RTSTRUCT reference on the grid of an AutoPET-read prediction, as a NiftiArray."""
    from mefn.io.challenge_io import NiftiArray
    from mefn.io.dicom_refs import read_reference
    from mefn.io.volume import Geometry

    shape = tuple(int(n) for n in prediction.array.shape)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    grid = Geometry.from_affine_lps(ras_to_lps @ prediction.affine, shape)  # type: ignore[arg-type]
    volume = read_reference(path, reference=grid, roi=roi)
    logger.info("case %s: DICOM reference %s on the prediction's grid", case, path.name)
    return NiftiArray(
        array=np.asarray(volume.array, dtype=np.float64),
        affine=prediction.affine,
        voxel_volume_ml=prediction.voxel_volume_ml,
        pixdim=prediction.pixdim,
    )


# --- AutoPET ---------------------------------------------------------------------------------


def _same_grid(
    case: str,
    what: str,
    affine: np.ndarray,
    shape: tuple[int, ...],
    ref_affine: np.ndarray,
    ref_shape: tuple[int, ...],
) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise GeometryError(
            f"case {case}: {what} shape {tuple(shape)} differs from the reference {tuple(ref_shape)}; "
            "resample it onto the reference grid"
        )
    if not np.allclose(affine, ref_affine, atol=1e-3):
        raise GeometryError(
            f"case {case}: {what} grid (origin {np.round(affine[:3, 3], 3).tolist()} mm) differs from "
            f"the reference's (origin {np.round(ref_affine[:3, 3], 3).tolist()} mm); resample it onto "
            "the reference grid"
        )


def _probabilities_first(array: np.ndarray, case: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = array
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector images: (X, Y, Z, 1, C)
        arr = arr[:, :, :, 0, :]
    if arr.ndim != 4 or arr.shape[:3] != tuple(shape):
        raise GeometryError(
            f"case {case}: probability map {array.shape} must be 4D (X, Y, Z, classes) on the "
            f"reference grid {tuple(shape)}"
        )
    return np.moveaxis(arr, -1, 0)


@dataclass(frozen=True)
class _AutopetCase:
    """One scored AutoPET case: its metrics, lesion detection and (with maps) calibration."""

    record: AutopetCaseMetrics
    detection: LesionDetection
    detail: dict[str, Any]
    counts: CalibrationCounts | None = None  # with an uncertainty map
    units: LesionUnits | None = None  # with an uncertainty map
    near: BinnedReliability | None = None  # with an uncertainty map: voxels near lesions
    confidence: list[float] | None = None  # with a report holding lesion confidences
    true: list[bool] | None = None
    map_kind: str | None = None  # what the uncertainty map is, as the report says


def _autopet_case(
    c: CasePaths, year: int, with_maps: bool, reference_roi: str | None
) -> _AutopetCase:
    """Read, check and score one case (the per-case part of :func:`evaluate_autopet`)."""
    from mefn.io.challenge_io import read_autopet_mask, read_nifti_float
    from mefn.metrics.autopet import autopet_case_metrics
    from mefn.metrics.calibration import calibration_counts, lesion_units
    from mefn.metrics.lesions import lesion_detection

    logger.info("AutoPET %s: %s", year, c.case)
    if _is_dicom_reference(c.reference):
        pred = read_autopet_mask(c.prediction, c.case)
        ref = _dicom_reference_like(c.reference, pred, c.case, reference_roi)
    else:
        ref = read_autopet_mask(c.reference, c.case)
        pred = read_autopet_mask(c.prediction, c.case)
    _same_grid(c.case, "prediction", pred.affine, pred.array.shape, ref.affine, ref.array.shape)
    rec = autopet_case_metrics(ref.array, pred.array, ref.voxel_volume_ml, year=year, case=c.case)
    det = lesion_detection(ref.array, pred.array)
    detail: dict[str, Any] = {**rec.to_dict(), "lesion_detection": det.to_dict()}
    if not (with_maps and c.uncertainty is not None):
        return _AutopetCase(rec, det, detail)
    unc = read_nifti_float(c.uncertainty, c.case, "uncertainty map")
    _same_grid(c.case, "uncertainty map", unc.affine, unc.array.shape, ref.affine, ref.array.shape)
    probs = None
    if c.probabilities is not None:
        p = read_nifti_float(c.probabilities, c.case, "probability map")
        probs = _probabilities_first(p.array, c.case, ref.array.shape)
    counts = calibration_counts(ref.array, pred.array, unc.array, probabilities=probs, n_classes=2)
    detail["calibration"] = counts.summary()
    detail["calibration"]["confidence_source"] = "probabilities" if probs is not None else "1 - u"
    units = lesion_units(ref.array, pred.array, unc.array)
    return _with_trust(c, _AutopetCase(rec, det, detail, counts, units), ref, pred, unc)


def _with_trust(c: CasePaths, scored: _AutopetCase, ref: Any, pred: Any, unc: Any) -> _AutopetCase:
    """The case's trust (:mod:`mefn.metrics.trust`): the uncertainty map's reliability near
    lesions and, when ``<case>_report.json`` beside the prediction holds lesion confidences,
    each predicted lesion's confidence and whether it is true."""
    from dataclasses import replace

    from mefn.confidence import iter_lesions, lesion_truth
    from mefn.metrics.trust import voxel_reliability_near_lesions

    mask = pred.array.astype(np.uint8)
    reference = ref.array != 0
    near = voxel_reliability_near_lesions(
        np.clip(unc.array, 0.0, 1.0), mask, reference, tuple(pred.pixdim)
    )
    scored.detail["trust"] = {"voxels_near_lesions_ece": near.ece}
    report = _report_of(c)
    kind = (report.get("uncertainty") or {}).get("map") if report else None
    lesions = (report or {}).get("lesions") or []
    if not lesions or any(les.get("confidence") is None for les in lesions):
        return replace(scored, near=near, map_kind=kind)
    found = [(box, les) for _label, box, les in iter_lesions(mask)]
    # the report numbers lesions by decreasing size, in the order iter_lesions finds them
    order = sorted(range(len(found)), key=lambda i: -int(found[i][1].sum()))
    sizes = [int(found[i][1].sum()) for i in order]
    if sizes != [int(les["voxels"]) for les in lesions]:
        logger.warning(
            "%s: the report's %d lesions do not match the mask's %d; its confidences are not "
            "scored", c.case, len(lesions), len(found),
        )  # fmt: skip
        return replace(scored, near=near, map_kind=kind)
    truth = [lesion_truth(found[i][0], found[i][1], reference) for i in order]
    conf = [float(les["confidence"]) for les in lesions]
    scored.detail["trust"]["lesions"] = [
        {"lesion_id": les["lesion_id"], "confidence": p, "true": t}
        for les, p, t in zip(lesions, conf, truth)
    ]
    return replace(scored, near=near, confidence=conf, true=truth, map_kind=kind)


def _report_of(c: CasePaths) -> dict[str, Any] | None:
    """The ``mefn segment`` report of the case beside its prediction, if there is one (a
    malformed one is an InputError: :func:`mefn.cohort.read_report`)."""
    from mefn.cohort import REPORT_SUFFIX, read_report

    path = c.prediction.parent / f"{c.case}{REPORT_SUFFIX}"
    return read_report(path) if path.is_file() else None


def _autopet_calibration(scored: Sequence[_AutopetCase], out: Path, plots: bool) -> dict[str, Any]:
    """Calibration pooled over the cases, the risk-coverage curve (and their plots)."""
    from mefn.metrics.calibration import CalibrationCounts, LesionUnits, risk_coverage

    pooled = CalibrationCounts()
    units = LesionUnits.empty()
    for s in scored:
        if s.counts is not None and s.units is not None:
            pooled = pooled + s.counts
            units = units + s.units
    cal = pooled.summary()
    sources = {s.detail["calibration"]["confidence_source"] for s in scored}
    cal["confidence_source"] = sources.pop() if len(sources) == 1 else "mixed"
    cal["definitions"] = (
        "voxels pooled over cases, whole volumes; ECE: 15 equal-width right-closed bins on the "
        "probability of the predicted (mask) class; Brier: mean sum over classes of (p - y)^2; "
        "NLL: mean -log max(p_true, 1e-12); UEO: max over t in {0,0.01,...,0.99} of "
        "Dice({u > t}, mask != reference); AUROC: exact tie-aware, u as score of error voxels"
    )
    curve = risk_coverage(units)
    cal["risk_coverage"] = {
        "rule": "units = 18-connected components of reference | mask, referred by decreasing mean u "
        "and replaced by the reference; Dice pooled over cases",
        "coverage": curve["coverage"],
        "dice": curve["dice"],
        "area": curve["area"],
    }
    if plots:
        from mefn.metrics.plots import plot_reliability, plot_risk_coverage

        plot_reliability(pooled.reliability(), cal["ece"], out / "reliability.png")
        plot_risk_coverage(curve, out / "risk_coverage.png")
    return cal


def _autopet_trust(scored: Sequence[_AutopetCase], out: Path, plots: bool) -> dict[str, Any]:
    """Trust pooled over the cases (:mod:`mefn.metrics.trust`): the uncertainty map's
    reliability near lesions and, with confidences in every case's report, lesion-level
    AUROC, ECE and risk-coverage; ``lesions.csv`` and the plots."""
    from mefn.metrics.trust import lesion_trust

    near = None
    for s in scored:
        if s.near is not None:
            near = s.near if near is None else near + s.near
    kinds = {s.map_kind for s in scored}
    trust: dict[str, Any] = {
        "uncertainty_map": kinds.pop() if len(kinds) == 1 else "mixed",
        "voxels_near_lesions": near.to_json() if near is not None else None,
        "definitions": "mefn.metrics.trust: the uncertainty map read as the probability that "
        "the voxel's label is wrong, voxels within 10 mm of a reference or predicted lesion, "
        "15 equal-width bins; lesions = 18-connected components of the mask, true when they "
        "touch the reference, confidence from <case>_report.json, 10 bins; risk = share of "
        "false lesions among those left after referring the least confident first",
    }
    with_conf = [s for s in scored if s.confidence is not None and s.true is not None]
    if scored and len(with_conf) == len(scored):
        conf = [p for s in with_conf for p in (s.confidence or [])]
        true = [t for s in with_conf for t in (s.true or [])]
        trust["lesions"] = lesion_trust(conf, true)
        rows = [
            {"case": s.record.case, **entry}
            for s in with_conf
            for entry in s.detail["trust"]["lesions"]
        ]
        _write_csv(out / "lesions.csv", ("case", "lesion_id", "confidence", "true"), rows)
    if plots and near is not None:
        from mefn.metrics.plots import plot_binned_reliability, plot_lesion_risk_coverage

        plot_binned_reliability(
            trust["voxels_near_lesions"], out / "voxel_reliability_near_lesions.png",
            "Voxels near lesions", "stated probability that the label is wrong",
            "observed error rate", "voxels",
        )  # fmt: skip
        if "lesions" in trust:
            plot_binned_reliability(
                trust["lesions"]["reliability"], out / "lesion_reliability.png",
                "Predicted lesions", "stated confidence that the lesion is real",
                "share of true lesions", "lesions",
            )  # fmt: skip
            plot_lesion_risk_coverage(
                trust["lesions"]["risk_coverage"], out / "lesion_risk_coverage.png"
            )
    return trust


def evaluate_autopet(
    cases: Sequence[CasePaths],
    out_dir: str | os.PathLike[str],
    year: int = 2022,
    plots: bool = True,
    reference_roi: str | None = None,
) -> dict[str, Any]:
    """Score AutoPET cases and write per_case.csv, summary.json (and plots); returns the summary.

    ``reference_roi``: the ROI of RTSTRUCT references holding several.
    """
    from mefn.metrics.autopet import aggregate_autopet, normalise_year
    from mefn.metrics.lesions import aggregate_detection

    normalise_year(year)
    out = check_writable_dir(out_dir)
    with_maps = bool(cases) and all(c.uncertainty is not None for c in cases)
    scored = [_autopet_case(c, year, with_maps, reference_roi) for c in cases]
    records = [s.record for s in scored]
    summary = aggregate_autopet(records, year)
    summary["lesion_detection"] = aggregate_detection([s.detection for s in scored])
    if with_maps:
        summary["calibration"] = _autopet_calibration(scored, out, plots)
        summary["trust"] = _autopet_trust(scored, out, plots)
    if plots and records:
        from mefn.metrics.plots import plot_per_case_dice

        plot_per_case_dice(
            [r.case for r in records], [r.dice for r in records], out / "per_case_dice.png"
        )
    _write_csv(out / "per_case.csv", AUTOPET_COLUMNS, [r.to_dict() for r in records])
    _write_json(out / "per_case_details.json", [s.detail for s in scored])
    _write_json(out / "summary.json", summary)
    return summary


# --- HECKTOR ---------------------------------------------------------------------------------


def _hecktor_reference_file(c: CasePaths, folder: Path, roi: str | None) -> Path:
    """A SEG / RTSTRUCT reference written as NIfTI (uint8) on the prediction's grid."""
    from mefn.io.dicom_refs import read_reference
    from mefn.io.readers import read_volume
    from mefn.io.sitk_bridge import write_volume

    grid = read_volume(c.prediction).geometry
    volume = read_reference(c.reference, reference=grid, roi=roi)
    return write_volume(volume, folder / f"{c.case}.nii.gz", dtype=np.uint8)


def evaluate_hecktor(
    cases: Sequence[CasePaths],
    out_dir: str | os.PathLike[str],
    plots: bool = True,
    reference_roi: str | None = None,
) -> dict[str, Any]:
    """Score HECKTOR 2022 cases (DSCagg) and write per_case.csv and summary.json.

    A ``.dcm`` reference (SEG segments 1 and 2, or one RTSTRUCT ROI as label 1, chosen by
    ``reference_roi`` when there are several) is put on the prediction's grid first.
    """
    import tempfile

    from mefn.io.challenge_io import hecktor2022_overlap
    from mefn.metrics.hecktor import aggregate_hecktor2022, hecktor2022_case_metrics

    out = check_writable_dir(out_dir)
    records = []
    for c in cases:
        logger.info("HECKTOR 2022: %s", c.case)
        if _is_dicom_reference(c.reference):
            with tempfile.TemporaryDirectory(prefix="mefn-ref-") as tmp:
                reference = _hecktor_reference_file(c, Path(tmp), reference_roi)
                ov = hecktor2022_overlap(reference, c.prediction, c.case)
        else:
            ov = hecktor2022_overlap(c.reference, c.prediction, c.case)
        records.append(
            hecktor2022_case_metrics(
                ov.dice, ov.reference_voxels, ov.predicted_voxels, ov.voxel_volume_mm3, c.case
            )
        )
    summary = aggregate_hecktor2022(records)
    if plots and records:
        from mefn.metrics.plots import plot_per_case_dice

        plot_per_case_dice(
            [f"{r.case} GTVp" for r in records] + [f"{r.case} GTVn" for r in records],
            [r.dice_gtvp for r in records] + [r.dice_gtvn for r in records],
            out / "per_case_dice.png",
        )
    _write_csv(out / "per_case.csv", HECKTOR_COLUMNS, [r.to_dict() for r in records])
    _write_json(out / "per_case_details.json", [r.to_dict() for r in records])
    _write_json(out / "summary.json", summary)
    return summary
