"""pipelines/trust_sts.py: trust fitted on four folds' held-out predictions, scored on the fifth."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support import load_pipeline

trust_sts = load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "trust_sts.py")


def _keep(path: Path, rng: np.random.Generator, true_size: int = 6) -> None:
    """A kept prediction (the keys of trust_phantoms.keep_prediction) with one true lesion,
    hot and certain, and one false one, cold and uncertain, the evidence lying for a tenth.
    The true lesion is 6 voxels wide, the prediction of it ``true_size``."""
    shape = (20, 20, 20)
    mask, ref = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    suv = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    prob = np.full(shape, 0.02, np.float32)
    u = np.full(shape, 0.02, np.float32)
    ref[(slice(2, 8),) * 3] = 1
    for corner, is_true in ((2, True), (12, False)):
        box = (slice(corner, corner + (true_size if is_true else 4)),) * 3
        mask[box] = 1
        hot = is_true != (rng.random() < 0.1)
        suv[box] = rng.uniform(5, 9) if hot else rng.uniform(2.5, 3.5)  # passes the PET check
        prob[box] = rng.uniform(0.8, 0.95) if hot else rng.uniform(0.5, 0.7)
        u[box] = rng.uniform(0.01, 0.05) if hot else rng.uniform(0.1, 0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mask=mask, reference=ref, lesion_probability=prob.astype(np.float16),
             uncertainty=u, uncertainty_ct=u, uncertainty_pet=u, suv=suv,
             spacing_mm=np.array([4.0, 4.0, 4.0]))  # fmt: skip


def test_nested_by_fold_then_into_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folds = [[f"C{k}{i}" for i in range(8)] for k in range(5)]
    folds_file = tmp_path / "folds.yaml"
    folds_file.write_text("folds:\n" + "".join(f"  - [{', '.join(f)}]\n" for f in folds))
    monkeypatch.setattr(trust_sts, "FOLDS", folds_file)
    monkeypatch.setattr(trust_sts, "WORK", tmp_path / "work")
    rng = np.random.default_rng(0)
    # on the model grid alone the true lesions are under-segmented; at scales 1 and 2, whole
    model_grid, two = (1.0,), (1.0, 2.0)
    for case in [c for f in folds[:4] for c in f]:
        _keep(tmp_path / "work" / "row" / f"{case}.npz", rng, true_size=4)
        _keep(tmp_path / "work" / "row" / "x1-2" / f"{case}.npz", rng)
    with pytest.raises(SystemExit, match=r"8 case\(s\) not predicted for row at scales \(1.0,\)"):
        trust_sts.test("row", trust_sts.Grid((model_grid,)))
    for case in folds[4]:
        _keep(tmp_path / "work" / "row" / f"{case}.npz", rng, true_size=4)
        _keep(tmp_path / "work" / "row" / "x1-2" / f"{case}.npz", rng)
    result = trust_sts.test("row", trust_sts.Grid((model_grid,)))
    assert result["cases"] == 40 and len(result["per_lesion"]) == 80
    assert [f["fold"] for f in result["fitted_per_fold"]] == [0, 1, 2, 3, 4]
    assert all(f["cases"] == 32 for f in result["fitted_per_fold"])  # the other four folds
    # the threshold is chosen on the other folds too: every lesion holds >= 0.5: the argmax
    assert all(f["lesion_threshold"] is None for f in result["fitted_per_fold"])  # first of ties
    assert result["dice_nested"]["mean"] == pytest.approx(result["dice_by_setting"]["x1 t=None"])
    assert result["lesions"]["auroc"] > 0.75  # the evidence lies for a tenth
    # the scales are chosen on four folds too; two forked workers score as one process does
    both = trust_sts.test("row", trust_sts.Grid((model_grid, two)), workers=2)
    one = trust_sts.test("row", trust_sts.Grid((model_grid, two)))
    assert one["dice_by_setting"] == both["dice_by_setting"] and one["lesions"] == both["lesions"]
    assert all(f["tta_scales"] == [1.0, 2.0] for f in both["fitted_per_fold"])
    assert both["dice_nested"]["mean"] > result["dice_nested"]["mean"]
    assert both["dice_nested"]["mean"] == pytest.approx(both["dice_by_setting"]["x1,2 t=None"])
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "sts", "note": "Not calibrated on sarcoma"}))
    monkeypatch.setattr(trust_sts, "OUT", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "row.json").write_text(json.dumps(both))  # what --stage test wrote

    def not_again(self, name):
        raise AssertionError(f"{name} scored again: the test stage's Dice are on record")

    with monkeypatch.context() as patch:
        patch.setattr(trust_sts._Kept, "score_case", not_again)
        trust_sts.card("row", card, trust_sts.Grid((model_grid, two)))
    written = json.loads(card.read_text())
    assert "note" not in written and written["name"] == "sts"
    assert written["lesion_confidence"]["fitted_on"]["cases"] == 40
    assert written["postprocess"]["lesion_threshold"] is None
    assert written["postprocess"]["tta_scales"] == [1.0, 2.0]
    nested = written["cross_validation"]["with_postprocess"]  # the test stage's figures
    assert nested["dice_mean"] == both["dice_nested"]["mean"]
    assert nested["chosen_per_fold"][0] == {
        "fold": 0,
        "tta_scales": [1.0, 2.0],
        "lesion_threshold": None,
        "lesion_shape": "none",
        "small_lesion_ml": 0.0,
        "small_lesion_threshold": None,
        "pet_refine": None,
    }
    assert written["postprocess"]["small_lesion_ml"] == 0.0  # small lesions kept whole
    assert "voxel_error" in written and "review_below" not in written  # settings: postprocess
    assert written["postprocess"]["review_below"] == 0.5
    assert written["postprocess"]["min_confidence"] == 0.0


def _folds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_fold: int) -> list[list[str]]:
    """Five folds of ``per_fold`` cases, written where trust_sts reads them."""
    folds = [[f"C{k}{i}" for i in range(per_fold)] for k in range(5)]
    folds_file = tmp_path / "folds.yaml"
    folds_file.write_text("folds:\n" + "".join(f"  - [{', '.join(f)}]\n" for f in folds))
    monkeypatch.setattr(trust_sts, "FOLDS", folds_file)
    monkeypatch.setattr(trust_sts, "WORK", tmp_path / "work")
    return folds


def _keep_edited(
    tmp_path: Path,
    folds: list[list[str]],
    seed: int,
    edit: Callable[[np.ndarray], None],
    true_size: int = 6,
    suv: Callable[[np.ndarray], None] | None = None,
) -> None:
    """Every case of ``folds`` kept (:func:`_keep`) with ``edit`` applied to its lesion
    probability (and ``suv`` to its SUV)."""
    rng = np.random.default_rng(seed)
    for case in [c for f in folds for c in f]:
        path = tmp_path / "work" / "row" / f"{case}.npz"
        _keep(path, rng, true_size)
        with np.load(path) as z:
            kept = dict(z)
        edit(kept["lesion_probability"])
        if suv is not None:
            suv(kept["suv"])
        np.savez(path, **kept)


def test_the_lesion_shape_is_chosen_on_the_other_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folds = _folds(tmp_path, monkeypatch, 3)
    monkeypatch.setattr(trust_sts, "THRESHOLDS", (None, 0.3))

    def slot(p: np.ndarray) -> None:
        # a cold slot through the true lesion, open on one side: no hole to fill, but inside
        # its convex hull
        p[3:7, 4, 2:8] = 0.02

    _keep_edited(tmp_path, folds, 1, slot)
    plain = trust_sts.test("row", trust_sts.Grid(((1.0,),)))
    import mefn.postprocess

    drawn = []
    reshape = mefn.postprocess.reshape_lesions
    monkeypatch.setattr(
        mefn.postprocess, "reshape_lesions", lambda m, s: drawn.append(s) or reshape(m, s)
    )
    shaped = trust_sts.test("row", trust_sts.Grid(((1.0,),), ("none", "hull")))
    # every (case, setting) drawn once for its Dice, a chosen setting's masks at most once
    # more, then kept for the five fits and the tally (redrawn in every fold: 15 * 4 + 75)
    assert len(drawn) <= 15 * 4 + 15
    assert shaped["lesion_shapes_tried"] == ["none", "hull"]
    assert all(f["lesion_shape"] == "hull" for f in shaped["fitted_per_fold"])
    assert shaped["dice_nested"]["mean"] > plain["dice_nested"]["mean"]
    assert shaped["dice_nested"]["mean"] == pytest.approx(
        shaped["dice_by_setting"]["x1 t=None hull"]
    )
    assert trust_sts.parse_shapes("none, largest_hull") == ("none", "largest_hull")
    with pytest.raises(SystemExit, match="expects some of none, hull, largest_hull"):
        trust_sts.parse_shapes("convex")


def test_the_small_lesions_cores_are_chosen_on_the_other_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The true lesion (6 voxels wide, 14 mL) is drawn with a cold rim (8 wide, 33 mL) at a
    threshold that keeps the larger false lesion (47 mL) whole: cutting lesions under 40 mL
    to their cores outlines it exactly; the card stores the choice."""
    folds = _folds(tmp_path, monkeypatch, 3)
    monkeypatch.setattr(trust_sts, "THRESHOLDS", (0.3,))

    def rim(p: np.ndarray) -> None:
        core = p[2:8, 2:8, 2:8].copy()
        p[1:9, 1:9, 1:9] = 0.35
        p[2:8, 2:8, 2:8] = np.maximum(core, 0.85)  # the true lesion's hot core
        p[11:20, 11:20, 11:20] = np.maximum(p[11:20, 11:20, 11:20], 0.4)  # false, large

    _keep_edited(tmp_path, folds, 3, rim)
    smalls = trust_sts.parse_small("none; 40@0.8")
    assert smalls == (None, (40.0, 0.8))
    result = trust_sts.test("row", trust_sts.Grid(((1.0,),), smalls=smalls))
    assert all(f["small_lesion_ml"] == 40.0 for f in result["fitted_per_fold"])
    assert result["small_lesions_tried"] == [None, [40.0, 0.8]]
    by_setting = result["dice_by_setting"]
    # the true lesion (216 voxels) outlined exactly beside the false one (729): as against 512
    assert by_setting["x1 t=0.3 cores<40mL@0.8"] == pytest.approx(432 / (432 + 729))
    assert by_setting["x1 t=0.3"] == pytest.approx(432 / (512 + 216 + 729))
    assert not all(les["true"] for les in result["per_lesion"])  # false lesions to learn from
    monkeypatch.setattr(trust_sts, "OUT", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "row.json").write_text(json.dumps(result))
    card = tmp_path / "card.json"
    card.write_text("{}")
    trust_sts.card("row", card, trust_sts.Grid(((1.0,),), smalls=smalls))
    written = json.loads(card.read_text())
    assert written["postprocess"]["small_lesion_ml"] == 40.0
    assert written["postprocess"]["small_lesion_threshold"] == 0.8
    assert (
        written["cross_validation"]["with_postprocess"]["chosen_per_fold"][0][
            "small_lesion_threshold"
        ]
        == 0.8
    )
    from mefn.settings import PostprocessSettings

    settings = PostprocessSettings.from_card(written)  # a card mefn segment reads
    assert (settings.small_lesion_ml, settings.small_lesion_threshold) == (40.0, 0.8)
    for text in ("40", "0@0.8", "40@1", ""):
        with pytest.raises(SystemExit, match="--small-lesions"):
            trust_sts.parse_small(text)


