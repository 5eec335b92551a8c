"""mefn: PET/CT tumour segmentation with voxel-wise evidential uncertainty.

Importing ``mefn`` is cheap: torch and MONAI load only when a model is used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mefn.errors import (
    CheckpointError,
    ConfigError,
    GeometryError,
    InputError,
    MefnError,
    OutputError,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:  # pragma: no cover
    from mefn.inference import Prediction, Predictor

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GeometryError",
    "InputError",
    "MefnError",
    "OutputError",
    "Prediction",
    "Predictor",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy access keeps `import mefn` (and `mefn --help`) free of torch.
    if name in ("Predictor", "Prediction"):
        from mefn import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'mefn' has no attribute {name!r}")
