"""End-to-end training on tiny phantoms: files, logs, resume, DDP (gloo, 2 CPU processes)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from support import TINY_MODEL_YAML

from mefn.config import save_config
from mefn.data.preprocess import PreprocessConfig
from mefn.errors import CheckpointError, ConfigError, InputError
from mefn.training import DataConfig, TrainConfig, build_lr_scheduler, lr_factor, train

TINY_MODEL = (
    TINY_MODEL_YAML
    + """\
loss:
  kl_anneal_epochs: 2
  uncertainty_anneal_epochs: 2
"""
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from mefn.data.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(root, n=4, layout="nnunet", seed=7, small=True, n_lesions=2)
    return root


def _config(tmp: Path, data: Path, **changes) -> TrainConfig:
    model = tmp / "tiny.yaml"
    model.write_text(TINY_MODEL)
    cfg = TrainConfig(
        model=str(model),
        data=DataConfig(root=str(data), val_fraction=0.3, cache_dir=str(tmp / "cache")),
        preprocess=PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0)),
        patch_size_vox=(24, 24, 24),
        batch_size=1,
        epochs=2,
        steps_per_epoch=2,
        warmup_steps=1,
        val_every=1,
        val_max_cases=1,
        threads=1,
    )
    return replace(cfg, **changes)


def _log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_train_writes_weights_card_logs(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data)
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert result.epochs_done == 2 and result.stopped == "epochs"
    assert (run / "model.safetensors").is_file()
    card = json.loads((run / "model.json").read_text())
    assert card["model"]["architecture"] == "mefn" and card["labels"]["1"] == "lesion"
    assert card["training"]["steps"] == 4
    rows = _log(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # the lr logged is the one of the epoch's last step
    assert [float(r["lr"]) for r in rows] == [cfg.lr * lr_factor(s - 1, 4, 1) for s in (2, 4)]
    assert all(float(r["loss"]) > 0 for r in rows) and "val_dice" in rows[0]
    assert (run / "train_config.yaml").is_file() and any((run / "tensorboard").iterdir())
    # a second run into the same folder without --resume is refused
    with pytest.raises(InputError, match="pass --resume"):
        train(cfg, run)


def test_resume_continues_the_same_run(tmp_path, tiny_data):
    from safetensors.torch import load_file

    straight = train(_config(tmp_path, tiny_data, epochs=3), tmp_path / "straight")
    # the same run (same schedule), stopped by its time budget after the first epoch
    first = train(_config(tmp_path, tiny_data, epochs=3, max_minutes=0.0), tmp_path / "split")
    assert first.stopped == "time_budget" and first.epochs_done == 1
    saved = json.loads((tmp_path / "split" / "checkpoints" / "last_state.json").read_text())
    assert saved["global_step"] == saved["scheduler"]["last_epoch"] == 2  # the lr schedule's
    resumed = train(_config(tmp_path, tiny_data, epochs=3), tmp_path / "split", resume=True)
    assert resumed.epochs_done == straight.epochs_done == 3
    assert [r["epoch"] for r in _log(tmp_path / "split")] == ["1", "2", "3"]
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-5, key


def test_missing_data_folder_is_reported(tmp_path):
    cfg = _config(tmp_path, tmp_path / "nowhere")
    with pytest.raises(InputError, match="does not exist"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing half-made is left behind


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", 0, "epochs must be at least 1, found 0"),
        ("batch_size", -2, "batch_size must be at least 1"),
        ("lr", -0.1, "lr must be a positive number"),
        ("max_minutes", -1.0, "max_minutes must be 0 or more, found -1.0"),
        ("patch_size_vox", (48, 0, 48), "three positive voxel counts"),
        ("pos_fraction", 0.9, "add up to at most 1, found 0.9 and 0.25"),
        ("sw_overlap", 1.0, r"sw_overlap must lie in \[0, 1\)"),
    ],
)
def test_bad_training_settings_are_refused(key, value, message):
    base = {"hot_negative_fraction": 0.25}
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{**base, key: value})


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data)
    save_config(cfg, tmp_path / "train.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "mefn",
            "-q",
            "train",
            "--config",
            str(tmp_path / "train.yaml"),
            "-o",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert card["training"]["steps"] == 4
    assert len(_log(tmp_path / "ddp")) == 2


def test_hot_negative_patches_centre_on_unlabelled_uptake(tmp_path):
    import numpy as np

    from mefn.data.augment import AugmentConfig, PatchSampler
    from mefn.data.cache import cache_case
    from mefn.data.preprocess import PreprocessConfig
    from mefn.io.case import Case
    from mefn.io.volume import Volume

    shape = (40, 41, 42)
    suv = np.full(shape, 0.5, np.float32)
    suv[30:34, 30:34, 30:34] = 8.0  # "bladder": hot, unlabelled
    suv[20:22, 20:22, 20:22] = 2.5  # warm, below the sampler's threshold
    label = np.zeros(shape, np.uint8)
    label[5:8, 5:8, 5:8] = 1
    suv[5:8, 5:8, 5:8] = 6.0
    spacing = (3.0, 3.0, 3.0)
    case = Case(
        case_id="c",
        ct=Volume.from_array(np.zeros(shape, np.float32), spacing),
        pet=Volume.from_array(suv, spacing),
        label=Volume.from_array(label, spacing),
    )
    cfg = PreprocessConfig(spacing_mm=spacing)
    cached = cache_case(case, cfg, tmp_path)
    assert cached.hot_indices.size == 4 * 4 * 4 + 2 * 2 * 2  # every unlabelled voxel > SUV 2
    sampler = PatchSampler(
        [cached],
        (8, 8, 8),
        cfg,
        AugmentConfig(),
        0.0,
        np.random.default_rng(0),
        hot_negative_fraction=1.0,
        hot_suv=3.0,
    )
    assert sampler.hot_indices[0].size == 4 * 4 * 4
    for _ in range(5):
        ct, pet, lab, _ = sampler.sample_raw()
        assert pet.max() == 8.0 and lab.sum() == 0  # centred on the unlabelled hot region


def test_cached_cases_are_not_read_again(tmp_path):
    import numpy as np

    from mefn.data.cache import cache_case
    from mefn.data.preprocess import PreprocessConfig
    from mefn.io.case import Case
    from mefn.io.volume import Volume

    calls = []

    def load() -> Case:
        calls.append(1)
        ct = Volume.from_array(np.full((9, 10, 11), 40.0, np.float32), (4.0, 4.0, 4.0))
        pet = Volume.from_array(np.ones((9, 10, 11), np.float32), (4.0, 4.0, 4.0))
        return Case(case_id="a b", ct=ct, pet=pet)

    cfg = PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0))
    first = cache_case(load, cfg, tmp_path, case_id="a b")
    second = cache_case(load, cfg, tmp_path, case_id="a b")
    assert len(calls) == 1 and first.shape == second.shape == (5, 5, 6)
    cache_case(load, PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0)), tmp_path, case_id="a b")
    assert len(calls) == 2  # other preprocessing: rebuilt


def test_lr_schedule_warms_up_then_follows_a_cosine_to_one_percent():
    warm = [lr_factor(s, total=100, warmup=10) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    after = [lr_factor(s, total=100, warmup=10) for s in range(10, 101)]
    assert after[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(after, after[1:]))  # never rises after the warm-up
    assert lr_factor(55, total=100, warmup=10) == pytest.approx(0.505)  # half way: the mid-point
    assert lr_factor(100, total=100, warmup=10) == pytest.approx(0.01)
    assert lr_factor(500, total=100, warmup=10) == pytest.approx(0.01)  # held past the end


def _old_lr_factor(step: int, total: int, warmup: int) -> float:
    """The schedule as the loop computed it before it became a torch scheduler."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * 0.99 + 0.01


