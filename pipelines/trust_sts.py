"""Trust on real sarcoma scans: lesion confidence and voxel error map, cross-validated by fold.

Stages (``--stage``):

- ``predict``: every case of ``../shared/data/sts`` segmented, in one pass, by the adapter (or,
  for ``full`` and ``scratch``, the weights) of ``--row`` (a row of ``--campaign``, by default
  ``campaigns/sts_adapters``, e.g. ``compacter`` or ``compacter@500``) trained without it
  (the fold that held it out), with each test-time scale setting of ``--tta-scales``
  (``mefn segment --tta-scales``; settings separated by ``;``), and what
  calibration reads kept in ``work_data/trust_sts/<row>/<case>.npz`` (model grid only) or
  ``<row>/x<scales>/<case>.npz`` (cases kept are skipped: resumable).
- ``test``: for each fold, on the other four folds' cases: the test-time scales of
  ``--tta-scales``, the lesion probability threshold (:data:`THRESHOLDS`, the base card's PET
  check after it), the small lesions' cores of ``--small-lesions``
  (:func:`mefn.postprocess.keep_small_lesion_cores`) and the lesion shape of
  ``--lesion-shapes`` (:func:`mefn.postprocess.reshape_lesions`) with the best mean Dice, then the lesion confidence
  and the voxel error map (:func:`mefn.confidence.fit_trust`) on the masks they draw; all
  applied to this fold's cases. Dice, lesion AUROC, ECE and risk-coverage and the voxel
  reliability near lesions over the 25 held-out cases, against the raw evidential u; JSON to
  ``campaigns/trust_sts/<row>.json``.
- ``card``: the same chosen and fitted on all 25 held-out predictions and stored in the card of
  the bundled adapter (``mefn/weights/adapters/sts/card.json``; ``--card``): the scales, the
  threshold, the small lesions' cores and the shape in its ``postprocess``, the trust beside it. The fold adapters stand
  in for the adapter trained on every case, as cross-validation does for nnU-Net's
  post-processing.

Usage (from the repository root; predict: about 5-10 s per case and scale setting on one core;
test and card hold the 25 kept cases of every scale setting in memory: 8.1 GB peak with the
four settings below; scoring every setting takes 10-20 s per case and scale setting with the
grid below, on one core)::

    S="1;1,1.5;1,1.5,2;1,1.5,2,3"
    SM="none;400@0.8;300@0.8;600@0.8;400@0.9"
    python -m pipelines.trust_sts --stage predict --row compacter --tta-scales "$S"
    python -m pipelines.trust_sts --stage test --row compacter --tta-scales "$S" \
        --lesion-shapes none,hull --small-lesions "$SM"
    python -m pipelines.trust_sts --stage card --row compacter --tta-scales "$S" \
        --lesion-shapes none,hull --small-lesions "$SM"

Data: TCIA Soft-tissue-Sarcoma (Vallieres et al. 2015, DOI 10.7937/K9/TCIA.2015.7GO2GSKS,
CC BY 3.0), the IBSI crops in ``../shared/data/sts``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.eval_sts import dice, load_sts_case
from pipelines.sts_adapters import DEFAULT_DATA, DEFAULT_OUT, FOLDS
from pipelines.trust_phantoms import TrustTally, keep_prediction, load_kept

if TYPE_CHECKING:
    from mefn.confidence import TrustCase

REPO = Path(__file__).resolve().parents[1]
#: lesion probability thresholds tried (None: the argmax): mefn.calibration's, and lower ones,
#: since the adapter's lesion probability stays low in the cold parts of these tumours
THRESHOLDS: tuple[float | None, ...] = (None, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)
WORK = REPO / "work_data" / "trust_sts"
OUT = REPO / "campaigns" / "trust_sts"
Scales = tuple[float, ...]
#: small lesions cut to their cores (mefn.postprocess.keep_small_lesion_cores): (below this
#: many mL, the core's lesion probability), or None: kept whole
Small = tuple[float, float] | None
#: a setting the test and card stages choose: (test-time scales, lesion threshold, lesion
#: shape, small lesions' cores)
Setting = tuple[Scales, float | None, str, Small]


def parse_scale_settings(text: str) -> list[Scales]:
    """``"1;1,1.5;1,1.5,2"`` -> ``[(1.0,), (1.0, 1.5), (1.0, 1.5, 2.0)]``."""
    from mefn.inference import parse_tta_scales

    settings = [parse_tta_scales(part) for part in text.split(";") if part.strip()]
    if not settings:
        raise SystemExit(f"trust_sts: --tta-scales names no setting: {text!r}")
    return settings


def parse_shapes(text: str) -> tuple[str, ...]:
    """``"none,hull"`` -> ``("none", "hull")``, each one of mefn.postprocess.LESION_SHAPES."""
    from mefn.postprocess import LESION_SHAPES

    shapes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [s for s in shapes if s not in LESION_SHAPES]
    if not shapes or unknown:
        raise SystemExit(
            f"trust_sts: --lesion-shapes expects some of {', '.join(LESION_SHAPES)}, found {text!r}"
        )
    return shapes


def parse_small(text: str) -> tuple[Small, ...]:
    """``"none;400@0.8;300@0.9"`` -> ``(None, (400.0, 0.8), (300.0, 0.9))``: small-lesion
    settings (mL, core probability) to choose among, ``none`` keeping small lesions whole."""
    settings: list[Small] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part == "none":
            settings.append(None)
            continue
        try:
            ml, threshold = (float(v) for v in part.split("@"))
        except ValueError:
            ml = threshold = float("nan")
        if not (ml > 0 and 0 < threshold < 1):
            raise SystemExit(
                f"trust_sts: --small-lesions expects 'none' or ML@P settings (ML > 0 mL, P in "
                f"(0, 1)) separated by ';', e.g. \"none;400@0.8\", found {part!r}"
            )
        settings.append((ml, threshold))
    if not settings:
        raise SystemExit(f"trust_sts: --small-lesions names no setting: {text!r}")
    return tuple(settings)


def kept_dir(row: str, scales: Scales) -> Path:
    """Where the kept predictions of ``row`` at ``scales`` are (the model grid alone: as
    before scales existed)."""
    if scales == (1.0,):
        return WORK / row
    return WORK / row / ("x" + "-".join(f"{s:g}" for s in scales))


def predict(row: str, data: Path, campaign: Path, threads: int, settings: list[Scales]) -> None:
    """Each case segmented by the adapter (or weights) of the fold that held it out, at each
    scale setting; a case is read once for all the settings it still lacks."""
    from mefn.data.datasets import load_folds
    from mefn.inference import Predictor, ct_on_grid

    for k, cases in enumerate(load_folds(FOLDS)):
        run = campaign / row / f"fold{k}"
        adapter = run / "adapter"
        whole = (run / "model.safetensors").is_file()  # full fine-tuning, from scratch
        if not (adapter.is_dir() or whole):
            raise SystemExit(
                f"trust_sts: no adapter or weights in {run}; run pipelines.sts_adapters first "
                "(it keeps the weights of full and scratch rows only in its own --out)"
            )
        todo = {
            c: [s for s in settings if not (kept_dir(row, s) / f"{c}.npz").exists()] for c in cases
        }
        predictors = {
            scales: Predictor(
                run if whole else "default",
                adapter=None if whole else adapter,
                device="cpu",
                threads=threads,
                tta_axes=(),
                tta_scales=scales,
            )
            for scales in {s for missing in todo.values() for s in missing}
        }
        for name, missing in todo.items():
            if not missing:
                continue
            case = load_sts_case(data / name)
            reference = np.asarray(case.label.array) > 0
            for scales in missing:
                t0 = time.monotonic()
                pred = predictors[scales].predict(case, keep_extra=True)
                keep_prediction(
                    kept_dir(row, scales) / f"{name}.npz", pred, reference,
                    ct_on_grid(case, pred.geometry),
                )  # fmt: skip
                print(
                    f"[fold {k}] {name} x{scales}: {len(pred.lesions.lesions)} lesion(s), "
                    f"{time.monotonic() - t0:.0f} s",
                    flush=True,
                )


class _Kept:
    """The kept held-out predictions of ``row`` at each scale setting, each read once, and
    the Dice of each case at each setting computed once (the nested choice reads every case
    in four of the five folds). Only the masks of the settings :meth:`best` chose are kept
    (the fits read them again, fold after fold); every setting's masks of every case would
    take ~11 GB."""

    def __init__(
        self,
        row: str,
        cases: list[str],
        check: Any,
        scales: list[Scales],
        shapes: tuple[str, ...] = ("none",),
        smalls: tuple[Small, ...] = (None,),
    ) -> None:
        self.cases: dict[tuple[str, Scales], Any] = {}
        for setting in scales:
            paths = [kept_dir(row, setting) / f"{c}.npz" for c in cases]
            missing = [p.stem for p in paths if not p.exists()]
            if missing:
                raise SystemExit(
                    f"trust_sts: {len(missing)} case(s) not predicted for {row} at scales "
                    f"{setting} (first: {missing[0]}); run --stage predict first"
                )
            self.cases.update({(p.stem, setting): load_kept(p) for p in paths})
        self.settings: list[Setting] = [
            (s, t, shape, small)
            for shape in shapes
            for small in smalls
            for s in scales
            for t in THRESHOLDS
        ]
        self.check = check
        self._dice: dict[tuple[str, Setting], float] = {}
        self._keep: set[Setting] = set()  # the settings best() chose
        self._chosen: dict[tuple[str, Setting], TrustCase] = {}  # and their masks

    def at(self, name: str, setting: Setting) -> TrustCase:
        """Case ``name`` at the setting's scales with its mask drawn again from the kept
        lesion probability at its threshold, then the PET check, the small lesions' cores and
        the lesion shape (what the Predictor does with that card); kept when ``setting`` is
        one :meth:`best` chose."""
        chosen = self._chosen.get((name, setting))
        return chosen if chosen is not None else self._finish(name, setting, None)

    def _draw(self, name: str, scales: Scales, threshold: float | None) -> np.ndarray:
        """The mask at ``threshold`` after the PET check (what every shape and small-lesion
        setting starts from)."""
        from mefn.postprocess import apply_pet_check, mask_from_probabilities

        case = self.cases[(name, scales)]
        p = case.maps.lesion_probability
        mask = mask_from_probabilities(np.stack([1.0 - p, p]), 0, threshold)
        if self.check.active:
            mask = apply_pet_check(mask, case.maps.suv, case.maps.spacing_mm, self.check)
        return mask

    def _finish(self, name: str, setting: Setting, drawn: np.ndarray | None) -> TrustCase:
        """Case ``name`` with ``drawn`` (from :meth:`_draw`) cut and reshaped as ``setting``
        says; kept when :meth:`best` chose it."""
        from mefn.confidence import TrustCase
        from mefn.postprocess import keep_small_lesion_cores, reshape_lesions

        scales, threshold, shape, small = setting
        if drawn is None:
            drawn = self._draw(name, scales, threshold)
        case = self.cases[(name, scales)]
        if small is not None:
            voxel_ml = float(np.prod(case.maps.spacing_mm)) / 1000.0
            drawn = keep_small_lesion_cores(
                drawn, case.maps.lesion_probability, voxel_ml, small[0], small[1]
            )
        result = TrustCase(reshape_lesions(drawn, shape), case.reference, case.maps)
        if setting in self._keep:
            self._chosen[(name, setting)] = result
        return result

    def dice(self, name: str, setting: Setting) -> float:
        """The Dice of case ``name`` at ``setting``; the first asked of a case scores it at
        every setting, each threshold's mask drawn once for all shapes and small-lesion
        settings."""
        if (name, setting) not in self._dice:
            by_draw: dict[tuple[Scales, float | None], list[Setting]] = {}
            for s in self.settings:
                by_draw.setdefault((s[0], s[1]), []).append(s)
            for (scales, threshold), settings in by_draw.items():
                drawn = self._draw(name, scales, threshold)
                for s in settings:
                    case = self._finish(name, s, drawn)
                    self._dice[(name, s)] = dice(case.mask > 0, case.reference > 0)
        return self._dice[(name, setting)]

    def best(self, names: list[str]) -> Setting:
        """The setting (shape, scales, then threshold of :data:`THRESHOLDS`) with the best mean
        Dice over ``names`` (the first of equals: the first shape given, fewer scales, then the
        higher threshold)."""
        means = [float(np.mean([self.dice(c, s) for c in names])) for s in self.settings]
        chosen = self.settings[int(np.argmax(means))]
        self._keep.add(chosen)
        return chosen


def _fit(kept: _Kept, names: list[str], setting: Setting, where: str) -> Any:
    """:func:`mefn.confidence.fit_trust` on ``names`` at ``setting``; a setting that leaves
    no false (or no true) lesion to learn from is named in the one-line error."""
    from mefn.confidence import fit_trust
    from mefn.errors import InputError

    try:
        return fit_trust(kept.at(c, setting) for c in names)
    except InputError as exc:
        raise SystemExit(
            f"trust_sts: {where}, setting {_label(setting)} (the best Dice): {exc}; a shape "
            "that keeps one lesion per study (largest_hull) leaves no false lesion to learn "
            "from: leave it out of --lesion-shapes"
        ) from None


def _label(setting: Setting) -> str:
    scales, threshold, shape, small = setting
    label = f"x{','.join(f'{s:g}' for s in scales)} t={threshold}"
    if small is not None:
        label += f" cores<{small[0]:g}mL@{small[1]:g}"
    return label if shape == "none" else f"{label} {shape}"


def _setting_record(setting: Setting) -> dict[str, Any]:
    """``setting`` by the names of the card's post-processing settings."""
    scales, threshold, shape, small = setting
    return {
        "tta_scales": list(scales),
        "lesion_threshold": threshold,
        "lesion_shape": shape,
        "small_lesion_ml": 0.0 if small is None else small[0],
        "small_lesion_threshold": None if small is None else small[1],
    }


