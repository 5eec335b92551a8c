"""DynUNet baselines: a plain residual U-Net (MONAI DynUNet) and its Monte-Carlo-dropout variant.

MONAI's ``DynUNet(dropout=...)`` builds its convolutions with ``conv_only=True``, which drops
the dropout layer silently; the MC-dropout variant therefore inserts ``nn.Dropout(p)`` itself,
before the second convolution of every encoder (residual) and decoder block (as in wide
ResNets).
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock
from monai.networks.nets import DynUNet
from torch import Tensor, nn

from mefn.model.blocks import ACT, NORM, check_input
from mefn.model.config import ModelConfig
from mefn.model.output import ModelOutput

__all__ = ["DynUNetBaseline", "normalised_entropy"]


def normalised_entropy(prob: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """Predictive entropy divided by ``log K``: in [0, 1], kept as a size-1 ``dim``."""
    k = prob.shape[dim]
    entropy = -(prob * torch.log(prob.clamp(min=eps))).sum(dim=dim, keepdim=True)
    return (entropy / math.log(k)).clamp(0.0, 1.0)


class DynUNetBaseline(nn.Module):
    """MONAI DynUNet with the same levels and widths as MEFN's ``level_widths``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.size_divisor = cfg.size_divisor
        depth = cfg.depth
        self.net = DynUNet(
            spatial_dims=3,
            in_channels=2,
            out_channels=cfg.num_classes,
            kernel_size=[3] * depth,
            strides=[1] + [2] * (depth - 1),
            upsample_kernel_size=[2] * (depth - 1),
            filters=list(cfg.level_widths),
            norm_name=NORM,
            act_name=ACT,
            res_block=True,
            trans_bias=False,
        )
        self.mc_dropout = cfg.architecture == "dynunet_mcdropout"
        if self.mc_dropout:
            for module in self.net.modules():
                if isinstance(module, UnetResBlock | UnetBasicBlock):
                    module.conv2 = nn.Sequential(nn.Dropout(cfg.dropout), module.conv2)

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x, self.size_divisor)
        return ModelOutput(logits=self.net(x))

    def _dropout_train(self, mode: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train(mode)

    @torch.no_grad()
    def infer(self, x: Tensor) -> dict[str, Tensor]:
        """``prob`` and normalised predictive entropy as ``uncertainty``.

        The MC-dropout variant averages ``mc_samples`` passes with dropout active (whatever the
        module's mode) and adds ``mutual_information`` (normalised by ``log K``, the epistemic
        part of the entropy).
        """
        if not self.mc_dropout:
            prob = torch.softmax(self(x).logits.float(), dim=1)  # type: ignore[union-attr]
            return {"prob": prob, "uncertainty": normalised_entropy(prob)}
        was_training = {m: m.training for m in self.modules() if isinstance(m, nn.Dropout)}
        self._dropout_train(True)
        try:
            mean = torch.zeros(())
            mean_entropy = torch.zeros(())
            for _ in range(self.cfg.mc_samples):
                prob = torch.softmax(self(x).logits.float(), dim=1)  # type: ignore[union-attr]
                mean = mean + prob / self.cfg.mc_samples
                mean_entropy = mean_entropy + normalised_entropy(prob) / self.cfg.mc_samples
        finally:
            for module, mode in was_training.items():
                module.train(mode)
        total = normalised_entropy(mean)
        return {
            "prob": mean,
            "uncertainty": total,
            "mutual_information": (total - mean_entropy).clamp(0.0, 1.0),
        }
