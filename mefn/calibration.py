"""Post-processing calibrated on validation cases, for any weights (``mefn calibrate``).

For every setting of (lesion probability threshold, PET check of each lesion, minimum lesion
volume) of :data:`LESION_THRESHOLD_CANDIDATES` x :data:`PET_CHECK_CANDIDATES` x
:data:`MIN_LESION_CANDIDATES_ML`, each validation case is segmented once (probabilities kept)
and scored with the AutoPET 2022 metrics; :func:`choose_postprocessing` keeps the best mean
Dice among the settings whose mean false-positive volume stays within :data:`FPV_LIMIT_ML` (or
within the plain argmax's, when that is larger); the review threshold is then the mean-u
threshold that best separates false from true detections
(:func:`mefn.postprocess.choose_review_threshold`). :func:`write_calibration` stores the choice
in a model card, atomically. ``pipelines/train_phantoms.py`` adds the simple phantoms of
``pipelines/eval_simple_phantoms.py`` as a second set the limit must hold on.

The trust calibration follows (:func:`calibrate_trust`, :func:`fit_trust_record`): the
validation cases are segmented again with the chosen post-processing, the lesion confidence
and voxel error map of :mod:`mefn.confidence` are fitted on what that delivers, and a
confidence floor (``min_confidence``: lesions less likely than it to be true are removed) is
chosen among :data:`MIN_CONFIDENCE_CANDIDATES` by :func:`choose_min_confidence` on
out-of-fold confidences, so the floor is judged on lesions the model scoring them never saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FPV_LIMIT_ML",
    "LESION_THRESHOLD_CANDIDATES",
    "MIN_CONFIDENCE_CANDIDATES",
    "MIN_LESION_CANDIDATES_ML",
    "PET_CHECK_CANDIDATES",
    "PLAIN",
    "Setting",
    "calibrate_card",
    "calibrate_postprocessing",
    "calibrate_trust",
    "choose_min_confidence",
    "choose_postprocessing",
    "fit_trust_record",
    "mean_scores",
    "summary",
    "trust_summary",
    "write_calibration",
    "write_trust",
]


MIN_LESION_CANDIDATES_ML = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
#: None: the argmax (for two classes, lesion probability above 0.5).
LESION_THRESHOLD_CANDIDATES = (None, 0.4, 0.3, 0.2, 0.15, 0.1)
#: What a lesion must show on PET, and whether its outline is redrawn on the PET
#: (mefn.postprocess.PetCheck): none; uptake (SUVmax >= 1); uptake and contrast (SUVmax >= 1
#: and >= 2x its surroundings); the same with the outline redrawn at 40 % (grown up to 8 mm)
#: or 30 % (16 mm) of the way from background to SUVmax.
PET_CHECK_CANDIDATES: dict[str, dict[str, Any]] = {
    "none": {},
    "uptake": {"min_suv": 1.0},
    "contrast": {"min_suv": 1.0, "min_contrast": 2.0},
    "refine40": {"min_suv": 1.0, "min_contrast": 2.0, "refine_fraction": 0.4, "refine_mm": 8.0},
    "refine30": {"min_suv": 1.0, "min_contrast": 2.0, "refine_fraction": 0.3, "refine_mm": 16.0},
}
#: The plain argmax, without PET check or floor: the reference of choose_postprocessing.
PLAIN = (None, "none", 0.0)
#: The target for the mean false-positive volume, in mL (AutoPET 2022 definitions).
FPV_LIMIT_ML = 3.0
#: Confidence floors tried by :func:`choose_min_confidence` (0: keep every lesion).
MIN_CONFIDENCE_CANDIDATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)

Setting = tuple[float | None, str, float]  # (lesion threshold, PET check name, floor in mL)


def _foreground_box(*masks: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """The bounding box of the union of ``masks`` (with ``margin`` voxels); one voxel (of
    background) when they are all empty.

    Every AutoPET metric and component count of masks inside it equals that of the whole
    grid (components are of foreground only), at a fraction of the cost."""
    union = np.logical_or.reduce([m != 0 for m in masks])
    nz = [np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        return (slice(0, 1),) * 3
    return tuple(slice(max(int(n[0]) - margin, 0), int(n[-1]) + margin + 1) for n in nz)


def choose_postprocessing(
    scores: dict[Setting, dict[str, float]],
    simple: dict[Setting, dict[str, float]] | None = None,
) -> Setting:
    """The (lesion threshold, PET check, lesion floor) with the best Dice among those whose
    mean false-positive volume is within FPV_LIMIT_ML, or within that of the plain argmax
    (PLAIN, which must be scored) when that is larger: post-processing may add Dice, never
    false positives beyond both. ``scores`` are the validation split's; with ``simple`` (the
    same settings on eval_simple_phantoms.py's phantoms, written apart from the generator)
    the limit holds on both and the Dice is the mean of the two, so a setting that only suits
    the generator's studies does not win. On a tie, the smaller false-positive volume on the
    validation split."""
    sets = [scores] if simple is None else [scores, simple]
    limits = [max(FPV_LIMIT_ML, s[PLAIN]["mean_fpv_ml"]) for s in sets]
    within = [k for k in scores if all(s[k]["mean_fpv_ml"] <= lim for s, lim in zip(sets, limits))]
    return max(
        within,
        key=lambda k: (
            round(float(np.mean([s[k]["mean_dice"] for s in sets])), 4),
            -scores[k]["mean_fpv_ml"],
        ),
    )


def _settings_metrics(
    prob: np.ndarray,
    ref: np.ndarray,
    unc: np.ndarray,
    suv: np.ndarray,
    spacing: tuple[float, float, float],
    voxel_ml: float,
    per_case: dict[Setting, list[Any]],
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] | None,
) -> None:
    """Append one case's AutoPET metrics (and its lesions' mean u and false-positive flags)
    under every (lesion threshold, PET check, lesion floor) setting, on the foreground's
    bounding box, widened by the reach of the PET checks (their background shell and
    growth) so every check reads what it would on the whole grid."""
    from mefn.metrics.autopet import autopet_case_metrics
    from mefn.metrics.lesions import predicted_lesion_errors
    from mefn.postprocess import (
        BACKGROUND_GAP_MM,
        BACKGROUND_SHELL_MM,
        PetCheck,
        apply_pet_check,
        mask_from_probabilities,
        remove_small_components,
    )

    checks = {name: PetCheck(**fields) for name, fields in PET_CHECK_CANDIDATES.items()}
    grown = [c.refine_mm for c in checks.values() if c.refine_fraction is not None]
    reach = max([BACKGROUND_GAP_MM, *grown])
    margin = int(np.ceil((reach + BACKGROUND_SHELL_MM) / min(spacing))) + 2
    lowest = min(t for t in LESION_THRESHOLD_CANDIDATES if t is not None)
    box = _foreground_box(ref, mask_from_probabilities(prob, 0, lowest), margin=margin)
    prob = np.ascontiguousarray(prob[(slice(None), *box)])
    ref = ref[box].astype(np.uint8)
    unc = unc[box]
    suv = suv[box]
    for t in LESION_THRESHOLD_CANDIDATES:
        thresholded = mask_from_probabilities(prob, 0, t)
        for name, check in checks.items():
            raw = apply_pet_check(thresholded, suv, spacing, check)
            # the lesions of the mask before the floor; a floor keeps those with enough voxels
            u, fp, voxels = predicted_lesion_errors(ref, raw, unc)
            for min_ml in MIN_LESION_CANDIDATES_ML:
                min_vox = int(np.ceil(min_ml / voxel_ml)) if min_ml else 0
                mask = remove_small_components(raw.copy(), min_vox)
                per_case[t, name, min_ml].append(autopet_case_metrics(ref, mask, spacing, 2022))
                if lesions is not None:
                    keep = voxels >= min_vox
                    lesions[t, name, min_ml].append((u[keep], fp[keep]))


def mean_scores(metrics: list[Any]) -> dict[str, float]:
    """The AutoPET 2022 means (mefn.metrics.autopet.aggregate_autopet) under the names the
    card's calibration scores use."""
    from mefn.metrics.autopet import aggregate_autopet

    agg = aggregate_autopet(metrics, 2022)
    return {
        "mean_dice": agg["dice_mean"],
        "mean_fpv_ml": agg["fpv_ml_mean"],
        "mean_fnv_ml": agg["fnv_ml_mean"],
    }


