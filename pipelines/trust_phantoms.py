"""Lesion confidence and the voxel error map of the bundled weights, fitted and tested on phantoms.

Stages (``--stage``):

- ``predict``: segment fresh whole-body phantoms with the bundled weights and their card's
  settings, and keep what calibration reads (mask, lesion probability, fused and per-modality
  u, SUV, reference) in ``work_data/trust/<set>/<seed>.npz``. Validation seeds start at
  :data:`VAL_SEED0`, test seeds at ``pipelines.train_phantoms.TEST_SEED0`` (the card's
  ``test_fresh_phantoms``); neither overlaps the training seeds (1000-1199). Cases already kept
  are skipped, so the stage continues where a stopped run left off.
- ``ct``: add the CT (on the prediction's grid) to cases kept without it, regenerating each
  phantom from its seed (the lesion confidence reads what tissue a lesion lies in).
- ``fit``: fit the lesion confidence and the voxel error map on the validation cases
  (:func:`mefn.confidence.fit_trust`), choose the confidence floor on their out-of-fold
  confidences (:func:`mefn.calibration.choose_min_confidence`; ``--no-floor``: none) and
  store them in the bundled card (as ``mefn calibrate`` does).
- ``test``: score the stored calibration on the test cases: the segmentation (AutoPET 2022)
  as kept and with the card's confidence floor applied, and on the lesions delivered with the
  floor the lesion AUROC and ECE, voxel ECE near lesions, reliability diagrams; JSON and
  figures in ``campaigns/trust_phantoms``.

Usage (from the repository root; the predict stage takes 1-4 min per case on 2 cores)::

    python -m pipelines.trust_phantoms --stage predict --n-val 60 --n-test 20
    python -m pipelines.trust_phantoms --stage fit
    python -m pipelines.trust_phantoms --stage test

Other weights (e.g. the cascade run of ``pipelines.eval_cascade``): ``--model RUN --work
work_data/trust_<name>`` for predict, ``--card RUN/model.json --work ...`` for fit and test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "work_data" / "trust"
OUT = REPO / "campaigns" / "trust_phantoms"
if TYPE_CHECKING:
    from mefn.confidence import TrustCase
    from mefn.inference import Prediction

VAL_SEED0 = 20_000_000  # calibration phantoms: seeds far from training and test seeds


def _seeds(kind: str, n: int) -> list[int]:
    from pipelines.train_phantoms import TEST_SEED0

    first = VAL_SEED0 if kind == "val" else TEST_SEED0
    return [first + i for i in range(n)]


def predict(
    n_val: int, n_test: int, threads: int, model: str = "default", work: Path = WORK
) -> None:
    from mefn.inference import Predictor, ct_on_grid
    from pipelines.train_phantoms import fresh_phantom

    # the masks as drawn: the fit chooses the confidence floor on them, the test applies it
    predictor = Predictor(model, device="cpu", threads=threads, min_confidence=0.0)
    # alternate the two sets, so that a stopped run leaves some of each
    val, test = _seeds("val", n_val), _seeds("test", n_test)
    order = [("val", s) for s in val[: len(test)]]
    order = [x for pair in zip(order, [("test", s) for s in test]) for x in pair]
    order += [("val", s) for s in val[len(test) :]] + [("test", s) for s in test[len(val) :]]
    for kind, seed in order:
        path = work / kind / f"{seed}.npz"
        if path.exists():
            continue
        t0 = time.monotonic()
        study, case = fresh_phantom(seed)
        pred = predictor.predict(case, keep_extra=True)
        assert case.label is not None  # phantoms come with their reference
        keep_prediction(
            path, pred, np.asarray(case.label.array) > 0, ct_on_grid(case, pred.geometry)
        )
        print(
            f"[{kind}] {seed}: {len(pred.lesions.lesions)} lesion(s), "
            f"{time.monotonic() - t0:.0f} s",
            flush=True,
        )


def keep_prediction(
    path: Path, pred: Prediction, reference: np.ndarray, ct: np.ndarray | None = None
) -> None:
    """Keep what calibration reads of ``pred`` (made with ``keep_extra``) in ``path`` (npz):
    mask, reference, lesion probability, the raw fused u (not a calibrated error map the card
    may apply), per-modality u, SUV, spacing and, when given, the CT on the same grid (HU,
    rounded to int16)."""
    from mefn.fileutil import atomic_path

    assert pred.probabilities is not None and pred.uncertainty_ct is not None
    assert pred.uncertainty_pet is not None
    raw_u = pred.evidential_u if pred.evidential_u is not None else pred.uncertainty
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            mask=pred.mask.astype(np.uint8),
            reference=reference.astype(np.uint8),
            lesion_probability=(1.0 - pred.probabilities[0]).astype(np.float16),
            uncertainty=raw_u.astype(np.float32),
            uncertainty_ct=pred.uncertainty_ct.astype(np.float32),
            uncertainty_pet=pred.uncertainty_pet.astype(np.float32),
            suv=pred.suv.astype(np.float32),
            spacing_mm=np.asarray(pred.geometry.spacing_mm),
            **({} if ct is None else {"ct": _hu16(ct)}),
        )


def _hu16(ct: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.round(ct), -32768, 32767), dtype=np.int16)


def add_ct(work: Path = WORK) -> None:
    """Add the CT to every case kept under ``work`` without one (the phantom regenerated from
    its seed, its CT brought onto the kept grid), atomically, case by case."""
    from mefn.fileutil import atomic_path
    from mefn.inference import ct_on_grid
    from pipelines.train_phantoms import fresh_phantom

    for kind in ("val", "test"):
        for path in _kept(kind, work):
            with np.load(path) as z:
                if "ct" in z.files:
                    continue
                arrays = {k: z[k] for k in z.files}
            _study, case = fresh_phantom(int(path.stem))
            ct = ct_on_grid(case, case.target_geometry)
            if ct.shape != arrays["mask"].shape:
                raise SystemExit(
                    f"{path}: the regenerated phantom's grid {ct.shape} is not the kept one"
                )
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays, ct=_hu16(ct))
            print(f"[ct] {kind} {path.stem}", flush=True)


def load_kept(path: Path) -> TrustCase:
    """A kept case as a TrustCase (its maps' ``uncertainty`` is the raw fused u)."""
    from mefn.confidence import EvidenceMaps, TrustCase

    with np.load(path) as z:
        spacing = tuple(float(v) for v in z["spacing_mm"])
        maps = EvidenceMaps(
            lesion_probability=z["lesion_probability"].astype(np.float32),
            uncertainty=z["uncertainty"],
            suv=z["suv"],
            spacing_mm=(spacing[0], spacing[1], spacing[2]),
            uncertainty_ct=z["uncertainty_ct"],
            uncertainty_pet=z["uncertainty_pet"],
            ct=z["ct"].astype(np.float32) if "ct" in z.files else None,
        )
        return TrustCase(z["mask"], z["reference"], maps)


def _kept(kind: str, work: Path = WORK) -> list[Path]:
    # not the hidden temporary files of a predict stage still writing (mefn.fileutil)
    kept = [p for p in (work / kind).glob("*.npz") if not p.name.startswith(".")]
    return sorted(kept, key=lambda p: int(p.stem))


def fit(card_path: Path, work: Path = WORK, floor: bool = True) -> dict[str, Any]:
    """Fit on the validation cases kept under ``work`` and store the result in ``card_path``
    (a weights card: the trust and ``review_below`` / ``min_confidence`` at its top level)."""
    from mefn.calibration import fit_trust_record
    from mefn.confidence import DEFAULT_REVIEW_BELOW
    from mefn.fileutil import atomic_write_text

    paths = _kept("val", work)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    below = float(card.get("review_below") or DEFAULT_REVIEW_BELOW)
    record = fit_trust_record((load_kept(p) for p in paths), below, floor=floor, progress=print)
    summary = record["lesion_confidence"]["fitted_on"]
    summary["seeds"] = [int(paths[0].stem), int(paths[-1].stem)]
    card.update(record)
    atomic_write_text(card_path, json.dumps(card, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "min_confidence_scores"}))
    for row in summary.get("min_confidence_scores", []):
        print(json.dumps(row), flush=True)
    return record


