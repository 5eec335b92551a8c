"""MEFN against DynUNet and MC-dropout DynUNet: inference cost and segmentation/uncertainty quality.

    python -m pipelines.benchmark --quality --inference   # both (~2 h 15 min on 2 quiet cores)
    python -m pipelines.benchmark --quality               # train + score, see --help for budget
    python -m pipelines.benchmark --inference --untrained # speed and memory only, ~15 min
    python -m pipelines.benchmark --report                # rewrite the doc from saved results

Sections (results are saved as JSON under ``--out``, default ``runs/benchmark``, and the
generated part of ``docs/benchmarks.md`` is rewritten from them after every section):

Run ``--quality`` before ``--inference`` (both in one command do that): the inference section
then times the trained weights; untrained ones mark noise everywhere, and the lesion table's
cost grows with the number of spurious lesions.

**inference** -- a whole-body study on the AutoPET grid (400 x 400 x 326 at 2.04 x 2.04 x 3 mm,
CTres and SUV sharing it) and a head-and-neck study (CT 512 x 512 x ~100 at 0.98 x 0.98 x 3 mm,
PET on its own 4 mm grid), both synthetic phantoms. Each of ``mefn_small``, ``dynunet_small``
and ``dynunet_mcdropout_small`` (10 passes) is built from its config with seeded untrained
weights (speed does not depend on training), saved as weights + card, and run through
``Predictor.predict`` in a fresh subprocess per run, on the CPU with ``--threads`` threads
(torch and SimpleITK) and on the GPU when there is one. Reported: seconds per study (predict:
resample, sliding window, back to the grid, lesion table; case reading and model loading
excluded and reported apart), the stages' seconds as ``Prediction.timings`` gives them,
voxels of the output grid per second, peak resident memory of the process (``VmHWM``), the
sliding window's share of the time, and achieved GFLOP/s = FLOPs of one tile
(``torch.utils.flop_counter``, convolutions and matrix products) x tiles / seconds of the
``network`` stage (the tiles and their blending), against the machine's float32
``torch.matmul`` rate measured with the same threads. The tiles are counted by running the
same sliding window over the model grid with a stand-in network that only counts them.

**quality** -- ``mefn phantoms`` writes ``--cases`` training phantoms (seeds 700,000,000 + i)
and ``--test-cases`` test phantoms (seeds 777,700,000 + i: never used for training, nor by the
default weights; MC dropout, ten passes per tile, is scored on the first ``--mc-test-cases``). Every model trains with ``mefn.training.train`` under the same budget
(``configs/train/phantoms_small.yaml`` with ``--steps``, ``--patch``, ``--batch``, ``--lr``), then
segments the test phantoms; reported: Dice, FPV and FNV (AutoPET 2022 rules), lesion F1
(18-connected, one touching voxel), ECE (15 bins, predicted-class probability) and the AUROC of
the uncertainty map separating wrong voxels from right ones, both over every voxel of the output
grid and over the voxels near lesions (``lesion_region``). Ablations: MEFN
with each of ``cfl``, ``mutual_attention``, ``calibrator``, ``ds_fusion``, ``uncertainty_loss``
off, scored on the first ``--ablation-test-cases`` test phantoms (MEFN in full is scored on the
same subset for the comparison). Each model's run folder is resumable: a finished training or
evaluation is skipped, an interrupted training resumes from its last epoch.

Targets (checked and printed, "missed by" where missed): MEFN seconds per study <= 1.3 x
DynUNet and >= 5 x faster than MC dropout; whole-body peak RSS <= 4 GiB; MEFN Dice >= DynUNet;
AUROC >= 0.85; ECE <= 0.05 (the same limits shown for the near-lesion figures).

Timings are only meaningful on a quiet machine: the 1-minute load average is recorded before
and after every section and printed in the doc.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import _bench

REPO = _bench.REPO
DEFAULT_OUT = REPO / "runs" / "benchmark"
DEFAULT_DOC = REPO / "docs" / "benchmarks.md"
MODELS = ("mefn_small", "dynunet_small", "dynunet_mcdropout_small")
#: ``--bundled``: the row of the bundled weights with their card (trust stages included)
BUNDLED = "mefn_bundled"
ABLATIONS = ("cfl", "mutual_attention", "calibrator", "ds_fusion", "uncertainty_loss")
TRAIN_SEED = 7000  # study seeds 700,000,000 + i (mefn.data.phantom_layouts.study_seed)
TEST_SEED = 7777  # study seeds 777,700,000 + i
CHILD_FLAG = "--_child"
RESULT_TAG = "BENCHMARK_RESULT "
BEGIN = "<!-- benchmark.py: generated section begins; edit pipelines/benchmark.py, not this -->"
END = "<!-- benchmark.py: generated section ends -->"

TARGETS = {
    "time_vs_dynunet": 1.3,
    "speedup_vs_mc": 5.0,
    "wholebody_rss_gib": 4.0,
    "auroc": 0.85,
    "ece": 0.05,
}
NEAR_LESION_VOXELS = 3  # the "near lesions" calibration region: 3 voxels around either mask
METRICS_VERSION = 2  # scoring cached under another version is redone


def machine_info() -> dict[str, Any]:
    import SimpleITK as sitk

    return _bench.machine_info(SimpleITK=sitk.Version.VersionString())


def peak_rss_kib() -> int:
    return _bench.proc_status_kib("VmHWM")


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    return _bench.run_module_child(
        "pipelines.benchmark", CHILD_FLAG, RESULT_TAG, spec, threads=int(spec["threads"])
    )


def write_doc(doc: Path, generated: str) -> None:
    """Replace the generated section of ``doc`` (or append it), keeping the hand-written rest."""
    _bench.write_generated_section(doc, BEGIN, END, generated, "Benchmarks")


def log(msg: str) -> None:
    print(f"[benchmark {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------
def matmul_gflops(threads: int, device: str = "cpu", n: int = 4096, repeats: int = 3) -> float:
    """Best float32 ``torch.matmul`` rate (GFLOP/s, 2 n^3 per product) with ``threads``."""
    import torch

    torch.set_num_threads(threads)
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    torch.matmul(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


# --------------------------------------------------------------------------------------------
# inference section
# --------------------------------------------------------------------------------------------
def make_weights(folder: Path, name: str, spacing_mm: float, patch: int) -> Path:
    """Seeded untrained weights of ``configs/model/<name>.yaml`` with their card."""
    import torch
    from safetensors.torch import save_file

    from mefn.data.preprocess import PreprocessConfig
    from mefn.fileutil import atomic_write_text
    from mefn.model import build_model
    from mefn.training import TrainConfig, model_card, resolve_model_config

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    card_path = weights.with_suffix(".json")
    train_cfg = TrainConfig(
        model=name,
        preprocess=PreprocessConfig(spacing_mm=(spacing_mm,) * 3),
        patch_size_vox=(patch,) * 3,
    )
    cfg = resolve_model_config(name)
    card = model_card(train_cfg, cfg, {"name": name, "note": "untrained, for speed only"})
    same_card = card_path.is_file() and json.loads(card_path.read_text()) == json.loads(
        json.dumps(card)
    )
    if weights.is_file() and same_card:
        return weights
    torch.manual_seed(0)
    net = build_model(cfg)
    # clone: DynUNet shares tensors between module paths, safetensors refuses aliases
    save_file({k: v.clone().contiguous() for k, v in net.state_dict().items()}, str(weights))
    atomic_write_text(card_path, json.dumps(card, indent=1))
    return weights


def _grid_around(
    study_geometry: Any, shape: tuple[int, int, int], spacing: tuple[float, ...]
) -> Any:
    from mefn.io.volume import Geometry

    lo, hi = study_geometry.extent_mm()
    centre = (lo + hi) / 2
    origin = centre - (np.asarray(shape) - 1) * np.asarray(spacing) / 2
    return Geometry(
        shape=shape,
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
    )


def make_study(
    folder: Path, kind: str, seed: int, shape: tuple[int, int, int]
) -> tuple[Path, dict[str, Any]]:
    """A phantom written as ``<name>_0000`` / ``_0001``: whole body on an AutoPET grid of
    ``shape`` (CTres and SUV on it), head and neck with the CT on a HECKTOR-like grid of
    ``shape`` and the PET on its own grid. The grids keep the physical field of view of a
    real study, whatever ``shape`` (a small shape gives coarse voxels, for smoke tests)."""
    from mefn.data.phantoms import generate_study
    from mefn.io.geometry import resample_to
    from mefn.io.sitk_bridge import write_volume

    name = "wb" if kind == "wholebody" else "hn"
    ct_path = folder / f"{name}_0000.nii.gz"
    info_path = folder / f"{name}.json"
    key = {"kind": kind, "seed": seed, "shape": list(shape)}
    if ct_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            return ct_path, info
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_study(
        seed, kind="wholebody" if kind == "wholebody" else "headneck", fov="full"
    )
    if kind == "wholebody":
        fov_mm = (816.0, 816.0, 978.0)  # 400 x 2.04, 400 x 2.04, 326 x 3 mm
        grid = _grid_around(study.pet.geometry, shape, tuple(f / n for f, n in zip(fov_mm, shape)))
        ct = resample_to(study.ct, grid, "linear", -1000.0)
        pet = resample_to(study.pet, grid, "linear", 0.0)
    else:
        lo, hi = study.ct.geometry.extent_mm()
        fov_z = float(np.clip(hi[2] - lo[2], 180.0, 480.0))
        fov_mm = (500.0, 500.0, fov_z)  # 512 x 0.977 mm in-plane, 3 mm slices
        grid = _grid_around(study.ct.geometry, shape, tuple(f / n for f, n in zip(fov_mm, shape)))
        ct = resample_to(study.ct, grid, "linear", -1000.0)
        pet = study.pet
    write_volume(ct, ct_path, dtype=np.float32)
    write_volume(pet, folder / f"{name}_0001.nii.gz", dtype=np.float32)
    info = {
        "key": key,
        "study": kind,
        "output_grid": grid.to_json(),
        "output_voxels": int(grid.n_voxels),
        "pet_grid": pet.geometry.to_json(),
    }
    info_path.write_text(json.dumps(info, indent=1))
    return ct_path, info


class TileCounter:
    """A stand-in network for :func:`mefn.model.sliding_window.sliding_window_predict`: it
    counts the tiles it is handed and returns zeros, so the real window's tiles are counted
    on the same path without touching the predictor."""

    def __init__(self, size_divisor: int) -> None:
        self.size_divisor = size_divisor
        self.tiles = 0
        self.tile_shape: list[int] | None = None

    def infer(self, x: Any) -> dict[str, Any]:
        import torch

        self.tiles += int(x.shape[0])
        self.tile_shape = [int(s) for s in x.shape[2:]]
        return {"prob": torch.zeros((x.shape[0], 1, *x.shape[2:]))}


def count_tiles(predictor: Any, grid_shape: tuple[int, ...]) -> TileCounter:
    """The tiles ``predictor``'s sliding window runs over a model grid of ``grid_shape``."""
    import torch

    from mefn.model.sliding_window import sliding_window_predict

    counter = TileCounter(int(getattr(predictor.net, "size_divisor", 1)))
    sliding_window_predict(
        counter,
        torch.zeros((1, 2, *grid_shape)),
        predictor.roi,
        predictor.overlap,
        predictor.sw_batch_size,
        torch.device("cpu"),
    )
    return counter


