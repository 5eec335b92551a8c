"""Moved to :mod:`mefn.data.phantoms.lesions`; this old path stays importable."""

from mefn.data.phantoms.lesions import (  # noqa: F401
    NODE_SITES,
    PRIMARY_SITES,
    WHOLEBODY_SITES,
    Lesion,
    LesionShape,
    recovery_coefficient,
    sample_lesions,
)
