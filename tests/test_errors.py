"""How error messages reach the terminal: one line, names intact."""

from __future__ import annotations

from mefn.cli import main
from mefn.errors import InputError, one_line


def test_one_line_joins_lines_but_keeps_spaces_inside_names() -> None:
    exc = InputError("no prediction for 'PET-CT Ganzkoerper  primaer'\n   in /data;\r\nfix it")
    assert one_line(exc) == "no prediction for 'PET-CT Ganzkoerper  primaer' in /data; fix it"
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."


def test_cli_error_names_a_path_with_double_spaces_exactly(tmp_path, capsys) -> None:
    missing = tmp_path / "case  with   spaces.nii.gz"
    assert main(["segment", str(missing), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1
