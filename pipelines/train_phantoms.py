"""Train the bundled default weights on synthetic phantoms, then score them on fresh phantoms.

    python pipelines/train_phantoms.py                       # the whole recipe, about 2 h on 2 cores
    python pipelines/train_phantoms.py --resume              # continue an interrupted run
    python pipelines/train_phantoms.py --evaluate-only       # re-score runs/phantoms_small

Steps: (1) write ``--n`` training phantoms (seeds from ``--seed``) in the nnU-Net layout;
(2) ``mefn.training.train`` with ``configs/train/phantoms_small.yaml``; (3) segment ``--n-test``
fresh phantoms whose seeds were never used for training and score them with the AutoPET 2022
metrics; (4) copy the weights to ``mefn/weights/mefn_default.safetensors`` with a model card that
holds the data, config, commit, validation and test figures and the training time.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import git_commit  # noqa: E402  (pipelines/ on sys.path above)

REPO = Path(__file__).resolve().parents[1]
TEST_SEED0 = 10_000_000  # test phantoms: seeds far from any training seed


def make_training_data(root: Path, n: int, seed: int) -> None:
    from mefn.data.phantoms import write_phantoms

    done = sorted((root / "imagesTr").glob("*_0000.nii.gz")) if root.is_dir() else []
    if len(done) >= n:
        print(f"[data] {len(done)} phantoms already in {root}", flush=True)
        return
    t0 = time.monotonic()
    write_phantoms(root, n=n, layout="nnunet", seed=seed)
    print(f"[data] wrote {n} phantoms to {root} in {time.monotonic() - t0:.0f} s", flush=True)


def evaluate(run_dir: Path, n_test: int, out_dir: Path) -> dict[str, object]:
    """Segment fresh phantoms and score them (AutoPET 2022 definitions)."""
    from mefn.data.phantoms import generate_study
    from mefn.inference import Predictor
    from mefn.io.case import Case
    from mefn.metrics.autopet import autopet_case_metrics

    predictor = Predictor(run_dir, device="cpu")
    rows = []
    for i in range(n_test):
        seed = TEST_SEED0 + i
        study = generate_study(seed, kind="wholebody")
        case = Case(
            case_id=f"test_{seed}",
            ct=study.ct,
            pet=study.pet,
            label=study.label_pet,
            output_geometry=study.pet.geometry,
        )
        pred = predictor.predict(case)
        ref = (study.label_pet.array > 0).astype(np.uint8)
        m = autopet_case_metrics(ref, pred.mask, study.pet.geometry.spacing_mm, year=2022)
        rows.append({"seed": seed, "lesions": len(study.lesions), **m.to_dict()})
        print(f"[test] {seed}: {m}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "test_phantoms.json").write_text(json.dumps(rows, indent=1, default=float))
    with_lesions = [r for r in rows if r["lesions"] > 0]
    summary = {
        "n_cases": len(rows),
        "n_with_lesions": len(with_lesions),
        "seeds": [TEST_SEED0, TEST_SEED0 + n_test - 1],
        "mean_dice": float(np.nanmean([r["dice"] for r in with_lesions])),
        "mean_fpv_ml": float(np.mean([r["fpv_ml"] for r in rows])),
        "mean_fnv_ml": float(np.mean([r["fnv_ml"] for r in with_lesions])),
        "definitions": "AutoPET 2022: Dice and FNV over cases with lesions, FPV over all cases",
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs/train/phantoms_small.yaml"))
    parser.add_argument("--run", default=str(REPO / "runs/phantoms_small"))
    parser.add_argument("--n", type=int, default=200, help="training phantoms")
    parser.add_argument("--seed", type=int, default=1000, help="first training seed")
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not copy into mefn/weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from mefn.training import load_train_config, train

    cfg = load_train_config(args.config)
    run_dir = Path(args.run)
    if not args.evaluate_only:
        make_training_data(REPO / cfg.data.root, args.n, args.seed)
        from dataclasses import replace

        cfg = replace(cfg, data=replace(cfg.data, root=str(REPO / cfg.data.root)))

        def progress(event: dict) -> None:
            if event["event"] == "epoch":
                print(f"[train] {json.dumps(event, default=float)}", flush=True)

        result = train(cfg, run_dir, resume=args.resume, progress=progress)
        print(f"[train] {result}", flush=True)
    summary = evaluate(run_dir, args.n_test, run_dir / "evaluation")
    print(f"[test] summary {json.dumps(summary)}", flush=True)
    card = json.loads((run_dir / "model.json").read_text())
    card["name"] = "mefn_default"
    card["trained_on"] = (
        f"synthetic PET/CT phantoms only ({args.n} whole-body studies, seeds {args.seed}-"
        f"{args.seed + args.n - 1}, `mefn phantoms --layout nnunet`); no real patient data"
    )
    card["commit"] = git_commit()
    card["test_fresh_phantoms"] = summary
    card["reproduce"] = "python pipelines/train_phantoms.py"
    (run_dir / "model.json").write_text(json.dumps(card, indent=1))
    if not args.no_install:
        dest = REPO / "mefn" / "weights"
        shutil.copyfile(run_dir / "model.safetensors", dest / "mefn_default.safetensors")
        (dest / "mefn_default.json").write_text(json.dumps(card, indent=1))
        print(f"[install] {dest / 'mefn_default.safetensors'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
