"""Finding the modules that receive adapters, and small helpers on module trees."""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter

from torch import nn

from mefn.adapters.config import TargetConfig
from mefn.errors import ConfigError

__all__ = [
    "NORM_TYPES",
    "branch_key",
    "channels_of",
    "replace_submodule",
    "select_targets",
]

NORM_TYPES = (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def select_targets(model: nn.Module, targets: TargetConfig) -> list[str]:
    """Dotted names of the modules matching ``targets``, outermost first, in model order.

    Raises ConfigError when a prefix names nothing in the model or when nothing matches.
    """
    names = [name for name, _ in model.named_modules() if name]
    for prefix in targets.prefixes:
        if not any(_under(n, prefix) for n in names):
            top = sorted({n.split(".")[0] for n in names})
            near = difflib.get_close_matches(prefix, top, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"adapter target prefix {prefix!r} names no module of the model{hint} "
                f"(top-level modules: {', '.join(top)})"
            )
    chosen: list[str] = []
    for name, module in model.named_modules():
        # match the class or any base class by name: mefn.model's OneDnnConv3d is a Conv3d
        kinds = {cls.__name__ for cls in type(module).__mro__}
        if not name or not kinds & set(targets.layer_types):
            continue
        if targets.prefixes and not any(_under(name, p) for p in targets.prefixes):
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in targets.exclude):
            continue
        if any(_under(name, outer) for outer in chosen):
            continue
        chosen.append(name)
    if not chosen:
        counts = Counter(type(m).__name__ for _, m in model.named_modules())
        common = ", ".join(f"{k} x{v}" for k, v in counts.most_common(8))
        raise ConfigError(
            f"no module matches the adapter targets (layer_types={list(targets.layer_types)}, "
            f"prefixes={list(targets.prefixes)}, exclude={list(targets.exclude)}); "
            f"the model has {common}"
        )
    return chosen


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the dotted ``name`` is inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def branch_key(name: str, branch_prefixes: tuple[str, ...]) -> str | None:
    """The name with its branch prefix removed (``enc_ct.stage1`` -> ``stage1``), or None."""
    for prefix in branch_prefixes:
        if name.startswith(prefix + "."):
            return name[len(prefix) + 1 :]
    return None


def channels_of(module: nn.Module, name: str) -> tuple[int, int]:
    """(input channels, output channels) of a conv, norm or block made of convs."""
    if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.BatchNorm3d | nn.InstanceNorm3d):
        return module.num_features, module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, module.num_channels
    in_ch = getattr(module, "in_channels", None)
    out_ch = getattr(module, "out_channels", None)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    if not isinstance(in_ch, int) and convs:
        in_ch = convs[0].in_channels
    if not isinstance(out_ch, int) and convs:
        out_ch = convs[-1].out_channels
    if not isinstance(in_ch, int) or not isinstance(out_ch, int):
        raise ConfigError(
            f"cannot tell the channel count of target {name!r} ({type(module).__name__}: "
            "no in_channels/out_channels and no Conv3d inside); target its convolutions instead"
        )
    return in_ch, out_ch
