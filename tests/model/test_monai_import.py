"""MONAI is imported without Hugging Face transformers and pyplot, both importable after."""

import subprocess
import sys


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return done.stdout.strip()


def test_segmenting_imports_monai_but_not_transformers():
    code = (
        "import sys, mefn.inference; "
        "print('monai' in sys.modules, 'transformers' in sys.modules, "
        "'matplotlib.pyplot' in sys.modules)"
    )
    assert _python(code) == "True False False"


def test_transformers_peft_and_pyplot_import_afterwards():
    code = (
        "import mefn.model, transformers, peft, matplotlib.pyplot, sys; "
        "print(type(sys.modules['transformers']).__name__ != 'NoneType', hasattr(peft, 'LoraConfig'))"
    )
    assert _python(code) == "True True"
