"""pipelines/sts_adapters.py: the stage that installs the bundled sarcoma adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import load_pipeline

sts_adapters = load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "sts_adapters.py")


def _fold_result(out: Path, kind: str, fold: int, steps: int, dices: list[float]) -> None:
    cases = [{"case": f"STS_{fold}{i}", "dice": d} for i, d in enumerate(dices)]
    res = {"kind": kind, "fold": fold, "steps_budget": steps, "trainable": 10, "cases": cases}
    res["dice_mean"] = sum(dices) / len(dices)
    folder = out / kind / f"fold{fold}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(res))


def test_ship_needs_five_folds_at_the_budget_then_installs_with_a_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, target = tmp_path / "campaign", tmp_path / "adapters" / "sts"
    spec = {"steps": 200, "base_weights": "mefn_default.safetensors"}
    for fold in range(4):
        _fold_result(out, "compacter", fold, 200, [0.5, 0.7])
    with pytest.raises(SystemExit, match=r"compacter has folds \[0, 1, 2, 3\] at \['200'\]"):
        sts_adapters.ship(out, "compacter", spec, target)
    _fold_result(out, "compacter", 4, 100, [0.5, 0.7])
    with pytest.raises(SystemExit, match="5 folds are done at --steps 200"):
        sts_adapters.ship(out, "compacter", spec, target)
    (out / "compacter" / "fold4" / "result.json").unlink()
    (out / "compacter" / "fold4").rmdir()
    _fold_result(out, "compacter", 4, 200, [0.2, 0.4])
    trained: list[Any] = []

    def fake_run(out_: Path, kind: str, fold: Any, spec_: dict[str, Any]) -> dict[str, Any]:
        # stands for the training on every case: the adapter files it leaves behind
        trained.append((kind, fold))
        folder = out_ / kind / "all" / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        return {"trainable": 10, "train_seconds": 1.0}

    monkeypatch.setattr(sts_adapters, "run_one", fake_run)
    sts_adapters.ship(out, "compacter", spec, target)
    assert trained == [("compacter", "all")]
    assert (target / "adapter_model.safetensors").read_bytes() == b"weights"
    card = json.loads((target / "card.json").read_text())
    cv = card["cross_validation"]
    assert cv["dice_mean"] == pytest.approx((4 * 1.2 + 0.6) / 10)
    assert cv["per_fold"]["4"] == pytest.approx(0.3) and len(cv["per_case"]) == 10
    assert card["data"]["licence"] == "CC BY 3.0" and "10.7937/K9/TCIA.2015.7GO2GSKS" in str(card)
    # one pass, as the folds were scored, with the base card's PET check and floor pinned
    from mefn.registry import read_model_card, resolve_weights
    from mefn.settings import PostprocessSettings

    base = PostprocessSettings.from_card(read_model_card(resolve_weights("default")[1])[0])
    assert card["postprocess"] == {
        "tta_axes": [],
        "pet_check": base.pet_check.to_json(),
        "min_lesion_ml": base.min_lesion_ml,
    }


def test_rows_of_another_budget_have_their_own_folder_and_table_row(tmp_path: Path) -> None:
    assert sts_adapters.row_name("compacter", 200) == "compacter"
    assert sts_adapters.row_name("compacter", 500) == "compacter@500"
    assert sts_adapters.row_name("frozen", 500) == "frozen"  # nothing trains
    out = tmp_path / "campaign"
    _fold_result(out, "compacter", 0, 200, [0.5])
    folder = out / "compacter@500" / "fold0"
    folder.mkdir(parents=True)
    res = {"kind": "compacter", "fold": 0, "steps_budget": 500, "trainable": 10, "file_bytes": 1}
    res |= {"cases": [{"case": "STS_001", "dice": 0.9}], "dice_mean": 0.9}
    (folder / "result.json").write_text(json.dumps(res))
    results = sts_adapters.load_results(out)
    assert set(results) == {"compacter", "compacter@500"}
    assert sts_adapters.best_adapters(results, 0, 500) == ["compacter"]
    (out / "compacter" / "fold0" / "result.json").write_text(
        json.dumps({**res, "steps_budget": 200, "dice_mean": 0.5, "cases": [{"dice": 0.5}]})
    )
    table = sts_adapters.render_report(
        sts_adapters.load_results(out),
        {"base_parameters": 1000, "base_weights": "w", "threads": 1},
        "cmd",
    )
    rows = [line for line in table.splitlines() if line.startswith("| compacter")]
    assert [r.split(" | ")[1] for r in rows] == ["200", "500"]
    assert rows[1].split(" | ")[8:10] == ["0.900", "0.900"]
