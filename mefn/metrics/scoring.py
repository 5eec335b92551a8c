"""One predict-and-score loop: run a predictor over cases and score every prediction.

>>> from mefn import Predictor
>>> from mefn.metrics.scoring import aggregate_scores, case_loaders, score_cases
>>> scores = score_cases(Predictor(), case_loaders(entries), metric="autopet2022")
>>> aggregate_scores(scores)["metric"]["dice_mean"]

Cases are :class:`~mefn.io.case.Case` objects or loaders (callables returning one), loaded
one at a time and dropped once scored, so a list of whole-body studies never sits in memory.
Each case's reference is its ``label``, put on the prediction's grid (nearest neighbour)
when it is on another, and scored against ``Prediction.mask`` by ``metric``:

- ``autopet2022`` ... ``autopet2025``: :func:`mefn.metrics.autopet.autopet_case_metrics`
  of the binarised reference (label > 0) with that year's rules, the prediction's spacing;
- ``hecktor2022``: :class:`mefn.metrics.hecktor.HecktorCaseMetrics` for GTVp (1) and GTVn
  (2), each Dice counted with numpy (0 for a label absent from both: the official rule);
- ``dice``: plain Dice of reference > 0 against mask > 0 (NaN when both are empty);
- ``None``: no metric (only ``detection``, ``calibration`` or ``extra``).

Optionally per case: lesion detection (:func:`mefn.metrics.lesions.lesion_detection`),
calibration counts pooled over the cases in a :class:`CalibrationPool` (one per named
region), and the caller's own figures (``extra``). Every :class:`CaseScore` carries the
prediction's seconds and its per-stage timings (``Prediction.timings``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mefn.errors import ConfigError, InputError
from mefn.metrics.autopet import AUTOPET_YEARS, AutopetCaseMetrics, autopet_case_metrics
from mefn.metrics.calibration import CalibrationCounts, calibration_counts
from mefn.metrics.hecktor import HecktorCaseMetrics, hecktor2022_case_metrics
from mefn.metrics.lesions import LesionDetection, lesion_detection

if TYPE_CHECKING:
    from mefn.inference import Prediction
    from mefn.io.case import Case
    from mefn.io.volume import Geometry

__all__ = [
    "METRICS",
    "CalibrationPool",
    "CaseScore",
    "DiceCaseMetrics",
    "aggregate_scores",
    "case_loaders",
    "reference_on_grid",
    "score_cases",
]

METRICS = tuple(f"autopet{y}" for y in AUTOPET_YEARS) + ("hecktor2022", "dice")

#: a region of the grid for calibration, from the binary reference and the predicted mask
RegionFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: the caller's own figures for one case: (case, prediction, reference on its grid) -> fields
ExtraFn = Callable[["Case", "Prediction", np.ndarray], Mapping[str, Any]]


class PredictorLike(Protocol):
    def predict(self, case: Case, keep_extra: bool = False) -> Prediction: ...


@dataclass(frozen=True)
class DiceCaseMetrics:
    """Plain Dice of one case (all lesion labels together) and the voxel counts behind it."""

    case: str
    dice: float
    reference_voxels: int
    predicted_voxels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CaseMetrics = AutopetCaseMetrics | HecktorCaseMetrics | DiceCaseMetrics


@dataclass(frozen=True)
class CaseScore:
    """One scored case: its metric record, detection, own figures, seconds and timings."""

    case_id: str
    metric: str | None
    metrics: CaseMetrics | None
    seconds: float
    timings: dict[str, float]
    detection: LesionDetection | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat JSON-able row: ``case``, the metric's fields, ``lesion_*`` detection
        fields, the extra fields, ``seconds`` and ``timings`` (stage -> seconds)."""
        row: dict[str, Any] = {"case": self.case_id}
        if self.metrics is not None:
            row.update(self.metrics.to_dict())
        if self.detection is not None:
            row.update({f"lesion_{k}": v for k, v in self.detection.to_dict().items()})
        row.update(self.extra)
        row["seconds"] = self.seconds
        row["timings"] = dict(self.timings)
        return row


