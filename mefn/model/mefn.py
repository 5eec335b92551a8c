"""MEFN: two modality encoders, cross-modal feature learning, trusted fusion, evidential heads.

Forward pass (levels 0 = full resolution .. L-1 = bottleneck; docs/model_card.md gives the
reasons for each choice)::

    f_ct, f_pet = x[:, :1], x[:, 1:]
    for each level l:  f_ct, f_pet = enc_ct[l](f_ct), enc_pet[l](f_pet)      (two encoders)
                       CFL: both streams *= 1 + sigmoid(conv1x1(f_pet))        (tumour gate)
                       MTF: at the coarsest levels, mutual attention f_ct <-> f_pet
    d_ct, d_pet = decoder_ct(skips_ct[1:]), decoder_pet(skips_pet[1:])      (half resolution)
    alpha_ct, alpha_pet = evidential heads on d_ct, d_pet (logits upsampled x2)
    w_ct, w_pet = calibrator(u_ct, u_pet)                                   (MTF calibrator)
    fused = up_block([w_ct d_ct, w_pet d_pet], skip = [skip_ct0, skip_pet0]) (full resolution)
    alpha_fused = evidential head(fused)
    alpha = Dempster-Shafer(opinion_ct, opinion_pet, opinion_fused) -> Dirichlet
    CFL: pseudo_ct = translate(d_pet), pseudo_pet = translate(d_ct)          (upsampled x2)

The modality branches are decoded only down to half resolution and the single full-resolution
stage works on the fused features: on a CPU, time goes with the number of full-resolution
layers far more than with FLOPs, and this keeps MEFN's count at the baseline's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mefn.model.blocks import Decoder, Encoder, UpStage, check_input, out_conv
from mefn.model.cfl import TranslationHead, TumourGate
from mefn.model.config import ModelConfig
from mefn.model.evidential import (
    alpha_to_opinion,
    combine_many,
    expected_probability,
    logits_to_alpha,
    opinion_to_alpha,
)
from mefn.model.mtf import MutualAttention, UncertaintyCalibrator
from mefn.model.output import ModelOutput

__all__ = ["MEFN"]


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class MEFN(nn.Module):
    """Multi-modal evidential fusion network for PET/CT (input ``(B, 2, X, Y, Z)``: CT, PET)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.size_divisor = cfg.size_divisor
        widths = cfg.branch_widths
        depth = len(widths)
        k = cfg.num_classes
        self.enc_ct = Encoder(1, widths, light_first=True)
        self.enc_pet = Encoder(1, widths, light_first=True)
        self.gates = nn.ModuleList([TumourGate(w) for w in widths]) if cfg.cfl else None
        self.attention_from = depth - cfg.attention_levels if cfg.mutual_attention else depth
        self.attention = nn.ModuleDict(
            {
                str(level): MutualAttention(widths[level], cfg.attention_heads)
                for level in range(self.attention_from, depth)
            }
        )
        self.dec_ct = Decoder(widths[1:])
        self.dec_pet = Decoder(widths[1:])
        self.head_ct = out_conv(widths[1], k)
        self.head_pet = out_conv(widths[1], k)
        self.calibrator = UncertaintyCalibrator() if cfg.calibrator else None
        # Full-resolution fused stage: transposed conv of the two calibrated half-resolution
        # streams, concatenated with both level-0 skips, then ``fuse_convs`` convolutions.
        self.fuse = UpStage(
            2 * widths[1], 2 * widths[0], cfg.fused_width, cfg.fuse_convs, cfg.fuse_pointwise
        )
        self.head_fused = out_conv(cfg.fused_width, k)
        if cfg.cfl:
            self.to_pseudo_ct: TranslationHead | None = TranslationHead(widths[1])
            self.to_pseudo_pet: TranslationHead | None = TranslationHead(widths[1])
        else:
            self.to_pseudo_ct = self.to_pseudo_pet = None

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x, self.size_divisor)
        f_ct, f_pet = x[:, :1], x[:, 1:2]
        skips_ct: list[Tensor] = []
        skips_pet: list[Tensor] = []
        for level, (stage_ct, stage_pet) in enumerate(zip(self.enc_ct.stages, self.enc_pet.stages)):
            f_ct, f_pet = stage_ct(f_ct), stage_pet(f_pet)
            if self.gates is not None:
                f_ct, f_pet, _ = self.gates[level](f_ct, f_pet)
            if level >= self.attention_from:
                f_ct, f_pet = self.attention[str(level)](f_ct, f_pet)
            skips_ct.append(f_ct)
            skips_pet.append(f_pet)
        d_ct = self.dec_ct(skips_ct[1:])
        d_pet = self.dec_pet(skips_pet[1:])

        logits_ct = self.head_ct(d_ct).float()
        logits_pet = self.head_pet(d_pet).float()
        if self.calibrator is not None:
            # The calibrator reads the modality uncertainties but does not train them: each
            # modality head learns its u from its own loss only.
            _, u_ct_half = alpha_to_opinion(logits_to_alpha(logits_ct.detach()))
            _, u_pet_half = alpha_to_opinion(logits_to_alpha(logits_pet.detach()))
            w_ct, w_pet = self.calibrator(u_ct_half, u_pet_half)
            streams = torch.cat([d_ct * w_ct.to(d_ct.dtype), d_pet * w_pet.to(d_pet.dtype)], 1)
        else:
            w_ct = w_pet = None
            streams = torch.cat([d_ct, d_pet], dim=1)
        fused = self.fuse(streams, torch.cat([skips_ct[0], skips_pet[0]], dim=1))

        alpha_ct = logits_to_alpha(_upsample(logits_ct))
        alpha_pet = logits_to_alpha(_upsample(logits_pet))
        alpha_fused = logits_to_alpha(self.head_fused(fused).float())
        b_ct, u_ct = alpha_to_opinion(alpha_ct)
        b_pet, u_pet = alpha_to_opinion(alpha_pet)
        b_fused, u_fused = alpha_to_opinion(alpha_fused)
        aux: dict[str, Tensor] = {
            "uncertainty_ct": u_ct,
            "uncertainty_pet": u_pet,
            "uncertainty_fused_head": u_fused,
        }
        if w_ct is not None and w_pet is not None:
            aux["weight_ct"], aux["weight_pet"] = w_ct, w_pet

        if self.cfg.ds_fusion:
            belief, uncertainty = combine_many([(b_ct, u_ct), (b_pet, u_pet), (b_fused, u_fused)])
            alpha = opinion_to_alpha(belief, uncertainty)
        else:
            alpha, belief, uncertainty = alpha_fused, b_fused, u_fused

        pseudo_ct = pseudo_pet = None
        if self.to_pseudo_ct is not None and self.to_pseudo_pet is not None:
            pseudo_ct = self.to_pseudo_ct(d_pet)
            pseudo_pet = self.to_pseudo_pet(d_ct)
        return ModelOutput(
            alpha=alpha,
            alpha_ct=alpha_ct,
            alpha_pet=alpha_pet,
            alpha_fused=alpha_fused,
            belief=belief,
            uncertainty=uncertainty,
            pseudo_ct=pseudo_ct,
            pseudo_pet=pseudo_pet,
            aux=aux,
        )

    @torch.no_grad()
    def infer(self, x: Tensor) -> dict[str, Tensor]:
        """Maps for sliding-window inference, all in [0, 1]: ``prob`` (B, K, ...) = alpha / S of
        the final opinion, ``uncertainty`` its u, ``uncertainty_ct`` / ``uncertainty_pet``."""
        out = self(x)
        alpha = out.alpha if out.alpha is not None else out.alpha_fused
        if alpha is None or out.uncertainty is None:  # pragma: no cover - forward sets both
            raise RuntimeError("MEFN forward returned no alpha")
        return {
            "prob": expected_probability(alpha),
            "uncertainty": out.uncertainty.clamp(0.0, 1.0),
            "uncertainty_ct": out.aux["uncertainty_ct"].clamp(0.0, 1.0),
            "uncertainty_pet": out.aux["uncertainty_pet"].clamp(0.0, 1.0),
        }
