"""``mefn segment``: masks, voxel uncertainty maps and a lesion report for PET/CT studies."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Segment lesions in co-registered PET/CT and write, per case, <case>_mask.nii.gz (uint8),
<case>_uncertainty.nii.gz (float32 in [0, 1]) and <case>_report.json on the input's own grid
(with --dicom, for DICOM input, also a DICOM SEG and a DICOM Parametric Map), and for the
output folder cases.csv and lesions.csv (rebuilt from the reports: `mefn report DIR`). The
report lists the lesions and the PET hot spots the mask leaves out (--hot-spot-*).

INPUT may be: a 2-volume 4D NIfTI (CT, PET); <case>_0000 / <case>_0001 files (CT, PET);
HECKTOR <case>__CT / <case>__PT files; an AutoPET study folder (CTres + SUV); a folder of
DICOM series; a folder holding many cases of one of these layouts; or use --ct and --pet.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "segment",
        help="segment lesions and write mask, uncertainty map and report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_io_arguments(p.add_argument_group("inputs and outputs"))
    _add_model_arguments(p.add_argument_group("model"))
    post = p.add_argument_group("post-processing")
    _add_postprocess_arguments(post)
    _add_small_lesion_arguments(post)
    _add_hot_spot_arguments(p.add_argument_group("hot spots (PET uptake the mask leaves out)"))
    _add_performance_arguments(p.add_argument_group("performance"))
    p.set_defaults(func=run)


def _add_io_arguments(g: Any) -> None:
    g.add_argument("inputs", nargs="*", metavar="INPUT", help="case files or folders")
    g.add_argument("--ct", help="CT image (with --pet)")
    g.add_argument("--pet", help="PET image in SUV or a PET DICOM series (with --ct)")
    g.add_argument(
        "--pet-series",
        metavar="UID|DESCRIPTION",
        help="the PET series to use when a DICOM study holds several: its SeriesInstanceUID, "
        "or a SeriesDescription only one of its PET series has (case ignored; the form to "
        "use over several studies); default: the attenuation-corrected series (CorrectedImage "
        "lists ATTN), then the one with most slices",
    )
    g.add_argument(
        "-o", "--output", default="mefn_output", help="output folder (default %(default)s)"
    )
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument(
        "--extra",
        action="store_true",
        help="also write class probabilities and the CT and PET opinions' uncertainty",
    )
    g.add_argument(
        "--dicom",
        action="store_true",
        help="also write <case>_seg.dcm (DICOM SEG of the mask) and <case>_uncertainty_pm.dcm "
        "(DICOM Parametric Map of the uncertainty), referencing the CT series; DICOM input only",
    )


def _add_model_arguments(g: Any) -> None:
    g.add_argument(
        "--model",
        default="default",
        help="bundled weights name, .safetensors file or training folder",
    )
    g.add_argument(
        "--adapter",
        help="adapter folder from `mefn finetune`, or a bundled adapter name (--list-models), "
        "applied to the model",
    )
    g.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)"
    )
    g.add_argument(
        "--tta",
        nargs="?",
        const="xyz",
        default=None,
        metavar="AXES",
        help="test-time mirroring (as nnU-Net's): also segment the case mirrored along these "
        "axes of the model grid, every combination, and average (--tta alone: xyz, 8 passes; "
        "--tta x: 2 passes; --tta none: off, one pass, about 7x faster than xyz; default: "
        "the setting in the weights' card, which their lesion threshold, lesion floor and "
        "review threshold were calibrated with)",
    )
    g.add_argument(
        "--tta-scales",
        default=None,
        metavar="SCALES",
        help="also segment the case on grids this many times coarser than the model's and keep, "
        "voxel by voxel, the scale with the highest lesion probability (e.g. 1,1.5,2, for "
        "lesions larger than those the model was trained on, adds grids of 30 %% and 12.5 %% "
        "of the model grid's voxels); 1: the model's grid only; default: the setting in the card",
    )
    g.add_argument(
        "--no-fine-stage",
        action="store_true",
        help="run the coarse stage of a coarse-to-fine model alone (weights whose card names "
        "a fine stage; the card's post-processing was chosen for both stages together)",
    )
    g.add_argument(
        "--list-models", action="store_true", help="list bundled weights and adapters and exit"
    )


def _add_postprocess_arguments(g: Any) -> None:
    g.add_argument(
        "--review-threshold",
        type=float,
        default=None,
        help="for weights without a lesion confidence model: flag lesions whose mean "
        "uncertainty reaches this (default: the threshold calibrated for the weights, in their "
        "card; 0.3 if the card has none)",
    )
    g.add_argument(
        "--review-below",
        type=float,
        default=None,
        metavar="P",
        help="for weights with a lesion confidence model: flag lesions whose confidence (the "
        "calibrated probability that the lesion is real) is below P, in (0, 1] (default: the "
        "card's review_below; 0.5 if the card has none)",
    )
    g.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="P",
        help="for weights with a lesion confidence model: remove lesions whose confidence is "
        "below P, in [0, 1), from the mask; the report lists them as dropped (default: the "
        "floor chosen for the weights, in their card; 0 keeps every lesion)",
    )
    g.add_argument(
        "--min-lesion-ml",
        type=float,
        default=None,
        help="drop predicted lesions smaller than this (default: the value chosen for the "
        "weights, in their card; 0 if the card has none)",
    )
    g.add_argument(
        "--lesion-shape",
        choices=("none", "hull", "largest_hull"),
        default=None,
        help="after the lesion floor: 'hull' fills each lesion's convex hull (a tumour whose "
        "cold part the network left out is outlined whole), 'largest_hull' keeps only the "
        "largest lesion and fills its hull (one tumour per study), 'none' keeps the outlines "
        "as drawn (default: the card's choice; 'none' if it has none)",
    )
    g.add_argument(
        "--lesion-threshold",
        type=float,
        default=None,
        metavar="P",
        help="a voxel is lesion when its probability of not being background reaches P "
        "(default: the threshold chosen for the weights, in their card; the argmax if the "
        "card has none; lower finds more and larger lesions, and more false positives)",
    )
    g.add_argument(
        "--min-lesion-suv",
        type=float,
        default=None,
        metavar="SUV",
        help="drop predicted lesions whose SUVmax is below this (0: no check; default: the "
        "weights' card)",
    )
    g.add_argument(
        "--min-lesion-contrast",
        type=float,
        default=None,
        metavar="C",
        help="drop predicted lesions whose SUVmax is below C times the median SUV 4-12 mm "
        "around them (beyond the growth zone with --pet-refine; 0: no check; default: the "
        "weights' card)",
    )
    g.add_argument(
        "--pet-refine",
        default=None,
        metavar="F",
        help="redraw each lesion on the PET: the voxels near it above background + F x "
        "(SUVmax - background), holes filled (none: the network's outline; default: the "
        "weights' card)",
    )
    g.add_argument(
        "--pet-refine-mm",
        type=float,
        default=None,
        metavar="MM",
        help="how far --pet-refine may grow a lesion beyond the network's outline (default: "
        "the weights' card, else 8)",
    )


def _add_small_lesion_arguments(g: Any) -> None:
    g.add_argument(
        "--small-lesion-ml",
        type=float,
        default=None,
        metavar="ML",
        help="lesions smaller than ML keep only their core, the voxels whose lesion "
        "probability reaches --small-lesion-threshold (applied after the PET check; default: "
        "the card's; 0 keeps small lesions whole)",
    )
    g.add_argument(
        "--small-lesion-threshold",
        type=float,
        default=None,
        metavar="P",
        help="the lesion probability, in (0, 1), a small lesion's core reaches (with "
        "--small-lesion-ml; default: the card's, else 0.8)",
    )


def _add_hot_spot_arguments(g: Any) -> None:
    g.add_argument(
        "--hot-spot-suv",
        type=float,
        default=None,
        metavar="SUV",
        help="list PET hot spots the mask does not touch: regions with SUV >= this (default: "
        "the weights' card, else 2.5)",
    )
    g.add_argument(
        "--hot-spot-contrast",
        type=float,
        default=None,
        metavar="C",
        help="... whose SUVmax reaches C times the median SUV 4-12 mm around them (default: "
        "the weights' card, else 2)",
    )
    g.add_argument(
        "--hot-spot-ml",
        type=float,
        default=None,
        metavar="ML",
        help="... and that hold at least ML millilitres (default: the weights' card, else 0.2)",
    )
    g.add_argument(
        "--hot-spot-covered",
        type=float,
        default=None,
        metavar="F",
        help="... of which the mask covers less than this fraction (0: only regions the mask "
        "does not touch; default: the weights' card, else 0.5)",
    )
    g.add_argument(
        "--no-hot-spots", action="store_true", help="do not look for hot spots outside the mask"
    )


def _add_performance_arguments(g: Any) -> None:
    g.add_argument("--sw-batch-size", type=int, default=1, help="tiles per forward pass")
    g.add_argument("--overlap", type=float, default=None, help="sliding-window overlap, in [0, 1)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (torch and SimpleITK)")


def _print_table(report: dict[str, Any], file: Any, max_rows: int = 20) -> None:
    from mefn.postprocess import format_u
    from mefn.viz.tables import format_confidence

    lesions = report["lesions"]
    if not lesions:
        print("    no lesion found", file=file)
        return
    # the mean of the delivered map: the calibrated error probability, or the evidential u
    calibrated = bool((report.get("settings") or {}).get("calibrated_uncertainty"))
    u_head = "p wrong" if calibrated else "u mean"
    print(
        f"    {'#':>3} {'label':>5} {'vol mL':>8} {'SUVmax':>7} {'SUVmean':>7} {'SUVpeak':>7} "
        f"{'TLG':>8} {u_head:>7} {'confidence':>10}  centre (LPS mm)",
        file=file,
    )
    for les in lesions[:max_rows]:
        flag = "  REVIEW" if les["review"] else ""
        c = les["centroid_mm"]
        print(
            f"    {les['lesion_id']:>3} {les['label']:>5} {les['volume_ml']:>8.2f} "
            f"{les['suv_max']:>7.2f} {les['suv_mean']:>7.2f} {les['suv_peak']:>7.2f} "
            f"{les['tlg']:>8.1f} {format_u(les['uncertainty_mean']):>7} "
            f"{format_confidence(les.get('confidence')):>10}  "
            f"({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f}){flag}",
            file=file,
        )
    if len(lesions) > max_rows:
        print(f"    ... {len(lesions) - max_rows} smaller lesion(s) in the report", file=file)
    print(f"    flagged for review: {report['review_rule']}", end="", file=file)
    if report.get("review_below") is not None:
        print(" (confidence: the calibrated probability that the lesion is real)", file=file)
    else:
        print(file=file)


def _print_dropped(report: dict[str, Any], file: Any) -> None:
    dropped = report.get("dropped_lesions") or []
    if not dropped:
        return
    floor = float((report.get("settings") or {}).get("min_confidence") or 0.0)
    volume = sum(d["volume_ml"] for d in dropped)
    print(
        f"    {len(dropped)} lesion(s) of {volume:.2f} mL in all removed for a confidence below "
        f"{floor:.0%} (listed in the report; --min-confidence 0 keeps them)",
        file=file,
    )


def _print_hot_spots(report: dict[str, Any], file: Any, max_rows: int = 10) -> None:
    spots = report.get("hot_spots") or []
    if not spots:
        return
    check = report.get("settings", {}).get("hot_spots", {})
    print(
        f"    {len(spots)} PET hot spot(s) the mask leaves out (SUV >= {check.get('min_suv')}, "
        f"SUVmax >= {check.get('min_contrast')} x surroundings): check them",
        file=file,
    )
    print(
        f"    {'H#':>3} {'vol mL':>8} {'SUVmax':>7} {'contr.':>6} {'p lesion':>8}  centre (LPS mm)",
        file=file,
    )
    for spot in spots[:max_rows]:
        c = spot["centroid_mm"]
        p = spot["lesion_probability_max"]
        contrast = spot["contrast"]
        print(
            f"    {'H' + str(spot['spot_id']):>3} {spot['volume_ml']:>8.2f} {spot['suv_max']:>7.2f} "
            f"{'-' if contrast is None else f'{contrast:.1f}':>6} "
            f"{'-' if p is None else f'{p:.3g}':>8}  ({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f})",
            file=file,
        )
    if len(spots) > max_rows:
        print(f"    ... {len(spots) - max_rows} more hot spot(s) in the report", file=file)


def hot_spot_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The hot-spot settings given on the command line, checked (InputError when bad)."""
    from dataclasses import replace

    from mefn.postprocess import HotSpotCheck

    given: dict[str, Any] = {}
    for flag, name in (
        ("hot_spot_suv", "min_suv"),
        ("hot_spot_contrast", "min_contrast"),
        ("hot_spot_ml", "min_volume_ml"),
        ("hot_spot_covered", "max_covered_fraction"),
    ):
        if getattr(args, flag, None) is not None:
            given[name] = getattr(args, flag)
    if getattr(args, "no_hot_spots", False):
        given["enabled"] = False
    replace(HotSpotCheck(), **given)  # raises InputError on a value out of range
    return given


