"""Where weights and adapters come from, and what their cards say.

- :func:`resolve_weights`: a bundled name, a ``.safetensors`` file or a training folder ->
  (weights, model card); :func:`list_models` names the bundled ones.
- :func:`resolve_adapter`: a folder or a bundled adapter name -> its folder;
  :func:`list_adapters` names the bundled ones, :func:`adapter_card` reads its ``card.json``.
- :func:`read_model_card`, :func:`load_state`: a card's model and preprocessing, a weights
  file's tensors, each refused with a :class:`CheckpointError` when malformed.
- :func:`resolve_pet_check`, :func:`resolve_hot_spot_check`: the post-processing a card
  stores, with the caller's overrides.

:class:`mefn.inference.Predictor` composes these; they are re-exported by
:mod:`mefn.inference`, where older code imports them from.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mefn.config import from_dict
from mefn.data.preprocess import PreprocessConfig
from mefn.errors import CheckpointError, InputError
from mefn.postprocess import HotSpotCheck, PetCheck

if TYPE_CHECKING:  # pragma: no cover
    from mefn.model import ModelConfig

__all__ = [
    "ADAPTERS_DIR",
    "ADAPTER_CARD",
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "adapter_card",
    "card_labels",
    "default_labels",
    "list_adapters",
    "list_models",
    "load_state",
    "read_model_card",
    "resolve_adapter",
    "resolve_hot_spot_check",
    "resolve_pet_check",
    "resolve_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "mefn_default"
#: bundled adapters: ``mefn/weights/adapters/<name>/`` (``mefn segment --adapter <name>``)
ADAPTERS_DIR = WEIGHTS_DIR / "adapters"
#: an adapter's card beside its files: data, figures and the post-processing chosen for it
ADAPTER_CARD = "card.json"


def list_models() -> list[str]:
    """Names of the bundled weights (``mefn/weights/<name>.safetensors``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def list_adapters() -> list[str]:
    """Names of the bundled adapters (folders of ``mefn/weights/adapters`` with a config)."""
    if not ADAPTERS_DIR.is_dir():
        return []
    return sorted(p.name for p in ADAPTERS_DIR.iterdir() if (p / "adapter_config.json").is_file())


def resolve_adapter(adapter: str | Path) -> Path:
    """The folder of an adapter: a path (a `mefn finetune` output or its ``adapter/``
    folder) or the name of a bundled adapter (:func:`list_adapters`)."""
    path = Path(adapter)
    if path.exists():
        if (path / "adapter").is_dir() and not (path / "adapter_config.json").exists():
            return path / "adapter"  # a `mefn finetune` output folder
        return path
    bundled = ADAPTERS_DIR / str(adapter)
    if path.name == str(adapter) and (bundled / "adapter_config.json").is_file():
        return bundled
    known = ", ".join(list_adapters()) or "none bundled"
    raise InputError(
        f"adapter {str(adapter)!r} not found: expected an adapter folder (from `mefn finetune`) "
        f"or a bundled adapter name ({known})"
    )


def adapter_card(folder: Path) -> dict[str, Any]:
    """The adapter's ``card.json`` ({} when it has none); a malformed one is an error."""
    path = folder / ADAPTER_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"adapter card {path} is not valid JSON ({exc}); fix it") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"adapter card {path} must be a JSON object; fix it")
    return card


def resolve_weights(model: str | Path) -> tuple[Path, Path]:
    """(weights.safetensors, card.json) for a bundled name, a file or a training run folder."""
    name = str(model)
    candidates: list[tuple[Path, Path]] = []
    if name in ("default", ""):
        name = DEFAULT_MODEL
    path = Path(name)
    if path.is_dir():
        candidates.append((path / "model.safetensors", path / "model.json"))
    elif path.suffix == ".safetensors" or path.is_file():
        candidates.append((path, path.with_suffix(".json")))
    candidates.append((WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"))
    for weights, card in candidates:
        if weights.is_file():
            if not card.is_file():
                raise CheckpointError(
                    f"weights {weights} have no model card {card.name} beside them; "
                    "keep the .json written by `mefn train` next to the .safetensors"
                )
            return weights, card
    known = ", ".join(list_models()) or "none bundled"
    raise InputError(
        f"model {model!r} not found: expected a bundled name ({known}), a .safetensors file "
        "with its .json card, or a training output folder"
    )


def read_model_card(path: Path) -> tuple[dict[str, Any], ModelConfig, PreprocessConfig]:
    """The card's JSON, its model configuration and its preprocessing."""
    from mefn.model import ModelConfig

    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        model_cfg = from_dict(ModelConfig, card["model"], where="model card")
        preprocess = from_dict(
            PreprocessConfig, card.get("preprocess", {}), where="model card preprocess"
        )
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"model card {path} is not a mefn card ({type(exc).__name__}: {exc}); "
            "use the .json written by `mefn train`"
        ) from None
    return card, model_cfg, preprocess


def card_labels(card: dict[str, Any], num_classes: int) -> dict[str, str]:
    """The card's class names, else the defaults for ``num_classes``."""
    labels = card.get("labels")
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    return default_labels(num_classes)


def default_labels(num_classes: int) -> dict[str, str]:
    """Class names when neither the card nor the adapter gives them (as ``mefn train``)."""
    from mefn.model.config import label_names

    return label_names(num_classes)


def load_state(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors weights file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors weights file ({exc}); re-download or retrain it"
        ) from None


def resolve_pet_check(
    card_value: Any, override: PetCheck | dict[str, Any] | None = None
) -> PetCheck:
    """The PET check of a card's ``pet_check`` (absent: none), with ``override``: a
    :class:`PetCheck` replaces it, a dict replaces the fields it names.

    A malformed card entry (not a mapping, an unknown field, a value out of range) is a
    :class:`CheckpointError`; a malformed override is the caller's :class:`InputError`.
    """
    return _resolve_card_check(PetCheck, "pet_check", "PET check", card_value, override)


def resolve_hot_spot_check(
    card_value: Any, override: HotSpotCheck | dict[str, Any] | None = None
) -> HotSpotCheck:
    """The hot-spot listing of a card's ``hot_spots`` (absent: the defaults of
    :class:`HotSpotCheck`), with ``override`` as in :func:`resolve_pet_check`."""
    return _resolve_card_check(HotSpotCheck, "hot_spots", "hot-spot check", card_value, override)


_Check = TypeVar("_Check", PetCheck, HotSpotCheck)


def _resolve_card_check(
    cls: type[_Check], key: str, what: str, card_value: Any, override: Any
) -> _Check:
    if isinstance(override, cls):
        return override
    names = [f.name for f in fields(cls)]
    expected = f"the fields {', '.join(names)}"
    if card_value is not None and not isinstance(card_value, dict):
        raise CheckpointError(
            f"the model card's {key} {card_value!r} is not a {what}; expected a mapping "
            f"with {expected}; fix or retrain the card"
        )
    try:
        card = cls(**(card_value or {}))
    except (TypeError, InputError) as exc:
        raise CheckpointError(
            f"the model card's {key} {card_value} is not a valid {what} ({exc}); "
            f"expected {expected}; fix or retrain the card"
        ) from None
    if not override:
        return card
    unknown = sorted(set(override) - set(names))
    if unknown:
        raise InputError(
            f"{what[0].upper() + what[1:]} override names unknown fields {unknown}; "
            f"expected some of {expected}"
        )
    return replace(card, **override)
