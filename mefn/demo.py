"""The demo study: a generated PET/CT phantom written as a case ``mefn segment`` reads.

:func:`write_demo_study` writes ``<folder>/demo_0000.nii.gz`` (CT, HU), ``demo_0001.nii.gz``
(PET, SUV) and ``demo_reference_mask.nii.gz`` (the phantom's lesions on the CT grid).
``mefn demo`` (:mod:`mefn.cli.demo`, what ``make demo`` runs) writes it, then runs
``mefn info``, ``mefn segment`` and ``mefn review`` on it. ``python -m mefn.demo`` is
``mefn demo``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DemoStudy", "main", "write_demo_study"]


@dataclass(frozen=True)
class DemoStudy:
    """The files of the demo study and what the phantom holds."""

    ct_path: Path
    pet_path: Path
    reference_path: Path
    n_lesions: int


def write_demo_study(
    folder: str | Path,
    seed: int = 2026,
    kind: Literal["wholebody", "headneck"] = "wholebody",
    small: bool = False,
) -> DemoStudy:
    """Generate the phantom of ``seed`` and ``kind`` (``small``: a coarser, quicker one) and
    write it into ``folder`` (made if missing), atomically, replacing an earlier demo."""
    from mefn.data.phantoms import generate_study
    from mefn.fileutil import check_writable_dir
    from mefn.io.sitk_bridge import write_volume

    out = check_writable_dir(folder)
    study = generate_study(seed, kind=kind, **({"small": True} if small else {}))
    files = DemoStudy(
        ct_path=out / "demo_0000.nii.gz",
        pet_path=out / "demo_0001.nii.gz",
        reference_path=out / "demo_reference_mask.nii.gz",
        n_lesions=len(study.lesions),
    )
    write_volume(study.ct, files.ct_path)
    write_volume(study.pet, files.pet_path)
    write_volume(study.label_ct, files.reference_path)
    return files


def main(argv: list[str] | None = None) -> int:
    """``python -m mefn.demo [ARGS]``: ``mefn demo [ARGS]``; returns the exit code."""
    from mefn.cli import main as mefn_main

    return mefn_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
