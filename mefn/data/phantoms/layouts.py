"""Writing phantom studies in the folder layouts of the public datasets.

- ``autopet``: ``PETCT_<id>/<study folder>/{CT, CTres, PET, SUV, SEG}.nii.gz``. The study
  folder name has spaces, a double one included, like the real release
  (``"09-21-2005-NA-PET-CT Ganzkoerper  primaer mit KM-12345"``). CT is on the CT grid;
  CTres, PET, SUV and SEG share the PET grid. CTres is the CT rendered on the PET grid (not
  resampled), PET is in Bq/mL: ``PET = SUV * pet_bqml_per_suv`` with the factor (decayed
  dose / body weight in g) recorded in ``phantoms.json``. SEG is binary (any lesion).
- ``nnunet``: ``imagesTr/<tracer>_<patient>_<study>_0000.nii.gz`` (CTres) and ``_0001``
  (SUV), ``labelsTr/<name>.nii.gz`` (binary), all on the PET grid, and ``dataset.json``.
- ``hecktor``: ``imagesTr/<Centre>-<nnn>__CT.nii.gz``, ``__PT.nii.gz`` (SUV) and
  ``labelsTr/<Centre>-<nnn>.nii.gz`` on the CT grid (1 = GTVp, 2 = GTVn).

:func:`write_phantoms` also writes ``phantoms.json``: per study its name, seed, files,
lesion table and generation metadata.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from mefn import __version__
from mefn.data.phantoms import streams
from mefn.data.phantoms.render import render_ct
from mefn.data.phantoms.study import KINDS, PhantomStudy, generate_study
from mefn.errors import ConfigError, OutputError
from mefn.fileutil import atomic_write_text, check_writable_dir
from mefn.io.volume import Volume

__all__ = [
    "LAYOUTS",
    "WrittenStudy",
    "case_name",
    "study_seed",
    "write_phantoms",
    "write_study",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

LAYOUTS = ("autopet", "nnunet", "hecktor")
HECKTOR_CENTRES = ("CHUM", "CHUP", "CHUS", "CHUV", "HGJ", "HMR", "MDA", "USZ")


def run_in_study_order(
    fn: Callable[..., _T], calls: Sequence[tuple[Any, ...]], workers: int
) -> Iterator[_T]:
    """``fn(*args)`` for each ``args`` of ``calls``, yielded in the order of ``calls``.

    In this process when ``workers`` is 1 or there is one call; otherwise in up to
    ``workers`` spawned processes (a fresh interpreter per worker, safe whatever threads the
    caller runs), the results still in call order, as the serial path gives them.
    """
    if workers == 1 or len(calls) == 1:
        for args in calls:
            yield fn(*args)
        return
    import multiprocessing

    with ProcessPoolExecutor(
        max_workers=min(workers, len(calls)), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        for future in futures:
            yield future.result()


def study_seed(seed: int, index: int) -> int:
    """The seed of study ``index`` of a set made with ``seed`` (sets never overlap for n < 10^5)."""
    return seed * 100_000 + index


def _study_folder(study: PhantomStudy) -> str:
    rng = np.random.default_rng([study.meta["seed"], streams.NAMES_STREAM, 1])
    year = int(rng.integers(2002, 2020))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    km = "mit KM" if study.meta["patient"].get("contrast") else "ohne KM"
    return f"{month:02d}-{day:02d}-{year}-NA-PET-CT Ganzkoerper  primaer {km}-{int(rng.integers(10000, 99999))}"


def _patient_id(study: PhantomStudy) -> str:
    return np.random.default_rng([study.meta["seed"], streams.NAMES_STREAM, 2]).bytes(5).hex()


def case_name(study: PhantomStudy, layout: str, index: int) -> str:
    """The default case name of ``study`` (number ``index`` of its set) in ``layout``."""
    if layout == "autopet":
        return f"PETCT_{_patient_id(study)}"
    if layout == "nnunet":
        return f"fdg_{_patient_id(study)}_{_study_folder(study)}"
    if layout == "hecktor":
        centre = HECKTOR_CENTRES[index % len(HECKTOR_CENTRES)]
        return f"{centre}-{index // len(HECKTOR_CENTRES) + 1:03d}"
    raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, found {layout!r}")


def pet_bqml_per_suv(study: PhantomStudy) -> float:
    """Bq/mL per SUV for the study's PET.nii.gz: decayed dose (Bq) / body weight (g)."""
    rng = np.random.default_rng([study.meta["seed"], streams.NAMES_STREAM, 3])
    weight_g = float(rng.uniform(50, 120)) * 1000.0
    dose_bq = float(rng.uniform(150, 350)) * 1e6
    return dose_bq / weight_g