def test_the_pet_outline_is_chosen_on_the_other_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network outlines 4 of the true lesion's 6 voxels a side; the PET shows all 6: the
    outline at 0.3 between background and SUVmax within 8 mm is chosen and outlines it
    whole, and the card holds it in its PET check."""
    folds = _folds(tmp_path, monkeypatch, 3)
    monkeypatch.setattr(trust_sts, "THRESHOLDS", (None,))

    def hot(suv: np.ndarray) -> None:
        suv[2:8, 2:8, 2:8] = 8.0  # the whole true lesion, as the PET shows it

    _keep_edited(tmp_path, folds, 4, lambda p: None, true_size=4, suv=hot)
    outlines = trust_sts.parse_outlines("none;0.3@8")
    assert outlines == (None, (0.3, 8.0))
    result = trust_sts.test("row", trust_sts.Grid(((1.0,),), outlines=outlines))
    assert all(f["pet_refine"] == [0.3, 8.0] for f in result["fitted_per_fold"])
    assert result["pet_outlines_tried"] == [None, [0.3, 8.0]]
    by_setting = result["dice_by_setting"]
    assert by_setting["x1 t=None pet@0.3<8mm"] > by_setting["x1 t=None"]
    monkeypatch.setattr(trust_sts, "OUT", tmp_path / "out")
    card = tmp_path / "card.json"
    card.write_text("{}")
    trust_sts.card("row", card, trust_sts.Grid(((1.0,),), outlines=outlines), workers=2)
    written = json.loads(card.read_text())["postprocess"]
    assert written["pet_check"]["refine_fraction"] == 0.3
    assert written["pet_check"]["refine_mm"] == 8.0
    assert "pet_refine" not in written
    from mefn.settings import PostprocessSettings

    check = PostprocessSettings.from_card({"postprocess": written}).pet_check
    assert (check.refine_fraction, check.refine_mm) == (0.3, 8.0)
    assert trust_sts.parse_outlines("none;") == (None,)
    for text in ("0.3", "1@8", "0.3@-1"):
        with pytest.raises(SystemExit, match="--pet-outlines expects 'none' or F@MM"):
            trust_sts.parse_outlines(text)


def test_scale_settings_are_parsed_and_kept_apart() -> None:
    assert trust_sts.parse_thresholds("none, 0.4,0.3") == (None, 0.4, 0.3)
    for text in ("0", "half", ","):
        with pytest.raises(SystemExit, match="--thresholds"):
            trust_sts.parse_thresholds(text)
    assert trust_sts.parse_scale_settings("1; 1,1.5 ;2,1") == [(1.0,), (1.0, 1.5), (1.0, 2.0)]
    assert trust_sts.kept_dir("r", (1.0,)) == trust_sts.WORK / "r"
    assert trust_sts.kept_dir("r", (1.0, 1.5)) == trust_sts.WORK / "r" / "x1-1.5"
    with pytest.raises(Exception, match="1 among them"):
        trust_sts.parse_scale_settings("1.5,2")


def test_predict_reads_each_case_once_for_every_scale_setting_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fold weights (a full fine-tuning row) segment their held-out cases at each setting;
    what is kept is skipped on a second run."""
    from support import ct_pet_pair, make_tiny_weights

    from mefn.io.sitk_bridge import write_volume

    folds = [[f"C{k}"] for k in range(5)]
    folds_file = tmp_path / "folds.yaml"
    folds_file.write_text("folds:\n" + "".join(f"  - [{f[0]}]\n" for f in folds))
    monkeypatch.setattr(trust_sts, "FOLDS", folds_file)
    monkeypatch.setattr(trust_sts, "WORK", tmp_path / "work")
    data = tmp_path / "data"
    ct, pet = ct_pet_pair()
    mask = ct.with_array((ct.array > 0).astype(np.uint8))
    for (name,) in folds:
        for volume, rel in ((ct, "CT/image"), (mask, "CT/mask"), (pet, "PET/image")):
            (data / name / rel).parent.mkdir(parents=True, exist_ok=True)
            write_volume(volume, data / name / f"{rel}.nii.gz")
        run = tmp_path / "campaign" / "full" / f"fold{name[1]}"
        run.mkdir(parents=True)
        weights = make_tiny_weights(run)
        weights.rename(run / "model.safetensors")
        weights.with_suffix(".json").rename(run / "model.json")
    loads: list[str] = []
    real_load = trust_sts.load_sts_case
    monkeypatch.setattr(trust_sts, "load_sts_case", lambda f: loads.append(f.name) or real_load(f))
    settings = [(1.0,), (1.0, 2.0)]
    trust_sts.predict("full", data, tmp_path / "campaign", 1, settings)
    assert sorted(loads) == ["C0", "C1", "C2", "C3", "C4"]  # once each, for both settings
    for scales in settings:
        kept = trust_sts.load_kept(trust_sts.kept_dir("full", scales) / "C0.npz")
        assert kept.reference.any() and kept.maps.lesion_probability.shape == ct.shape
    trust_sts.predict("full", data, tmp_path / "campaign", 1, settings)
    assert len(loads) == 5  # all kept: nothing read again


def test_a_shape_that_leaves_no_false_lesion_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folds = _folds(tmp_path, monkeypatch, 2)
    monkeypatch.setattr(trust_sts, "THRESHOLDS", (None,))
    rng = np.random.default_rng(2)
    for case in [c for f in folds for c in f]:
        _keep(tmp_path / "work" / "row" / f"{case}.npz", rng)
    # the largest lesion of every case is its true one: no false lesion is left
    with pytest.raises(SystemExit, match=r"fold 0, setting x1 t=None largest_hull .*no false"):
        trust_sts.test("row", trust_sts.Grid(((1.0,),), ("largest_hull",)))
