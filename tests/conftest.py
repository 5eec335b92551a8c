"""Shared fixtures: the real reference data beside the checkout, and small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores: keep each test process to one intra-op thread so parallel work does not thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:  # torch is a hard dependency, but conftest must not fail if it is missing
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEFN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real reference files); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (set MEFN_SHARED_DATA)")
    return SHARED_DATA
