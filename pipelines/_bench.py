"""Helpers shared by the benchmark pipelines: provenance, peak memory, child runs, doc sections.

Imported as ``from pipelines import _bench`` by the scripts run as ``python -m pipelines.NAME``
(and as a top-level ``_bench`` by ``eval_sts.py`` and ``sts_adapters.py``, which still put
their folder on ``sys.path``): it imports nothing from its siblings.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (reports and cards name no local
    folders); otherwise as given."""
    # the path as written first (``configs/`` may be a link into the package), then resolved
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        if candidate.is_relative_to(REPO):
            return str(candidate.relative_to(REPO))
    return str(path)


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that runs ``module`` with ``argv`` (default: this process's arguments),
    as written in reports: ``python -m pipelines.NAME ARGS``."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit() -> str:
    """Short HEAD of the repository, with ``+dirty`` when tracked files are modified."""
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:  # pragma: no cover - not on Linux
        return math.nan


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU, cores, GPU, versions, commit, date and load; ``extra`` entries are added."""
    import monai
    import torch

    import mefn

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover - not Linux
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": __import__("numpy").__version__,
        "mefn": mefn.__version__,
        "commit": git_commit(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": round(load_average(), 2),
        **extra,
    }


def proc_status_kib(key: str = "VmHWM") -> int:
    """A ``/proc/self/status`` memory figure in KiB (``VmHWM`` = peak resident set).

    Not ``ru_maxrss`` on Linux: it carries the parent's high-water mark across ``execve``,
    so a child started from a big parent reports at least the parent's size. Off Linux,
    ``ru_maxrss`` is the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_child(
    script: Path, flag: str, tag: str, spec: dict[str, Any], threads: int | None = None
) -> dict[str, Any]:
    """Run ``script flag <spec json>`` in a fresh process; return the JSON it printed after ``tag``."""
    return _run_child([str(script)], script.name, tag, [flag, json.dumps(spec)], threads)


def run_module_child(
    module: str, flag: str, tag: str, spec: dict[str, Any], threads: int | None = None
) -> dict[str, Any]:
    """Run ``python -m module flag <spec json>`` from the repository root in a fresh process;
    return the JSON it printed after ``tag``."""
    return _run_child(["-m", module], module, tag, [flag, json.dumps(spec)], threads)


def _run_child(
    target: list[str], name: str, tag: str, args: list[str], threads: int | None
) -> dict[str, Any]:
    env = dict(os.environ)
    if threads is not None:
        env.update(
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
        )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *target, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{name} child failed ({proc.returncode}): " + " | ".join(tail))
    result: dict[str, Any] = json.loads(lines[-1][len(tag) :])
    result["process_wall_seconds"] = wall
    return result


def write_generated_section(doc: Path, begin: str, end: str, generated: str, title: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``doc`` (or append ``generated``)."""
    from mefn.fileutil import atomic_write_text

    text = doc.read_text(encoding="utf-8") if doc.is_file() else f"# {title}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(doc, text)
