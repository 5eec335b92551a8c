"""Synthetic PET/CT phantoms: determinism, tissue values, labels, grids, layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mefn.data.phantom_anatomy import CONTRAST_HU, TISSUE_RANGES, WIDEN, build_anatomy
from mefn.data.phantom_layouts import case_name, write_phantoms, write_study
from mefn.data.phantom_lesions import Lesion, LesionShape, recovery_coefficient, sample_lesions
from mefn.data.phantom_shapes import Capsule, Ellipsoid, Layer, SmoothField, paint_layers
from mefn.data.phantoms import PhantomStudy, generate_study, render_labels, study_layers
from mefn.errors import ConfigError, OutputError
from mefn.io.sitk_bridge import from_sitk
from mefn.io.volume import Geometry, Volume


def _read(path: Path) -> Volume:
    return from_sitk(sitk.ReadImage(str(path)))


def _value_at(volume: Volume, point: tuple[float, float, float]) -> float | None:
    """Median over the 3x3x3 voxels around the voxel nearest ``point`` (None outside)."""
    idx = np.round(volume.geometry.world_to_index(np.asarray(point))).astype(int)
    if np.any(idx < 1) or np.any(idx >= np.asarray(volume.shape) - 1):
        return None
    i, j, k = idx
    return float(np.median(volume.array[i - 1 : i + 2, j - 1 : j + 2, k - 1 : k + 2]))


# --- shapes: hand-checked volumes -------------------------------------------------------------
def test_sphere_label_volume_matches_analytic_volume() -> None:
    r = 12.0
    sphere = LesionShape(((3.3, -7.1, 40.2, r),), ())
    assert sphere.volume_ml() == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.02)
    # y axis flipped: the grid covers x -15..20, y 8..-22, z 18..62 mm
    geo = Geometry((33, 34, 35), (1.1, 0.9, 1.3), (-15.0, 8.0, 18.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))
    lesion = Lesion(
        site="test",
        label=1,
        center_mm=(3.3, -7.1, 40.2),
        shape=sphere,
        core=None,
        diameter_mm=2 * r,
        volume_true_ml=sphere.volume_ml(),
        suv_peak=5.0,
        background_suv=1.0,
        heterogeneity=0.1,
        texture=SmoothField(()),
        core_suv=0.0,
        hu=40.0,
        core_hu=0.0,
        ct_appearance="soft tissue",
    )
    labels, masks = render_labels([lesion], geo)
    counted = labels.sum() * geo.voxel_volume_ml
    assert counted == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.03)
    # every labelled voxel centre is inside the sphere, every voxel centre inside is labelled
    centres = geo.index_to_world(np.argwhere(np.ones(geo.shape, bool))).reshape(*geo.shape, 3)
    inside = np.linalg.norm(centres - np.array([3.3, -7.1, 40.2]), axis=-1) < r
    assert np.array_equal(labels > 0, inside)
    assert masks[0] is not None and np.array_equal(masks[0], inside)


def test_partial_volume_is_half_at_the_surface() -> None:
    geo = Geometry((33, 5, 5), (2.0, 2.0, 2.0), (-32.0, -4.0, -4.0))
    arr = np.zeros(geo.shape, np.float32)
    # a big sphere whose surface passes through voxel centre x = 0 (index 16)
    paint_layers(
        arr,
        geo,
        [Layer("s", Ellipsoid((-500.0, 0.0, 0.0), (500.0, 500.0, 500.0)), 10.0, None)],
        "hu",
    )
    assert arr[16, 2, 2] == pytest.approx(5.0, abs=0.05)
    assert arr[10, 2, 2] == pytest.approx(10.0)
    assert arr[20, 2, 2] == pytest.approx(0.0)


def test_capsule_distance() -> None:
    cap = Capsule((0.0, 0.0, 0.0), (0.0, 0.0, 10.0), 2.0, 2.0)
    d = cap.sdf(
        np.float32([5.0, 0.0, 0.0]), np.float32([0.0, 0.0, 0.0]), np.float32([5.0, 0.0, 14.0])
    )
    assert d == pytest.approx([3.0, -2.0, 2.0])


# --- generate_study ----------------------------------------------------------------------------
def test_same_seed_same_study_other_seed_other_study() -> None:
    a = generate_study(11, small=True)
    b = generate_study(11, small=True)
    c = generate_study(12, small=True)
    for name in ("ct", "pet", "label_ct", "label_pet"):
        va, vb = getattr(a, name), getattr(b, name)
        assert va.geometry == vb.geometry
        assert np.array_equal(va.array, vb.array)
    assert a.lesions == b.lesions
    assert a.meta["tissues"] == b.meta["tissues"]
    assert a.meta["tissues"] != c.meta["tissues"]
    assert a.ct.array.dtype == np.float32 and a.pet.array.dtype == np.float32
    assert a.label_ct.array.dtype == np.uint8 and a.label_pet.array.dtype == np.uint8
    assert a.ct.units == "HU" and a.pet.units == "SUVbw"


def test_study_layers_are_those_the_study_paints() -> None:
    """study_layers gives a study's anatomy without rendering it: the same layers, same
    shapes, as generate_study's scene, for any kind and options; another seed, another one."""
    for seed, kind, options in ((11, "wholebody", {"small": True}), (5, "headneck", {})):
        study = generate_study(seed, kind, **options)  # type: ignore[arg-type]
        assert study.scene is not None
        layers = study_layers(seed, **options)
        assert [lay.name for lay in layers] == [lay.name for lay in study.scene.layers]
        assert [lay.shape for lay in layers] == [lay.shape for lay in study.scene.layers]
    assert [lay.shape for lay in study_layers(12)] != [lay.shape for lay in study_layers(11)]
    with pytest.raises(ConfigError):
        study_layers(11, smal=True)


