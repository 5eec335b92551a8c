"""``mefn phantoms``: files, progress lines, summary, refusal of a non-empty folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mefn.cli import main


def test_writes_studies_with_progress_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "set"
    code = main(["phantoms", str(out), "--n", "2", "--layout", "hecktor", "--seed", "4", "--small"])
    captured = capsys.readouterr()
    assert code == 0
    assert "[1/2] CHUM-001: " in captured.err and "[2/2] CHUP-001: " in captured.err
    assert captured.out.startswith(f"wrote 2 hecktor studies to {out}: ")
    assert len(captured.out.strip().splitlines()) == 1
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert names == [
        "CHUM-001__CT.nii.gz", "CHUM-001__PT.nii.gz", "CHUP-001__CT.nii.gz", "CHUP-001__PT.nii.gz",
    ]  # fmt: skip
    manifest = json.loads((out / "phantoms.json").read_text())
    assert manifest["kind"] == "headneck" and manifest["seed"] == 4
    assert [s["seed"] for s in manifest["studies"]] == [400_000, 400_001]


def test_refuses_non_empty_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old.txt").write_text("keep")
    args = ["phantoms", str(tmp_path), "--n", "1", "--layout", "nnunet", "--small", "--fov", "crop"]
    assert main(args) == 2
    assert "is not empty; choose an empty folder or pass --overwrite" in capsys.readouterr().err
    assert main(["-q", *args, "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "[1/1]" not in captured.err  # --quiet silences progress
    assert (tmp_path / "dataset.json").is_file() and (tmp_path / "old.txt").is_file()


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phantoms", str(tmp_path / "a"), "--n", "0"]) == 2
    assert "--n must be at least 1, found 0" in capsys.readouterr().err
    assert (
        main(["phantoms", str(tmp_path / "b"), "--layout", "hecktor", "--kind", "wholebody"]) == 2
    )
    assert "hecktor layout holds head-and-neck studies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantoms", str(tmp_path / "c"), "--layout", "msd"])
