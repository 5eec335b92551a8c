"""``make demo``: generate a PET/CT phantom study and segment it with the default weights.

Run as ``python -m mefn.demo --out demo_output``. It writes the study as
``<out>/input/demo_0000.nii.gz`` (CT) and ``demo_0001.nii.gz`` (PET, SUV), runs
``mefn info``, ``mefn segment`` and ``mefn review`` on it, and prints where the outputs are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mefn.demo", description=__doc__)
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--seed", type=int, default=2026, help="phantom seed")
    parser.add_argument(
        "--kind", default="wholebody", choices=["wholebody", "headneck"], help="phantom kind"
    )
    args = parser.parse_args(argv)

    from mefn.cli import main as mefn_main
    from mefn.data.phantoms import generate_study
    from mefn.inference import list_models
    from mefn.io.sitk_bridge import write_volume

    out = Path(args.out)
    inp = out / "input"
    inp.mkdir(parents=True, exist_ok=True)
    print(f"[demo] generating a {args.kind} PET/CT phantom (seed {args.seed}) ...", flush=True)
    study = generate_study(args.seed, kind=args.kind)
    write_volume(study.ct, inp / "demo_0000.nii.gz")
    write_volume(study.pet, inp / "demo_0001.nii.gz")
    write_volume(study.label_ct, inp / "demo_reference_mask.nii.gz")
    n_lesions = len(study.lesions)
    print(f"[demo] wrote {inp}/demo_0000.nii.gz (CT) and demo_0001.nii.gz (PET, SUV);")
    print(f"[demo] the phantom holds {n_lesions} lesion(s); reference: demo_reference_mask.nii.gz")
    print("[demo] $ mefn info", inp / "demo_0000.nii.gz", flush=True)
    code = mefn_main(["info", str(inp / "demo_0000.nii.gz")])
    if code != 0:
        return code
    if "mefn_default" not in list_models():
        print("[demo] no bundled default weights yet: segmentation skipped", flush=True)
        return 0
    seg_out = out / "segmentation"
    print(f"[demo] $ mefn segment {inp / 'demo_0000.nii.gz'} -o {seg_out} --overwrite", flush=True)
    code = mefn_main(
        ["segment", str(inp / "demo_0000.nii.gz"), "-o", str(seg_out), "--overwrite", "--extra"]
    )
    if code != 0:
        return code
    review = out / "review.png"
    print(
        f"[demo] $ mefn review {seg_out} --case {inp / 'demo_0000.nii.gz'} -o {review}", flush=True
    )
    code = mefn_main(
        [
            "review",
            str(seg_out),
            "--case",
            str(inp / "demo_0000.nii.gz"),
            "--reference",
            str(inp / "demo_reference_mask.nii.gz"),
            "-o",
            str(review),
            "--overwrite",
        ]
    )
    print(f"[demo] outputs in {seg_out.resolve()}:")
    for path in sorted(seg_out.iterdir()):
        print(f"         {path.name}")
    if code == 0:
        print(f"[demo] review figure: {review.resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