def _adapter_pet_check() -> Any:
    """The PET check the bundled sts adapter applies: its card's (pinned there, the base
    card's when the adapter was made), else the bundled base card's."""
    from mefn.registry import adapter_card, read_model_card, resolve_adapter, resolve_weights
    from mefn.settings import PostprocessSettings

    card, _, _ = read_model_card(resolve_weights("default")[1])
    base = PostprocessSettings.from_card(card)
    tuned = adapter_card(resolve_adapter("sts")).get("postprocess") or {}
    return PostprocessSettings.from_card({"postprocess": tuned}, base=base).pet_check


def test(
    row: str,
    scales: list[Scales],
    shapes: tuple[str, ...] = ("none",),
    smalls: tuple[Small, ...] = (None,),
) -> dict[str, Any]:
    """Nested by fold: scales, threshold, lesion shape and trust fitted on four folds'
    held-out predictions, scored on the fifth's."""
    from mefn.data.datasets import load_folds

    folds = load_folds(FOLDS)
    all_cases = [c for f in folds for c in f]
    kept = _Kept(row, all_cases, _adapter_pet_check(), scales, shapes, smalls)
    tally = TrustTally()
    fitted: list[dict[str, Any]] = []
    held_dice: dict[str, float] = {}
    for k, held in enumerate(folds):
        others = [c for j, f in enumerate(folds) if j != k for c in f]
        setting = kept.best(others)
        lesion_model, voxel_model, summary = _fit(kept, others, setting, f"fold {k}")
        fitted.append(
            {
                "fold": k,
                **_setting_record(setting),
                **summary,
            }
        )
        for name in held:
            tally.add(kept.at(name, setting), lesion_model, voxel_model, name)
            held_dice[name] = kept.dice(name, setting)
    plain = kept.settings[0]  # the first setting: first shape, no cut, model grid, argmax
    result = {
        "row": row,
        "cases": len(all_cases),
        "tta_scales_tried": [list(s) for s in scales],
        "lesion_shapes_tried": list(shapes),
        "small_lesions_tried": [None if x is None else list(x) for x in smalls],
        "dice_nested": {
            "mean": float(np.mean(list(held_dice.values()))),
            "median": float(np.median(list(held_dice.values()))),
            "per_case": {c: round(d, 4) for c, d in held_dice.items()},
        },
        "dice_by_setting": {
            _label(s): float(np.mean([kept.dice(c, s) for c in all_cases])) for s in kept.settings
        },
        **tally.result("case"),
        "fitted_per_fold": fitted,
    }
    print(
        f"[{row}] {len(all_cases)} held-out cases: Dice {result['dice_nested']['mean']:.3f} "
        f"with the scales and threshold chosen on the other folds ({_label(plain)}: "
        f"{result['dice_by_setting'][_label(plain)]:.3f}); {tally.line()}",
        flush=True,
    )
    return result


