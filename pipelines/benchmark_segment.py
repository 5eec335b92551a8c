"""Segmentation speed and memory on an AutoPET-size whole-body study (CPU by default).

    python pipelines/benchmark_segment.py                  # default weights, 2 threads
    python pipelines/benchmark_segment.py --model runs/x --threads 2 --device cpu

Builds a whole-body phantom on the AutoPET grid (400 x 400 x 326 voxels at 2.04 x 2.04 x 3 mm,
CTres and SUV sharing it), writes it as ``<tmp>/wb_0000.nii.gz`` / ``wb_0001.nii.gz``, then runs
``mefn segment`` on it in a fresh process and reports wall seconds, voxels per second and the
peak resident memory of that process (its ``VmHWM``), and the same for a
head-and-neck study on a HECKTOR-like grid (CT 512 x 512 x ~100 at 0.98 x 0.98 x 3 mm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _autopet_grid(study_geometry):  # type: ignore[no-untyped-def]
    from mefn.io.volume import Geometry

    lo, hi = study_geometry.extent_mm()
    centre = (lo + hi) / 2
    shape = (400, 400, 326)
    spacing = (2.0364, 2.0364, 3.0)
    origin = centre - (np.asarray(shape) - 1) * np.asarray(spacing) / 2
    return Geometry(shape=shape, spacing_mm=spacing, origin_mm=tuple(origin))


def _hecktor_grid(study_geometry):  # type: ignore[no-untyped-def]
    from mefn.io.volume import Geometry

    lo, hi = study_geometry.extent_mm()
    centre = (lo + hi) / 2
    nz = max(60, int((hi[2] - lo[2]) / 3.0))
    shape = (512, 512, min(nz, 160))
    spacing = (0.977, 0.977, 3.0)
    origin = centre - (np.asarray(shape) - 1) * np.asarray(spacing) / 2
    return Geometry(shape=shape, spacing_mm=spacing, origin_mm=tuple(origin))


def make_case(folder: Path, kind: str, seed: int) -> tuple[Path, int]:
    from mefn.data.phantoms import generate_study
    from mefn.io.geometry import resample_to
    from mefn.io.sitk_bridge import write_volume

    study = generate_study(seed, kind=kind, fov="full")
    if kind == "wholebody":
        grid = _autopet_grid(study.pet.geometry)
        ct = resample_to(study.ct, grid, "linear", -1000.0)
        pet = resample_to(study.pet, grid, "linear", 0.0)
    else:
        grid = _hecktor_grid(study.ct.geometry)
        ct = resample_to(study.ct, grid, "linear", -1000.0)
        pet = study.pet
    name = "wb" if kind == "wholebody" else "hn"
    write_volume(ct, folder / f"{name}_0000.nii.gz", dtype=np.float32)
    write_volume(pet, folder / f"{name}_0001.nii.gz", dtype=np.float32)
    return folder / f"{name}_0000.nii.gz", grid.n_voxels


def run_segment(case: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    # The child reports its own peak resident set, VmHWM from /proc (ru_maxrss would carry
    # the parent's peak across exec on Linux).
    child = (
        "import sys; from mefn.cli import main; code = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print('PEAK_KIB', hwm, file=sys.stderr); sys.exit(code)"
    )
    cmd = [
        sys.executable,
        "-c",
        child,
        "-q",
        "segment",
        str(case),
        "-o",
        str(out),
        "--overwrite",
        "--model",
        args.model,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mefn segment failed: {proc.stderr.strip()}")
    peak_kib = int(proc.stderr.split("PEAK_KIB")[-1].split()[0])
    return {"seconds": seconds, "peak_rss_gib": peak_kib / 1024**2}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=424242)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in ("wholebody", "headneck"):
            case, n_vox = make_case(folder, kind, args.seed)
            res = run_segment(case, folder / "out", args)
            res.update({"study": kind, "voxels": n_vox, "voxels_per_s": n_vox / res["seconds"]})
            rows.append(res)
            print(
                f"{kind:10s} grid {n_vox / 1e6:6.1f} Mvox  {res['seconds']:7.1f} s  "
                f"{res['voxels_per_s'] / 1e6:6.2f} Mvox/s  peak RSS {res['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    info = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
