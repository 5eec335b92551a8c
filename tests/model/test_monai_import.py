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
        "import mefn.model, transformers, peft, matplotlib.pyplot; "
        "print(transformers.__name__, peft.LoraConfig.__name__, matplotlib.pyplot.__name__)"
    )
    assert _python(code) == "transformers LoraConfig matplotlib.pyplot"


def test_the_affine_augmentation_imports_monai_without_transformers():
    code = (
        "import sys, types, numpy as np; "
        "from mefn.data.augment import AugmentConfig, PatchSampler; "
        "me = types.SimpleNamespace(augment=AugmentConfig(), rng=np.random.default_rng(0)); "
        "image, label = PatchSampler._affine(me, np.ones((2, 8, 8, 8), np.float32), "
        "np.ones((8, 8, 8), np.uint8)); "
        "print(image.shape, 'transformers' in sys.modules)"
    )
    assert _python(code) == "(2, 8, 8, 8) False"