@dataclass
class TrustTally:
    """Trust scored case by case: each lesion's calibrated confidence against 1 - its mean
    raw u, and the voxel reliability near lesions of the error map against the raw u."""

    conf: list[float] = field(default_factory=list)
    raw_conf: list[float] = field(default_factory=list)
    true: list[bool] = field(default_factory=list)
    where: list[Any] = field(default_factory=list)
    rel: Any = None
    raw_rel: Any = None

    def add(
        self,
        case: TrustCase,
        lesion_model: Any,
        voxel_model: Any,
        where: Any,
        drawn: np.ndarray | None = None,
    ) -> None:
        """Score one case as delivered; ``drawn``: its mask before a confidence floor removed
        lesions (the error map is then that of :meth:`VoxelErrorMap.after_removal`)."""
        from mefn.confidence import iter_lesions, lesion_evidence, lesion_truth
        from mefn.metrics.trust import voxel_reliability_near_lesions

        u = case.maps.uncertainty
        for _label, box, lesion in iter_lesions(case.mask):
            self.conf.append(lesion_model(lesion_evidence(box, lesion, case.maps)))
            self.raw_conf.append(1.0 - float(u[box][lesion].mean()))
            self.true.append(lesion_truth(box, lesion, case.reference))
            self.where.append(where)
        spacing = case.maps.spacing_mm
        err = voxel_model.after_removal(case.mask if drawn is None else drawn, case.mask, case.maps)
        r = voxel_reliability_near_lesions(err, case.mask, case.reference, spacing)
        r0 = voxel_reliability_near_lesions(u, case.mask, case.reference, spacing)
        self.rel = r if self.rel is None else self.rel + r
        self.raw_rel = r0 if self.raw_rel is None else self.raw_rel + r0

    def result(self, where_key: str) -> dict[str, Any]:
        """The metrics, and every lesion with ``where_key`` naming where it was found."""
        from mefn.metrics.trust import lesion_trust

        assert self.rel is not None and self.raw_rel is not None  # cases were added
        return {
            "lesions": lesion_trust(self.conf, self.true),
            "lesions_raw_1_minus_u": lesion_trust(self.raw_conf, self.true),
            "voxels_near_lesions": self.rel.to_json(),
            "voxels_near_lesions_raw_u": self.raw_rel.to_json(),
            "per_lesion": [
                {where_key: w, "confidence": round(p, 4), "true": t}
                for w, p, t in zip(self.where, self.conf, self.true)
            ],
        }

    def line(self) -> str:
        """The headline figures in one line."""
        lesions = self.result("case")
        return (
            f"{len(self.conf)} lesions ({sum(self.true)} true): lesion AUROC "
            f"{lesions['lesions']['auroc']:.3f} (raw 1-u "
            f"{lesions['lesions_raw_1_minus_u']['auroc']:.3f}), lesion ECE "
            f"{lesions['lesions']['ece']:.3f}, voxel ECE near lesions {self.rel.ece:.4f} "
            f"(raw u {self.raw_rel.ece:.4f})"
        )


