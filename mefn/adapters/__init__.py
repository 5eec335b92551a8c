"""Parameter-efficient fine-tuning of mefn models: adapters on 3D convolutions.

One entry point injects any adapter type into a frozen model; the handle it returns lists
the trainable parameters and the per-step hooks; adapters are saved as safetensors plus a
JSON config tied to the base model's hash, loaded, and merged into the convolutions where
the type allows. ``docs/adapters.md`` describes each type.

    handle = inject_adapters(model, load_adapter_config("lora"))
    optim = torch.optim.AdamW(handle.trainable_parameters().values(), lr=1e-3)
    ...  # loss.backward(); optim.step(); handle.on_step()
    save_adapter(handle, "runs/site_b/adapter", base_model_hash=model_hash(base_state))
"""

from __future__ import annotations

from mefn.adapters.config import (
    ADAPTER_TYPES,
    AdapterConfig,
    GateConfig,
    HeadsConfig,
    LAEConfig,
    MosaConfig,
    QuantConfig,
    ShareConfig,
    TargetConfig,
    load_adapter_config,
)
from mefn.adapters.inject import (
    AdapterHandle,
    inject_adapters,
    merge_adapters,
    remove_adapters,
    trainable_parameters,
)
from mefn.adapters.lae import LAEEnsembleModel, ensemble_logits, ensemble_maps
from mefn.adapters.serialize import load_adapter, model_hash, save_adapter

__all__ = [
    "ADAPTER_TYPES",
    "AdapterConfig",
    "AdapterHandle",
    "GateConfig",
    "HeadsConfig",
    "LAEConfig",
    "MosaConfig",
    "QuantConfig",
    "ShareConfig",
    "TargetConfig",
    "LAEEnsembleModel",
    "ensemble_logits",
    "ensemble_maps",
    "inject_adapters",
    "load_adapter",
    "load_adapter_config",
    "merge_adapters",
    "model_hash",
    "remove_adapters",
    "save_adapter",
    "trainable_parameters",
]
