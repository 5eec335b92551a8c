"""MONAI is imported without Hugging Face transformers, which stays importable for peft."""

import subprocess
import sys


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return done.stdout.strip()


def test_segmenting_imports_monai_but_not_transformers():
    code = (
        "import sys, mefn.inference; print('monai' in sys.modules, 'transformers' in sys.modules)"
    )
    assert _python(code) == "True False"


def test_transformers_and_peft_import_afterwards():
    code = (
        "import mefn.model, transformers, peft, sys; "
        "print(type(sys.modules['transformers']).__name__ != 'NoneType', hasattr(peft, 'LoraConfig'))"
    )
    assert _python(code) == "True True"