def _score_settings(
    predictor: Any,
    cases: list[Any],
    settings: list[Setting],
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] | None,
    names: list[str],
    progress: Callable[[str], None] | None = None,
) -> dict[Setting, dict[str, float]]:
    """Segment ``cases`` once each (probabilities kept) and score every post-processing
    setting on them (:func:`_settings_metrics`): the mean AutoPET 2022 scores per setting.
    A case's prediction is dropped once scored (a whole validation split would not fit)."""
    from mefn.metrics.scoring import score_cases

    per_case: dict[Setting, list[Any]] = {k: [] for k in settings}

    def every_setting(case: Any, pred: Any, ref: np.ndarray) -> dict[str, Any]:
        if pred.probabilities is None:  # pragma: no cover - keep_extra keeps them
            raise RuntimeError(f"{case.case_id}: the prediction kept no probabilities")
        geo = pred.geometry
        # the review threshold is one of the evidential u (a card may hold an error map)
        raw_u = pred.evidential_u if pred.evidential_u is not None else pred.uncertainty
        _settings_metrics(
            pred.probabilities, ref > 0, raw_u, pred.suv, geo.spacing_mm,
            geo.voxel_volume_ml, per_case, lesions,
        )  # fmt: skip
        return {}

    score_cases(
        predictor,
        cases,
        None,
        extra=every_setting,
        keep_extra=True,
        progress=(lambda i, _s: progress(f"{names[i]}: scored")) if progress else None,
    )
    return {key: mean_scores(metrics) for key, metrics in per_case.items()}


