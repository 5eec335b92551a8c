"""Fixtures for mefn.io tests: tiny DICOM series and PET/CT volumes written in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import (
    BQML_PER_SUV,
    COL,
    NORMAL,
    PET_TAGS,
    ROW,
    ct_pet_pair,
    write_series,
)

from mefn.io.volume import Volume


@pytest.fixture
def dicom_writer() -> Callable[..., Path]:
    return write_series


@pytest.fixture
def kit() -> SimpleNamespace:
    """The constants and helpers of this conftest, for tests (conftest is not importable)."""
    return SimpleNamespace(
        write_series=write_series,
        PET_TAGS=PET_TAGS,
        BQML_PER_SUV=BQML_PER_SUV,
        ROW=ROW,
        COL=COL,
        NORMAL=NORMAL,
        ct_pet_pair=ct_pet_pair,
    )


@pytest.fixture
def pair() -> tuple[Volume, Volume]:
    return ct_pet_pair()
