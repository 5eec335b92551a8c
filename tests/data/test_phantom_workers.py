"""Phantoms on several processes: write_phantoms(workers=...) and cache_phantoms (the GPU
burst's phantoms, straight into the training cache without SimpleITK)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mefn.data.phantoms import write_phantoms
from mefn.data.phantoms.cache import cache_phantoms, resample_array
from mefn.data.preprocess import PreprocessConfig
from mefn.errors import ConfigError
from mefn.io.volume import Geometry, Volume


def _without_timing(record: dict) -> dict:
    for study in record["studies"]:
        study["meta"].pop("seconds")
    return record


@pytest.mark.slow  # worker processes start a fresh interpreter each
def test_write_phantoms_on_two_processes_writes_the_serial_files(tmp_path):
    from mefn.io.readers import read_volume

    serial = write_phantoms(tmp_path / "a", 3, "nnunet", seed=4, small=True, n_lesions=1)
    seen: list[int] = []
    parallel = write_phantoms(
        tmp_path / "b", 3, "nnunet", seed=4, small=True, n_lesions=1, workers=2,
        progress=lambda i, n, name, study, s: seen.append(i),
    )  # fmt: skip
    assert seen == [1, 2, 3] and [p.name for p in serial] == [p.name for p in parallel]
    a = _without_timing(json.loads((tmp_path / "a" / "phantoms.json").read_text()))
    b = _without_timing(json.loads((tmp_path / "b" / "phantoms.json").read_text()))
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))
    assert len(files) == 9
    for rel in files:
        va, vb = read_volume(tmp_path / "a" / rel), read_volume(tmp_path / "b" / rel)
        assert np.array_equal(va.array, vb.array) and va.geometry == vb.geometry, rel


def test_write_phantoms_refuses_a_bad_worker_count(tmp_path):
    with pytest.raises(ConfigError, match="workers must be a positive number of processes"):
        write_phantoms(tmp_path, 2, "nnunet", seed=0, small=True, workers=0)


def test_cli_phantoms_refuses_negative_workers(tmp_path, capsys):
    from mefn.cli import main

    assert main(["phantoms", str(tmp_path / "p"), "--n", "1", "--workers", "-1"]) == 2
    assert "--workers must be 0 (one per CPU core)" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_resample_array_agrees_with_simpleitk():
    from mefn.io.geometry import resample_to

    rng = np.random.default_rng(3)
    source = Volume.from_array(
        rng.uniform(0, 10, size=(13, 11, 9)).astype(np.float32),
        spacing_mm=(2.5, 3.0, 4.0),
        origin_mm=(30.0, -20.0, 5.0),
        direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1),
    )
    grid = Geometry(shape=(9, 12, 11), spacing_mm=(4.0, 3.5, 3.0), origin_mm=(-8.1, -24.2, -33.3))
    ours = resample_array(source, grid, 1, -7.0)
    theirs = resample_to(source, grid, "linear", -7.0).array
    assert (ours == -7.0).any() and (ours != -7.0).any()  # the grid sticks out of the source
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    labels = source.with_array((source.array > 5).astype(np.uint8))
    nearest = resample_array(labels, grid, 0, 0)
    assert nearest.dtype == np.uint8
    assert np.array_equal(nearest, resample_to(labels, grid, "nearest", 0).array)


def test_cache_phantoms_equals_the_simpleitk_cache(tmp_path):
    from mefn.data.cache import cache_case
    from mefn.data.phantoms import generate_study, render_ct
    from mefn.io.case import Case

    cfg = PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0))
    reports: list = []
    (ours,) = cache_phantoms(
        tmp_path / "c", 1, 7, cfg, small=True, n_lesions=2,
        progress=lambda i, n, p: reports.append(p),
    )  # fmt: skip
    # what `mefn train` caches from the nnU-Net layout of the same study (SimpleITK)
    study = generate_study(700_000, small=True, n_lesions=2)
    assert study.scene is not None
    case = Case(
        case_id="ref",
        ct=render_ct(study.scene, study.pet.geometry, stream=1),
        pet=study.pet,
        label=study.label_pet.with_array((study.label_pet.array > 0).astype(np.uint8)),
    )
    ref = cache_case(case, cfg, tmp_path / "ref")
    assert ours.grid == ref.grid and ours.label.sum() > 0
    for name in ("ct_hu", "suv", "label", "body_indices", "hot_indices"):
        assert np.array_equal(np.asarray(getattr(ours, name)), np.asarray(getattr(ref, name)))
    assert ours.fg_indices.keys() == ref.fg_indices.keys() == {1}
    assert reports[0].lesions == len(study.lesions) and not reports[0].reused
    # a second call finds the study cached with the same recipe
    cache_phantoms(
        tmp_path / "c", 1, 7, cfg, small=True, n_lesions=2,
        progress=lambda i, n, p: reports.append(p),
    )  # fmt: skip
    assert reports[1].reused and reports[1].lesions == reports[0].lesions


@pytest.mark.slow  # worker processes start a fresh interpreter each
def test_cache_phantoms_on_two_processes_and_bad_counts(tmp_path):
    cfg = PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0))
    serial = cache_phantoms(tmp_path / "a", 2, 9, cfg, small=True)
    parallel = cache_phantoms(tmp_path / "b", 2, 9, cfg, small=True, workers=2)
    assert [c.case_id for c in serial] == [c.case_id for c in parallel]
    assert all(np.array_equal(a.suv, b.suv) for a, b in zip(serial, parallel))
    with pytest.raises(ConfigError, match="n must be a positive number of studies, found 0"):
        cache_phantoms(tmp_path / "c", 0, 9, cfg)
    with pytest.raises(ConfigError, match="workers must be a positive number of processes"):
        cache_phantoms(tmp_path / "c", 1, 9, cfg, workers=0)
