"""``mefn phantoms``: write synthetic PET/CT studies with known lesions in a dataset layout."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

DESCRIPTION = """\
Generate synthetic FDG PET/CT studies (CT in HU, PET in SUV, lesion labels) and write them in
the folder layout of AutoPET (PETCT_<id>/<study>/{CT,CTres,PET,SUV,SEG}.nii.gz), the AutoPET
nnU-Net release (imagesTr/<case>_0000|_0001, labelsTr/<case>) or HECKTOR
(imagesTr/<Centre>-<nnn>__CT|__PT, labelsTr/<Centre>-<nnn>), plus phantoms.json with every
lesion's site, size and uptake. The same --seed always gives the same studies.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "phantoms",
        help="write synthetic PET/CT studies with known lesions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("outdir", metavar="OUTDIR", help="output folder (must be empty or absent)")
    p.add_argument("--n", type=int, default=10, help="number of studies (default %(default)s)")
    p.add_argument(
        "--layout",
        choices=("autopet", "nnunet", "hecktor"),
        default="autopet",
        help="folder layout (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument(
        "--kind",
        choices=("wholebody", "headneck"),
        default=None,
        help="anatomy and lesions (default: headneck for hecktor, else wholebody)",
    )
    p.add_argument(
        "--small", action="store_true", help="small grids (about 0.4 M voxels) for quick tests"
    )
    p.add_argument(
        "--fov",
        choices=("random", "full", "crop"),
        default="random",
        help="field of view: the scanned body, a crop around a lesion, or either at random",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUTDIR")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes writing studies at once (same files as with 1; default %(default)s; "
        "0: one per CPU core)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mefn.data.phantoms import write_phantoms
    from mefn.errors import ConfigError

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, found {args.n}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, found {args.seed}")
    if args.workers < 0:
        raise ConfigError(
            f"--workers must be 0 (one per CPU core) or a number of processes, found {args.workers}"
        )
    workers = args.workers or os.cpu_count() or 1
    quiet = bool(getattr(args, "quiet", False))
    counts = {"lesions": 0, "empty": 0}

    def progress(i: int, n: int, name: str, study: Any, seconds: float) -> None:
        counts["lesions"] += len(study.lesions)
        counts["empty"] += not study.lesions
        if not quiet:
            ct, pet = study.ct_shape, study.pet_shape
            print(
                f"phantoms: [{i}/{n}] {name}: {len(study.lesions)} lesions, "
                f"CT {ct[0]}x{ct[1]}x{ct[2]}, PET {pet[0]}x{pet[1]}x{pet[2]}, {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    write_phantoms(
        args.outdir,
        args.n,
        args.layout,
        args.seed,
        args.kind,
        overwrite=args.overwrite,
        progress=progress,
        workers=workers,
        small=args.small,
        fov=args.fov,
    )
    print(
        f"wrote {args.n} {args.layout} studies to {args.outdir}: {counts['lesions']} lesions, "
        f"{counts['empty']} lesion-free, {time.perf_counter() - start:.1f} s"
    )
    return 0