def without_unconfident(case: TrustCase, lesion_model: Any, floor: float) -> TrustCase:
    """``case`` with the lesions whose confidence is below ``floor`` removed from its mask,
    by what ``mefn segment`` runs (:func:`mefn.postprocess.drop_unconfident`; a kept case has
    no world position, so the dropped lesions' centroids are not read)."""
    from mefn.confidence import TrustCase
    from mefn.io.volume import Geometry
    from mefn.postprocess import drop_unconfident

    grid = Geometry(case.mask.shape, case.maps.spacing_mm, (0.0, 0.0, 0.0))
    mask, _dropped, _kept = drop_unconfident(case.mask, lesion_model, case.maps, grid, floor)
    return TrustCase(mask, case.reference, case.maps)


def test(
    card_path: Path, kind: str = "test", work: Path = WORK, limit: int | None = None
) -> dict[str, Any]:
    """Score the card's calibration on the ``kind`` cases kept under ``work`` (the first
    ``limit`` seeds, or all): AutoPET 2022 means as kept and with the card's
    ``min_confidence``; the trust of what is delivered."""
    from mefn.calibration import mean_scores
    from mefn.confidence import trust_from_card
    from mefn.metrics.autopet import autopet_case_metrics

    card = json.loads(card_path.read_text(encoding="utf-8"))
    lesion_model, voxel_model, _ = trust_from_card(card)
    assert lesion_model is not None and voxel_model is not None
    floor = float(card.get("min_confidence") or 0.0)
    tally = TrustTally()
    paths = _kept(kind, work)[:limit]
    as_kept, floored = [], []
    for path in paths:
        case = load_kept(path)
        voxel_ml = float(np.prod(case.maps.spacing_mm)) / 1000.0
        as_kept.append(autopet_case_metrics(case.reference, case.mask, voxel_ml, 2022))
        drawn = case.mask
        case = without_unconfident(case, lesion_model, floor)
        floored.append(autopet_case_metrics(case.reference, case.mask, voxel_ml, 2022))
        tally.add(case, lesion_model, voxel_model, int(path.stem), drawn)
    result = {
        "cases": len(paths),
        "seeds": [int(paths[0].stem), int(paths[-1].stem)],
        "min_confidence": floor,
        "segmentation_as_kept": mean_scores(as_kept),
        "segmentation": mean_scores(floored),
        "per_case": [
            {"seed": int(p.stem), **{k: round(float(getattr(m, k)), 4) for k in _CASE_KEYS}}
            for p, m in zip(paths, floored)
        ],
        **tally.result("seed"),
    }
    seg, seg0 = result["segmentation"], result["segmentation_as_kept"]
    print(
        f"[{kind}] {len(paths)} cases, floor {floor:g}: Dice {seg['mean_dice']:.3f} FPV "
        f"{seg['mean_fpv_ml']:.2f} FNV {seg['mean_fnv_ml']:.2f} (as kept: "
        f"{seg0['mean_dice']:.3f} / {seg0['mean_fpv_ml']:.2f} / {seg0['mean_fnv_ml']:.2f}); "
        f"{tally.line()}",
        flush=True,
    )
    return result