@pytest.fixture(scope="module")
def clean_study() -> PhantomStudy:
    """A whole-body study without lesions or noise, PET truth kept, moderate grids."""
    return generate_study(
        3, fov="full", n_lesions=0, noise=False, keep_truth=True, max_voxels=3_000_000
    )


def test_tissue_values_in_range_and_in_place(clean_study: PhantomStudy) -> None:
    study = clean_study
    tissues = study.meta["tissues"]
    contrast = study.meta["patient"]["contrast"]
    checked = 0
    for name, spec in study.meta["landmarks"].items():
        tissue, point = spec["tissue"], tuple(spec["point_mm"])
        hu, suv = tissues[tissue]
        (hlo, hhi), (slo, shi), log = TISSUE_RANGES[tissue]
        if contrast and tissue in CONTRAST_HU:
            hlo, hhi = CONTRAST_HU[tissue]
        w = WIDEN * (hhi - hlo)
        assert hlo - w <= hu <= hhi + w, (tissue, hu)
        if log:
            assert slo * (shi / slo) ** -WIDEN <= suv <= shi * (shi / slo) ** WIDEN, (tissue, suv)
        elif tissue != "brain_white":
            assert slo - WIDEN * (shi - slo) <= suv <= shi + WIDEN * (shi - slo), (tissue, suv)
        ct_value = _value_at(study.ct, point)
        assert study.pet_truth is not None
        pet_value = _value_at(study.pet_truth, point)
        if ct_value is None or pet_value is None:
            continue
        checked += 1
        tol = 120.0 if tissue == "lung" else 25.0  # lung has a front-to-back gradient
        assert ct_value == pytest.approx(hu, abs=tol), (name, ct_value, hu)
        assert pet_value == pytest.approx(suv, rel=0.15), (name, pet_value, suv)
    assert checked >= 6
    # air outside the body and no activity there
    assert study.ct.array.min() >= -1024
    assert np.median(study.ct.array[:3, :3, :]) == pytest.approx(-1000.0, abs=1.0)
    assert np.median(study.pet.array[:2, :2, :]) < 0.05


def test_no_lesion_no_label(clean_study: PhantomStudy) -> None:
    assert clean_study.lesions == []
    assert not clean_study.label_ct.array.any()
    assert not clean_study.label_pet.array.any()


def test_ct_and_pet_share_the_patient_frame(clean_study: PhantomStudy) -> None:
    ct_lo, ct_hi = clean_study.ct.geometry.extent_mm()
    pet_lo, pet_hi = clean_study.pet.geometry.extent_mm()
    overlap = np.minimum(ct_hi, pet_hi) - np.maximum(ct_lo, pet_lo)
    assert np.all(overlap > 0.8 * (ct_hi - ct_lo))
    assert not clean_study.ct.geometry.same_grid(clean_study.pet.geometry)
    assert clean_study.ct.spacing_mm != clean_study.pet.spacing_mm
    # the liver is bright on both grids at the same physical point
    point = tuple(clean_study.meta["landmarks"]["liver"]["point_mm"])
    assert _value_at(clean_study.pet, point) > 1.2  # type: ignore[operator]
    assert 20 < _value_at(clean_study.ct, point) < 160  # type: ignore[operator]


