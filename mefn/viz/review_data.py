"""What a review shows, on one grid: :class:`ReviewData`, from a prediction, from
`mefn segment` outputs (:func:`load_review`) or from whatever is at hand
(:func:`prepare_review`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mefn.errors import GeometryError, InputError
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume
from mefn.postprocess import DEFAULT_REVIEW_THRESHOLD
from mefn.viz.orientation import _check_grid

if TYPE_CHECKING:  # pragma: no cover
    from mefn.inference import Prediction
    from mefn.postprocess import DroppedLesion, HotSpot, LesionTable

__all__ = ["ReviewData", "load_review", "output_case_id", "prepare_review"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ReviewData:
    """Everything a review figure shows, on one grid (the prediction's)."""

    geometry: Geometry
    ct: np.ndarray
    suv: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray
    lesions: LesionTable | None = None
    uncertainty_ct: np.ndarray | None = None
    uncertainty_pet: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    reference: np.ndarray | None = None
    case_id: str = "case"
    #: PET hot spots the mask leaves out (the report's ``hot_spots``)
    hot_spots: tuple[HotSpot, ...] = ()
    #: lesions removed for a confidence below the floor (the report's ``dropped_lesions``)
    dropped: tuple[DroppedLesion, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "ct",
            "suv",
            "mask",
            "uncertainty",
            "uncertainty_ct",
            "uncertainty_pet",
            "reference",
        ):
            _check_grid(getattr(self, name), self.geometry, name)
        if (
            self.probabilities is not None
            and tuple(self.probabilities.shape[1:]) != self.geometry.shape
        ):
            raise GeometryError(
                f"probabilities {self.probabilities.shape} do not match the grid "
                f"{self.geometry.shape}; expected (K, *grid)"
            )

    @classmethod
    def from_prediction(
        cls,
        prediction: Prediction,
        ct: Volume | np.ndarray,
        reference: Volume | np.ndarray | None = None,
    ) -> ReviewData:
        """From a :class:`mefn.inference.Prediction`, the CT and optionally a reference mask.

        Arrays must be on the prediction's grid; volumes on another grid are resampled onto
        it (CT linearly, the reference by nearest neighbour).
        """
        geo = prediction.geometry
        return cls(
            geometry=geo,
            ct=_array_on_grid(ct, geo, "CT", "linear", -1000.0),
            suv=prediction.suv,
            mask=prediction.mask,
            uncertainty=prediction.uncertainty,
            lesions=prediction.lesions,
            uncertainty_ct=prediction.uncertainty_ct,
            uncertainty_pet=prediction.uncertainty_pet,
            probabilities=prediction.probabilities,
            reference=_reference_on_grid(reference, geo),
            case_id=prediction.case_id,
            hot_spots=prediction.hot_spots,
            dropped=prediction.dropped,
        )

    def lesion_table(self) -> LesionTable:
        """The given lesion table, or one computed from the mask (review threshold 0.3)."""
        if self.lesions is not None:
            return self.lesions
        from mefn.postprocess import lesion_table

        return lesion_table(self.mask, self.suv, self.uncertainty, self.geometry)


def _array_on_grid(
    image: Volume | np.ndarray, geometry: Geometry, what: str, interpolation: str, default: float
) -> np.ndarray:
    """An array on ``geometry``: arrays as given, volumes resampled when their grid differs."""
    if not isinstance(image, Volume):
        return np.asarray(image)
    if image.geometry.same_grid(geometry):
        return image.array
    from mefn.io.geometry import resample_to

    logger.info("resampling the %s onto the prediction grid (%s)", what, interpolation)
    return resample_to(image, geometry, interpolation=interpolation, default_value=default).array


def _reference_on_grid(
    reference: Volume | np.ndarray | None, geometry: Geometry
) -> np.ndarray | None:
    if reference is None:
        return None
    return _array_on_grid(reference, geometry, "reference", "nearest", 0.0).astype(np.uint8)


def output_case_id(folder: str | os.PathLike[str], case_id: str | None = None) -> str:
    """The case whose `mefn segment` outputs are in ``folder`` (the only one, or ``case_id``)."""
    folder = Path(folder)
    found = sorted(p.name[: -len("_mask.nii.gz")] for p in folder.glob("*_mask.nii.gz"))
    if case_id is not None:
        if case_id not in found:
            raise InputError(
                f"no {case_id}_mask.nii.gz in {folder}; cases there: {', '.join(found) or 'none'}"
            )
        return case_id
    if not found:
        raise InputError(
            f"{folder} holds no <case>_mask.nii.gz: expected a `mefn segment` output folder"
        )
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(
            f"{folder} holds outputs of {len(found)} cases ({shown}); choose one with --case-id"
        )
    return found[0]


def _read_report(path: Path) -> dict[str, Any] | None:
    """The ``mefn segment`` report at ``path``, read once for everything the review takes from
    it; None (with a warning when it exists) for no report or an unreadable one."""
    if not path.is_file():
        return None
    import json

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        report = None
    if not isinstance(report, dict):
        logger.warning("%s is not a mefn report; the review does without it", path)
        return None
    return report


def _report_threshold(report: dict[str, Any] | None) -> float:
    try:
        return float((report or {}).get("review_threshold", DEFAULT_REVIEW_THRESHOLD))
    except (TypeError, ValueError):
        logger.warning("the report's review threshold is not a number; using the default")
        return DEFAULT_REVIEW_THRESHOLD


def _report_lesions(report: dict[str, Any] | None) -> LesionTable | None:
    """The lesion table a report holds (with its confidences and review rule), or None for
    no report or one without a readable table (then it is recomputed from the mask)."""
    if report is None or "lesions" not in report:  # a bare report: recomputed, as asked
        return None
    from mefn.postprocess import Lesion, LesionTable

    try:
        lesions = tuple(
            Lesion(**{**entry, "centroid_mm": tuple(entry["centroid_mm"])})
            for entry in report["lesions"]
        )
        return LesionTable(
            lesions=lesions,
            mtv_ml=float(report["mtv_ml"]),
            tlg=float(report["tlg"]),
            review_threshold=float(report["review_threshold"]),
            review_below=report.get("review_below"),
        )
    except (ValueError, TypeError, AttributeError, KeyError):
        logger.warning("the report has no readable lesion table; recomputing it from the mask")
        return None


def _report_entries(
    report: dict[str, Any] | None, key: str, read: Any, what: str
) -> tuple[Any, ...]:
    """The entries of a report's list ``key``, each read by ``read`` (a ``from_json``); none
    for no report, a report without the list, or one whose list cannot be read (``what`` is
    then named in a warning)."""
    if report is None:
        return ()
    try:
        return tuple(read(entry) for entry in report.get(key) or [])
    except (ValueError, TypeError, AttributeError, KeyError):
        logger.warning("the report has no readable %s; none are shown", what)
        return ()


def _report_dropped(report: dict[str, Any] | None) -> tuple[DroppedLesion, ...]:
    """The lesions a report says were removed for low confidence."""
    from mefn.postprocess import DroppedLesion

    return _report_entries(report, "dropped_lesions", DroppedLesion.from_json, "dropped lesions")


def _report_hot_spots(report: dict[str, Any] | None) -> tuple[HotSpot, ...]:
    """The hot spots a report lists."""
    from mefn.postprocess import HotSpot

    return _report_entries(report, "hot_spots", HotSpot.from_json, "hot spots")


def load_review(
    outputs: str | os.PathLike[str],
    case: Case | str | os.PathLike[str],
    reference: Volume | str | os.PathLike[str] | None = None,
    case_id: str | None = None,
) -> ReviewData:
    """Review data from a `mefn segment` output folder and the input case it was made from.

    Reads ``<case>_mask`` and ``<case>_uncertainty`` (and, when both exist,
    ``<case>_uncertainty_ct`` / ``_pet`` from ``--extra``); ``case`` (a :class:`Case` or a path
    for :func:`mefn.io.discovery.load_case`) gives the CT and PET, resampled onto the output
    grid when needed. The lesion table is the report's (with its lesion confidences), else
    recomputed with the report's review threshold.
    """
    from mefn.io.readers import read_volume
    from mefn.postprocess import lesion_table

    folder = Path(outputs)
    case_id = output_case_id(folder, case_id)
    paths = {
        key: folder / f"{case_id}_{key}.nii.gz"
        for key in ("mask", "uncertainty", "uncertainty_ct", "uncertainty_pet")
    }
    if not paths["uncertainty"].is_file():
        raise InputError(
            f"{paths['uncertainty']} is missing beside {paths['mask'].name}; "
            "rerun `mefn segment` for this case"
        )
    if reference is not None and not isinstance(reference, Volume):
        ref_path = Path(reference)
        if not ref_path.is_file():
            raise InputError(f"reference mask {reference} does not exist; check the path")
    mask_vol = read_volume(paths["mask"])
    geo = mask_vol.geometry
    unc_vol = read_volume(paths["uncertainty"])
    if not unc_vol.geometry.same_grid(geo):
        raise GeometryError(
            f"{paths['uncertainty'].name} and {paths['mask'].name} are on different grids; "
            "both must come from one `mefn segment` run"
        )
    extra: dict[str, np.ndarray] = {}
    if paths["uncertainty_ct"].is_file() and paths["uncertainty_pet"].is_file():
        u_ct, u_pet = (read_volume(paths[k]) for k in ("uncertainty_ct", "uncertainty_pet"))
        if u_ct.geometry.same_grid(geo) and u_pet.geometry.same_grid(geo):
            extra = {"uncertainty_ct": u_ct.array, "uncertainty_pet": u_pet.array}
    if isinstance(case, Case):
        loaded = case
    else:
        from mefn.io.discovery import load_case

        loaded = load_case(Path(case))
    ref_volume = (
        reference
        if reference is None or isinstance(reference, Volume)
        else read_volume(Path(reference))
    )
    ct = _array_on_grid(loaded.ct, geo, "CT", "linear", -1000.0)
    suv = _array_on_grid(loaded.pet, geo, "PET", "linear", 0.0).astype(np.float32)
    mask = np.asarray(mask_vol.array, dtype=np.uint8)
    unc = np.asarray(unc_vol.array, dtype=np.float32)
    report = _read_report(folder / f"{case_id}_report.json")
    table = _report_lesions(report)
    if table is None:
        table = lesion_table(mask, suv, unc, geo, review_threshold=_report_threshold(report))
    return ReviewData(
        geometry=geo,
        ct=ct,
        suv=suv,
        mask=mask,
        uncertainty=unc,
        lesions=table,
        reference=_reference_on_grid(ref_volume, geo),
        case_id=case_id,
        hot_spots=_report_hot_spots(report),
        dropped=_report_dropped(report),
        **extra,
    )


def prepare_review(
    case: Case | str | os.PathLike[str] | None = None,
    outputs: str | os.PathLike[str] | None = None,
    reference: Volume | str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] = "default",
    device: str = "auto",
    phantom_seed: int = 2026,
) -> ReviewData:
    """Review data for the notebook and scripts, from whatever is at hand.

    With ``outputs`` (a `mefn segment` folder) and ``case``: :func:`load_review`. With a case
    only: segmented here by :class:`mefn.inference.Predictor` (``model``, ``device``). With
    neither: a whole-body phantom (:func:`mefn.data.phantoms.generate_study`, ``phantom_seed``)
    is generated and segmented, and its true lesion mask becomes the reference.
    """
    if outputs is not None:
        if case is None:
            raise InputError(
                f"outputs {outputs} need the input case they were made from; pass case="
            )
        return load_review(outputs, case, reference=reference)
    from mefn.inference import Predictor

    if case is None:
        from mefn.data.phantoms import generate_study

        study = generate_study(phantom_seed, kind="wholebody")
        loaded = Case(f"phantom_{phantom_seed}", ct=study.ct, pet=study.pet, label=study.label_ct)
        if reference is None:
            reference = study.label_ct
    elif isinstance(case, Case):
        loaded = case
    else:
        from mefn.io.discovery import load_case

        loaded = load_case(Path(case))
    ref_volume: Volume | None = None
    if isinstance(reference, Volume):
        ref_volume = reference
    elif reference is not None:
        from mefn.io.readers import read_volume

        if not Path(reference).is_file():
            raise InputError(f"reference mask {reference} does not exist; check the path")
        ref_volume = read_volume(Path(reference))
    prediction = Predictor(model if isinstance(model, str) else Path(model), device=device).predict(
        loaded, keep_extra=True
    )
    return ReviewData.from_prediction(prediction, loaded.ct, reference=ref_volume)