def calibrate_postprocessing(
    model: str | Path,
    entries: Sequence[Any],
    tta_axes: tuple[int, ...] = (),
    second: tuple[Sequence[Callable[[], Any]], Sequence[str]] | None = None,
    progress: Callable[[str], None] | None = None,
    adapter: str | Path | None = None,
    tta_scales: tuple[float, ...] = (1.0,),
) -> dict[str, Any]:
    """The post-processing of ``model`` (a bundled name, weights file or run folder; with
    ``adapter``, those weights with that adapter) chosen on
    ``entries`` (labelled validation cases, never test cases: anything with ``ct``, ``pet``,
    ``label`` and ``case_id``, e.g. :class:`mefn.data.datasets.DatasetEntry`) for segmentation with
    test-time mirroring along ``tta_axes`` at the test-time scales ``tta_scales``:
    ``lesion_threshold``, ``pet_check``,
    ``min_lesion_ml`` (:func:`choose_postprocessing`, with ``second``'s cases as the second
    set when given) and ``review_threshold`` (None when the detections are all true or all
    false), with every setting's scores. ``progress`` receives one line per step."""
    from mefn.errors import InputError
    from mefn.inference import Predictor
    from mefn.metrics.scoring import case_loaders
    from mefn.postprocess import PetCheck, choose_review_threshold

    cases, names = case_loaders(entries), [str(e.case_id) for e in entries]
    if not cases:
        raise InputError("calibration needs at least one labelled validation case, found none")
    # every threshold, PET check and floor is applied to the kept probabilities; the mask
    # predict() makes is not used, so its settings only need to be valid, not the card's
    predictor = Predictor(
        model, adapter=adapter, device="cpu", min_lesion_ml=0.0, tta_axes=tta_axes,
        tta_scales=tta_scales, lesion_threshold=0.5, pet_check=PetCheck(),
    )  # fmt: skip
    settings: list[Setting] = [
        (t, name, v)
        for t in LESION_THRESHOLD_CANDIDATES
        for name in PET_CHECK_CANDIDATES
        for v in MIN_LESION_CANDIDATES_ML
    ]
    # per setting: each predicted lesion's (mean u, false?) on the validation cases
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in settings}
    scores = _score_settings(predictor, cases, settings, lesions, names, progress)
    simple: dict[Setting, dict[str, float]] | None = None
    if second is not None:
        simple = _score_settings(
            predictor, list(second[0]), settings, None, list(second[1]), progress
        )
    best = choose_postprocessing(scores, simple)
    u_means = np.concatenate([u for u, _ in lesions[best]])
    false_pos = np.concatenate([fp for _, fp in lesions[best]])
    try:
        threshold, stats = choose_review_threshold(u_means, false_pos)
    except ValueError as exc:  # all detections false (or all true): nothing to separate
        if progress:
            progress(f"review threshold not calibrated: {exc}")
        threshold, stats = None, {"n_fp": int(false_pos.sum()), "n_tp": int((~false_pos).sum())}
    return {
        "cases": len(cases),
        "tta_axes": list(tta_axes),
        "tta_scales": list(predictor.tta_scales),
        "lesion_threshold": best[0],
        "pet_check": PetCheck(**PET_CHECK_CANDIDATES[best[1]]).to_json(),
        "pet_check_name": best[1],
        "min_lesion_ml": best[2],
        "scores": [
            {
                "lesion_threshold": t,
                "pet_check": name,
                "min_lesion_ml": v,
                **scores[t, name, v],
                **({"simple_phantoms": simple[t, name, v]} if simple else {}),
            }
            for t, name, v in settings
        ],
        "pet_checks": PET_CHECK_CANDIDATES,
        "review_threshold": threshold,
        "review": stats,
    }