def card(
    row: str,
    card_path: Path,
    scales: list[Scales],
    shapes: tuple[str, ...] = ("none",),
    smalls: tuple[Small, ...] = (None,),
) -> dict[str, Any]:
    """Choose the scales, threshold and lesion shape and fit the trust on all held-out
    predictions; store them in ``card_path``."""
    from mefn.confidence import trust_record
    from mefn.data.datasets import load_folds
    from mefn.fileutil import atomic_write_text

    cases = [c for f in load_folds(FOLDS) for c in f]
    kept = _Kept(row, cases, _adapter_pet_check(), scales, shapes, smalls)
    setting = kept.best(cases)
    lesion, voxel, summary = _fit(kept, cases, setting, "all cases")
    summary["data"] = f"held-out predictions of the {row} fold adapters (25 sarcoma crops)"
    summary.update(_setting_record(setting))
    record = trust_record(lesion, voxel, summary)
    content = json.loads(card_path.read_text(encoding="utf-8"))
    content.pop("note", None)  # "not calibrated" no longer holds
    post = content.setdefault("postprocess", {})
    post.update(_setting_record(setting))
    tested = OUT / f"{row}.json"  # the test stage's nested figures, when run on these settings
    if tested.is_file():
        result = json.loads(tested.read_text(encoding="utf-8"))
        same = result.get("tta_scales_tried") == [list(s) for s in scales]
        same = same and result.get("lesion_shapes_tried", ["none"]) == list(shapes)
        tried = [None if x is None else list(x) for x in smalls]
        if same and result.get("small_lesions_tried", [None]) == tried:
            content.setdefault("cross_validation", {})["with_postprocess"] = {
                "dice_mean": result["dice_nested"]["mean"],
                "dice_median": result["dice_nested"]["median"],
                "per_case": result["dice_nested"]["per_case"],
                "chosen_per_fold": [
                    {
                        k: f.get(k, "none")
                        for k in ("fold", *_setting_record(setting))
                    }
                    for f in result["fitted_per_fold"]
                ],
                "scored": "each fold's held-out cases with the scales, threshold and lesion "
                "shape chosen on the other four folds (python -m pipelines.trust_sts --stage test)",
            }
    # an adapter's card keeps the settings mefn segment reads under postprocess
    content["lesion_confidence"] = record["lesion_confidence"]
    content["voxel_error"] = record["voxel_error"]
    for key in ("review_below", "min_confidence"):
        content.pop(key, None)
        post[key] = record[key]
    atomic_write_text(card_path, json.dumps(content, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("predict", "test", "card"), required=True)
    parser.add_argument("--row", default="compacter", help="a row of campaigns/sts_adapters")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--campaign", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--tta-scales",
        default="1",
        help="test-time scale settings to keep (predict) and choose among (test, card), "
        "separated by ';' (e.g. \"1;1,1.5;1,1.5,2\"; default: the model grid only)",
    )
    parser.add_argument(
        "--lesion-shapes",
        default="none",
        help="lesion shapes (mefn.postprocess.reshape_lesions) to choose among with the scales "
        "and threshold in test and card, comma-separated (e.g. none,hull,largest_hull)",
    )
    parser.add_argument(
        "--small-lesions",
        default="none",
        help="small-lesion settings (mefn.postprocess.keep_small_lesion_cores) to choose among "
        "in test and card: 'none' or ML@P (lesions under ML mL keep the voxels of lesion "
        "probability >= P), separated by ';' (e.g. \"none;400@0.8;300@0.8\")",
    )
    parser.add_argument(
        "--card",
        type=Path,
        default=REPO / "mefn" / "weights" / "adapters" / "sts" / "card.json",
        help="card stage: the adapter card to store the trust in",
    )
    args = parser.parse_args()
    scales = parse_scale_settings(args.tta_scales)
    shapes = parse_shapes(args.lesion_shapes)
    smalls = parse_small(args.small_lesions)
    if args.stage == "predict":
        predict(args.row, args.data, args.campaign, args.threads, scales)
    elif args.stage == "test":
        from mefn.fileutil import atomic_write_text

        result = test(args.row, scales, shapes, smalls)
        OUT.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT / f"{args.row}.json", json.dumps(result, indent=1))
    else:
        card(args.row, args.card, scales, shapes, smalls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