def _binary(label: Volume) -> Volume:
    return label.with_array((label.array > 0).astype(np.uint8))


def write_study(
    study: PhantomStudy, outdir: str | os.PathLike[str], layout: str, name: str
) -> list[Path]:
    """Write one study in ``layout`` under ``outdir`` as case ``name``; returns the files.

    ``name`` is the patient folder for ``autopet`` (``PETCT_...``), the case name for
    ``nnunet`` and ``hecktor``. The nnU-Net ``dataset.json`` is written by
    :func:`write_phantoms`, which knows the whole set.
    """
    # SimpleITK loads here, not with the module: study_seed and case_name need none of it
    from mefn.io.sitk_bridge import write_volume

    out = Path(outdir)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, found {layout!r}")
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"case name must be a plain file name, found {name!r}")
    written: list[Path] = []
    if layout == "autopet":
        folder = check_writable_dir(out / name / _study_folder(study))
        ctres = _ct_on_pet_grid(study)
        factor = pet_bqml_per_suv(study)
        bq = study.pet.with_array(study.pet.array * np.float32(factor), units="BQML")
        for fname, vol, dtype in (
            ("CT", study.ct, np.float32),
            ("CTres", ctres, np.float32),
            ("PET", bq, np.float32),
            ("SUV", study.pet, np.float32),
            ("SEG", _binary(study.label_pet), np.uint8),
        ):
            written.append(write_volume(vol, folder / f"{fname}.nii.gz", dtype=dtype))
        return written
    if layout == "nnunet":
        images = check_writable_dir(out / "imagesTr")
        labels = check_writable_dir(out / "labelsTr")
        written.append(
            write_volume(_ct_on_pet_grid(study), images / f"{name}_0000.nii.gz", dtype=np.float32)
        )
        written.append(write_volume(study.pet, images / f"{name}_0001.nii.gz", dtype=np.float32))
        written.append(
            write_volume(_binary(study.label_pet), labels / f"{name}.nii.gz", dtype=np.uint8)
        )
        return written
    images = check_writable_dir(out / "imagesTr")
    labels = check_writable_dir(out / "labelsTr")
    written.append(write_volume(study.ct, images / f"{name}__CT.nii.gz", dtype=np.float32))
    written.append(write_volume(study.pet, images / f"{name}__PT.nii.gz", dtype=np.float32))
    written.append(write_volume(study.label_ct, labels / f"{name}.nii.gz", dtype=np.uint8))
    return written


def _ct_on_pet_grid(study: PhantomStudy) -> Volume:
    if study.scene is None:
        raise ConfigError(
            "this study has no scene to render CTres from; make it with generate_study"
        )
    return render_ct(study.scene, study.pet.geometry, stream=streams.CTRES_NOISE_SUBSTREAM)


@dataclass(frozen=True)
class WrittenStudy:
    """What :func:`write_phantoms` reports of a study it wrote (its images stay on disk)."""

    name: str
    path: Path  # the study folder (autopet), the _0000 image (nnunet) or the __CT image
    lesions: list[dict[str, Any]]
    ct_shape: tuple[int, int, int]
    pet_shape: tuple[int, int, int]
    manifest: dict[str, Any]  # the study's entry in phantoms.json


ProgressFn = Callable[[int, int, str, WrittenStudy, float], None]


