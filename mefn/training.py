"""One training loop for training and fine-tuning, on one CPU/GPU or under torchrun (DDP).

``train(cfg, output_dir)`` runs a whole training described by a :class:`TrainConfig`:
it indexes the dataset, splits it by patient, caches the cases in model space, samples
augmented patches, optimises the model's own loss, validates with sliding-window inference
(Dice), keeps the best and the last checkpoint (safetensors + JSON, never pickles), logs to
CSV and TensorBoard, stops early, and resumes a run where it stopped.

Under ``torchrun`` each process trains on its share of the training cases with its own
random stream; gradients are averaged by DistributedDataParallel; validation cases are
split across processes and the Dice sums reduced; only rank 0 writes files.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    "DataConfig",
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "resolve_model_config",
    "train",
]

logger = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DataConfig:
    """Where the training cases are and how they are split."""

    root: str = ""
    layout: Literal["auto", "autopet", "nnunet", "hecktor"] = "auto"
    val_fraction: float = 0.2
    split_seed: int = 0
    max_cases: int | None = None
    cache_dir: str | None = None


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
    init_weights: str | None = None
    adapter: str | None = None
    num_classes: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(
                f"num_classes must be at least 2 (background + classes), found {self.num_classes}"
            )
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_every", "sw_batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, found {value}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be a positive number, found {self.lr}")
        if self.max_minutes is not None and not self.max_minutes >= 0:  # 0: one epoch
            raise ConfigError(f"max_minutes must be 0 or more, found {self.max_minutes}")
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
# data
# --------------------------------------------------------------------------------------------
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
        from mefn.inference import sliding_window_predict

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
# the loop
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


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may use the global stream
    torch.manual_seed(seed)


def train(
    cfg: TrainConfig,
    output_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    config_dir: Path | None = None,
    model_cfg: Any = None,
) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; files go to ``output_dir``.

    ``progress`` is called after every step with a dict (epoch, step, loss, lr ...) and
    after every validation; the CLI turns it into a progress bar.
    """
    import torch

    from mefn.model import build_loss, build_model

    t_start = time.monotonic()
    out = Path(output_dir)
    if model_cfg is None:
        model_cfg = resolve_model_config(cfg.model, config_dir)
    base_model_cfg = model_cfg

    def run_model_cfg(num_classes: int) -> Any:
        return replace(base_model_cfg, num_classes=num_classes)

    if cfg.adapter and not cfg.init_weights:
        raise ConfigError("fine-tuning an adapter needs init_weights: the base weights file")
    device_kind = (
        "cuda"
        if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()))
        else "cpu"
    )
    dist_info = _init_distributed(device_kind)
    device = _pick_device(cfg.device, dist_info)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    last_state = out / "checkpoints" / "last_state.json"
    if out.exists() and any(out.iterdir()) and not resume and last_state.is_file():
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it or choose another -o"
        )
    # the data is indexed before anything is written: a wrong folder leaves no half-made run
    train_entries, val_entries = _index_cases(cfg)
    if dist_info.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")

    _seed_everything(cfg.seed + 1000 * dist_info.rank)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    # every rank caches its own share, then all read the whole cache
    my_entries = (train_entries + val_entries)[dist_info.rank :: dist_info.world]
    _cache_all(my_entries, cfg, cache_dir)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    train_cases = _cache_all(train_entries, cfg, cache_dir)
    val_cases = _cache_all(val_entries, cfg, cache_dir)
    if cfg.val_max_cases is not None:
        val_cases = val_cases[: cfg.val_max_cases]
    my_train = train_cases[dist_info.rank :: dist_info.world] or train_cases

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
    # an adapter replaces the heads of the base model; full fine-tuning builds the new model
    model = build_model(model_cfg if adapter_cfg is not None else run_model_cfg(num_classes))
    model.to(device)
    if cfg.init_weights:
        _load_init(model, Path(cfg.init_weights), cfg.model, skip_heads=new_heads)
    handle = None
    if adapter_cfg is not None:
        from mefn.adapters import inject_adapters

        handle = inject_adapters(model, adapter_cfg)
        model.to(device)
    model_cfg = run_model_cfg(num_classes)
    if dist_info.main:
        save_config(model_cfg, out / "model_config.yaml")
    loss_fn = build_loss(model_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    base_lr = cfg.lr * (adapter_cfg.lr_scale if adapter_cfg is not None else 1.0)
    optimizer = torch.optim.AdamW(params, lr=base_lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch

    state: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "best_dice": -1.0,
        "best_epoch": -1,
        "epochs_without_improvement": 0,
        "seconds": 0.0,
        "rng": None,
    }
    if resume and last_state.is_file():
        state = json.loads(last_state.read_text())
        model.load_state_dict(_load_tensors(out / "checkpoints" / "last.safetensors"))
        opt_tensors = _load_tensors(out / "checkpoints" / "last_optimizer.safetensors")
        _optimizer_from_flat(optimizer, opt_tensors, state["optimizer"])
        logger.info("resuming %s at epoch %d", out, state["epoch"])
    sampler = PatchSampler(
        my_train,
        cfg.patch_size_vox,
        cfg.preprocess,
        cfg.augment,
        cfg.pos_fraction,
        np.random.default_rng(cfg.seed),
        hot_negative_fraction=cfg.hot_negative_fraction,
        hot_suv=cfg.hot_negative_suv,
        hot_balance=cfg.hot_negative_balance,
    )

    net: Any = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        amp_dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    log_path = out / "log.csv"
    tb = None
    if dist_info.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            tb = None

    stopped = "epochs"
    model.train()
    epoch = int(state["epoch"])
    seconds_before = float(state["seconds"])
    while epoch < cfg.epochs:
        sums: dict[str, float] = {}
        t_epoch = time.monotonic()
        # Re-seed every epoch from (seed, rank, epoch): a resumed run draws the same patches
        # and dropout masks as an uninterrupted one.
        sampler.rng = np.random.default_rng([cfg.seed, dist_info.rank, epoch])
        torch.manual_seed(cfg.seed * 100_003 + dist_info.rank * 1009 + epoch)
        for _ in range(cfg.steps_per_epoch):
            step = int(state["global_step"])
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(step, total_steps, cfg.warmup_steps)
            x_np, y_np = sampler.batch(cfg.batch_size)
            x = torch.from_numpy(x_np).to(device)
            y = torch.from_numpy(y_np).to(device)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                output = net(x)
                losses = loss_fn(output, y, x, epoch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise CheckpointError(
                    f"training diverged at step {step} (loss {loss.item()}); lower lr in the config"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if handle is not None:
                handle.on_step()
            state["global_step"] = step + 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if progress is not None and dist_info.main:
                progress(
                    {
                        "event": "step",
                        "epoch": epoch,
                        "step": step + 1,
                        "loss": float(loss.detach()),
                    }
                )
        epoch += 1
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": state["global_step"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.monotonic() - t_epoch, 2),
        }
        row.update({k: v / cfg.steps_per_epoch for k, v in sums.items()})
        val_dice = None
        out_of_time = (
            cfg.max_minutes is not None and (time.monotonic() - t_start) / 60.0 >= cfg.max_minutes
        )
        # the last epoch (planned or cut by the time budget) is always validated, so the
        # weights kept are the best of everything validated, the final state included
        if val_cases and (epoch % cfg.val_every == 0 or epoch == cfg.epochs or out_of_time):
            val_dice = _validate(model, val_cases, cfg, model_cfg.num_classes, device, dist_info)
            row["val_dice"] = val_dice
            if val_dice > state["best_dice"]:
                state["best_dice"], state["best_epoch"] = val_dice, epoch
                state["epochs_without_improvement"] = 0
                if dist_info.main:
                    _save_tensors(
                        model.state_dict(),
                        out / "checkpoints" / "best.safetensors",
                        {"epoch": str(epoch)},
                    )
            else:
                state["epochs_without_improvement"] += cfg.val_every
        state["epoch"] = epoch
        state["seconds"] = seconds_before + time.monotonic() - t_start
        if dist_info.main:
            _write_log_row(log_path, row)
            if tb is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, int | float):
                        tb.add_scalar(k, v, epoch)
            opt_tensors, opt_extra = _optimizer_to_flat(optimizer)
            _save_tensors(
                model.state_dict(), out / "checkpoints" / "last.safetensors", {"epoch": str(epoch)}
            )
            _save_tensors(opt_tensors, out / "checkpoints" / "last_optimizer.safetensors", {})
            atomic_write_text(last_state, json.dumps({**state, "optimizer": opt_extra}, indent=1))
        if progress is not None and dist_info.main:
            progress({"event": "epoch", **row})
        if state["epochs_without_improvement"] >= cfg.early_stop_patience:
            stopped = "early_stop"
            break
        if out_of_time:
            stopped = "time_budget"
            break

    if dist_info.main:
        best = out / "checkpoints" / "best.safetensors"
        src = best if best.is_file() else out / "checkpoints" / "last.safetensors"
        weights = _load_tensors(src)
        card = model_card(
            cfg,
            model_cfg,
            {
                "training": {
                    "epochs": epoch,
                    "steps": state["global_step"],
                    "seconds": round(state["seconds"], 1),
                    "stopped": stopped,
                    "train_cases": len(train_cases),
                    "val_cases": len(val_cases),
                    "data_root": str(cfg.data.root),
                    "config": to_dict(cfg),
                },
                "validation": {"dice": state["best_dice"], "epoch": state["best_epoch"]},
            },
        )
        if handle is not None and cfg.init_weights:
            from mefn.adapters import save_adapter
            from mefn.fileutil import file_sha256

            model.load_state_dict(weights)
            save_adapter(
                handle,
                out / "adapter",
                base_model_hash=file_sha256(Path(cfg.init_weights)),
                labels=_labels(model_cfg.num_classes) if handle.num_classes else None,
            )
            atomic_write_text(out / "adapter" / "training.json", json.dumps(card, indent=1))
        else:
            _save_tensors(weights, out / "model.safetensors", {"format": "mefn-weights/1"})
            atomic_write_text(out / "model.json", json.dumps(card, indent=1))
    if tb is not None:
        tb.close()
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(
        output_dir=out,
        epochs_done=epoch,
        best_dice=float(state["best_dice"]),
        best_epoch=int(state["best_epoch"]),
        stopped=stopped,
        seconds=float(state["seconds"]),
    )


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
