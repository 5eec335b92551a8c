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
  ``--tta-scales``, the lesion probability threshold (``--thresholds``, default
  :data:`THRESHOLDS`), the PET outline of ``--pet-outlines`` (the base card's PET check, each
  lesion then redrawn on the PET or not), the small lesions' cores of ``--small-lesions``
  (:func:`mefn.postprocess.keep_small_lesion_cores`) and the lesion shape of
  ``--lesion-shapes`` (:func:`mefn.postprocess.reshape_lesions`) with the best mean Dice, then the lesion confidence
  and the voxel error map (:func:`mefn.confidence.fit_trust`) on the masks they draw; all
  applied to this fold's cases. Dice, lesion AUROC, ECE and risk-coverage and the voxel
  reliability near lesions over the 25 held-out cases, against the raw evidential u; JSON to
  ``campaigns/trust_sts/<row>.json``.
- ``card``: the same chosen and fitted on all 25 held-out predictions and stored in the card of
  the bundled adapter (``mefn/weights/adapters/sts/card.json``; ``--card``): the scales, the
  threshold, the PET outline, the small lesions' cores and the shape in its ``postprocess``
  (every setting's Dice read from the test stage's result on the same grid), the trust beside it. The fold adapters stand
  in for the adapter trained on every case, as cross-validation does for nnU-Net's
  post-processing.

Usage (from the repository root; predict: about 5-10 s per case and scale setting on one core;
test and card hold the 25 kept cases of every scale setting in memory, about 2 GB each; a PET
outline takes 1-5 s per case to draw, so the grid sets the time: ``--workers 2`` halves it)::

    S="1;1,1.5;1,1.5,2;1,1.5,2,3"
    python -m pipelines.trust_sts --stage predict --row compacter --tta-scales "$S"
    GRID=(--tta-scales "1;1,1.5,2,3" --thresholds none,0.4,0.3 --lesion-shapes none,hull
          --pet-outlines "none;0.25@16;0.2@16;0.15@16;0.2@24")
    python -m pipelines.trust_sts --stage test --row compacter "${GRID[@]}" --workers 2
    python -m pipelines.trust_sts --stage card --row compacter "${GRID[@]}"

Data: TCIA Soft-tissue-Sarcoma (Vallieres et al. 2015, DOI 10.7937/K9/TCIA.2015.7GO2GSKS,
CC BY 3.0), the IBSI crops in ``../shared/data/sts``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, replace
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
#: the PET outline (mefn.postprocess.PetCheck refine_fraction, refine_mm), or None: the network's
Outline = tuple[float, float] | None
#: a setting the test and card stages choose: (test-time scales, lesion threshold, lesion
#: shape, small lesions' cores, PET outline)
Setting = tuple[Scales, float | None, str, Small, Outline]


@dataclass(frozen=True)
class Grid:
    """The settings the test and card stages choose among: test-time scales, lesion shapes,
    small lesions' cores, PET outlines and lesion thresholds (None: :data:`THRESHOLDS`)."""

    scales: tuple[Scales, ...]
    shapes: tuple[str, ...] = ("none",)
    smalls: tuple[Small, ...] = (None,)
    outlines: tuple[Outline, ...] = (None,)
    thresholds: tuple[float | None, ...] | None = None

    def settings(self) -> list[Setting]:
        """Every setting, in the order ties are broken (the first of equals wins): the first
        shape, no cut, no outline, fewer scales, then the higher threshold."""
        return [
            (s, t, shape, small, outline)
            for shape in self.shapes
            for small in self.smalls
            for outline in self.outlines
            for s in self.scales
            for t in (THRESHOLDS if self.thresholds is None else self.thresholds)
        ]

    def tried(self) -> dict[str, Any]:
        """The grid as the test stage's result records it."""
        return {
            "tta_scales_tried": [list(s) for s in self.scales],
            "lesion_shapes_tried": list(self.shapes),
            "small_lesions_tried": [None if x is None else list(x) for x in self.smalls],
            "pet_outlines_tried": [None if x is None else list(x) for x in self.outlines],
            "thresholds_tried": list(THRESHOLDS if self.thresholds is None else self.thresholds),
        }