def _write_one(
    out: Path,
    layout: str,
    kind: Literal["wholebody", "headneck"],
    seed: int,
    index: int,
    options: dict[str, Any],
) -> tuple[WrittenStudy, float]:
    """Generate study ``index`` of the set and write it: one unit of work, in any process."""
    start = time.perf_counter()
    study = generate_study(study_seed(seed, index), kind, **options)
    name = case_name(study, layout, index)
    files = write_study(study, out, layout, name)
    entry: dict[str, Any] = {
        "name": name,
        "seed": study.meta["seed"],
        "files": [str(f.relative_to(out)) for f in files],
        "lesions": study.lesions,
        "meta": study.meta,
    }
    if layout == "autopet":
        entry["pet_bqml_per_suv"] = pet_bqml_per_suv(study)
    written = WrittenStudy(
        name=name,
        path=files[0].parent if layout == "autopet" else files[0],
        lesions=study.lesions,
        ct_shape=study.ct.shape,
        pet_shape=study.pet.shape,
        manifest=entry,
    )
    return written, time.perf_counter() - start


def write_phantoms(
    outdir: str | os.PathLike[str],
    n: int,
    layout: Literal["autopet", "nnunet", "hecktor"],
    seed: int,
    kind: Literal["wholebody", "headneck"] | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    workers: int = 1,
    **options: Any,
) -> list[Path]:
    """Generate ``n`` studies and write them in ``layout``; returns one path per study.

    The path is the study folder (``autopet``), the ``_0000`` image (``nnunet``) or the
    ``__CT`` image (``hecktor``). ``kind`` defaults to ``headneck`` for ``hecktor`` and
    ``wholebody`` otherwise. Study ``i`` uses seed :func:`study_seed` ``(seed, i)``.
    ``outdir`` must be empty or absent unless ``overwrite``. ``progress(i, n, name, study,
    seconds)`` is called after each study, in study order, with a :class:`WrittenStudy`;
    ``options`` go to :func:`generate_study`. ``workers`` > 1 generates and writes the
    studies in that many processes: the files are the same as with one (each study depends
    on its seed only).
    """
    kind = _check_set(n, layout, seed, kind, workers)
    out = Path(outdir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            f"output folder {out} is not empty; choose an empty folder or pass --overwrite"
        )
    check_writable_dir(out)
    # the study folders exist before any worker writes into them (no race on mkdir)
    if layout != "autopet":
        check_writable_dir(out / "imagesTr")
        check_writable_dir(out / "labelsTr")
    paths: list[Path] = []
    manifest: list[dict[str, Any]] = []

    def done(i: int, written: WrittenStudy, seconds: float) -> None:
        paths.append(written.path)
        manifest.append(written.manifest)
        log.debug(
            "phantom %d/%d %s: %d lesions, %.1f s",
            i + 1, n, written.name, len(written.lesions), seconds,
        )  # fmt: skip
        if progress is not None:
            progress(i + 1, n, written.name, written, seconds)

    calls = [(out, layout, kind, seed, i, options) for i in range(n)]
    for i, result in enumerate(run_in_study_order(_write_one, calls, workers)):
        done(i, *result)
    if layout == "nnunet":
        _write_nnunet_dataset(out, n)
    record = {
        "software": f"mefn {__version__}",
        "layout": layout,
        "kind": kind,
        "seed": seed,
        "n": n,
        "options": options,
        "studies": manifest,
    }
    atomic_write_text(out / "phantoms.json", json.dumps(record, indent=1) + "\n")
    return paths


def _check_set(
    n: int, layout: str, seed: int, kind: str | None, workers: int
) -> Literal["wholebody", "headneck"]:
    """The arguments of :func:`write_phantoms` checked; returns the kind (its default filled in)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, found {layout!r}")
    if kind is None:
        kind = "headneck" if layout == "hecktor" else "wholebody"
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
    if layout == "hecktor" and kind != "headneck":
        raise ConfigError(
            "the hecktor layout holds head-and-neck studies (labels GTVp, GTVn), found kind "
            f"{kind!r}; use kind headneck or another layout"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive number of studies, found {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, found {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"workers must be a positive number of processes, found {workers!r}; use 1 to "
            "write the studies one after the other"
        )
    return kind  # type: ignore[return-value]


def _write_nnunet_dataset(out: Path, n: int) -> None:
    dataset = {
        "name": "mefn synthetic FDG PET/CT",
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "tumor": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")