def _read_card(path: Path) -> dict[str, Any]:
    from mefn.errors import CheckpointError

    if not path.exists() and path.name == "card.json":  # an adapter without a card yet
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read the card {path} ({type(exc).__name__}: {exc}); expected the "
            "model.json written by mefn train or an adapter's card.json"
        ) from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the card {path} is not a JSON object; fix or retrain it")
    return card


def _settings_of(card: dict[str, Any], path: Path) -> dict[str, Any]:
    """Where a card keeps the settings ``mefn segment`` reads: an adapter's card in its
    ``postprocess`` mapping, a weights card at its top level (as the bundled card)."""
    if path.name == "card.json":
        return card.setdefault("postprocess", {})  # type: ignore[no-any-return]
    return card


def write_calibration(card_path: str | Path, calibration: dict[str, Any], **record: Any) -> None:
    """Store ``calibration`` (from :func:`calibrate_postprocessing`) in the card at
    ``card_path`` (a weights card, or an adapter's ``card.json``), atomically: the settings
    ``mefn segment`` reads (``tta_axes``, ``tta_scales``, ``lesion_threshold``, ``pet_check``,
    ``min_lesion_ml``, ``review_threshold`` when calibrated) and the whole record under
    ``calibration`` (with ``record``'s fields). A trust calibration the card held is removed:
    it was fitted for the previous post-processing (:func:`write_trust` stores a new one)."""
    from mefn.fileutil import atomic_write_text

    path = Path(card_path)
    card = _read_card(path)
    settings = _settings_of(card, path)
    settings["tta_axes"] = list(calibration["tta_axes"])
    settings["tta_scales"] = list(calibration["tta_scales"])
    settings["lesion_threshold"] = calibration["lesion_threshold"]
    settings["pet_check"] = calibration["pet_check"]
    settings["min_lesion_ml"] = calibration["min_lesion_ml"]
    if calibration["review_threshold"] is not None:
        settings["review_threshold"] = calibration["review_threshold"]
    for key in ("lesion_confidence", "voxel_error"):
        card.pop(key, None)
    settings.pop("review_below", None)
    settings.pop("min_confidence", None)
    card["calibration"] = {**calibration, **record}
    atomic_write_text(path, json.dumps(card, indent=1))