def parse_thresholds(text: str) -> tuple[float | None, ...]:
    """``"none,0.4,0.3"`` -> ``(None, 0.4, 0.3)`` (``none``: the argmax)."""
    values: list[float | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            value = None if part == "none" else float(part)
        except ValueError:
            value = float("nan")
        if value is not None and not 0 < value < 1:
            raise SystemExit(
                f"trust_sts: --thresholds expects 'none' or probabilities in (0, 1), "
                f"comma-separated, found {part!r}"
            )
        values.append(value)
    if not values:
        raise SystemExit(f"trust_sts: --thresholds names none: {text!r}")
    return tuple(values)


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


def _parse_pairs(
    text: str, flag: str, form: str, valid: Any, example: str
) -> tuple[tuple[float, float] | None, ...]:
    """``"none;A@B;..."`` -> ``(None, (A, B), ...)``, each pair checked by ``valid``."""
    settings: list[tuple[float, float] | None] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part == "none":
            settings.append(None)
            continue
        try:
            a, b = (float(v) for v in part.split("@"))
        except ValueError:
            a = b = float("nan")
        if not valid(a, b):
            raise SystemExit(
                f"trust_sts: {flag} expects 'none' or {form} settings separated by ';', e.g. "
                f'"{example}", found {part!r}'
            )
        settings.append((a, b))
    if not settings:
        raise SystemExit(f"trust_sts: {flag} names no setting: {text!r}")
    return tuple(settings)


def parse_small(text: str) -> tuple[Small, ...]:
    """``"none;400@0.8;300@0.9"`` -> ``(None, (400.0, 0.8), (300.0, 0.9))``: small-lesion
    settings (mL, core probability) to choose among, ``none`` keeping small lesions whole."""
    return _parse_pairs(
        text,
        "--small-lesions",
        "ML@P (ML > 0 mL, P in (0, 1))",
        lambda ml, p: ml > 0 and 0 < p < 1,
        "none;400@0.8",
    )


def parse_outlines(text: str) -> tuple[Outline, ...]:
    """``"none;0.2@16"`` -> ``(None, (0.2, 16.0))``: PET outlines (the fraction between
    background and SUVmax, how far in mm a lesion may grow) to choose among, ``none`` keeping
    the network's outline."""
    return _parse_pairs(
        text,
        "--pet-outlines",
        "F@MM (F in (0, 1), MM >= 0)",
        lambda f, mm: 0 < f < 1 and mm >= 0,
        "none;0.2@16",
    )


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
        grid: Grid,
    ) -> None:
        self.cases: dict[tuple[str, Scales], Any] = {}
        for setting in grid.scales:
            paths = [kept_dir(row, setting) / f"{c}.npz" for c in cases]
            missing = [p.stem for p in paths if not p.exists()]
            if missing:
                raise SystemExit(
                    f"trust_sts: {len(missing)} case(s) not predicted for {row} at scales "
                    f"{setting} (first: {missing[0]}); run --stage predict first"
                )
            self.cases.update({(p.stem, setting): load_kept(p) for p in paths})
        self.settings = grid.settings()
        self.check = replace(check, refine_fraction=None)  # the outline is a choice
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

    def _draw(self, name: str, setting: Setting) -> np.ndarray:
        """The mask at the setting's threshold after the PET check and its PET outline (what
        every shape and small-lesion setting starts from)."""
        from mefn.postprocess import apply_pet_check, mask_from_probabilities

        scales, threshold, _shape, _small, outline = setting
        case = self.cases[(name, scales)]
        p = case.maps.lesion_probability
        mask = mask_from_probabilities(np.stack([1.0 - p, p]), 0, threshold)
        check = self.check
        if outline is not None:
            check = replace(check, refine_fraction=outline[0], refine_mm=outline[1])
        if check.active:
            mask = apply_pet_check(mask, case.maps.suv, case.maps.spacing_mm, check)
        return mask

    def _finish(self, name: str, setting: Setting, drawn: np.ndarray | None) -> TrustCase:
        """Case ``name`` with ``drawn`` (from :meth:`_draw`) cut and reshaped as ``setting``
        says; kept when :meth:`best` chose it."""
        from mefn.confidence import TrustCase
        from mefn.postprocess import keep_small_lesion_cores, reshape_lesions

        scales, _threshold, shape, small, _outline = setting
        if drawn is None:
            drawn = self._draw(name, setting)
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
        every setting (:meth:`score_case`)."""
        if (name, setting) not in self._dice:
            self._dice.update({(name, s): d for s, d in self.score_case(name).items()})
        return self._dice[(name, setting)]

    def score_case(self, name: str) -> dict[Setting, float]:
        """The Dice of case ``name`` at every setting, each threshold and outline's mask
        drawn once for all shapes and small-lesion settings."""
        by_draw: dict[tuple[Any, ...], list[Setting]] = {}
        for s in self.settings:
            by_draw.setdefault((s[0], s[1], s[4]), []).append(s)
        scores: dict[Setting, float] = {}
        for settings in by_draw.values():
            drawn = self._draw(name, settings[0])
            for s in settings:
                case = self._finish(name, s, drawn)
                scores[s] = dice(case.mask > 0, case.reference > 0)
        return scores

    def score(self, names: list[str], workers: int = 1) -> None:
        """Every setting's Dice of ``names`` computed ahead, in ``workers`` processes forked
        from this one (they share the kept maps)."""
        todo = [n for n in names if (n, self.settings[0]) not in self._dice]
        if workers <= 1 or len(todo) < 2:
            for name in todo:
                self.dice(name, self.settings[0])
            return
        global _SCORING
        _SCORING = self
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for name, scores in zip(todo, pool.map(_score_case, todo, chunksize=1)):
                    self._dice.update({(name, s): d for s, d in scores.items()})
        finally:
            _SCORING = None

    def keep(self, setting: Setting) -> None:
        """Keep the masks of ``setting`` once drawn (a setting chosen)."""
        self._keep.add(setting)

    def best(self, names: list[str]) -> Setting:
        """The setting (shape, scales, then threshold of :data:`THRESHOLDS`) with the best mean
        Dice over ``names`` (the first of equals: the first shape given, fewer scales, then the
        higher threshold)."""
        means = [float(np.mean([self.dice(c, s) for c in names])) for s in self.settings]
        chosen = self.settings[int(np.argmax(means))]
        self.keep(chosen)
        return chosen


_SCORING: _Kept | None = None  # the kept predictions forked workers score


def _score_case(name: str) -> dict[Setting, float]:
    assert _SCORING is not None  # set by _Kept.score before the fork
    return _SCORING.score_case(name)


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
    scales, threshold, shape, small, outline = setting
    label = f"x{','.join(f'{s:g}' for s in scales)} t={threshold}"
    if outline is not None:
        label += f" pet@{outline[0]:g}<{outline[1]:g}mm"
    if small is not None:
        label += f" cores<{small[0]:g}mL@{small[1]:g}"
    return label if shape == "none" else f"{label} {shape}"


def _setting_record(setting: Setting) -> dict[str, Any]:
    """``setting`` by the names of the card's post-processing settings."""
    scales, threshold, shape, small, outline = setting
    return {
        "tta_scales": list(scales),
        "lesion_threshold": threshold,
        "lesion_shape": shape,
        "small_lesion_ml": 0.0 if small is None else small[0],
        "small_lesion_threshold": None if small is None else small[1],
        "pet_refine": None if outline is None else list(outline),
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


def test(row: str, grid: Grid, workers: int = 1) -> dict[str, Any]:
    """Nested by fold: the setting of ``grid`` and the trust fitted on four folds' held-out
    predictions, scored on the fifth's; every setting's Dice computed in ``workers``
    processes."""
    from mefn.data.datasets import load_folds

    folds = load_folds(FOLDS)
    all_cases = [c for f in folds for c in f]
    kept = _Kept(row, all_cases, _adapter_pet_check(), grid)
    kept.score(all_cases, workers)
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
        **grid.tried(),
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


def card(row: str, card_path: Path, grid: Grid, workers: int = 1) -> dict[str, Any]:
    """Choose the setting of ``grid`` and fit the trust on all held-out predictions; store
    them in ``card_path``. The test stage's result on the same grid, when there is one,
    gives every setting's mean Dice over all cases (not computed again) and its nested
    figures to the card."""
    from mefn.confidence import trust_record
    from mefn.data.datasets import load_folds
    from mefn.fileutil import atomic_write_text

    cases = [c for f in load_folds(FOLDS) for c in f]
    kept = _Kept(row, cases, _adapter_pet_check(), grid)
    tested = OUT / f"{row}.json"  # the test stage's figures, when run on this grid
    result = json.loads(tested.read_text(encoding="utf-8")) if tested.is_file() else None
    if result is not None and all(result.get(k) == v for k, v in grid.tried().items()):
        means = [result["dice_by_setting"][_label(s)] for s in kept.settings]
        setting = kept.settings[int(np.argmax(means))]  # as kept.best(cases) chooses
        kept.keep(setting)
    else:
        result = None
        kept.score(cases, workers)
        setting = kept.best(cases)
    lesion, voxel, summary = _fit(kept, cases, setting, "all cases")
    summary["data"] = f"held-out predictions of the {row} fold adapters (25 sarcoma crops)"
    summary.update(_setting_record(setting))
    record = trust_record(lesion, voxel, summary)
    content = json.loads(card_path.read_text(encoding="utf-8"))
    content.pop("note", None)  # "not calibrated" no longer holds
    post = content.setdefault("postprocess", {})
    chosen = _setting_record(setting)
    refine = chosen.pop("pet_refine")
    post.update(chosen)
    post["pet_check"] = {  # the check the choice was made with, and the chosen outline
        **kept.check.to_json(),
        "refine_fraction": None if refine is None else refine[0],
        **({} if refine is None else {"refine_mm": refine[1]}),
    }
    if result is not None:
        content.setdefault("cross_validation", {})["with_postprocess"] = {
            "dice_mean": result["dice_nested"]["mean"],
            "dice_median": result["dice_nested"]["median"],
            "per_case": result["dice_nested"]["per_case"],
            "chosen_per_fold": [
                {k: f.get(k) for k in ("fold", *_setting_record(setting))}
                for f in result["fitted_per_fold"]
            ],
            "scored": "each fold's held-out cases with the post-processing chosen on the other "
            "four folds (python -m pipelines.trust_sts --stage test)",
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
        "--pet-outlines",
        default="none",
        help="PET outlines (mefn.postprocess.PetCheck refine_fraction and refine_mm) to choose "
        "among in test and card: 'none' or F@MM (each lesion redrawn at F between background "
        "and SUVmax, within MM mm of the network's), separated by ';' (e.g. \"none;0.2@16\")",
    )
    parser.add_argument(
        "--thresholds",
        default=None,
        help="lesion thresholds to choose among in test and card, comma-separated ('none': the "
        "argmax; default: " + ",".join("none" if t is None else f"{t:g}" for t in THRESHOLDS) + ")",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="test and card: processes that score the settings (forked: they share the kept "
        "maps; each adds its own working memory)",
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
    grid = Grid(
        tuple(scales),
        shapes,
        parse_small(args.small_lesions),
        parse_outlines(args.pet_outlines),
        None if args.thresholds is None else parse_thresholds(args.thresholds),
    )
    if args.stage == "predict":
        predict(args.row, args.data, args.campaign, args.threads, scales)
    elif args.stage == "test":
        from mefn.fileutil import atomic_write_text

        result = test(args.row, grid, args.workers)
        OUT.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT / f"{args.row}.json", json.dumps(result, indent=1))
    else:
        card(args.row, args.card, grid, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
