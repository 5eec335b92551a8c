"""One training loop for training and fine-tuning, on one CPU/GPU or under torchrun (DDP).

``train(cfg, output_dir)`` runs a whole training described by a :class:`TrainConfig`:
it indexes the dataset, splits it by patient, caches the cases in model space, samples
augmented patches, optimises the model's own loss, validates with sliding-window inference
(Dice), keeps the best and the last checkpoint (safetensors + JSON, never pickles), logs to
CSV and TensorBoard, stops early, and resumes a run where it stopped: at most every
``checkpoint_minutes`` and at the end, the whole resumable state (weights, optimiser, the
learning-rate schedule, the patch sampler's and torch's random streams, even inside an
epoch) is written at once, so a resumed run continues on the same data order and schedule. A *campaign* (``train(..., campaign=True)``,
``mefn train --campaign``) is such a run kept in a folder tracked by git and continued,
piece by piece, by the same command (docs/training.md). :func:`train_on_cases` runs the same
loop over cases already in model space.

Under ``torchrun`` each process trains on its share of the training cases with its own
random stream; gradients are averaged by DistributedDataParallel; validation cases are
split across processes and the Dice sums reduced; only rank 0 writes files.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mefn import __version__
from mefn.config import load_config, save_config, to_dict
from mefn.data.augment import AugmentConfig, PatchSampler
from mefn.data.cache import CachedCase, cache_case
from mefn.data.preprocess import PreprocessConfig, normalise
from mefn.errors import CheckpointError, ConfigError, InputError
from mefn.fileutil import atomic_path, atomic_write_text

__all__ = [
    "CAMPAIGN_FREE_FIELDS",
    "DataConfig",
    "RunState",
    "TrainConfig",
    "TrainResult",
    "build_lr_scheduler",
    "check_campaign_config",
    "load_train_config",
    "lr_factor",
    "make_sampler",
    "resolve_model_config",
    "train",
    "train_on_cases",
]

logger = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"  # mefn/configs, shipped in the wheel


@dataclass(frozen=True)
class DataConfig:
    """Where the training cases are and how they are split."""

    root: str = ""
    layout: Literal["auto", "autopet", "nnunet", "hecktor", "sts"] = "auto"
    val_fraction: float = 0.2
    split_seed: int = 0
    max_cases: int | None = None
    cache_dir: str | None = None
    #: a folds YAML ({folds: [[case, ...], ...]}, e.g. configs/datasets/sts_folds.yaml) and
    #: the fold held out for validation, instead of the val_fraction split; ``all`` trains on
    #: every case with no validation (the final model once the folds have chosen its settings,
    #: as nnU-Net's fold "all"): the weights are those of the last step
    folds: str | None = None
    fold: int | Literal["all"] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``model`` names ``configs/model/<model>.yaml`` or a YAML path.

    Fine-tuning: ``init_weights`` is the base weights file; with ``adapter`` (a bundled adapter
    name such as ``lora`` or a YAML path) the base stays frozen and only the adapter trains; it
    is saved to ``<output>/adapter`` tied to the SHA-256 of the base weights file.

    ``num_classes`` (fine-tuning to another label set): when it differs from the model's, the
    output heads are replaced by fresh ones for this many classes: with an adapter they train
    with it and are saved in the adapter file (``AdapterConfig.heads``); without one the base
    weights are loaded except the heads. Unset, it is the model's, or when fine-tuning on labels
    with more classes than the model has, the labels' (largest label + 1).
    """

    model: str = "mefn_small"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patch_size_vox: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    pos_fraction: float = 0.6
    hot_negative_fraction: float = 0.0
    hot_negative_suv: float = 3.0
    #: voxel: hard negatives drawn over every hot voxel alike (large organs dominate);
    #: structure: over hot structures alike, then a voxel in it (a gland counts as the brain)
    hot_negative_balance: Literal["voxel", "structure"] = "voxel"
    epochs: int = 100
    steps_per_epoch: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    grad_clip: float = 12.0
    val_every: int = 1
    val_max_cases: int | None = None
    sw_overlap: float = 0.25
    sw_batch_size: int = 2
    early_stop_patience: int = 30
    seed: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    device: str = "auto"
    max_minutes: float | None = None
    #: the resumable checkpoint is written at most this often, and at the end (0: every step)
    checkpoint_minutes: float = 30.0
    init_weights: str | None = None
    adapter: str | None = None
    num_classes: int | None = None
    threads: int | None = None
    #: data-parallel CPU processes that ``mefn train`` starts itself (each with ``threads``
    #: threads and ``batch_size`` patches; gradients averaged as under torchrun). Two
    #: processes of one thread train about 1.2x faster than one of two threads on 2 cores.
    processes: int = 1

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(
                f"num_classes must be at least 2 (background + classes), found {self.num_classes}"
            )
        for name in (
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "val_every",
            "sw_batch_size",
            "processes",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, found {value}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be a positive number, found {self.lr}")
        if self.max_minutes is not None and not self.max_minutes >= 0:  # 0: one epoch
            raise ConfigError(f"max_minutes must be 0 or more, found {self.max_minutes}")
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(
                f"checkpoint_minutes must be 0 (every step) or more, found "
                f"{self.checkpoint_minutes}"
            )
        if any(p < 1 for p in self.patch_size_vox) or len(self.patch_size_vox) != 3:
            raise ConfigError(
                f"patch_size_vox must be three positive voxel counts, found {self.patch_size_vox}"
            )
        fractions = (self.pos_fraction, self.hot_negative_fraction)
        if not all(0.0 <= f <= 1.0 for f in fractions) or sum(fractions) > 1.0:
            raise ConfigError(
                "pos_fraction and hot_negative_fraction must lie in [0, 1] and add up to at most "
                f"1, found {self.pos_fraction} and {self.hot_negative_fraction}"
            )
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ConfigError(f"sw_overlap must lie in [0, 1), found {self.sw_overlap}")
        if self.warmup_steps < 0 or self.early_stop_patience < 1:
            raise ConfigError(
                "warmup_steps must be >= 0 and early_stop_patience >= 1, found "
                f"{self.warmup_steps} and {self.early_stop_patience}"
            )


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    epochs_done: int
    best_dice: float
    best_epoch: int
    stopped: str
    seconds: float


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    return load_config(TrainConfig, path)


def resolve_model_config(name_or_path: str, base_dir: Path | None = None) -> Any:
    """The ModelConfig for ``configs/model/<name>.yaml`` or a YAML path."""
    from mefn.model import ModelConfig

    candidates = [Path(name_or_path)]
    if base_dir is not None:
        candidates.append(base_dir / name_or_path)
    candidates.append(CONFIG_ROOT / "model" / f"{name_or_path}.yaml")
    for cand in candidates:
        if cand.is_file():
            return load_config(ModelConfig, cand)
    known = sorted(p.stem for p in (CONFIG_ROOT / "model").glob("*.yaml"))
    raise ConfigError(
        f"model config {name_or_path!r} not found; give a YAML path or one of: {', '.join(known)}"
    )


# --------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def _pick_device(name: str, dist_info: _Dist) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{dist_info.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# checkpoints: safetensors for tensors, JSON for everything else
# --------------------------------------------------------------------------------------------
def _save_tensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    # clone: adapters share tensors between layers (Compacter rules), safetensors refuses aliases
    clean = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); re-create it or point to another"
        ) from None