def child_infer(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: read the case, load the model, ``predict`` it ``repeats`` times;
    the stages' seconds are the prediction's own (``Prediction.timings``)."""
    import resource

    import torch

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    from mefn.data.preprocess import model_grid
    from mefn.inference import Predictor
    from mefn.io.discovery import load_case

    cuda = str(spec["device"]).startswith("cuda")
    t0 = time.perf_counter()
    case = load_case(spec["case"])
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor = Predictor(
        spec["weights"],
        device=spec["device"],
        threads=threads,
        sw_batch_size=int(spec["sw_batch_size"]),
        overlap=spec.get("overlap"),
        tta_axes=(),  # one pass: the sliding-window cost, whatever the card's default
    )
    t_load = time.perf_counter() - t0
    runs = []
    for _ in range(int(spec.get("repeats", 1))):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        prediction = predictor.predict(case)
        seconds = time.perf_counter() - t0
        timings = prediction.timings
        runs.append(
            {
                "seconds": seconds,
                "net_seconds": timings["network"],
                "gpu_peak_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
                "resample_in_seconds": timings["resample"],
                "resample_out_seconds": timings["to_output_grid"],
                "lesion_table_seconds": timings["lesion_table"],
                "timings": dict(timings),
                "lesions": len(prediction.lesions.lesions),
                "mask_voxels": int(np.count_nonzero(prediction.mask)),
            }
        )
        del prediction
    peak_kib = peak_rss_kib()
    grid = model_grid(case.target_geometry, predictor.preprocess.spacing_mm)
    tiles = count_tiles(predictor, grid.shape)
    for run in runs:
        run["tiles"] = tiles.tiles
    # FLOPs of one tile, on the plain convolution path (the direct oneDNN call is invisible to
    # the counter); for MC dropout ``infer`` runs all its passes, so they are all counted.
    from torch.utils.flop_counter import FlopCounterMode

    tile = torch.zeros(1, 2, *(tiles.tile_shape or predictor.roi), device=predictor.device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, torch.backends.mkldnn.flags(enabled=False):
        predictor.net.infer(tile)
    return {
        "read_seconds": t_read,
        "load_seconds": t_load,
        "runs": runs,
        "tile_shape": tiles.tile_shape,
        "tile_gflop": counter.get_total_flops() / 1e9,
        "peak_rss_gib": peak_kib / 1024**2,
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "model_grid_voxels": int(grid.n_voxels),
    }


def inference_row(
    res_list: list[dict[str, Any]], output_voxels: int, matmul_rate: float, weights: str
) -> dict[str, Any]:
    """One model's figures on one study and device, from its child processes' results:
    medians over the processes (GPU: the second predict in the process, after cuDNN
    autotuning; CPU: the one), peak memory the largest."""
    last = [r["runs"][-1] for r in res_list]
    seconds = statistics.median(r["seconds"] for r in last)
    net_seconds = statistics.median(r["net_seconds"] for r in last)
    first = res_list[0]
    tiles = last[0]["tiles"]
    gflop = first["tile_gflop"] * tiles
    return {
        "output_voxels": output_voxels,
        "seconds": seconds,
        "seconds_all": [r["seconds"] for r in last],
        "net_seconds": net_seconds,
        "read_seconds": statistics.median(r["read_seconds"] for r in res_list),
        "load_seconds": statistics.median(r["load_seconds"] for r in res_list),
        "voxels_per_s": output_voxels / seconds,
        "peak_rss_gib": max(r["peak_rss_gib"] for r in res_list),
        "gpu_peak_gib": last[0]["gpu_peak_gib"],
        "tiles": tiles,
        "tile_shape": first["tile_shape"],
        "tile_gflop": first["tile_gflop"],
        "weights": weights,
        "resample_seconds": statistics.median(
            r["resample_in_seconds"] + r["resample_out_seconds"] for r in last
        ),
        "lesion_table_seconds": statistics.median(r["lesion_table_seconds"] for r in last),
        "timings": {
            stage: statistics.median(r["timings"][stage] for r in last)
            for stage in last[0]["timings"]
        },
        "lesions": last[0]["lesions"],
        "mask_voxels": last[0]["mask_voxels"],
        "gflop": gflop,
        "gflops_achieved": gflop / net_seconds if net_seconds > 0 else math.nan,
        "matmul_gflops": matmul_rate,
    }


def run_inference(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    devices = list(args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    load_before = _bench.load_average()
    weights, trained = {}, {}
    for m in args.models:
        run = out / "quality" / "runs" / m / "model.safetensors"
        trained[m] = args.trained_weights and run.is_file()
        weights[m] = (
            run if trained[m] else make_weights(out / "weights", m, args.spacing, args.patch)
        )
    models = list(args.models)
    if args.bundled:  # as mefn segment runs them: the card's lesion confidence and error map
        weights[BUNDLED] = REPO / "mefn" / "weights" / "mefn_default.safetensors"
        trained[BUNDLED] = True
        models.append(BUNDLED)
    shapes = {"wholebody": tuple(args.wb_shape), "headneck": tuple(args.hn_shape)}
    studies = {}
    for kind in args.studies:
        log(f"writing the {kind} study {shapes[kind]}")
        studies[kind] = make_study(out / "studies", kind, args.seed, shapes[kind])
    rates = {}
    for device in devices:
        rates[device] = matmul_gflops(args.threads, device, n=args.matmul_size)
        log(
            f"float32 matmul {args.matmul_size}^2 on {device}, {args.threads} threads: "
            f"{rates[device]:.1f} GFLOP/s"
        )
    rows = []
    for device in devices:
        for kind, (case_path, info) in studies.items():
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
            for _ in range(args.runs):  # round-robin: load from other jobs hits all models alike
                for model in models:
                    spec = {
                        "case": str(case_path),
                        "weights": str(weights[model]),
                        "device": device,
                        "threads": args.threads,
                        "sw_batch_size": args.sw_batch_size,
                        "overlap": args.overlap,
                        "repeats": 2 if device.startswith("cuda") else 1,
                    }
                    res = run_child(spec)
                    results[model].append(res)
                    log(
                        f"{device} {kind} {model}: {res['runs'][-1]['seconds']:.1f} s, "
                        f"peak RSS {res['peak_rss_gib']:.2f} GiB, load {_bench.load_average():.1f}"
                    )
            for model, res_list in results.items():
                weights_kind = "trained" if trained[model] else "untrained"
                if model == BUNDLED:
                    weights_kind = "bundled card"
                row = inference_row(res_list, info["output_voxels"], rates[device], weights_kind)
                rows.append({"device": device, "study": kind, "model": model, **row})
    return {
        "command": _command(),
        "threads": args.threads,
        "runs": args.runs,
        "sw_batch_size": args.sw_batch_size,
        "overlap": args.overlap,
        "model_spacing_mm": args.spacing,
        "patch_vox": args.patch,
        "studies": {k: v[1] for k, v in studies.items()},
        "matmul_gflops": rates,
        "matmul_size": args.matmul_size,
        "load_before": load_before,
        "load_after": _bench.load_average(),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# quality section
# --------------------------------------------------------------------------------------------
def ensure_phantoms(folder: Path, n: int, seed: int, small: bool, fov: str) -> None:
    """``mefn phantoms FOLDER --n N --seed SEED --layout nnunet`` unless already there."""
    manifest = folder / "phantoms.json"
    if manifest.is_file():
        record = json.loads(manifest.read_text())
        if record.get("seed") == seed and record.get("n", 0) >= n:
            return
    from mefn.cli import main as mefn_main

    argv = ["-q", "phantoms", str(folder), "--n", str(n), "--seed", str(seed)]
    argv += ["--layout", "nnunet", "--fov", fov, "--overwrite"] + (["--small"] if small else [])
    log("mefn " + " ".join(argv[1:]))
    code = mefn_main(argv)
    if code != 0:
        raise RuntimeError(f"mefn phantoms failed with exit code {code}")


def quality_models(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """(run name, config name, ModelConfig) for the comparison and the ablations."""
    from mefn.training import resolve_model_config

    out = [(m, m, resolve_model_config(m)) for m in args.models]
    if args.ablations:
        base = resolve_model_config("mefn_small")
        for switch in args.ablations:
            out.append((f"mefn_small-no_{switch}", "mefn_small", replace(base, **{switch: False})))
    return out


def train_config(args: argparse.Namespace, train_root: Path, cache: Path) -> Any:
    from mefn.training import load_train_config

    base = load_train_config(args.train_config)
    per_epoch = min(base.steps_per_epoch, args.steps)
    epochs = max(1, math.ceil(args.steps / per_epoch))
    return replace(
        base,
        data=replace(
            base.data,
            root=str(train_root),
            layout="nnunet",
            max_cases=args.cases,
            cache_dir=str(cache),
        ),
        preprocess=replace(base.preprocess, spacing_mm=(args.spacing,) * 3),
        patch_size_vox=(args.patch,) * 3,
        batch_size=args.batch,
        lr=base.lr if args.lr is None else args.lr,
        epochs=epochs,
        steps_per_epoch=per_epoch,
        warmup_steps=min(base.warmup_steps, max(1, epochs * per_epoch // 5)),
        val_every=epochs,  # validate once, at the end: the same budget for every model
        val_max_cases=args.val_cases,
        early_stop_patience=10**6,
        max_minutes=None,
        threads=args.threads,
        device=args.device,
    )


def train_one(name: str, config_name: str, model_cfg: Any, cfg: Any, run_dir: Path) -> None:
    from mefn.training import train

    if (run_dir / "model.json").is_file():
        log(f"{name}: trained already ({run_dir})")
        return
    resume = (run_dir / "checkpoints" / "last_state.json").is_file()
    log(
        f"{name}: training {cfg.epochs} epochs x {cfg.steps_per_epoch} steps"
        + (" (resuming)" if resume else "")
    )

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "epoch":
            log(
                f"{name}: epoch {event['epoch']} loss {event.get('loss', math.nan):.4f} "
                f"{event['seconds']:.0f} s"
                + (f" val Dice {event['val_dice']:.3f}" if "val_dice" in event else "")
            )

    train(
        replace(cfg, model=config_name),
        run_dir,
        resume=resume,
        progress=progress,
        model_cfg=model_cfg,
    )


def evaluate_one(
    run_dir: Path, entries: list[Any], subset: int, device: str, threads: int
) -> dict[str, Any]:
    """Segment ``entries`` with the run's weights; AutoPET 2022, detection, calibration."""
    from mefn.inference import Predictor
    from mefn.metrics.scoring import CalibrationPool, case_loaders, score_cases

    predictor = Predictor(run_dir, device=device, threads=threads)
    pool = CalibrationPool({"all": None, "near": lesion_region})
    t0 = time.perf_counter()
    scores = score_cases(
        predictor,
        case_loaders(entries),
        "autopet2022",
        detection=True,
        calibration=pool,
        keep_extra=True,
    )
    cases = []
    for s in scores:
        assert s.metrics is not None and s.detection is not None  # asked for above
        cases.append({**s.metrics.to_dict(), "lesion_f1": s.detection.f1, "seconds": s.seconds})
    summary = _quality_summary(scores, pool.summary())
    return {
        "summary": summary,
        "subset": _quality_summary(scores[:subset], pool.summary(subset))
        if 0 < subset <= len(scores)
        else summary,
        "subset_cases": min(subset, len(entries)),
        "cases": cases,
        "seconds": time.perf_counter() - t0,
    }


def lesion_region(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Voxels within ``NEAR_LESION_VOXELS`` (6-connected steps) of a reference or predicted
    lesion: where calibration is at stake. Pooled over every voxel, ECE is dominated by the
    easy background (tens of millions of confidently right voxels) and says little."""
    from scipy import ndimage

    seed = (reference > 0) | (prediction > 0)
    if not seed.any():
        return seed
    return np.asarray(ndimage.binary_dilation(seed, iterations=NEAR_LESION_VOXELS))


def _quality_summary(scores: list[Any], calibration: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from mefn.metrics.scoring import aggregate_scores

    agg = aggregate_scores(scores)
    autopet, det = agg["metric"], agg["detection"]
    cal, cal_near = calibration["all"], calibration["near"]
    return {
        "n_cases": len(scores),
        "n_cases_with_lesions": autopet["n_cases_with_lesions"],
        "dice": autopet["dice_mean"],
        "fpv_ml": autopet["fpv_ml_mean"],
        "fnv_ml": autopet["fnv_ml_mean"],
        "lesion_f1": det["f1"],
        "lesion_sensitivity": det["sensitivity"],
        "lesion_precision": det["precision"],
        "ece": cal["ece"],
        "auroc": cal["auroc_uncertainty_error"],
        "brier": cal["brier"],
        "n_voxels": cal["n_voxels"],
        "n_error_voxels": cal["n_error_voxels"],
        "ece_near": cal_near["ece"],
        "auroc_near": cal_near["auroc_uncertainty_error"],
        "n_voxels_near": cal_near["n_voxels"],
    }


def run_quality(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from mefn.data.datasets import index_dataset

    root = out / "quality"
    load_before = _bench.load_average()
    train_root = Path(args.train_data) if args.train_data else root / "train_data"
    if not args.train_data:
        ensure_phantoms(train_root, args.cases, TRAIN_SEED, args.small_phantoms, "random")
    test_root = root / "test_data"
    ensure_phantoms(test_root, args.test_cases, TEST_SEED, args.small_phantoms, args.test_fov)
    test_entries = index_dataset(test_root, layout="nnunet")[: args.test_cases]
    cfg = train_config(args, train_root, root / "cache")
    results: dict[str, Any] = {}
    for name, config_name, model_cfg in quality_models(args):
        run_dir = root / "runs" / name
        train_one(name, config_name, model_cfg, cfg, run_dir)
        eval_path = run_dir / "benchmark_eval.json"
        if name.startswith("mefn_small-no_"):
            entries = test_entries[: args.ablation_test_cases]
        elif name == "dynunet_mcdropout_small":
            entries = test_entries[: args.mc_test_cases]
        else:
            entries = test_entries
        key = {
            "cases": [e.case_id for e in entries],
            "subset": args.ablation_test_cases,
            "metrics": METRICS_VERSION,
        }
        if eval_path.is_file() and json.loads(eval_path.read_text()).get("key") == key:
            res = json.loads(eval_path.read_text())
        else:
            log(f"{name}: scoring {len(entries)} test phantoms")
            res = evaluate_one(
                run_dir, entries, args.ablation_test_cases, args.device, args.threads
            )
            res["key"] = key
            card = json.loads((run_dir / "model.json").read_text())
            res["training"] = card.get("training", {})
            res["validation"] = card.get("validation", {})
            eval_path.write_text(json.dumps(res, indent=1, default=_json_default))
        results[name] = res
        s = res["summary"]
        log(
            f"{name}: Dice {s['dice']:.3f} FPV {s['fpv_ml']:.2f} FNV {s['fnv_ml']:.2f} "
            f"F1 {s['lesion_f1']:.3f} ECE {s['ece']:.4f} AUROC {s['auroc']:.3f}"
        )
    return {
        "command": _command(),
        "budget": {
            "steps": cfg.epochs * cfg.steps_per_epoch,
            "epochs": cfg.epochs,
            "steps_per_epoch": cfg.steps_per_epoch,
            "patch_vox": args.patch,
            "spacing_mm": args.spacing,
            "batch": args.batch,
            "lr": cfg.lr,
            "train_cases": args.cases,
            "train_data": str(train_root),
            "test_cases": len(test_entries),
            "ablation_test_cases": min(args.ablation_test_cases, len(test_entries)),
            "mc_test_cases": min(args.mc_test_cases, len(test_entries)),
            "test_fov": args.test_fov,
            "small_phantoms": args.small_phantoms,
            "train_config": _bench.repo_relative(args.train_config),
            "threads": args.threads,
            "device": args.device,
        },
        "load_before": load_before,
        "load_after": _bench.load_average(),
        "models": results,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# targets and the report
# --------------------------------------------------------------------------------------------
def check_targets(
    inference: dict[str, Any] | None, quality: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per target: what, value, limit, met, and by how much it was missed."""
    checks: list[dict[str, Any]] = []

    def add(what: str, value: float, limit: float, higher_is_better: bool, unit: str) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append(
                {
                    "what": what,
                    "value": None,
                    "limit": limit,
                    "met": None,
                    "missed_by": "not measured",
                    "unit": unit,
                }
            )
            return
        met = value >= limit if higher_is_better else value <= limit
        gap = (limit - value) if higher_is_better else (value - limit)
        checks.append(
            {
                "what": what,
                "value": value,
                "limit": limit,
                "met": bool(met),
                "unit": unit,
                "missed_by": ""
                if met
                else f"{gap:.3g}{unit} ({abs(gap) / abs(limit) * 100:.0f} %)"
                if limit
                else f"{gap:.3g}{unit}",
            }
        )

    if inference:
        by = {(r["device"], r["study"], r["model"]): r for r in inference["rows"]}
        for device, study, model in sorted(by):
            if model == BUNDLED and (device, study, "dynunet_small") in by:
                # mefn segment as shipped, trust stages included, against the plain network
                # (without the lesion tables: untrained weights fill theirs with noise)
                bundled, dyn = by[(device, study, model)], by[(device, study, "dynunet_small")]
                add(
                    f"{device} {study}: bundled card's time / DynUNet time (no lesion tables)",
                    (bundled["seconds"] - (bundled.get("lesion_table_seconds") or 0.0))
                    / (dyn["seconds"] - (dyn.get("lesion_table_seconds") or 0.0)),
                    TARGETS["time_vs_dynunet"],
                    False,
                    "x",
                )
                if study == "wholebody" and device == "cpu":
                    add(
                        f"{device} {study}: bundled card's peak RSS",
                        bundled["peak_rss_gib"],
                        TARGETS["wholebody_rss_gib"],
                        False,
                        " GiB",
                    )
            if model != "mefn_small":
                continue
            mefn = by[(device, study, model)]
            dyn = by.get((device, study, "dynunet_small"))
            mc = by.get((device, study, "dynunet_mcdropout_small"))
            if dyn:
                add(
                    f"{device} {study}: MEFN time / DynUNet time",
                    mefn["seconds"] / dyn["seconds"],
                    TARGETS["time_vs_dynunet"],
                    False,
                    "x",
                )
            if mc:
                add(
                    f"{device} {study}: MC-dropout time / MEFN time",
                    mc["seconds"] / mefn["seconds"],
                    TARGETS["speedup_vs_mc"],
                    True,
                    "x",
                )
            if study == "wholebody" and device == "cpu":
                add(
                    f"{device} {study}: MEFN peak RSS",
                    mefn["peak_rss_gib"],
                    TARGETS["wholebody_rss_gib"],
                    False,
                    " GiB",
                )
    if quality:
        models = quality["models"]
        mefn_q = models.get("mefn_small", {}).get("summary")
        dyn_q = models.get("dynunet_small", {}).get("summary")
        if mefn_q and dyn_q:
            add("MEFN Dice - DynUNet Dice", mefn_q["dice"] - dyn_q["dice"], 0.0, True, "")
        if mefn_q:
            add("MEFN uncertainty-error AUROC", mefn_q["auroc"], TARGETS["auroc"], True, "")
            add("MEFN ECE", mefn_q["ece"], TARGETS["ece"], False, "")
            if "auroc_near" in mefn_q:  # the same limits on the voxels near lesions
                add("MEFN AUROC near lesions", mefn_q["auroc_near"], TARGETS["auroc"], True, "")
                add("MEFN ECE near lesions", mefn_q["ece_near"], TARGETS["ece"], False, "")
    return checks


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,d}"
    return f"{value:.{digits}f}"


def render_report(
    machine: dict[str, Any], inference: dict[str, Any] | None, quality: dict[str, Any] | None
) -> str:
    lines = [BEGIN, "", "## Results (generated)", ""]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores (torch CPU capability "
        f"{machine['cpu_capability']})"
        + (f", GPU {machine['gpu']}" if machine["gpu"] else "")
        + f". Software: Python {machine['python']}, torch {machine['torch']}, MONAI "
        f"{machine['monai']}, SimpleITK {machine['SimpleITK']}, numpy {machine['numpy']}, "
        f"mefn {machine['mefn']} (commit {machine['commit']}). Written {machine['date_utc']}.",
        "",
    ]
    if inference:
        lines += [
            "### Inference cost",
            "",
            f"Command: `{inference['command']}`. {inference['threads']} CPU threads (torch and "
            f"SimpleITK), sliding window {inference['patch_vox']}^3 at "
            f"{inference['model_spacing_mm']} mm, overlap "
            f"{_f(inference['overlap']) if inference['overlap'] is not None else 'of the card (0.25)'}"
            f", tiles per forward {inference['sw_batch_size']}; median of "
            f"{inference['runs']} fresh processes per model, models run round-robin. "
            f"1-minute load average {inference['load_before']:.1f} before, "
            f"{inference['load_after']:.1f} after (a quiet 2-core machine reads about 2 while "
            "the benchmark runs; more means other jobs shared the cores and the times are "
            "inflated).",
            "",
        ]
        for kind, info in inference["studies"].items():
            shape = "x".join(str(s) for s in info["output_grid"]["shape"])
            sp = "x".join(f"{s:.2f}" for s in info["output_grid"]["spacing_mm"])
            lines.append(
                f"- {kind}: output grid {shape} at {sp} mm ({info['output_voxels']:,d} voxels)"
            )
        rates = ", ".join(f"{d} {r:.0f} GFLOP/s" for d, r in inference["matmul_gflops"].items())
        lines += [
            f"- float32 matmul {inference['matmul_size']}^2, same threads: {rates}",
            "",
            "| device | study | model | weights | s / study | network s | resample s | lesion "
            "table s (lesions) | Mvox/s | peak RSS GiB | tiles | GFLOP | GFLOP/s | % of matmul |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in inference["rows"]:
            lines.append(
                f"| {r['device']} | {r['study']} | {r['model']} | {r.get('weights', '')} | "
                f"{_f(r['seconds'], 1)} | {_f(r['net_seconds'], 1)} | "
                f"{_f(r.get('resample_seconds'), 1)} | {_f(r.get('lesion_table_seconds'), 1)} "
                f"({r.get('lesions', 'n/a')}) | {_f(r['voxels_per_s'] / 1e6)} | "
                f"{_f(r['peak_rss_gib'])} | {r['tiles']} | {_f(r['gflop'], 0)} | "
                f"{_f(r['gflops_achieved'], 1)} | "
                f"{_f(100 * r['gflops_achieved'] / r['matmul_gflops'], 0)} |"
            )
        lines += [
            "",
            "s / study: `Predictor.predict` on the case in memory (resampling in and out, "
            "sliding window, lesion table); reading the files and loading the weights are "
            "excluded. On the GPU, the second predict in the process. Network, resample and "
            "lesion table s: the stages of `Prediction.timings` (`network`: the sliding window, "
            "tiles and their blending; resample: `resample` in plus `to_output_grid` out). "
            "GFLOP/s: FLOPs of the tiles over the network stage's seconds.",
            "",
        ]
    if quality:
        b = quality["budget"]
        lines += [
            "### Quality under the same training budget",
            "",
            f"Command: `{quality['command']}`. Every model: {b['steps']} steps "
            f"({b['epochs']} epochs x {b['steps_per_epoch']}), patch {b['patch_vox']}^3"
            + (f" at {b['spacing_mm']} mm" if "spacing_mm" in b else "")
            + f", batch {b['batch']}"
            + (f", peak lr {b['lr']}" if "lr" in b else "")
            + f", {b['train_cases']} training phantoms (seeds 700,000,000+), "
            f"{b['train_config']} otherwise; scored on {b['test_cases']} fresh whole-body "
            f"phantoms (seeds 777,700,000+, fov {b['test_fov']}; MC dropout on the first "
            f"{b.get('mc_test_cases', b['test_cases'])}). Dice and FNV: mean over "
            "cases with lesions, FPV over all (AutoPET 2022); lesion F1 pooled; ECE and AUROC "
            "pooled over every voxel of every case, and again over the voxels near lesions "
            f"(within {NEAR_LESION_VOXELS} voxels of a reference or predicted lesion). "
            "Load average "
            f"{quality['load_before']:.1f} before, {quality['load_after']:.1f} after.",
            "",
            "| model | cases | Dice | FPV mL | FNV mL | lesion F1 | ECE | AUROC u vs error | "
            "ECE near lesions | AUROC near lesions | val Dice | train min |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        models = quality["models"]
        for name in (m for m in MODELS if m in models):
            lines.append(_quality_row(name, models[name], "summary"))
        ablations = [n for n in models if n.startswith("mefn_small-no_")]
        if ablations:
            n_sub = b["ablation_test_cases"]
            lines += [
                "",
                f"Ablations of MEFN, scored on the first {n_sub} test phantoms:",
                "",
                "| model | cases | Dice | FPV mL | FNV mL | lesion F1 | ECE | AUROC u vs error | "
                "ECE near lesions | AUROC near lesions | val Dice | train min |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            if "mefn_small" in models:
                lines.append(_quality_row("mefn_small (all on)", models["mefn_small"], "subset"))
            for name in ablations:
                lines.append(_quality_row(name.replace("mefn_small-", ""), models[name], "subset"))
        lines.append("")
    checks = check_targets(inference, quality)
    if checks:
        lines += [
            "### Targets",
            "",
            "| target | value | limit | met | missed by |",
            "|---|---|---|---|---|",
        ]
        for c in checks:
            met = {True: "yes", False: "**no**", None: "n/a"}[c["met"]]
            lines.append(
                f"| {c['what']} | {_f(c['value'], 3)}{c['unit'] if c['value'] is not None else ''} "
                f"| {c['limit']}{c['unit']} | {met} | {c['missed_by']} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _quality_row(label: str, res: dict[str, Any], which: str) -> str:
    s = res[which]
    minutes = res.get("training", {}).get("seconds")
    val = res.get("validation", {}).get("dice")  # -1: not validated
    return (
        f"| {label} | {s.get('n_cases', 'n/a')} | {_f(s['dice'], 3)} | {_f(s['fpv_ml'])} | {_f(s['fnv_ml'])} | "
        f"{_f(s['lesion_f1'], 3)} | {_f(s['ece'], 4)} | {_f(s['auroc'], 3)} | "
        f"{_f(s.get('ece_near'), 4)} | {_f(s.get('auroc_near'), 3)} | "
        f"{_f(val if val is not None and val >= 0 else None, 3)} | "
        f"{_f(minutes / 60 if minutes is not None else None, 1)} |"
    )


def _command() -> str:
    return _bench.command_line("pipelines.benchmark")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def print_checks(checks: list[dict[str, Any]]) -> None:
    for c in checks:
        state = {True: "met", False: "MISSED", None: "n/a"}[c["met"]]
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}{c['unit']}"
        extra = f" by {c['missed_by']}" if c["met"] is False else ""
        print(
            f"target {c['what']}: {value} (limit {c['limit']}{c['unit']}) {state}{extra}",
            flush=True,
        )


# --------------------------------------------------------------------------------------------
def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive {kind.__name__}, found {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, found {text}")
        return value

    return parse


_positive_int = _positive(int)
_positive_float = _positive(float)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--inference", action="store_true", help="run the inference-cost section")
    p.add_argument("--quality", action="store_true", help="run the training + quality section")
    p.add_argument("--report", action="store_true", help="only rewrite the doc from saved results")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (%(default)s)")
    p.add_argument("--doc", default=str(DEFAULT_DOC), help="report to update (%(default)s)")
    p.add_argument(
        "--models",
        nargs="*",
        default=list(MODELS),
        choices=MODELS,
        help="models to compare (default: all three; none with --quality: the ablations only)",
    )
    p.add_argument("--threads", type=_positive_int, default=2)
    p.add_argument("--seed", type=int, default=424242, help="seed of the inference studies")
    p.add_argument(
        "--spacing", type=_positive_float, default=3.0, help="model spacing in mm (%(default)s)"
    )
    p.add_argument(
        "--patch", type=_positive_int, default=64, help="patch / window edge (%(default)s)"
    )
    g = p.add_argument_group("inference")
    g.add_argument("--devices", nargs="+", help="default: cpu, and cuda when present")
    g.add_argument(
        "--studies", nargs="+", default=["wholebody", "headneck"], choices=("wholebody", "headneck")
    )
    g.add_argument(
        "--wb-shape",
        type=int,
        nargs=3,
        default=[400, 400, 326],
        help="whole-body output grid (AutoPET: %(default)s)",
    )
    g.add_argument(
        "--hn-shape",
        type=int,
        nargs=3,
        default=[512, 512, 110],
        help="head-and-neck CT grid (HECKTOR-like: %(default)s)",
    )
    g.add_argument(
        "--runs", type=_positive_int, default=1, help="fresh processes per model (median)"
    )
    g.add_argument("--sw-batch-size", type=int, default=1)
    g.add_argument("--overlap", type=float, default=None, help="default: the card's (0.25)")
    g.add_argument("--matmul-size", type=int, default=4096)
    g.add_argument(
        "--bundled",
        action="store_true",
        help="also time the bundled weights with their card, trust stages included (row "
        f"{BUNDLED}), against dynunet_small without the lesion tables",
    )
    g.add_argument(
        "--untrained",
        dest="trained_weights",
        action="store_false",
        help="always time untrained weights (default: the quality section's trained weights "
        "when they exist: untrained ones find hundreds of spurious lesions, and the lesion "
        "table's cost grows with them)",
    )
    q = p.add_argument_group("quality (budget)")
    q.add_argument("--steps", type=_positive_int, default=400, help="training steps per model")
    q.add_argument("--batch", type=_positive_int, default=2)
    q.add_argument(
        "--lr", type=_positive_float, help="peak learning rate (default: the train config's)"
    )
    q.add_argument("--cases", type=_positive_int, default=40, help="training phantoms")
    q.add_argument(
        "--val-cases",
        type=int,
        default=0,
        help="validation cases scored at the end of training (default 0: every model keeps "
        "its last weights)",
    )
    q.add_argument("--test-cases", type=_positive_int, default=20)
    q.add_argument(
        "--ablation-test-cases",
        type=int,
        default=8,
        help="the ablations are scored on the first N test phantoms (%(default)s)",
    )
    q.add_argument(
        "--mc-test-cases",
        type=int,
        default=8,
        help="MC dropout (10 passes: ~4 min per whole-body phantom on 2 cores) is scored on "
        "the first N test phantoms (%(default)s)",
    )
    q.add_argument("--test-fov", choices=("full", "random", "crop"), default="full")
    q.add_argument(
        "--ablations",
        nargs="*",
        default=list(ABLATIONS),
        choices=ABLATIONS,
        help="MEFN parts switched off one at a time (default: all five)",
    )
    q.add_argument("--no-ablations", dest="ablations", action="store_const", const=[])
    q.add_argument("--small-phantoms", action="store_true", help="`mefn phantoms --small`")
    q.add_argument("--train-data", help="use this nnU-Net-layout phantom folder for training")
    q.add_argument("--train-config", default=str(REPO / "configs/train/phantoms_small.yaml"))
    q.add_argument("--device", default="cpu", help="training/scoring device (%(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        result = child_infer(json.loads(argv[1]))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    args = build_parser().parse_args(argv)
    if not (args.inference or args.quality or args.report):
        build_parser().error("choose at least one of --inference, --quality, --report")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quality:  # first: the inference section then times the trained weights
        quality = run_quality(args, out)
        (out / "quality.json").write_text(json.dumps(quality, indent=1, default=_json_default))
        write_doc(
            Path(args.doc), render_report(machine_info(), _load(out / "inference.json"), quality)
        )
    if args.inference:
        inference = run_inference(args, out)
        (out / "inference.json").write_text(json.dumps(inference, indent=1, default=_json_default))
    inference_res, quality_res = _load(out / "inference.json"), _load(out / "quality.json")
    machine = machine_info()
    write_doc(Path(args.doc), render_report(machine, inference_res, quality_res))
    print_checks(check_targets(inference_res, quality_res))
    log(f"results in {out}, report in {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
