"""MONAI, imported once without Hugging Face ``transformers`` and matplotlib's pyplot.

``import monai`` imports every MONAI module. Its Transchex network imports ``transformers``
(BERT) when it is installed, as it is beside ``peft``, and its notebook helpers import
``matplotlib.pyplot``: together about 5 s of every ``mefn`` command's start on a 2-core CPU,
for a network mefn never builds and a plotting interface it does not use (mefn draws with
``matplotlib.figure``). While MONAI loads, both are hidden (MONAI treats them as not
installed and leaves those parts unusable); they are importable again afterwards, so ``peft``
and user code import them as usual. Importing this module does that; :mod:`mefn.model`
imports it before anything of MONAI.
"""

from __future__ import annotations

import sys

#: what MONAI imports for parts mefn never uses, hidden while it loads
HIDDEN = ("transformers", "matplotlib.pyplot")


def import_monai() -> None:
    """Import MONAI without :data:`HIDDEN` (nothing when MONAI is loaded already; a module
    already loaded is not hidden)."""
    if "monai" in sys.modules:
        return
    hidden = [name for name in HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it raises
    try:
        import monai  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


import_monai()