def pet_check_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The PET-check fields given on the command line (the card's stand for the others),
    each checked: a bad value is an InputError before anything is written."""
    from dataclasses import replace

    from mefn.errors import InputError
    from mefn.postprocess import PetCheck

    given: dict[str, Any] = {}
    if args.min_lesion_suv is not None:
        given["min_suv"] = args.min_lesion_suv
    if args.min_lesion_contrast is not None:
        given["min_contrast"] = args.min_lesion_contrast
    if args.pet_refine is not None:
        text = str(args.pet_refine).strip().lower()
        if text in ("none", "off", "0"):
            given["refine_fraction"] = None
        else:
            try:
                given["refine_fraction"] = float(text)
            except ValueError:
                raise InputError(
                    f"--pet-refine expects a fraction in (0, 1) such as 0.4, or none, found "
                    f"{args.pet_refine!r}"
                ) from None
    if args.pet_refine_mm is not None:
        given["refine_mm"] = args.pet_refine_mm
    replace(PetCheck(), **given)  # raises InputError on a value out of range
    return given


def run(args: argparse.Namespace) -> int:
    """Check the flags, resolve the inputs, build the predictor, segment every case, then
    the summary and the cohort tables; each step fails before the next one writes."""
    from mefn.inference import parse_tta_axes, parse_tta_scales

    tta_axes = None if args.tta is None else parse_tta_axes(args.tta)
    tta_scales = None if args.tta_scales is None else parse_tta_scales(args.tta_scales)
    if args.list_models:
        _print_models()
        return 0
    pet_overrides, spot_overrides = _check_flags(args)
    from mefn.fileutil import check_writable_dir
    from mefn.io.discovery import load_case

    jobs = _resolve_inputs(args)  # every input before any weights load: bad paths fail fast
    # One case: read and check it first, so a case that cannot be segmented (a PET without
    # uptake, no overlap...) fails with its own exit code and leaves nothing behind.
    first_case = load_case(files=jobs[0]) if len(jobs) == 1 else None
    # torchrun: each process takes its share of the cases, each case written once.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    jobs = jobs[rank::world]
    if not args.overwrite:
        _refuse_existing_outputs(jobs, Path(args.output), args)
    # the weights and adapter next: a wrong name or file fails before any folder is made
    predictor = _build_predictor(args, tta_axes, tta_scales, pet_overrides, spot_overrides, world)
    outdir = check_writable_dir(args.output)  # created once inputs and weights are known good
    failures = _segment_cases(predictor, jobs, first_case, outdir, args)
    return _finish(len(jobs), failures, outdir, args.quiet)


def _print_models() -> None:
    """``--list-models``: the bundled weights, then the bundled adapters."""
    from mefn.inference import list_adapters, list_models

    for name in list_models():
        print(name)
    for name in list_adapters():
        print(f"{name} (adapter: --adapter {name})")


def _check_flags(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flags that need no file, checked before any output folder is made: (PET-check
    overrides, hot-spot overrides)."""
    from mefn.errors import InputError
    from mefn.postprocess import check_lesion_threshold
    from mefn.settings import PostprocessSettings

    if (args.ct is None) != (args.pet is None):
        raise InputError("--ct and --pet go together; give both or neither")
    if not args.inputs and not (args.ct and args.pet):
        raise InputError("no input given: pass INPUT paths, or --ct CT --pet PET")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise InputError(f"--overlap must be in [0, 1), found {args.overlap}")
    check_lesion_threshold(args.lesion_threshold)
    PostprocessSettings().with_overrides(  # the scalar settings, refused as they would be later
        review_threshold=args.review_threshold,
        review_below=args.review_below,
        min_confidence=args.min_confidence,
        min_lesion_ml=args.min_lesion_ml,
        small_lesion_ml=args.small_lesion_ml,
    )
    if args.small_lesion_threshold is not None:  # on its own: the card may set the volume
        PostprocessSettings(small_lesion_threshold=args.small_lesion_threshold)
    return pet_check_overrides(args), hot_spot_overrides(args)


def _resolve_inputs(args: argparse.Namespace) -> list[Any]:
    """The cases' files (:class:`mefn.io.discovery.CaseFiles`) of --ct/--pet and of every
    INPUT (a folder of many cases gives them all); with --dicom, each must be DICOM."""
    from mefn.errors import InputError
    from mefn.io.discovery import find_case_files, find_cases

    jobs: list[Any] = []
    if args.ct:
        jobs.append(find_case_files(None, ct=args.ct, pet=args.pet, pet_series=args.pet_series))
    for item in args.inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input {path} does not exist; check the path")
        try:
            jobs.append(find_case_files(path, pet_series=args.pet_series))
        except InputError:
            if not path.is_dir():
                raise
            many = find_cases(path, pet_series=args.pet_series)
            if not many:
                raise
            jobs.extend(many)
    if args.dicom:  # DICOM outputs reference the CT series: refuse other inputs now
        from mefn.io.dicom_export import require_dicom_ct

        for job in jobs:
            require_dicom_ct(job)
    return jobs


def _refuse_existing_outputs(jobs: list[Any], outdir: Path, args: argparse.Namespace) -> None:
    """Without --overwrite, an output of any case already there stops the run before the
    weights load."""
    from mefn.errors import InputError
    from mefn.inference import output_paths

    for job in jobs:
        paths = output_paths(outdir, job.case_id, extra=args.extra, dicom=args.dicom)
        for p in paths.values():
            if p.exists():
                raise InputError(
                    f"{p} already exists; pass --overwrite to replace it or choose another -o"
                )


def _build_predictor(
    args: argparse.Namespace,
    tta_axes: tuple[int, ...] | None,
    tta_scales: tuple[float, ...] | None,
    pet_overrides: dict[str, Any],
    spot_overrides: dict[str, Any],
    world: int,
) -> Any:
    """The :class:`mefn.inference.Predictor` of the flags (under torchrun, ``--device cuda``
    is each process's own GPU)."""
    from mefn.inference import Predictor

    device = args.device
    if device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return Predictor(
        args.model,
        adapter=args.adapter,
        device=device,
        sw_batch_size=args.sw_batch_size,
        overlap=args.overlap,
        threads=args.threads,
        review_threshold=args.review_threshold,
        review_below=args.review_below,
        min_confidence=args.min_confidence,
        min_lesion_ml=args.min_lesion_ml,
        lesion_shape=args.lesion_shape,
        small_lesion_ml=args.small_lesion_ml,
        small_lesion_threshold=args.small_lesion_threshold,
        lesion_threshold=args.lesion_threshold,
        tta_axes=tta_axes,
        tta_scales=tta_scales,
        pet_check=pet_overrides,
        hot_spots=spot_overrides,
        fine_stage=False if args.no_fine_stage else None,
    )


def _segment_cases(
    predictor: Any, jobs: list[Any], first_case: Any, outdir: Path, args: argparse.Namespace
) -> list[tuple[str, str]]:
    """Segment and save every case, the next one loading in a background thread meanwhile;
    a case that fails is reported and skipped. Returns the failures: (case, message)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    from mefn.errors import MefnError, one_line
    from mefn.inference import save_prediction
    from mefn.io.discovery import load_case

    failures: list[tuple[str, str]] = []
    show_bar = sys.stderr.isatty() and not args.quiet and len(jobs) > 1
    with ThreadPoolExecutor(max_workers=1) as pool:
        # one pending load at a time; each result is dropped after use, so a cohort of
        # thousands of cases never holds more than two in memory
        futures: dict[int, Future[Any]] = {}

        def submit(i: int) -> None:
            if i == 0 and first_case is not None:
                futures[0] = Future()
                futures[0].set_result(first_case)
            elif i < len(jobs):
                futures[i] = pool.submit(load_case, files=jobs[i])

        submit(0)
        for i in tqdm(range(len(jobs)), disable=not show_bar, unit="case", file=sys.stderr):
            job = jobs[i]
            submit(i + 1)
            try:
                case = futures.pop(i).result()
                prediction = predictor.predict(case, keep_extra=args.extra)
                paths = save_prediction(
                    prediction,
                    outdir,
                    case=case,
                    overwrite=args.overwrite,
                    extra=args.extra,
                    dicom=args.dicom,
                )
            except MefnError as exc:
                failures.append((job.case_id, one_line(exc)))
                print(f"mefn segment: error: {job.case_id}: {failures[-1][1]}", file=sys.stderr)
                continue
            if not args.quiet:
                _print_case(case, prediction, paths["mask"], with_tables=len(jobs) == 1)
    return failures


def _print_case(case: Any, prediction: Any, mask_path: Path, with_tables: bool) -> None:
    """One line per case; for a single case, its lesion and hot-spot tables too."""
    table = prediction.lesions
    print(
        f"{case.case_id}: {len(table.lesions)} lesion(s), MTV {table.mtv_ml:.2f} mL, "
        f"TLG {table.tlg:.1f}, {table.n_review} flagged for review, "
        f"{len(prediction.hot_spots)} hot spot(s) outside the mask, "
        f"{prediction.seconds:.1f} s -> {mask_path}"
    )
    if with_tables:
        report = prediction.report(case)
        _print_table(report, sys.stdout)
        _print_dropped(report, sys.stdout)
        _print_hot_spots(report, sys.stdout)


def _finish(n_jobs: int, failures: list[tuple[str, str]], outdir: Path, quiet: bool) -> int:
    """The run's summary and cohort tables; the exit code (1 when a case failed)."""
    from mefn.errors import MefnError, one_line

    if n_jobs > 1 and not quiet:
        print(f"segmented {n_jobs - len(failures)} of {n_jobs} case(s) into {outdir}")
    if n_jobs > len(failures):
        # Cohort tables (one case too) of every report in the folder, earlier runs' included:
        # the same call as `mefn report OUTDIR`, so the two always give the same bytes.
        from mefn.cohort import rebuild_cohort_tables

        try:
            tables = rebuild_cohort_tables(outdir)
        except MefnError as exc:
            failures.append(("cohort tables", one_line(exc)))
        else:
            if not quiet:
                print(
                    f"cohort tables: {tables.n_cases} case(s), {tables.n_lesions} lesion(s) -> "
                    f"{tables.cases_csv}, {tables.lesions_csv}"
                )
    if failures:
        for case_id, message in failures:
            print(f"  failed: {case_id}: {message}", file=sys.stderr)
        return 1
    return 0
