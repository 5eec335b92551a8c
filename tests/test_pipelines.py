"""pipelines/ is a package: its scripts run as ``python -m pipelines.NAME``, import their
siblings through it, edit no ``sys.path`` and patch nothing of the library."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
#: imported by a long experiment as they are (top-level ``_bench``, their own sys.path edit);
#: migrated later, not here
AS_THEY_ARE = {"eval_sts.py", "sts_adapters.py"}
SCRIPTS = sorted(p for p in PIPELINES.glob("*.py") if p.name not in AS_THEY_ARE)


def _module_names(tree: ast.Module) -> set[str]:
    """Names in the file bound to modules: ``import x.y [as z]`` and ``from x import module``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                try:
                    found = importlib.util.find_spec(f"{node.module}.{a.name}") is not None
                except ModuleNotFoundError:
                    found = False
                if found:
                    names.add(a.asname or a.name)
    return names


def patches(source: str) -> list[str]:
    """Assignments to attributes of modules, ``setattr`` calls and ``sys.path`` edits."""
    tree = ast.parse(source)
    modules = _module_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in modules:
                found.append((node.lineno, f"{ast.unparse(target)} = ..."))
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func == "setattr" or func.startswith("sys.path."):
                found.append((node.lineno, f"{func}(...)"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_check_finds_what_the_benchmark_used_to_do() -> None:
    old = (
        "import sys\nimport mefn.inference as inference_module\nfrom mefn import inference\n"
        "sys.path.insert(0, 'x')\ninference_module.lesion_table = lambda *a: None\n"
        "inference.resample_case = None\nsetattr(inference, 'x', 1)\nargs = object()\n"
        "args.value = 1\n"
    )
    assert patches(old) == [
        "line 4: sys.path.insert(...)",
        "line 5: inference_module.lesion_table = ...",
        "line 6: inference.resample_case = ...",
        "line 7: setattr(...)",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_no_pipeline_patches_the_library_or_sys_path(script: Path) -> None:
    assert patches(script.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_usage_lines_run_the_module(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert f"python pipelines/{script.name}" not in text
    if script.stem != "__init__" and not script.stem.startswith("_"):
        assert f"python -m pipelines.{script.stem}" in text


def test_a_pipeline_runs_as_a_module_from_the_repository_root() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.eval_hecktor", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "python -m pipelines.eval_hecktor ROOT PRED -o OUT" in proc.stdout