@pytest.fixture(scope="module")
def lesion_study() -> PhantomStudy:
    return generate_study(
        5, fov="full", n_lesions=4, noise=False, keep_truth=True, max_voxels=4_000_000
    )


def test_labels_are_exactly_where_lesions_are(lesion_study: PhantomStudy) -> None:
    study = lesion_study
    assert study.pet_truth is not None
    assert len(study.lesions) >= 3
    label = study.label_pet.array
    scene = study.scene
    assert scene is not None
    _, masks = render_labels(scene.lesions, study.pet.geometry)
    union = np.zeros(label.shape, bool)
    for m in masks:
        if m is not None:
            union |= m
    assert np.array_equal(label > 0, union)
    spacing = max(study.pet.spacing_mm)
    for row, lesion, mask in zip(study.lesions, scene.lesions, masks):
        assert mask is not None and row["n_voxels_pet"] == int(mask.sum()) > 0
        truth = study.pet_truth.array[mask]
        if not row["necrotic"]:  # hotter than the surrounding tissue before blur
            assert np.mean(truth > row["background_suv"]) > 0.95
        assert truth.mean() > row["background_suv"] * (0.8 if row["necrotic"] else 1.1)
        if row["diameter_mm"] > 4 * spacing:
            assert row["volume_ml"] == pytest.approx(row["volume_true_ml"], rel=0.2)
        ct_spacing = max(study.ct.spacing_mm)
        if row["diameter_mm"] > 5 * ct_spacing:
            ct_ml = row["n_voxels_ct"] * study.ct.geometry.voxel_volume_ml
            assert ct_ml == pytest.approx(row["volume_true_ml"], rel=0.15)
        # labelled voxels lie within the lesion's bounding sphere
        pts = study.pet.geometry.index_to_world(np.argwhere(mask))
        dist = np.linalg.norm(pts - np.asarray(lesion.center_mm), axis=1)
        assert dist.max() <= lesion.shape.bounding_radius() + 1e-3
        assert row["suv_max"] >= row["suv_mean"] > 0


def test_headneck_labels_gtvp_and_gtvn() -> None:
    study = generate_study(4, "headneck", fov="full", n_lesions=3, small=True)
    labels = {row["label"] for row in study.lesions}
    assert labels == {1, 2}
    assert set(np.unique(study.label_ct.array)) == {0, 1, 2}
    primary = [row for row in study.lesions if row["label"] == 1]
    assert len(primary) == 1
    z = study.meta["scan_range_mm"]
    assert z[1] - z[0] < 450  # skull base to upper thorax, not the whole body


@pytest.fixture(scope="module")
def many_small() -> list[PhantomStudy]:
    return [generate_study(seed, small=True) for seed in range(30)]


def test_distribution_over_seeds(many_small: list[PhantomStudy]) -> None:
    empty = sum(not s.lesions for s in many_small)
    assert 3 <= empty <= 16  # about 30 % lesion-free (binomial, n = 30)
    directions = {
        tuple(np.sign(np.round(s.ct.geometry.direction_matrix.diagonal(), 3))) for s in many_small
    }
    assert len(directions) >= 3  # flipped axes occur
    assert any(s.meta["fov"] == "crop" for s in many_small)
    assert any(s.meta["fov"] == "full" for s in many_small)
    for s in many_small:
        dm = s.ct.geometry.direction_matrix
        assert np.allclose(dm.T @ dm, np.eye(3), atol=1e-6)
        ct_lo, ct_hi = s.ct.geometry.extent_mm()
        pet_lo, pet_hi = s.pet.geometry.extent_mm()
        assert np.all(np.minimum(ct_hi, pet_hi) > np.maximum(ct_lo, pet_lo))
        assert s.ct.geometry.n_voxels <= 400_000 and s.pet.geometry.n_voxels <= 200_000
    sizes = [row["diameter_mm"] for s in many_small for row in s.lesions]
    suv_max = [row["suv_max"] for s in many_small for row in s.lesions if row["n_voxels_pet"]]
    assert min(sizes) < 20 and max(sizes) > 30
    assert min(suv_max) < 4 and max(suv_max) > 8


