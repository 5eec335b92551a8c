"""MONAI, imported once without Hugging Face ``transformers``.

``import monai`` imports every MONAI module, and its Transchex network imports
``transformers`` (BERT) when it is installed, as it is beside ``peft``: about 4-5 s of every
``mefn`` command's start on a 2-core CPU, for a network mefn never builds. While MONAI loads,
``transformers`` is hidden (MONAI treats it as not installed and leaves Transchex unusable);
it is importable again afterwards, so ``peft`` and user code import it as usual. Importing
this module does that; :mod:`mefn.model` imports it before anything of MONAI.
"""

from __future__ import annotations

import sys


def import_monai() -> None:
    """Import MONAI without ``transformers`` (nothing when MONAI or transformers is loaded)."""
    if "monai" in sys.modules:
        return
    hide = "transformers" not in sys.modules
    if hide:
        sys.modules["transformers"] = None  # type: ignore[assignment]  # import raises
    try:
        import monai  # noqa: F401
    finally:
        if hide and "transformers" in sys.modules and sys.modules["transformers"] is None:
            del sys.modules["transformers"]


import_monai()
