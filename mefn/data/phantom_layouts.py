"""Moved to :mod:`mefn.data.phantoms.layouts`; this old path stays importable."""

from mefn.data.phantoms.layouts import (  # noqa: F401
    HECKTOR_CENTRES,
    LAYOUTS,
    ProgressFn,
    WrittenStudy,
    case_name,
    pet_bqml_per_suv,
    study_seed,
    write_phantoms,
    write_study,
)