def test_recovery_coefficient_matches_a_blurred_sphere() -> None:
    from scipy import ndimage

    step = 0.5  # mm
    n = 81
    grid = (np.arange(n) - n // 2) * step
    x, y, z = np.meshgrid(grid, grid, grid, indexing="ij")
    r2 = x**2 + y**2 + z**2
    for diameter, sigma in ((6.0, 2.5), (10.0, 2.0), (16.0, 3.0)):
        sphere = (r2 <= (diameter / 2) ** 2).astype(np.float64)
        blurred = ndimage.gaussian_filter(sphere, sigma / step, mode="constant")
        centre = blurred[n // 2, n // 2, n // 2]
        assert recovery_coefficient(diameter, sigma) == pytest.approx(centre, abs=0.03)
    assert recovery_coefficient(60.0, 2.5) == pytest.approx(1.0, abs=1e-6)
    assert recovery_coefficient(5.0, 0.0) == 1.0


def test_small_lesions_get_enough_uptake_to_survive_the_psf() -> None:
    """Expected SUVmax after blurring (recovery coefficient) is FDG-avid: >= 2 and >= 1.6x the
    tissue, for every lesion drawn at a coarse resolution (sigma 3.5 mm), small ones included."""
    sigma = 3.5
    seen_small = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        anatomy = build_anatomy(rng)
        lesions = sample_lesions(rng, anatomy, "wholebody", (-2000.0, 2000.0), 4, 4.0, sigma)
        for lesion in lesions:
            if lesion.core is not None:
                continue
            rc = recovery_coefficient(lesion.diameter_mm, sigma)
            seen_small += rc < 0.7
            low = 1.1 * lesion.background_suv
            top = low + 0.85 * (lesion.suv_peak - low)
            imaged = lesion.background_suv + (top - lesion.background_suv) * rc
            if lesion.suv_peak < 39.9:  # not capped
                assert imaged >= max(1.99, 1.59 * lesion.background_suv), lesion.site
    assert seen_small >= 5


def test_real_sarcoma_lies_within_the_phantom_ranges(
    shared_data: Path, many_small: list[PhantomStudy]
) -> None:
    """The real STS_001 tumour's uptake and the thigh's CT values are ones the phantoms make."""
    folder = shared_data / "sts" / "STS_001"
    pet = _read(folder / "PET" / "image.nii.gz").array
    mask = _read(folder / "PET" / "mask.nii.gz").array > 0
    ct = _read(folder / "CT" / "image.nii.gz").array
    ct_mask = _read(folder / "CT" / "mask.nii.gz").array > 0
    real_mean, real_max = float(pet[mask].mean()), float(pet[mask].max())
    rows = [row for s in many_small for row in s.lesions if row["n_voxels_pet"]]
    means = [row["suv_mean"] for row in rows]
    maxes = [row["suv_max"] for row in rows]
    assert min(means) < real_mean < max(means)
    assert min(maxes) < real_max < max(maxes)
    real_tumour_hu = float(np.median(ct[ct_mask]))
    lesion_hu = [row["hu"] for s in many_small for row in s.lesions]
    assert min(lesion_hu) < real_tumour_hu < max(lesion_hu)
    # real CT: air -1000 and bone near +1400; the phantoms span the same range
    study = many_small[1]
    assert ct.min() == pytest.approx(study.ct.array.min(), abs=30)
    assert np.percentile(study.ct.array, 99.9) > 500


def test_option_errors() -> None:
    with pytest.raises(ConfigError, match="unknown key 'max_voxel'.*did you mean 'max_voxels'"):
        generate_study(0, max_voxel=1000)
    with pytest.raises(ConfigError, match="kind must be one of wholebody, headneck, found 'brain'"):
        generate_study(0, "brain")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed must be a non-negative integer, found -1"):
        generate_study(-1)
    with pytest.raises(ConfigError, match="crop_mm must be between 10 and 2000 mm, found 5"):
        generate_study(0, crop_mm=5.0)
    with pytest.raises(ConfigError, match="max_voxels must be at least 1000, found 10"):
        generate_study(0, max_voxels=10)
    with pytest.raises(ConfigError, match="n_lesions must be between 0 and 20, found 99"):
        generate_study(0, n_lesions=99)
    with pytest.raises(ConfigError, match="fov: expected one of 'random', 'full', 'crop'"):
        generate_study(0, fov="torso")


def test_crop_is_a_few_centimetres_around_a_lesion() -> None:
    study = generate_study(21, fov="crop", crop_mm=60.0, n_lesions=1)
    size = np.asarray(study.ct.geometry.physical_size_mm())
    assert np.all(size < 60 * 1.25 + 1) and np.all(size > 60 * 0.75)
    assert study.lesions and study.label_ct.array.any()


# --- layouts -----------------------------------------------------------------------------------
def test_autopet_layout(tmp_path: Path) -> None:
    paths = write_phantoms(tmp_path, 2, "autopet", seed=3, small=True)
    manifest = json.loads((tmp_path / "phantoms.json").read_text())
    assert len(paths) == 2 and manifest["n"] == 2
    for path, entry in zip(paths, manifest["studies"]):
        assert path.parent.name == entry["name"] and path.parent.name.startswith("PETCT_")
        assert "  " in path.name and "-NA-PET-CT Ganzkoerper  primaer" in path.name
        assert sorted(p.name for p in path.iterdir()) == [
            "CT.nii.gz", "CTres.nii.gz", "PET.nii.gz", "SEG.nii.gz", "SUV.nii.gz",
        ]  # fmt: skip
        vols = {p.name.split(".")[0]: _read(p) for p in path.iterdir()}
        study = generate_study(entry["seed"], small=True)
        assert vols["CT"].geometry.same_grid(study.ct.geometry)
        for name in ("CTres", "PET", "SUV", "SEG"):
            assert vols[name].geometry.same_grid(study.pet.geometry), name
        assert np.array_equal(vols["SUV"].array, study.pet.array)
        assert np.allclose(
            vols["PET"].array, study.pet.array * entry["pet_bqml_per_suv"], rtol=1e-5
        )
        assert np.array_equal(vols["SEG"].array, (study.label_pet.array > 0).astype(np.uint8))
        # CTres is the same anatomy on the PET grid: air outside, tissue where the CT has it
        assert vols["CTres"].array.min() >= -1024
        assert (
            np.corrcoef(np.ravel(vols["CTres"].array > -500), np.ravel(vols["SUV"].array > 0.1))[
                0, 1
            ]
            > 0.5
        )


def test_nnunet_layout(tmp_path: Path) -> None:
    write_phantoms(tmp_path, 2, "nnunet", seed=1, small=True)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT", "1": "PET"}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    labels = sorted((tmp_path / "labelsTr").iterdir())
    images = sorted((tmp_path / "imagesTr").iterdir())
    assert len(labels) == 2 and len(images) == 4
    for label in labels:
        case = label.name[: -len(".nii.gz")]
        assert case.startswith("fdg_") and "  " in case
        ct = _read(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        pet = _read(tmp_path / "imagesTr" / f"{case}_0001.nii.gz")
        seg = _read(label)
        assert ct.geometry.same_grid(pet.geometry) and seg.geometry.same_grid(pet.geometry)
        assert set(np.unique(seg.array)) <= {0, 1}


def test_hecktor_layout(tmp_path: Path) -> None:
    paths = write_phantoms(tmp_path, 2, "hecktor", seed=2, small=True, n_lesions=2)
    assert [p.name for p in paths] == ["CHUM-001__CT.nii.gz", "CHUP-001__CT.nii.gz"]
    for case in ("CHUM-001", "CHUP-001"):
        ct = _read(tmp_path / "imagesTr" / f"{case}__CT.nii.gz")
        pt = _read(tmp_path / "imagesTr" / f"{case}__PT.nii.gz")
        seg = _read(tmp_path / "labelsTr" / f"{case}.nii.gz")
        assert seg.geometry.same_grid(ct.geometry) and not pt.geometry.same_grid(ct.geometry)
        assert set(np.unique(seg.array)) <= {0, 1, 2} and seg.array.any()
        assert seg.array.dtype == np.uint8


def test_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(
        OutputError, match="is not empty; choose an empty folder or pass --overwrite"
    ):
        write_phantoms(tmp_path, 1, "nnunet", seed=0, small=True)
    with pytest.raises(ConfigError, match="hecktor layout holds head-and-neck studies"):
        write_phantoms(tmp_path / "h", 1, "hecktor", seed=0, kind="wholebody")
    with pytest.raises(
        ConfigError, match="layout must be one of autopet, nnunet, hecktor, found 'msd'"
    ):
        write_phantoms(tmp_path / "m", 1, "msd", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n must be a positive number of studies, found 0"):
        write_phantoms(tmp_path / "n", 0, "nnunet", seed=0)
    study = generate_study(0, small=True)
    with pytest.raises(ConfigError, match="case name must be a plain file name"):
        write_study(study, tmp_path, "nnunet", "a/b")
    assert case_name(study, "hecktor", 9) == "CHUP-002"