_CASE_KEYS = ("dice", "fpv_ml", "fnv_ml", "reference_voxels")


def record_in_card(card_path: Path, result: dict[str, Any], work: Path) -> None:
    """The test figures in the card's ``test_fresh_phantoms`` (the segmentation as delivered,
    with the card's floor, and its trust), atomically; the card's ``reproduce`` gains the
    commands of this pipeline."""
    from mefn.fileutil import atomic_write_text

    card = json.loads(card_path.read_text(encoding="utf-8"))
    lesions = result["lesions"]
    record = dict(card.get("test_fresh_phantoms") or {})
    record.update(
        {
            "n_cases": result["cases"],
            "seeds": result["seeds"],
            **result["segmentation"],
            "min_confidence": result["min_confidence"],
            "without_floor": result["segmentation_as_kept"],
            "true_lesions": int(sum(row["true"] for row in result["per_lesion"])),
            "false_positive_lesions": int(sum(not row["true"] for row in result["per_lesion"])),
            "trust": {
                "lesion_auroc": round(float(lesions["auroc"]), 4),
                "lesion_ece": round(float(lesions["ece"]), 4),
                "voxel_ece_near_lesions": round(float(result["voxels_near_lesions"]["ece"]), 4),
                "lesions": len(result["per_lesion"]),
                "details": "campaigns/trust_phantoms/test.json, docs/trust.md",
            },
        }
    )
    for stale in ("false_positive_lesions_flagged", "true_lesions_flagged", "dropped_lesions"):
        record.pop(stale, None)
    card["test_fresh_phantoms"] = record
    n_val = (card.get("lesion_confidence") or {}).get("fitted_on", {}).get("cases", "N")
    commands = (
        f"python -m pipelines.trust_phantoms --stage predict --n-val {n_val} --n-test "
        f"{result['cases']} --model RUN --work {work}; --stage fit --card RUN/model.json "
        f"--work {work}; --stage test --card RUN/model.json --work {work} --write"
    )
    reproduce = str(card.get("reproduce") or "")
    at = reproduce.find("python -m pipelines.trust_phantoms")
    if at >= 0:  # the commands of an earlier record, which end the string: replaced
        card["reproduce"] = reproduce[:at] + commands
    else:
        card["reproduce"] = f"{reproduce}, then {commands}" if reproduce else commands
    atomic_write_text(card_path, json.dumps(card, indent=1))