def _optimizer_to_flat(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars[f"state.{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(optimizer: Any, tensors: dict[str, Any], extra: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in extra["scalars"].items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": extra["param_groups"]})


def model_card(
    cfg: TrainConfig, model_cfg: Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON card stored beside every weights file."""
    card = {
        "format": "mefn-weights/1",
        "software": f"mefn {__version__}",
        "model": to_dict(model_cfg),
        "preprocess": to_dict(cfg.preprocess),
        "patch_size_vox": list(cfg.patch_size_vox),
        "sw_overlap": cfg.sw_overlap,
        "labels": _labels(model_cfg.num_classes),
    }
    card.update(extra or {})
    return card


def _labels(num_classes: int) -> dict[str, str]:
    from mefn.model.config import label_names  # torch loads with mefn.model: keep it lazy

    return label_names(num_classes)


# --------------------------------------------------------------------------------------------
# resumable state: a run's checkpoint and campaigns (docs/training.md)
# --------------------------------------------------------------------------------------------
#: TrainConfig fields a campaign may change from one piece to the next: where and how long
#: each piece runs, never what is trained.
CAMPAIGN_FREE_FIELDS = (
    "max_minutes",
    "checkpoint_minutes",
    "device",
    "threads",
    "sw_batch_size",
    "data.root",
    "data.cache_dir",
)
#: What a campaign folder keeps out of git: rebuilt from the data, or of no use elsewhere.
CAMPAIGN_GITIGNORE = "cache/\ntensorboard/\ncheckpoints.tmp/\ncheckpoints.old/\n"


@dataclass
class RunState:
    """Where a run stands: everything its checkpoint holds besides the tensors.

    ``epoch`` counts finished epochs; ``step_in_epoch`` > 0 marks a checkpoint written inside
    an epoch, whose loss sums so far (``epoch_sums``) and random streams (``rng``: the patch
    sampler's bit generator, torch's CPU and CUDA generators) it also holds, so the resumed
    run draws what the uninterrupted one would have. At an epoch's start every stream is
    re-seeded from (seed, rank, epoch) and ``rng`` is not needed. ``scheduler`` is the
    learning-rate schedule's ``state_dict`` (:func:`build_lr_scheduler`): the resumed run
    continues it at ``last_epoch``, its next optimiser step.
    """

    epoch: int = 0
    global_step: int = 0
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0
    best_dice: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    seconds: float = 0.0
    pieces: int = 0  # invocations that trained (a campaign's pieces)
    finished: str | None = None  # "epochs" or "early_stop" once the run has ended
    config_sha256: str = ""
    data_sha256: str = ""
    rng: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None  # param groups and scalars (tensors: safetensors)
    scheduler: dict[str, Any] | None = None  # the lr schedule's state_dict (its position)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        """From ``last_state.json`` (older files lack some keys: their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def config_sha256(cfg: TrainConfig) -> str:
    """SHA-256 of the config's fields other than CAMPAIGN_FREE_FIELDS (recorded in the state)."""
    flat = {k: v for k, v in _flat(to_dict(cfg)).items() if k not in CAMPAIGN_FREE_FIELDS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


def _cases_sha256(train_cases: list[CachedCase], val_cases: list[CachedCase]) -> str:
    ids = {"train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases]}
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    a, b = _flat(saved), _flat(now)
    return [
        f"{prefix}{k} {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and k not in CAMPAIGN_FREE_FIELDS
    ]


def check_campaign_config(out: Path, cfg: TrainConfig, model_cfg: Any) -> None:
    """ConfigError naming every field that differs between ``cfg`` (and its model) and the
    config campaign ``out`` was started with; nothing when the campaign is new."""
    from mefn.model import ModelConfig

    saved_path = out / "train_config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = load_train_config(saved_path)
    except ConfigError as exc:
        raise ConfigError(
            f"campaign {out}: its {saved_path.name} no longer loads ({exc}); finish it with the "
            "mefn version that started it or start a new campaign in another folder"
        ) from None
    changes = _changes(to_dict(saved), to_dict(cfg))
    model_path = out / "model_config.yaml"
    if model_path.is_file():
        saved_model = to_dict(load_config(ModelConfig, model_path))
        now_model = to_dict(model_cfg)
        saved_model.pop("num_classes", None)  # resolved from the labels at the start
        now_model.pop("num_classes", None)
        changes += _changes(saved_model, now_model, prefix="model config: ")
    if changes:
        raise ConfigError(
            f"campaign {out} was started with another configuration ({'; '.join(changes)}); "
            f"continue it with its own settings ({saved_path}) or start a new campaign in "
            "another folder"
        )


def _capture_rng(sampler: PatchSampler, device: Any) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {
        "sampler": sampler.rng.bit_generator.state,
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    if device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device).numpy().tobytes()
        state["cuda"] = base64.b64encode(cuda).decode()
    return state


def _restore_rng(sampler: PatchSampler, state: dict[str, Any], device: Any) -> None:
    import torch

    try:
        bits = getattr(np.random, state["sampler"]["bit_generator"])()
        bits.state = state["sampler"]
        torch_state = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"the checkpoint's random-stream state is unreadable ({type(exc).__name__}: {exc}); "
            "remove checkpoints/ to start the run again"
        ) from None
    sampler.rng = np.random.Generator(bits)
    torch.set_rng_state(torch.from_numpy(torch_state.copy()))
    if device.type == "cuda" and "cuda" in state:
        cuda = np.frombuffer(base64.b64decode(state["cuda"]), dtype=np.uint8)
        torch.cuda.set_rng_state(torch.from_numpy(cuda.copy()), device)


def _write_checkpoint(
    out: Path, state: RunState, model: Any, optimizer: Any, best: dict[str, Any] | None
) -> None:
    """Write the whole resumable state at once: into ``checkpoints.tmp``, then swapped in for
    ``checkpoints`` by two renames, so a kill at any moment leaves one complete checkpoint
    (``_recover_checkpoints`` puts ``checkpoints.old`` back when the kill fell between them).
    ``best``: newly validated best weights (else the current checkpoint's are kept)."""
    final, tmp, old = out / "checkpoints", out / "checkpoints.tmp", out / "checkpoints.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"epoch": str(state.epoch), "step": str(state.global_step)}
    _save_tensors(model.state_dict(), tmp / "last.safetensors", meta)
    opt_tensors, state.optimizer = _optimizer_to_flat(optimizer)
    _save_tensors(opt_tensors, tmp / "last_optimizer.safetensors", meta)
    if best is not None:
        _save_tensors(best, tmp / "best.safetensors", {"epoch": str(state.best_epoch)})
    elif (final / "best.safetensors").is_file():
        shutil.copyfile(final / "best.safetensors", tmp / "best.safetensors")
    atomic_write_text(tmp / "last_state.json", json.dumps(asdict(state), indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _recover_checkpoints(out: Path) -> None:
    """After a kill inside :func:`_write_checkpoint`: the complete checkpoint back in place."""
    final, tmp, old = out / "checkpoints", out / "checkpoints.tmp", out / "checkpoints.old"
    if (old / "last_state.json").is_file() and not (final / "last_state.json").is_file():
        shutil.rmtree(final, ignore_errors=True)
        old.rename(final)
        logger.warning(
            "%s: the checkpoint being written was incomplete; the previous one kept", out
        )
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(out: Path, model: Any, optimizer: Any, scaler: Any) -> RunState:
    folder = out / "checkpoints"
    try:
        state = RunState.from_json(json.loads((folder / "last_state.json").read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{folder / 'last_state.json'} is not a training state ({exc}); remove {folder} "
            "to start the run again"
        ) from None
    model.load_state_dict(_load_tensors(folder / "last.safetensors"))
    if state.optimizer is not None:
        opt_tensors = _load_tensors(folder / "last_optimizer.safetensors")
        _optimizer_from_flat(optimizer, opt_tensors, state.optimizer)
    if state.scaler and scaler.is_enabled():
        scaler.load_state_dict(state.scaler)
    return state


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def training_split(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    """The run's (training, validation) dataset entries, as :func:`train` splits them."""
    return _index_cases(cfg)


def _index_cases(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    from mefn.data.datasets import index_dataset, split_by_patient

    root = Path(cfg.data.root)
    if not root.is_dir():
        raise InputError(
            f"training data folder {root} does not exist; set data.root in the config "
            "(make one with `mefn phantoms`)"
        )
    entries = index_dataset(root, layout=cfg.data.layout)
    if cfg.data.max_cases is not None:
        entries = entries[: cfg.data.max_cases]
    if len(entries) < 2:
        raise InputError(
            f"found {len(entries)} labelled case(s) in {root}; training needs at least 2 "
            "(one for validation)"
        )
    if (cfg.data.folds is None) != (cfg.data.fold is None):
        raise ConfigError(
            f"data.folds and data.fold go together, found folds {cfg.data.folds!r} and fold "
            f"{cfg.data.fold!r}; give both (e.g. configs/datasets/sts_folds.yaml and 0) or neither"
        )
    if cfg.data.folds is not None and cfg.data.fold is not None:
        from mefn.data.datasets import load_folds, split_by_fold

        folds_path = Path(cfg.data.folds)
        if not folds_path.is_absolute() and not folds_path.is_file():
            folds_path = CONFIG_ROOT.parent / folds_path  # relative to the checkout
        return split_by_fold(entries, load_folds(folds_path), cfg.data.fold)
    return split_by_patient(entries, cfg.data.val_fraction, cfg.data.split_seed)


def _cache_all(entries: list[Any], cfg: TrainConfig, cache_dir: Path) -> list[CachedCase]:
    from mefn.io.discovery import load_case

    out = []
    for entry in entries:
        # a loader: cases already cached are not read again (resume, second pass after DDP)
        out.append(
            cache_case(
                functools.partial(
                    load_case, ct=entry.ct, pet=entry.pet, label=entry.label, case_id=entry.case_id
                ),
                cfg.preprocess,
                cache_dir,
                case_id=entry.case_id,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _dice_sums(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Per foreground class: (intersection, |pred| + |ref|)."""
    sums = np.zeros((num_classes - 1, 2))
    for c in range(1, num_classes):
        p, r = pred == c, label == c
        sums[c - 1] = (np.logical_and(p, r).sum(), p.sum() + r.sum())
    return sums


def _validate(
    model: Any,
    cases: list[CachedCase],
    cfg: TrainConfig,
    num_classes: int,
    device: Any,
    dist_info: _Dist,
) -> float:
    """Mean over classes of the Dice aggregated over validation cases (all lesions together)."""
    import torch

    model.eval()
    sums = np.zeros((num_classes - 1, 2))
    for case in cases[dist_info.rank :: dist_info.world]:
        image = normalise(
            np.asarray(case.ct_hu, np.float32), np.asarray(case.suv, np.float32), cfg.preprocess
        )
        from mefn.model.sliding_window import sliding_window_predict

        out = sliding_window_predict(
            model,
            torch.from_numpy(image)[None],
            cfg.patch_size_vox,
            cfg.sw_overlap,
            cfg.sw_batch_size,
            device,
        )
        pred = out["prob"][0].argmax(0).numpy()
        sums += _dice_sums(pred, case.label, num_classes)
    if dist_info.world > 1:
        import torch.distributed as dist

        t = torch.from_numpy(sums)
        dist.all_reduce(t)
        sums = t.numpy()
    model.train()
    dice = [2 * i / s if s > 0 else 1.0 for i, s in sums]
    return float(np.mean(dice))


# --------------------------------------------------------------------------------------------
# fine-tuning to another label set
# --------------------------------------------------------------------------------------------
def _num_classes(
    cfg: TrainConfig, model_cfg: Any, adapter_cfg: Any, train_cases: list[CachedCase]
) -> int:
    """Output classes of the trained model (see ``TrainConfig.num_classes``)."""
    if cfg.num_classes is not None:
        return int(cfg.num_classes)
    if adapter_cfg is not None and adapter_cfg.heads.num_classes:
        return int(adapter_cfg.heads.num_classes)
    labels = max((max(c.fg_indices, default=0) for c in train_cases), default=0)
    if labels < model_cfg.num_classes:
        return int(model_cfg.num_classes)
    if not cfg.init_weights:
        raise ConfigError(
            f"the training labels go up to {labels}, but the model has {model_cfg.num_classes} "
            f"classes; set num_classes: {labels + 1} in the model config"
        )
    logger.info(
        "labels go up to %d: new output heads for %d classes (the base has %d)",
        labels,
        labels + 1,
        model_cfg.num_classes,
    )
    return labels + 1


def _load_init(model: Any, path: Path, model_name: str, skip_heads: bool) -> None:
    """Load base weights into ``model``; with ``skip_heads`` the output heads, whose class count
    changed, keep their fresh initialisation (every other tensor must fit)."""
    from mefn.adapters import HeadsConfig

    init = _load_tensors(path)
    own = model.state_dict()
    reshaped = [k for k, v in init.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    heads = HeadsConfig().names
    in_head = [k for k in reshaped if any(k.startswith(h + ".") for h in heads)]
    if skip_heads:
        for k in in_head:
            del init[k]
        if in_head:
            logger.info("new output heads: %d base tensors left out", len(in_head))
    other = [k for k in reshaped if k in init]
    if other:
        k = other[0]
        raise CheckpointError(
            f"{path} does not fit model {model_name}: tensor {k} has shape "
            f"{tuple(init[k].shape)} in the file and {tuple(own[k].shape)} in the model "
            f"({len(other)} such tensors); use weights trained with this model config"
        )
    missing, unexpected = model.load_state_dict(init, strict=False)
    missing = [k for k in missing if k not in in_head]
    if unexpected or (missing and len(missing) == len(own)):
        raise CheckpointError(
            f"{path} does not fit model {model_name}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors; use weights trained with this model config"
        )


# --------------------------------------------------------------------------------------------
# the learning-rate schedule
# --------------------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning-rate schedule as a factor of the peak lr, at 0-based optimiser ``step``.

    Linear warm-up over the first ``warmup`` steps to 1, then a cosine down to 0.01 at
    ``total`` steps (held there beyond).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * 0.99 + 0.01


def build_lr_scheduler(
    optimizer: Any, total_steps: int, warmup_steps: int, steps_done: int = 0
) -> Any:
    """:func:`lr_factor` as a torch ``LambdaLR``: at 0-based optimiser step ``s`` each param
    group's lr is its ``initial_lr`` (the peak lr) times ``lr_factor(s, total_steps,
    warmup_steps)``; call ``step()`` after every optimiser step.

    ``steps_done`` > 0 continues a resumed run at its next step (the position a checkpoint
    saved, ``state_dict()["last_epoch"]``); every group must then hold ``initial_lr``.
    """
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:  # a function, not an object: its state is not saved
        return lr_factor(step, total_steps, warmup_steps)

    return LambdaLR(optimizer, factor, last_epoch=steps_done - 1)


def _resume_lr_scheduler(optimizer: Any, cfg: TrainConfig, state: RunState, base_lr: float) -> Any:
    """The schedule at the run's next step: the position from the checkpoint's scheduler state
    (a checkpoint written before it had one: its step count); the peak lr, total and warm-up
    from ``cfg``, so a run resumed with another lr or epoch count follows the new schedule."""
    steps_done = state.global_step
    if state.scheduler is not None:
        steps_done = int(state.scheduler.get("last_epoch", -1))
        if steps_done != state.global_step:
            raise CheckpointError(
                f"the checkpoint's learning-rate schedule stands at step {steps_done} but its run "
                f"at step {state.global_step}; remove checkpoints/ to start the run again"
            )
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr
    return build_lr_scheduler(
        optimizer, cfg.epochs * cfg.steps_per_epoch, cfg.warmup_steps, steps_done
    )


# --------------------------------------------------------------------------------------------
# the loop: set-up, epochs (steps, validation, log, checkpoint), final weights
# --------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may use the global stream
    torch.manual_seed(seed)


def _setup_device(cfg: TrainConfig) -> tuple[_Dist, Any]:
    """The process group (under torchrun) and this process's device; torch's thread count."""
    import torch

    device_kind = (
        "cuda"
        if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()))
        else "cpu"
    )
    dist_info = _init_distributed(device_kind)
    if cfg.processes > 1 and dist_info.world == 1 and device_kind == "cpu":
        logger.warning(
            "processes: %d is started by the mefn train command; this call trains in one "
            "process with batch_size %d",
            cfg.processes,
            cfg.batch_size,
        )
    device = _pick_device(cfg.device, dist_info)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return dist_info, device


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _check_output(
    out: Path, cfg: TrainConfig, model_cfg: Any, resume: bool, campaign: bool
) -> None:
    """Refuse to start over a run without ``resume``, or a campaign under another config."""
    if cfg.adapter and not cfg.init_weights:
        raise ConfigError("fine-tuning an adapter needs init_weights: the base weights file")
    if campaign:
        check_campaign_config(out, cfg, model_cfg)
        return
    held = any((out / d / "last_state.json").is_file() for d in ("checkpoints", "checkpoints.old"))
    if out.exists() and any(out.iterdir()) and not resume and held:
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it or choose another -o"
        )


def _save_run_configs(out: Path, cfg: TrainConfig, campaign: bool) -> None:
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if campaign:
        if not (out / ".gitignore").is_file():
            atomic_write_text(out / ".gitignore", CAMPAIGN_GITIGNORE)
        if (out / "train_config.yaml").is_file():
            return  # the campaign's own config stays (check_campaign_config compared them)
    save_config(cfg, out / "train_config.yaml")


def train(
    cfg: TrainConfig,
    output_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    config_dir: Path | None = None,
    model_cfg: Any = None,
    campaign: bool = False,
) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; files go to ``output_dir``.

    ``progress`` is called after every step with a dict (epoch, step, loss, lr ...) and
    after every validation; the CLI turns it into a progress bar.

    ``campaign``: ``output_dir`` is a campaign folder (docs/training.md): the run continues
    from its checkpoint when there is one (as with ``resume``), only under the config it was
    started with (fields of CAMPAIGN_FREE_FIELDS excepted), on the same training cases;
    its final weights are written when it finishes, and a finished campaign trains no more.
    """
    t_start = time.monotonic()
    out = Path(output_dir)
    if model_cfg is None:
        model_cfg = resolve_model_config(cfg.model, config_dir)
    _check_output(out, cfg, model_cfg, resume, campaign)
    dist_info, device = _setup_device(cfg)
    # the data is indexed before anything is written: a wrong folder leaves no half-made run
    train_entries, val_entries = _index_cases(cfg)
    if dist_info.main:
        _save_run_configs(out, cfg, campaign)

    _seed_everything(cfg.seed + 1000 * dist_info.rank)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    # every rank caches its own share, then all read the whole cache
    my_entries = (train_entries + val_entries)[dist_info.rank :: dist_info.world]
    _cache_all(my_entries, cfg, cache_dir)
    _barrier(dist_info)
    train_cases = _cache_all(train_entries, cfg, cache_dir)
    val_cases = _cache_all(val_entries, cfg, cache_dir)
    return _run(
        cfg, out, train_cases, val_cases, model_cfg, resume or campaign, campaign, progress,
        dist_info, device, t_start,
    )  # fmt: skip


def train_on_cases(
    cfg: TrainConfig,
    output_dir: str | os.PathLike[str],
    train_cases: list[CachedCase],
    val_cases: list[CachedCase],
    *,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    config_dir: Path | None = None,
    model_cfg: Any = None,
    campaign: bool = False,
) -> TrainResult:
    """:func:`train` over cases already in model space (e.g. written straight into a cache
    by :func:`mefn.data.phantom_cache.cache_phantoms`): no dataset is indexed and no image
    read, so neither SimpleITK nor nibabel is needed. ``cfg.data`` is not used."""
    t_start = time.monotonic()
    out = Path(output_dir)
    if not train_cases:
        raise InputError("train_on_cases needs at least one training case, found none")
    if model_cfg is None:
        model_cfg = resolve_model_config(cfg.model, config_dir)
    _check_output(out, cfg, model_cfg, resume, campaign)
    dist_info, device = _setup_device(cfg)
    if dist_info.main:
        _save_run_configs(out, cfg, campaign)
    _seed_everything(cfg.seed + 1000 * dist_info.rank)
    return _run(
        cfg, out, list(train_cases), list(val_cases), model_cfg, resume or campaign, campaign,
        progress, dist_info, device, t_start,
    )  # fmt: skip


@dataclass(frozen=True)
class _Network:
    """The model this run trains, as built for it."""

    model: Any
    model_cfg: Any  # the trained model's config, its num_classes resolved
    handle: Any  # the injected adapters; None when the whole model trains
    lr_scale: float  # the adapter's learning-rate scale (1 without one)


@dataclass(frozen=True)
class _Optimisation:
    """The loss, the trained parameters and what steps them."""

    loss_fn: Any
    params: list[Any]
    optimizer: Any
    scaler: Any  # GradScaler, enabled under fp16 only
    amp_dtype: Any  # None: no autocast
    base_lr: float  # the peak learning rate


@dataclass
class _Loop:
    """One invocation's training: what its steps share besides the saved :class:`RunState`."""

    cfg: TrainConfig
    out: Path
    network: _Network
    opt: _Optimisation
    scheduler: Any  # the learning-rate schedule (build_lr_scheduler)
    sampler: PatchSampler
    forward: Any  # the model, or DistributedDataParallel around it
    dist_info: _Dist
    device: Any
    tb: Any  # TensorBoard writer (rank 0) or None
    progress: Callable[[dict[str, Any]], None] | None
    t_start: float
    seconds_before: float  # training time of the run's earlier invocations
    last_checkpoint: float
    best_weights: dict[str, Any] | None = None  # best validated weights not yet on disk


def _run(
    cfg: TrainConfig,
    out: Path,
    train_cases: list[CachedCase],
    val_cases: list[CachedCase],
    model_cfg: Any,
    resume: bool,
    campaign: bool,
    progress: Callable[[dict[str, Any]], None] | None,
    dist_info: _Dist,
    device: Any,
    t_start: float,
) -> TrainResult:
    """The loop: model, optimiser, checkpoints, validation, final weights and card."""
    data_sha256 = _cases_sha256(train_cases, val_cases)
    if cfg.val_max_cases is not None:
        val_cases = val_cases[: cfg.val_max_cases]
    network = _build_network(cfg, model_cfg, train_cases, device, campaign)
    if dist_info.main:
        save_config(network.model_cfg, out / "model_config.yaml")
    opt = _build_optimisation(cfg, network, device)
    n_cases = (len(train_cases), len(val_cases))
    state = _start_state(out, cfg, network, opt, resume, campaign, n_cases, data_sha256, dist_info)
    if campaign and state.finished:
        logger.info("campaign %s finished (%s) at epoch %d", out, state.finished, state.epoch)
        return _result(out, state, state.finished)
    state.pieces += 1
    loop = _Loop(
        cfg=cfg,
        out=out,
        network=network,
        opt=opt,
        scheduler=_resume_lr_scheduler(opt.optimizer, cfg, state, opt.base_lr),
        sampler=make_sampler(cfg, train_cases[dist_info.rank :: dist_info.world] or train_cases),
        forward=_wrap_ddp(network.model, dist_info, device),
        dist_info=dist_info,
        device=device,
        tb=_open_tensorboard(out) if dist_info.main else None,
        progress=progress,
        t_start=t_start,
        seconds_before=state.seconds,
        last_checkpoint=time.monotonic(),
    )
    network.model.train()
    stopped = "epochs"
    while state.epoch < cfg.epochs and stopped == "epochs":
        stopped = _run_epoch(loop, state, val_cases)
    if dist_info.main and (not campaign or state.finished):
        _save_final_weights(loop, _final_card(loop, state, stopped, n_cases, campaign))
    if loop.tb is not None:
        loop.tb.close()
    _barrier(dist_info)
    return _result(out, state, stopped)


def _result(out: Path, state: RunState, stopped: str) -> TrainResult:
    return TrainResult(
        output_dir=out,
        epochs_done=state.epoch,
        best_dice=float(state.best_dice),
        best_epoch=int(state.best_epoch),
        stopped=stopped,
        seconds=float(state.seconds),
    )


def _build_network(
    cfg: TrainConfig, model_cfg: Any, train_cases: list[CachedCase], device: Any, campaign: bool
) -> _Network:
    """The model on ``device``: base weights loaded, output heads for the labels' classes,
    adapters injected when fine-tuning one."""
    from mefn.model import build_model

    adapter_cfg = None
    if cfg.adapter:
        from mefn.adapters import load_adapter_config

        adapter_cfg = load_adapter_config(cfg.adapter)
    num_classes = _num_classes(cfg, model_cfg, adapter_cfg, train_cases)
    new_heads = num_classes != model_cfg.num_classes
    if adapter_cfg is not None and (new_heads or adapter_cfg.heads.num_classes):
        adapter_cfg = replace(
            adapter_cfg, heads=replace(adapter_cfg.heads, num_classes=num_classes)
        )
    run_model_cfg = replace(model_cfg, num_classes=num_classes)
    # an adapter replaces the heads of the base model; full fine-tuning builds the new model
    model = build_model(model_cfg if adapter_cfg is not None else run_model_cfg)
    model.to(device)
    if cfg.init_weights:
        _load_init(model, Path(cfg.init_weights), cfg.model, skip_heads=new_heads)
    if adapter_cfg is None:
        return _Network(model=model, model_cfg=run_model_cfg, handle=None, lr_scale=1.0)
    from mefn.adapters import inject_adapters

    handle = inject_adapters(model, adapter_cfg)
    model.to(device)
    if campaign and (handle.mosa is not None or handle.lae is not None):
        raise ConfigError(
            f"adapter type {adapter_cfg.type} keeps a step schedule a campaign does not "
            "save (MoSA, LAE); train it in one piece with -o instead of --campaign"
        )
    return _Network(
        model=model, model_cfg=run_model_cfg, handle=handle, lr_scale=adapter_cfg.lr_scale
    )


def make_adamw(params: list[Any], lr: float, weight_decay: float) -> Any:
    """AdamW with torch's fused kernel (one pass over all parameters instead of a Python loop
    of small ops: 2.4-3.0 instead of 9.4-9.6 ms per step, gradient clipping included, for
    mefn_small and mefn_fast on a 2-core CPU), the same algorithm and state dict; the loop
    version where the parameters do not allow it."""
    import torch

    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _build_optimisation(cfg: TrainConfig, network: _Network, device: Any) -> _Optimisation:
    """The model's own loss, AdamW over the trainable parameters, mixed precision on CUDA."""
    import torch

    from mefn.model import build_loss

    loss_fn = build_loss(network.model_cfg)
    params = [p for p in network.model.parameters() if p.requires_grad]
    base_lr = cfg.lr * network.lr_scale
    optimizer = make_adamw(params, base_lr, cfg.weight_decay)
    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        amp_dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return _Optimisation(loss_fn, params, optimizer, scaler, amp_dtype, base_lr)


def _start_state(
    out: Path,
    cfg: TrainConfig,
    network: _Network,
    opt: _Optimisation,
    resume: bool,
    campaign: bool,
    n_cases: tuple[int, int],
    data_sha256: str,
    dist_info: _Dist,
) -> RunState:
    """A new run's state, or with ``resume`` the checkpoint's (weights, optimiser and scaler
    loaded); the log rows written after that checkpoint are dropped."""
    if dist_info.main:
        _recover_checkpoints(out)
    _barrier(dist_info)
    last_state = out / "checkpoints" / "last_state.json"
    state = RunState(config_sha256=config_sha256(cfg), data_sha256=data_sha256)
    if resume and last_state.is_file():
        state = _read_checkpoint(out, network.model, opt.optimizer, opt.scaler)
        if campaign and state.data_sha256 and state.data_sha256 != data_sha256:
            raise InputError(
                f"campaign {out} was trained on other cases than the {n_cases[0]} "
                f"training and {n_cases[1]} validation cases found now; recreate its data "
                "exactly (same phantoms seed and count, see docs/training.md) or start a new "
                "campaign in another folder"
            )
        if state.step_in_epoch and dist_info.world > 1:
            raise CheckpointError(
                f"{last_state} was written mid-epoch by a single-process run; resume it in "
                "one process (without torchrun) until the epoch ends"
            )
        logger.info("resuming %s at epoch %d, step %d", out, state.epoch, state.global_step)
    if dist_info.main:  # rows logged after the checkpoint (or before the first) are redone
        _truncate_log(out / "log.csv", state.epoch)
    return state


def make_sampler(
    cfg: TrainConfig, cases: list[CachedCase], seed: int | None = None
) -> PatchSampler:
    """The patch sampler training under ``cfg`` draws from ``cases`` (its random generator
    seeded with ``seed``, by default ``cfg.seed``)."""
    return PatchSampler(
        cases,
        cfg.patch_size_vox,
        cfg.preprocess,
        cfg.augment,
        cfg.pos_fraction,
        np.random.default_rng(cfg.seed if seed is None else seed),
        hot_negative_fraction=cfg.hot_negative_fraction,
        hot_suv=cfg.hot_negative_suv,
        hot_balance=cfg.hot_negative_balance,
    )


def _wrap_ddp(model: Any, dist_info: _Dist, device: Any) -> Any:
    """The module the steps call: ``model``, under torchrun wrapped in DistributedDataParallel."""
    if dist_info.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )


def _open_tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _run_epoch(loop: _Loop, state: RunState, val_cases: list[CachedCase]) -> str:
    """One epoch from where ``state`` stands: its steps, validation when due, the log row and
    the checkpoint when due; how the run stands after it ("epochs": it goes on, unless this
    was the last planned epoch; "early_stop", "time_budget": it stops)."""
    cfg = loop.cfg
    t_epoch = time.monotonic() - state.epoch_seconds
    lr = _train_steps(loop, state, t_epoch)
    epoch = state.epoch + 1
    state.step_in_epoch, state.rng, state.epoch_seconds = 0, None, 0.0
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": state.global_step,
        "lr": lr,
        "seconds": round(time.monotonic() - t_epoch, 2),
    }
    row.update({k: v / cfg.steps_per_epoch for k, v in state.epoch_sums.items()})
    out_of_time = (
        cfg.max_minutes is not None and (time.monotonic() - loop.t_start) / 60.0 >= cfg.max_minutes
    )
    # the last epoch (planned or cut by the time budget) is always validated, so the
    # weights kept are the best of everything validated, the final state included
    if val_cases and (epoch % cfg.val_every == 0 or epoch == cfg.epochs or out_of_time):
        row["val_dice"] = _validate_epoch(loop, state, val_cases, epoch)
    state.epoch = epoch
    state.seconds = loop.seconds_before + time.monotonic() - loop.t_start
    _log_epoch(loop, row)
    stopped = "epochs"
    if state.epochs_without_improvement >= cfg.early_stop_patience:
        stopped = "early_stop"
    elif out_of_time and epoch < cfg.epochs:
        stopped = "time_budget"
    ending = stopped != "epochs" or epoch == cfg.epochs
    if ending and stopped != "time_budget":
        state.finished = stopped
    if ending or _checkpoint_due(loop):
        _checkpoint(loop, state)
    return stopped


def _train_steps(loop: _Loop, state: RunState, t_epoch: float) -> float:
    """The epoch's optimiser steps from ``state.step_in_epoch`` on, with mid-epoch
    checkpoints when due; the learning rate of its last step."""
    import torch

    cfg, rank = loop.cfg, loop.dist_info.rank
    if state.step_in_epoch == 0:
        # Re-seed every epoch from (seed, rank, epoch): a resumed run draws the same
        # patches and dropout masks as an uninterrupted one.
        loop.sampler.rng = np.random.default_rng([cfg.seed, rank, state.epoch])
        torch.manual_seed(cfg.seed * 100_003 + rank * 1009 + state.epoch)
        state.epoch_sums = {}
    else:  # resumed mid-epoch: the random streams as they were after its last step
        _restore_rng(loop.sampler, state.rng or {}, loop.device)
    lr = loop.opt.optimizer.param_groups[0]["lr"]
    while state.step_in_epoch < cfg.steps_per_epoch:
        lr = loop.opt.optimizer.param_groups[0]["lr"]
        _train_step(loop, state)
        # mid-epoch checkpoints in one process only: under DDP every rank has its streams
        if (
            loop.dist_info.world == 1
            and state.step_in_epoch < cfg.steps_per_epoch
            and _checkpoint_due(loop)
        ):
            state.rng = _capture_rng(loop.sampler, loop.device)
            state.epoch_seconds = time.monotonic() - t_epoch
            _checkpoint(loop, state)
    return lr


def _train_step(loop: _Loop, state: RunState) -> None:
    """One optimiser step on a fresh batch of patches, then the schedule's; the losses are
    added to ``state.epoch_sums``."""
    import torch

    cfg, opt, device = loop.cfg, loop.opt, loop.device
    step, epoch = state.global_step, state.epoch
    x_np, y_np = loop.sampler.batch(cfg.batch_size)
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    with torch.autocast(
        device.type, dtype=opt.amp_dtype or torch.float32, enabled=opt.amp_dtype is not None
    ):
        output = loop.forward(x)
        losses = opt.loss_fn(output, y, x, epoch)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise CheckpointError(
            f"training diverged at step {step} (loss {loss.item()}); lower lr in the config"
        )
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    torch.nn.utils.clip_grad_norm_(opt.params, cfg.grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    loop.scheduler.step()
    if loop.network.handle is not None:
        loop.network.handle.on_step()
    state.global_step = step + 1
    state.step_in_epoch += 1
    for k, v in losses.items():
        state.epoch_sums[k] = state.epoch_sums.get(k, 0.0) + float(v.detach())
    if loop.progress is not None and loop.dist_info.main:
        event = {"event": "step", "epoch": epoch, "step": step + 1, "loss": float(loss.detach())}
        loop.progress(event)


def _validate_epoch(loop: _Loop, state: RunState, val_cases: list[CachedCase], epoch: int) -> float:
    """Validation Dice after ``epoch``; a new best is kept (its weights until the next
    checkpoint), else the epochs without improvement grow."""
    model = loop.network.model
    num_classes = loop.network.model_cfg.num_classes
    val_dice = _validate(model, val_cases, loop.cfg, num_classes, loop.device, loop.dist_info)
    if val_dice > state.best_dice:
        state.best_dice, state.best_epoch = val_dice, epoch
        state.epochs_without_improvement = 0
        if loop.dist_info.main:
            loop.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
    else:
        state.epochs_without_improvement += loop.cfg.val_every
    return val_dice


def _log_epoch(loop: _Loop, row: dict[str, Any]) -> None:
    """The epoch's row into log.csv and TensorBoard (rank 0), and to ``progress``."""
    if not loop.dist_info.main:
        return
    _write_log_row(loop.out / "log.csv", row)
    if loop.tb is not None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, int | float):
                loop.tb.add_scalar(k, v, row["epoch"])
    if loop.progress is not None:
        loop.progress({"event": "epoch", **row})


def _checkpoint_due(loop: _Loop) -> bool:
    return (time.monotonic() - loop.last_checkpoint) / 60.0 >= loop.cfg.checkpoint_minutes


def _checkpoint(loop: _Loop, state: RunState) -> None:
    """The whole resumable state on disk (rank 0): weights, optimiser, scaler, schedule."""
    state.seconds = loop.seconds_before + time.monotonic() - loop.t_start
    if loop.dist_info.main:
        state.scaler = loop.opt.scaler.state_dict() if loop.opt.scaler.is_enabled() else None
        state.scheduler = loop.scheduler.state_dict()
        _write_checkpoint(
            loop.out, state, loop.network.model, loop.opt.optimizer, loop.best_weights
        )
    loop.best_weights = None
    loop.last_checkpoint = time.monotonic()


def _final_card(
    loop: _Loop, state: RunState, stopped: str, n_cases: tuple[int, int], campaign: bool
) -> dict[str, Any]:
    """The card of the final weights: the model's, plus how the run trained and validated."""
    cfg = loop.cfg
    training = {
        "epochs": state.epoch,
        "steps": state.global_step,
        "seconds": round(state.seconds, 1),
        "stopped": stopped,
        "train_cases": n_cases[0],
        "val_cases": n_cases[1],
        "data_root": str(cfg.data.root),
        "config": to_dict(cfg),
        **({"campaign": str(loop.out), "pieces": state.pieces} if campaign else {}),
    }
    validation = {"dice": state.best_dice, "epoch": state.best_epoch}
    return model_card(cfg, loop.network.model_cfg, {"training": training, "validation": validation})


def _save_final_weights(loop: _Loop, card: dict[str, Any]) -> None:
    """The best validated weights (else the last) with their card: ``model.safetensors``,
    or for an adapter fine-tune the adapter folder tied to the base weights."""
    cfg, out, handle = loop.cfg, loop.out, loop.network.handle
    best = out / "checkpoints" / "best.safetensors"
    weights = _load_tensors(best if best.is_file() else out / "checkpoints" / "last.safetensors")
    if handle is not None and cfg.init_weights:
        from mefn.adapters import save_adapter
        from mefn.fileutil import file_sha256

        loop.network.model.load_state_dict(weights)
        save_adapter(
            handle,
            out / "adapter",
            base_model_hash=file_sha256(Path(cfg.init_weights)),
            labels=_labels(loop.network.model_cfg.num_classes) if handle.num_classes else None,
        )
        atomic_write_text(out / "adapter" / "training.json", json.dumps(card, indent=1))
    else:
        _save_tensors(weights, out / "model.safetensors", {"format": "mefn-weights/1"})
        atomic_write_text(out / "model.json", json.dumps(card, indent=1))


def _truncate_log(path: Path, epochs: int) -> None:
    """Drop the rows of epochs after ``epochs`` (logged after the checkpoint a run resumes)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    kept = [r for r in rows if int(r["epoch"]) <= epochs]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(kept)


def _write_log_row(path: Path, row: dict[str, Any]) -> None:
    exists = path.is_file()
    fields = list(row)
    if exists:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        fields = header + [k for k in row if k not in header]
        if fields != header:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            with path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if not exists:
            w.writeheader()
        w.writerow(row)