@dataclass(eq=False)
class CalibrationPool:
    """Calibration counts (:class:`~mefn.metrics.calibration.CalibrationCounts`) pooled over
    the cases scored so far, per named region (``None``: every voxel), with the summary after
    each case, so the figures of the first ``n`` cases need no second pass.

    Mutable on purpose: :func:`score_cases` adds each case as it goes, and the volumes are
    dropped (the counts of one case hold about 16 MB, so they are pooled, not kept).
    """

    regions: Mapping[str, RegionFn | None] = field(default_factory=lambda: {"all": None})
    counts: dict[str, CalibrationCounts] = field(init=False)
    history: list[dict[str, dict[str, Any]]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not self.regions:
            raise ConfigError("a CalibrationPool needs at least one region; give {'all': None}")
        self.counts = {name: CalibrationCounts() for name in self.regions}

    def add(self, reference: np.ndarray, prediction: Prediction) -> None:
        """Pool one case: ``reference`` binary on the prediction's grid."""
        for name, region_fn in self.regions.items():
            region = None if region_fn is None else region_fn(reference, prediction.mask)
            self.counts[name] = self.counts[name] + calibration_counts(
                reference,
                prediction.mask,
                prediction.uncertainty,
                prediction.probabilities,
                region=region,
            )
        self.history.append({name: c.summary() for name, c in self.counts.items()})

    def summary(self, n_cases: int | None = None) -> dict[str, dict[str, Any]]:
        """Per region, the calibration summary over the first ``n_cases`` cases (all: None;
        more than were added: all of them)."""
        if not self.history:
            raise ConfigError("no case was added to the CalibrationPool; score cases first")
        if n_cases is not None and n_cases < 1:
            raise ConfigError(f"n_cases must be at least 1, found {n_cases}")
        last = len(self.history) if n_cases is None else min(n_cases, len(self.history))
        return self.history[last - 1]


def reference_on_grid(case: Case, geometry: Geometry) -> np.ndarray:
    """The case's label on ``geometry`` (resampled nearest neighbour when on another grid),
    values as they are (class labels kept)."""
    if case.label is None:
        raise InputError(
            f"case {case.case_id} has no reference label; scoring needs one: load the case "
            "with its label (load_case(..., label=PATH)) or give the Case a label volume"
        )
    label = case.label
    if not label.geometry.same_grid(geometry):
        from mefn.io.geometry import resample_to

        label = resample_to(label, geometry, "nearest", 0)
    return np.asarray(label.array)


def case_loaders(entries: Iterable[Any]) -> list[Callable[[], Case]]:
    """Loaders of dataset entries (anything with ``ct``, ``pet``, ``label`` and ``case_id``,
    e.g. :class:`mefn.data.datasets.DatasetEntry`), each reading its case when called."""
    from mefn.io.discovery import load_case

    return [
        functools.partial(load_case, ct=e.ct, pet=e.pet, label=e.label, case_id=e.case_id)
        for e in entries
    ]


def _check_metric(metric: str | None) -> None:
    if metric is not None and metric not in METRICS:
        raise ConfigError(
            f"unknown metric {metric!r}; expected one of {', '.join(METRICS)} (or None)"
        )


def _hecktor_case(reference: np.ndarray, mask: np.ndarray, geometry: Geometry, case: str) -> Any:
    dice, n_ref, n_pred = [], [], []
    for cls in (1, 2):
        r, p = reference == cls, mask == cls
        inter, total = int(np.count_nonzero(r & p)), int(r.sum() + p.sum())
        dice.append(2.0 * inter / total if total else 0.0)  # absent from both: 0 (official)
        n_ref.append(int(r.sum()))
        n_pred.append(int(p.sum()))
    return hecktor2022_case_metrics(
        (dice[0], dice[1]),
        (n_ref[0], n_ref[1]),
        (n_pred[0], n_pred[1]),
        float(np.prod(geometry.spacing_mm)),
        case,
    )


def _case_metrics(
    metric: str, reference: np.ndarray, binary: np.ndarray, prediction: Prediction
) -> CaseMetrics:
    case, mask = prediction.case_id, prediction.mask
    if metric.startswith("autopet"):
        year = int(metric[len("autopet") :])
        return autopet_case_metrics(binary, mask, prediction.geometry.spacing_mm, year, case)
    if metric == "hecktor2022":
        return _hecktor_case(reference, mask, prediction.geometry, case)
    predicted = mask > 0
    n_ref, n_pred = int(np.count_nonzero(binary)), int(np.count_nonzero(predicted))
    overlap = int(np.count_nonzero(predicted & (binary > 0)))
    dice = 2.0 * overlap / (n_ref + n_pred) if n_ref + n_pred else math.nan
    return DiceCaseMetrics(case, dice, n_ref, n_pred)


def score_cases(
    predictor: PredictorLike,
    cases: Iterable[Case | Callable[[], Case]],
    metric: str | None = "autopet2022",
    *,
    detection: bool = False,
    calibration: CalibrationPool | None = None,
    extra: ExtraFn | None = None,
    keep_extra: bool = False,
    progress: Callable[[int, CaseScore], None] | None = None,
) -> list[CaseScore]:
    """Segment each case with ``predictor`` and score it (see the module docstring).

    ``calibration`` pools each case's calibration counts (the prediction's probabilities
    when ``keep_extra`` keeps them, else its uncertainty); ``extra`` adds the caller's own
    fields; ``progress(i, score)`` is called after case ``i`` (0-based). A case without a
    label is an :class:`InputError` unless nothing needs the reference.
    """
    _check_metric(metric)
    needs_reference = metric is not None or detection or calibration is not None
    needs_reference = needs_reference or extra is not None
    scores = []
    for i, item in enumerate(cases):
        case = item if not callable(item) else item()
        prediction = predictor.predict(case, keep_extra=keep_extra)
        reference = binary = np.zeros(0, np.uint8)
        if needs_reference:
            reference = reference_on_grid(case, prediction.geometry)
            binary = (reference > 0).astype(np.uint8)
        score = CaseScore(
            case_id=case.case_id,
            metric=metric,
            metrics=None
            if metric is None
            else _case_metrics(metric, reference, binary, prediction),
            seconds=float(prediction.seconds),
            timings=dict(prediction.timings),
            detection=lesion_detection(binary, prediction.mask) if detection else None,
            extra=dict(extra(case, prediction, reference)) if extra is not None else {},
        )
        if calibration is not None:
            calibration.add(binary, prediction)
        del prediction, case, reference, binary
        scores.append(score)
        if progress is not None:
            progress(i, score)
    return scores


def aggregate_scores(scores: Sequence[CaseScore]) -> dict[str, Any]:
    """The metric's aggregate over ``scores`` (AutoPET: :func:`aggregate_autopet` of the
    year; HECKTOR: DSCagg; ``dice``: mean and median, NaN cases left out) under ``metric``,
    and the pooled lesion detection under ``detection`` when every case has one."""
    from mefn.metrics.autopet import aggregate_autopet
    from mefn.metrics.hecktor import aggregate_hecktor2022
    from mefn.metrics.lesions import aggregate_detection

    if not scores:
        raise ConfigError("no scored cases to aggregate; score at least one case")
    kinds = {s.metric for s in scores}
    if len(kinds) != 1:
        raise ConfigError(f"scores mix metrics {sorted(map(str, kinds))}; aggregate one at a time")
    metric = scores[0].metric
    out: dict[str, Any] = {"n_cases": len(scores), "metric": None}
    if metric is not None and metric.startswith("autopet"):
        records = [s.metrics for s in scores if isinstance(s.metrics, AutopetCaseMetrics)]
        out["metric"] = aggregate_autopet(records, int(metric[len("autopet") :]))
    elif metric == "hecktor2022":
        out["metric"] = aggregate_hecktor2022(
            [s.metrics for s in scores if isinstance(s.metrics, HecktorCaseMetrics)]
        )
    elif metric == "dice":
        dice = np.asarray(
            [s.metrics.dice for s in scores if isinstance(s.metrics, DiceCaseMetrics)], np.float64
        )
        valid = dice[~np.isnan(dice)]
        out["metric"] = {
            "n_cases": len(scores),
            "dice_mean": float(valid.mean()) if valid.size else math.nan,
            "dice_median": float(np.median(valid)) if valid.size else math.nan,
        }
    detections = [s.detection for s in scores if s.detection is not None]
    if len(detections) == len(scores):
        out["detection"] = aggregate_detection(detections)
    return out