def calibrate_trust(
    model: str | Path,
    entries: Sequence[Any],
    adapter: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The lesion confidence and voxel error map of ``model`` (with ``adapter``) fitted on
    ``entries`` (labelled validation cases) segmented with the post-processing its card holds
    now (so after :func:`write_calibration`): the card entries of
    :func:`mefn.confidence.trust_record`, with ``review_below`` the card's or the default."""
    from mefn.confidence import EvidenceMaps, TrustCase
    from mefn.errors import InputError
    from mefn.inference import Predictor, ct_on_grid
    from mefn.metrics.scoring import case_loaders, reference_on_grid

    cases = case_loaders(entries)
    if not cases:
        raise InputError("calibration needs at least one labelled validation case, found none")
    # every lesion the post-processing delivers: the floor is chosen after the fit
    predictor = Predictor(model, adapter=adapter, device="cpu", min_confidence=0.0)

    def trust_cases() -> Any:
        for load, entry in zip(cases, entries):
            case = load()
            pred = predictor.predict(case, keep_extra=True)
            if pred.probabilities is None:  # pragma: no cover - keep_extra keeps them
                raise RuntimeError(f"{case.case_id}: the prediction kept no probabilities")
            reference = reference_on_grid(case, pred.geometry) > 0
            raw_u = pred.evidential_u if pred.evidential_u is not None else pred.uncertainty
            maps = EvidenceMaps(
                lesion_probability=np.subtract(1.0, pred.probabilities[0], dtype=np.float32),
                uncertainty=raw_u,
                suv=pred.suv,
                spacing_mm=pred.geometry.spacing_mm,
                uncertainty_ct=pred.uncertainty_ct,
                uncertainty_pet=pred.uncertainty_pet,
                ct=ct_on_grid(case, pred.geometry),
            )
            if progress:
                progress(
                    f"{entry.case_id}: {len(pred.lesions.lesions)} lesion(s) for the trust fit"
                )
            yield TrustCase(pred.mask, reference, maps)

    return fit_trust_record(trust_cases(), predictor.review_below, progress=progress)


def fit_trust_record(
    cases: Iterable[Any],
    review_below: float,
    floor: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The trust calibration of validation ``cases`` (:class:`mefn.confidence.TrustCase`, read
    one at a time) as card entries (:func:`mefn.confidence.trust_record`): the lesion
    confidence and voxel error map (:func:`mefn.confidence.fit_trust`) and, with ``floor``,
    the confidence floor chosen on out-of-fold confidences (:func:`choose_min_confidence`;
    every candidate's scores under ``fitted_on``)."""
    from mefn.confidence import LesionOutcomes, fit_trust, out_of_fold_confidence, trust_record

    outcomes: list[LesionOutcomes] = []
    lesion, voxel, fitted = fit_trust(cases, outcomes=outcomes)
    min_confidence = 0.0
    if floor:
        held_out = out_of_fold_confidence(outcomes, lesion.model.features, fitted["lesion_l2"])
        min_confidence, scores = choose_min_confidence(outcomes, held_out)
        fitted["min_confidence_scores"] = scores
        if progress:
            progress(f"confidence floor {min_confidence:g} (chosen on out-of-fold confidences)")
    return trust_record(lesion, voxel, fitted, review_below, min_confidence)


def choose_min_confidence(
    outcomes: Sequence[Any],
    confidences: Sequence[np.ndarray],
    candidates: Sequence[float] = MIN_CONFIDENCE_CANDIDATES,
) -> tuple[float, list[dict[str, float]]]:
    """The confidence floor (lesions below it are removed) for validation cases'
    :class:`mefn.confidence.LesionOutcomes` whose lesions have ``confidences`` (out of fold:
    :func:`mefn.confidence.out_of_fold_confidence`): the best mean Dice, as for the rest of
    the post-processing (a floor only removes false-positive volume, so every floor is within
    :func:`choose_postprocessing`'s limit); on a tie the smaller false-positive volume, then
    the lower floor. Returns the floor and every candidate's AutoPET 2022 means.

    Not "the best Dice within FPV_LIMIT_ML first": on the bundled weights' validation
    phantoms in one pass that rule chose a floor that removed 12 of 27 true lesions with 58
    of 63 false ones (docs/trust.md)."""
    rows = []
    for floor in candidates:
        drops = [np.asarray(conf) < floor for conf in confidences]
        metrics = [case.metrics_without(drop) for case, drop in zip(outcomes, drops)]
        dropped = sum(int(drop.sum()) for drop in drops)
        rows.append({"min_confidence": float(floor), **mean_scores(metrics), "dropped": dropped})
    best = max(
        rows,
        key=lambda r: (round(r["mean_dice"], 4), -round(r["mean_fpv_ml"], 4), -r["min_confidence"]),
    )
    return float(best["min_confidence"]), rows


def write_trust(card_path: str | Path, trust: dict[str, Any]) -> None:
    """Store a trust calibration (:func:`calibrate_trust`) in the card at ``card_path``,
    atomically: ``lesion_confidence`` and ``voxel_error`` at its top level, ``review_below``
    with the other settings ``mefn segment`` reads."""
    from mefn.fileutil import atomic_write_text

    path = Path(card_path)
    card = _read_card(path)
    card["lesion_confidence"] = trust["lesion_confidence"]
    card["voxel_error"] = trust["voxel_error"]
    settings = _settings_of(card, path)
    settings["review_below"] = trust["review_below"]
    settings["min_confidence"] = trust.get("min_confidence", 0.0)
    atomic_write_text(path, json.dumps(card, indent=1))


def trust_summary(trust: dict[str, Any]) -> str:
    """One line: what the lesion confidence and voxel error map were fitted on."""
    fitted = trust["lesion_confidence"]["fitted_on"]
    return (
        f"lesion confidence fitted on {fitted['lesions_true']} true and "
        f"{fitted['lesions_false']} false lesion(s) of {fitted['cases']} case(s) (L2 "
        f"{fitted['lesion_l2']:g}); voxel error map on {fitted['voxels_sampled']} voxels; "
        f"lesions below {trust['review_below']:.0%} confidence are flagged"
        + (f", below {trust['min_confidence']:.0%} removed" if trust.get("min_confidence") else "")
    )


def calibrate_card(
    model: str | Path,
    entries: Sequence[Any],
    card_path: str | Path,
    adapter: str | Path | None = None,
    tta_axes: tuple[int, ...] = (),
    progress: Callable[[str], None] | None = None,
    tta_scales: tuple[float, ...] = (1.0,),
    **record: Any,
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """The whole calibration of ``model`` (with ``adapter``) on validation ``entries``, written
    into the card at ``card_path``: the post-processing (:func:`calibrate_postprocessing`,
    :func:`write_calibration` with ``record``), then the trust fitted for it
    (:func:`calibrate_trust`, :func:`write_trust`). Returns the post-processing calibration,
    the trust record and, when the trust could not be fitted (e.g. no false detection to learn
    from), None and why; the card then flags lesions by mean u."""
    from mefn.errors import InputError

    calibration = calibrate_postprocessing(
        model, entries, tta_axes, progress=progress, adapter=adapter, tta_scales=tta_scales
    )
    write_calibration(card_path, calibration, **record)
    try:
        trust = calibrate_trust(model, entries, adapter=adapter, progress=progress)
    except InputError as exc:
        return calibration, None, str(exc)
    write_trust(card_path, trust)
    return calibration, trust, None


def summary(calibration: dict[str, Any]) -> str:
    """One line: the chosen settings and their scores on the calibration cases."""
    chosen = next(
        row
        for row in calibration["scores"]
        if (row["lesion_threshold"], row["pet_check"], row["min_lesion_ml"])
        == (
            calibration["lesion_threshold"],
            calibration["pet_check_name"],
            calibration["min_lesion_ml"],
        )
    )
    return (
        f"lesion threshold {calibration['lesion_threshold'] or 'argmax'}, PET check "
        f"{calibration['pet_check_name']}, minimum lesion {calibration['min_lesion_ml']} mL, "
        f"review threshold {calibration['review_threshold']}; on {calibration['cases']} "
        f"case(s) mean Dice {chosen['mean_dice']:.3f}, FPV {chosen['mean_fpv_ml']:.2f} mL, "
        f"FNV {chosen['mean_fnv_ml']:.2f} mL"
    )