def _optimizer(lr: float):
    import torch

    return torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=lr)


def _lrs(optimizer, scheduler, steps: int) -> list[float]:
    """The learning rates of the next ``steps`` optimiser steps."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(("total", "warmup"), [(37, 5), (10, 0), (4, 9)])
def test_lr_scheduler_gives_the_old_lr_at_every_step(total, warmup):
    optimizer = _optimizer(3e-3)
    lrs = _lrs(optimizer, build_lr_scheduler(optimizer, total, warmup), total + 6)
    assert lrs == [3e-3 * _old_lr_factor(s, total, warmup) for s in range(total + 6)]  # exact
    assert lrs == [3e-3 * lr_factor(s, total, warmup) for s in range(total + 6)]


def test_lr_scheduler_resumed_from_its_saved_state_continues_to_the_bit():
    from mefn.training import RunState, _resume_lr_scheduler

    cfg = TrainConfig(lr=2e-3, epochs=5, steps_per_epoch=7, warmup_steps=6)
    optimizer = _optimizer(cfg.lr)
    scheduler = build_lr_scheduler(optimizer, 35, 6)
    straight = _lrs(optimizer, scheduler, 35)
    optimizer = _optimizer(cfg.lr)
    scheduler = build_lr_scheduler(optimizer, 35, 6)
    before = _lrs(optimizer, scheduler, 11)
    saved = json.loads(json.dumps(scheduler.state_dict()))  # as last_state.json holds it
    state = RunState(global_step=11, scheduler=saved)
    fresh = _optimizer(0.5)  # the optimiser state (param groups) is loaded afterwards anyway
    after = _lrs(fresh, _resume_lr_scheduler(fresh, cfg, state, cfg.lr), 24)
    assert before + after == straight
    # a checkpoint written before the schedule was saved: its step count places it
    fresh = _optimizer(cfg.lr)
    older = _resume_lr_scheduler(fresh, cfg, RunState(global_step=11), cfg.lr)
    assert _lrs(fresh, older, 24) == after
    # resumed with another peak lr (not a campaign): the new one from the next step on
    fresh = _optimizer(cfg.lr)
    other = _resume_lr_scheduler(fresh, replace(cfg, lr=1e-3), state, 1e-3)
    assert _lrs(fresh, other, 3) == [1e-3 * lr_factor(s, 35, 6) for s in (11, 12, 13)]


def test_lr_scheduler_out_of_step_with_its_run_is_refused():
    from mefn.training import RunState, _resume_lr_scheduler

    state = RunState(global_step=3, scheduler={"last_epoch": 5})
    with pytest.raises(CheckpointError, match="stands at step 5 but its run at step 3"):
        _resume_lr_scheduler(_optimizer(1e-3), TrainConfig(), state, 1e-3)


def test_training_functions_stay_under_100_lines():
    import ast

    import mefn.training

    tree = ast.parse(Path(mefn.training.__file__).read_text())
    lengths = {
        n.name: n.end_lineno - n.lineno + 1
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno is not None
    }
    assert "_run" in lengths and "_train_step" in lengths
    assert {k: v for k, v in lengths.items() if v > 100} == {}


def test_hot_negatives_balanced_over_structures(tmp_path):
    """hot_balance="structure": a small hot gland gets as many hard negatives as a large hot
    organ; "voxel": in proportion to its voxels. Specks under 8 voxels are not structures."""
    import numpy as np

    from mefn.data.augment import PatchSampler
    from mefn.data.cache import cache_case
    from mefn.data.preprocess import PreprocessConfig
    from mefn.io.case import Case
    from mefn.io.volume import Volume

    shape = (60, 60, 60)
    suv = np.full(shape, 0.5, np.float32)
    suv[5:25, 5:25, 5:25] = 6.0  # "brain": 8000 voxels
    suv[40:43, 40:43, 40:43] = 4.0  # "gland": 27 voxels
    suv[50, 10, 50] = 5.0  # a noise speck
    spacing = (4.0, 4.0, 4.0)
    case = Case(
        case_id="c",
        ct=Volume.from_array(np.zeros(shape, np.float32), spacing),
        pet=Volume.from_array(suv, spacing),
        label=Volume.from_array(np.zeros(shape, np.uint8), spacing),
    )
    cfg = PreprocessConfig(spacing_mm=spacing)
    cached = cache_case(case, cfg, tmp_path)

    def gland_share(balance: str) -> float:
        from mefn.data.augment import AugmentConfig

        sampler = PatchSampler(
            [cached], (4, 4, 4), cfg, AugmentConfig(), 0.0, np.random.default_rng(1),
            hot_negative_fraction=1.0, hot_suv=3.0, hot_balance=balance,
        )  # fmt: skip
        centres = [sampler._centre(cached, sampler.hot_indices[0],
                                   sampler.hot_starts[0] if sampler.hot_starts else None)
                   for _ in range(2000)]  # fmt: skip
        assert not any((c == (50, 10, 50)).all() for c in centres) or balance == "voxel"
        return float(np.mean([c[0] >= 40 for c in centres]))

    assert gland_share("voxel") < 0.02  # 27 of 8028 voxels
    assert 0.4 < gland_share("structure") < 0.6  # one of two structures
    with pytest.raises(ValueError, match="hot_balance must be voxel or structure"):
        gland_share("organ")


# --- campaigns: resumable state in a folder tracked by git (docs/training.md) -------------------
class _Killed(Exception):
    """Stands for the process being killed: raised from the progress callback."""


def _kill_at(step: int):
    def progress(event: dict) -> None:
        if event["event"] == "step" and event["step"] == step:
            raise _Killed

    return progress


@pytest.mark.slow  # trains tiny runs: tens of seconds on two cores
def test_campaign_killed_mid_way_resumes_on_the_same_data_order(tmp_path, tiny_data):
    import torch
    from safetensors.torch import load_file

    cfg = _config(tmp_path, tiny_data, epochs=3, steps_per_epoch=3)
    straight = train(cfg, tmp_path / "straight", campaign=True)
    assert straight.stopped == "epochs" and straight.epochs_done == 3

    often = replace(cfg, checkpoint_minutes=0.0)  # a checkpoint after every step
    with pytest.raises(_Killed):  # killed in the second epoch's second step
        train(often, tmp_path / "killed", progress=_kill_at(5), campaign=True)
    killed = tmp_path / "killed"
    state = json.loads((killed / "checkpoints" / "last_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert state["rng"]["sampler"]["bit_generator"] == "PCG64"
    assert state["scheduler"]["last_epoch"] == 4
    assert not (killed / "model.safetensors").exists()  # unfinished: no final weights yet

    steps: list[int] = []
    resumed = train(
        often,
        killed,
        progress=lambda e: steps.append(e["step"]) if e["event"] == "step" else None,
        campaign=True,
    )
    assert steps == [5, 6, 7, 8, 9] and resumed.epochs_done == 3
    # the same losses, epoch by epoch, and the same final weights, to the bit
    a, b = _log(tmp_path / "straight"), _log(killed)
    assert [r["epoch"] for r in b] == ["1", "2", "3"]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = load_file(str(tmp_path / "straight" / "model.safetensors"))
    wb = load_file(str(killed / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished campaign trains no more: the same command just reports it
    again = train(often, killed, progress=_kill_at(10), campaign=True)
    assert again.stopped == "epochs" and again.epochs_done == 3 and len(_log(killed)) == 3


@pytest.mark.slow  # trains tiny runs: tens of seconds on two cores
def test_campaign_checkpoint_is_written_at_most_every_checkpoint_minutes(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data, epochs=2, steps_per_epoch=2)  # checkpoint_minutes: 30
    run = tmp_path / "campaign"
    with pytest.raises(_Killed):  # killed in the second epoch: no checkpoint written yet
        train(cfg, run, progress=_kill_at(3), campaign=True)
    assert not (run / "checkpoints" / "last_state.json").exists()
    assert len(_log(run)) == 1  # the first epoch was logged ...
    assert "cache/" in (run / ".gitignore").read_text().splitlines()
    result = train(cfg, run, campaign=True)  # ... and is trained again from the start
    assert result.epochs_done == 2 and [r["epoch"] for r in _log(run)] == ["1", "2"]
    state = json.loads((run / "checkpoints" / "last_state.json").read_text())
    assert state["finished"] == "epochs" and state["pieces"] == 1 and state["rng"] is None


@pytest.mark.slow  # trains tiny runs: tens of seconds on two cores
def test_campaign_refuses_another_config_and_continues_under_free_fields(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data, epochs=3, max_minutes=0.0)
    run = tmp_path / "campaign"
    first = train(cfg, run, campaign=True)
    assert first.stopped == "time_budget" and first.epochs_done == 1
    assert not (run / "model.json").exists()  # weights only once the campaign is finished
    with pytest.raises(ConfigError, match=r"another configuration \(lr 0.002 -> 0.001; seed"):
        train(replace(cfg, lr=1e-3, seed=3), run, campaign=True)
    model = tmp_path / "wider.yaml"
    model.write_text(TINY_MODEL.replace("base_width: 4", "base_width: 6"))
    with pytest.raises(ConfigError, match="model config: base_width 4 -> 6"):
        train(replace(cfg, model=str(model)), run, campaign=True)
    # how long a piece runs and on which device may change from one piece to the next
    second = train(replace(cfg, max_minutes=None, threads=2), run, campaign=True)
    assert second.stopped == "epochs" and second.epochs_done == 3
    card = json.loads((run / "model.json").read_text())
    assert card["training"]["pieces"] == 2 and card["training"]["steps"] == 6


@pytest.mark.slow  # trains tiny runs: tens of seconds on two cores
def test_campaign_refuses_other_training_cases(tmp_path, tiny_data):
    from mefn.data.cache import load_cached_case
    from mefn.training import train_on_cases

    cfg = _config(tmp_path, tiny_data, epochs=2, max_minutes=0.0)
    train(cfg, tmp_path / "campaign", campaign=True)
    cases = [load_cached_case(p) for p in sorted((tmp_path / "cache").iterdir())]
    with pytest.raises(InputError, match="was trained on other cases than the 1 training"):
        train_on_cases(cfg, tmp_path / "campaign", cases[:1], cases[1:2], campaign=True)


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    from mefn.training import _recover_checkpoints

    old = tmp_path / "checkpoints.old"
    old.mkdir()
    (old / "last_state.json").write_text('{"epoch": 4}')
    (tmp_path / "checkpoints.tmp").mkdir()  # a half-written new one
    _recover_checkpoints(tmp_path)
    assert json.loads((tmp_path / "checkpoints" / "last_state.json").read_text()) == {"epoch": 4}
    assert not old.exists() and not (tmp_path / "checkpoints.tmp").exists()


@pytest.mark.slow  # trains tiny runs: tens of seconds on two cores
def test_cli_campaign_piece_says_how_to_continue(tmp_path, tiny_data, capsys):
    from mefn.cli import main

    save_config(_config(tmp_path, tiny_data, epochs=2), tmp_path / "train.yaml")
    argv = ["train", "--config", str(tmp_path / "train.yaml"), "--campaign", str(tmp_path / "c")]
    assert main([*argv, "--max-minutes", "0"]) == 0
    assert "run the same command to continue" in capsys.readouterr().out
    assert main([*argv, "--checkpoint-minutes", "5"]) == 0
    assert "trained 2 epochs (epochs)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # -o and --campaign name the same thing: one of them
        main([*argv, "-o", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="checkpoint_minutes must be 0"):
        TrainConfig(checkpoint_minutes=-1.0)


@pytest.mark.slow  # two training processes: tens of seconds on two cores
def test_processes_train_data_parallel_like_torchrun(tmp_path, tiny_data, capsys):
    """``processes: 2`` makes ``mefn train`` start two ranks itself: the weights are those of
    the same config run under torchrun with two ranks (same seeds per rank, averaged
    gradients), and rank 0 alone prints."""
    from safetensors.torch import load_file

    from mefn.cli import main

    cfg = _config(tmp_path, tiny_data, processes=2)
    save_config(cfg, tmp_path / "train.yaml")
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "-o", str(tmp_path / "p")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_port", "29541", "-m", "mefn", "-q", "train"]
    torchrun += ["--config", str(tmp_path / "train.yaml"), "-o", str(tmp_path / "t")]
    proc = subprocess.run(torchrun, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = load_file(str(tmp_path / "p" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "t" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].equal(theirs[key]), key
    card = json.loads((tmp_path / "p" / "model.json").read_text())
    assert card["training"]["steps"] == 4 and len(_log(tmp_path / "p")) == 2


@pytest.mark.slow  # two training processes
def test_a_failing_rank_stops_the_others_with_one_line(tmp_path, tiny_data, capfd):
    from mefn.cli import main

    cfg = _config(tmp_path, tiny_data, processes=2)
    save_config(cfg, tmp_path / "train.yaml")
    missing = ["--data", str(tmp_path / "nowhere")]
    code = main(
        ["train", "--config", str(tmp_path / "train.yaml"), "-o", str(tmp_path / "p")] + missing
    )
    assert code == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "nowhere" in errors[0], errors


@pytest.mark.slow  # trains two tiny runs
def test_cli_train_calibrates_the_card_on_its_validation_cases(tmp_path, tiny_data, capsys):
    from mefn.cli import main

    save_config(_config(tmp_path, tiny_data), tmp_path / "train.yaml")
    argv = ["train", "--config", str(tmp_path / "train.yaml"), "-o"]
    assert main([*argv, str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'a' / 'model.json'}: lesion threshold" in out
    # one validation case without a predicted lesion: no lesion confidence to fit, said so
    assert "mefn train: warning: lesion confidence and voxel error map not fitted" in err
    card = json.loads((tmp_path / "a" / "model.json").read_text())
    record = card["calibration"]
    assert record["data"] == "validation split of the run" and record["cases"] >= 1
    assert card["lesion_threshold"] == record["lesion_threshold"]
    assert card["pet_check"] == record["pet_check"]
    assert main([*argv, str(tmp_path / "b"), "--no-calibrate"]) == 0
    assert "calibration" not in json.loads((tmp_path / "b" / "model.json").read_text())


def test_cli_train_on_every_case_skips_the_calibration_with_a_warning(tmp_path, tiny_data, capsys):
    from mefn.cli import main
    from mefn.data.datasets import index_dataset

    ids = [e.patient_id for e in index_dataset(tiny_data)]
    folds = tmp_path / "folds.yaml"
    folds.write_text(f"folds:\n  - {ids[:2]}\n  - {ids[2:]}\n".replace("'", ""))
    cfg = _config(tmp_path, tiny_data, epochs=1)
    save_config(
        replace(cfg, data=replace(cfg.data, folds=str(folds), fold="all")), tmp_path / "t.yaml"
    )
    assert main(["train", "--config", str(tmp_path / "t.yaml"), "-o", str(tmp_path / "run")]) == 0
    assert "mefn train: warning: no validation cases (fold all)" in capsys.readouterr().err
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (card["training"]["train_cases"], card["training"]["val_cases"]) == (4, 0)
    assert "calibration" not in card