def write_results(result: dict[str, Any], kind: str, figures: bool = True) -> None:
    """``campaigns/trust_phantoms/<kind>.json`` and, with ``figures``, the reliability
    diagrams and risk-coverage curve of the calibrated trust in ``docs/images/trust_*.png``."""
    from mefn.fileutil import atomic_write_text
    from mefn.metrics.plots import plot_binned_reliability, plot_lesion_risk_coverage

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{kind}.json", json.dumps(result, indent=1))
    if not figures:
        return
    images = REPO / "docs" / "images"
    n = result["cases"]
    plot_binned_reliability(
        result["lesions"]["reliability"], images / "trust_lesion_reliability.png",
        f"Lesion confidence, {n} fresh phantoms", "stated confidence that the lesion is real",
        "share of true lesions", "lesions",
    )  # fmt: skip
    plot_binned_reliability(
        result["voxels_near_lesions"], images / "trust_voxel_reliability.png",
        f"Voxel error map near lesions, {n} fresh phantoms",
        "stated probability that the label is wrong", "observed error rate", "voxels",
    )  # fmt: skip
    plot_lesion_risk_coverage(
        result["lesions"]["risk_coverage"], images / "trust_lesion_risk_coverage.png"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("predict", "ct", "fit", "test"), required=True)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument(
        "--n-test",
        type=int,
        default=20,
        help="predict: test phantoms to keep; test stage: score the first N kept (default 20, "
        "the card's test_fresh_phantoms; another N writes <set>_<N>_phantoms.json only)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", default="test", choices=("val", "test"), help="test stage: which")
    parser.add_argument(
        "--no-floor", action="store_true", help="fit stage: no confidence floor (keep all lesions)"
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="test stage: write the JSON to campaigns/trust_phantoms and the figures to docs/images",
    )
    parser.add_argument(
        "--card",
        type=Path,
        default=REPO / "mefn" / "weights" / "mefn_default.json",
        help="the card to fit into and test (default: the bundled weights' card)",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="predict stage: the weights (a bundled name, file or run folder; default: default)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="where the predictions are kept (default work_data/trust; one folder per model)",
    )
    args = parser.parse_args()
    card = args.card
    if args.stage == "predict":
        predict(args.n_val, args.n_test, args.threads, args.model, args.work)
    elif args.stage == "ct":
        add_ct(args.work)
    elif args.stage == "fit":
        fit(card, args.work, floor=not args.no_floor)
    else:
        result = test(card, args.set, args.work, args.n_test)
        if args.write:
            default = args.n_test == parser.get_default("n_test")
            name = args.set if default else f"{args.set}_{args.n_test}_phantoms"
            write_results(result, name, figures=default)
            if args.set == "test" and default:
                record_in_card(card, result, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
