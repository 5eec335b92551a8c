"""Score test-time mirroring (``mefn segment --tta``) against plain inference on phantoms.

    python -m pipelines.compare_tta [--tta none,x,xyz] [--max-cases 16] [--test 0]
                                    [--model default] [--config configs/train/phantoms_small.yaml]

Segments the validation split of the training config (the phantoms the bundled weights chose
their post-processing on; never the test phantoms unless ``--test N`` asks for the first N of
``pipelines.train_phantoms``' fresh test seeds) once per mirroring setting, with the
weights' own post-processing (the card's ``lesion_threshold`` and ``min_lesion_ml``; note that
the card chose them for its own ``tta_axes``), and prints and writes the mean
AutoPET 2022 figures per setting (Dice and FNV over cases with lesions, FPV over all) and the
seconds per case, to ``<out>/tta.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines._bench import REPO, command_line, git_commit, repo_relative


def _cases(cfg: Any, max_cases: int, n_test: int) -> list[tuple[str, Any]]:
    """(name, loader) pairs: the validation split's cases, then fresh test phantoms."""
    from mefn.io.discovery import load_case
    from pipelines.train_phantoms import TEST_SEED0, fresh_phantom, validation_entries

    out: list[tuple[str, Any]] = [
        (
            f"val:{e.case_id}",
            lambda e=e: load_case(ct=e.ct, pet=e.pet, label=e.label, case_id=e.case_id),
        )
        for e in validation_entries(cfg, max_cases)
    ]
    out += [
        (f"test:{s}", lambda s=s: fresh_phantom(s)[1])
        for s in range(TEST_SEED0, TEST_SEED0 + n_test)
    ]
    return out


def _summary(records: list[Any], seconds: list[float]) -> dict[str, float]:
    """AutoPET 2022 means (mefn.metrics.autopet.aggregate_autopet) and seconds per case."""
    from mefn.metrics.autopet import aggregate_autopet

    agg = aggregate_autopet(records, 2022)
    return {
        "cases": agg["n_cases"],
        "with_lesions": agg["n_cases_with_lesions"],
        "mean_dice": agg["dice_mean"],
        "mean_fpv_ml": agg["fpv_ml_mean"],
        "mean_fnv_ml": agg["fnv_ml_mean"],
        "seconds_per_case": float(np.mean(seconds)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--config", default=str(REPO / "configs/train/phantoms_small.yaml"))
    parser.add_argument("--tta", default="none,x,xyz", help="comma-separated settings")
    parser.add_argument("--max-cases", type=int, default=16, help="validation cases")
    parser.add_argument("--test", type=int, default=0, help="also score N fresh test phantoms")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", default=str(REPO / "runs" / "tta"))
    args = parser.parse_args()

    from mefn.errors import InputError
    from mefn.inference import Predictor, parse_tta_axes

    try:
        settings = {name: parse_tta_axes(name) for name in args.tta.split(",")}
    except InputError as exc:
        raise SystemExit(f"--tta: {exc}") from None
    from mefn.metrics.scoring import score_cases
    from mefn.training import load_train_config

    cfg = load_train_config(args.config)
    predictors = {
        name: Predictor(args.model, device="cpu", threads=args.threads, tta_axes=axes)
        for name, axes in settings.items()
    }
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in settings}
    records: dict[str, dict[str, list[Any]]] = {name: {} for name in settings}
    for where, load in _cases(cfg, args.max_cases, args.test):
        case = load()
        split = where.split(":")[0]
        for name, predictor in predictors.items():
            (scored,) = score_cases(predictor, [case], "autopet2022")
            m = scored.metrics
            rows[name].setdefault(split, []).append(
                {**m.to_dict(), "case": where, "seconds": scored.seconds, "timings": scored.timings}
            )
            records[name].setdefault(split, []).append(m)
            print(f"[tta] {where} {name}: {m}", flush=True)
    summary = {
        name: {
            split: _summary(records[name][split], [r["seconds"] for r in split_rows])
            for split, split_rows in per_split.items()
        }
        for name, per_split in rows.items()
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(predictors.values()))
    result = {
        "command": command_line("pipelines.compare_tta"),
        "model": repo_relative(first.weights_path),
        "model_sha256": first.base_hash,
        "min_lesion_ml": first.min_lesion_ml,
        "lesion_threshold": first.lesion_threshold,
        "commit": git_commit(),
        "definitions": "AutoPET 2022: Dice and FNV over cases with lesions, FPV over all cases",
        "summary": summary,
        "cases": rows,
    }
    (out / "tta.json").write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
