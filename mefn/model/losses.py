"""Losses: evidential (MEFN) and CE + soft Dice (baselines). Called as
``loss_fn(output, target, images, epoch) -> dict`` whose ``"loss"`` is the total to
backpropagate and whose other entries are components for logging (detached).

Evidential terms, per head with Dirichlet ``alpha`` and one-hot ``y`` (Sensoy et al. 2018):

- expected cross-entropy ``sum_k y_k (psi(S) - psi(alpha_k))``;
- ``KL(Dir(alpha~) || Dir(1))`` with ``alpha~ = y + (1 - y) alpha`` (the misleading evidence
  only), weighted by ``min(1, epoch / kl_anneal_epochs)``;
- soft Dice on the belief ``b = (alpha - 1) / S`` over the foreground classes, aggregated over
  the batch (on ``alpha / S`` the floor ``1 / S`` of every class over a patch of background
  swamps a small lesion's Dice);
- uncertainty perceptual loss (accuracy versus uncertainty, after Krishnan & Tickoo 2020 and
  Zou et al. 2023): ``-p log(1 - u)`` on voxels predicted right, ``-p log u`` on voxels
  predicted wrong, averaged over all voxels, with ``p`` the (detached) probability of
  the predicted class, so that a confident mistake costs most; on wrong voxels only the
  misleading evidence is pushed down (the true class's alpha is detached); annealed over
  ``uncertainty_anneal_epochs``. (Zou et al. weight the wrong voxels by ``1 - p``, which makes
  a confident mistake cheaper than a hesitant one; we do not.)

Plus the CFL translation loss ``|pseudo_ct - CT|_1 + |pseudo_pet - PET|_1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mefn.errors import InputError
from mefn.model.config import LossConfig, ModelConfig
from mefn.model.output import ModelOutput

__all__ = [
    "BaselineLoss",
    "EvidentialLoss",
    "build_loss",
    "edl_cross_entropy",
    "edl_kl_misleading",
    "soft_dice_loss",
    "uncertainty_perceptual_loss",
]


def _one_hot(target: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """(B, 1, ...) integer labels -> (B, K, ...) float one-hot, after checking shape and range."""
    if target.ndim != like.ndim or target.shape[1] != 1 or target.shape[2:] != like.shape[2:]:
        raise InputError(
            f"target must be (B, 1, *spatial) = (B, 1, {', '.join(map(str, like.shape[2:]))}) "
            f"integer labels, found shape {tuple(target.shape)}"
        )
    labels = target[:, 0].long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise InputError(
            f"target labels must be in 0..{num_classes - 1} for num_classes={num_classes}, "
            f"found values {low}..{high}; check the label map or num_classes"
        )
    return F.one_hot(labels, num_classes).movedim(-1, 1).to(like.dtype)


def edl_cross_entropy(alpha: Tensor, y: Tensor, one_hot: bool = False) -> Tensor:
    """Per-voxel ``sum_k y_k (psi(S) - psi(alpha_k))``, shape (B, 1, ...).

    ``one_hot``: ``y`` is one-hot (the training loss's labels), so the sum is
    ``psi(S) - psi(alpha_y)``: the same value with one digamma per voxel for the labelled
    class instead of one per class (and their derivatives in the backward pass).
    """
    strength = alpha.sum(dim=1, keepdim=True)
    if one_hot:
        return torch.digamma(strength) - torch.digamma((y * alpha).sum(dim=1, keepdim=True))
    return (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(dim=1, keepdim=True)


def edl_kl_misleading(alpha: Tensor, y: Tensor) -> Tensor:
    """Per-voxel ``KL(Dir(y + (1 - y) alpha) || Dir(1, ..., 1))``, shape (B, 1, ...), for a
    one-hot ``y``.

    With two classes the true class's parameter is 1 and the other's is the misleading
    ``a = sum_k (1 - y_k) alpha_k``: ``Dir(1, a)`` is a Beta distribution and the KL is
    ``log a - (a - 1) / a`` in closed form (``lgamma(1 + a) = lgamma(a) + log a``,
    ``psi(1 + a) = psi(a) + 1 / a``), which saves the six lgamma/digamma evaluations per voxel
    and their derivatives that made these terms a tenth of a CPU training step.
    """
    k = alpha.shape[1]
    if k == 2:
        misleading = ((1.0 - y) * (alpha - 1.0)).sum(dim=1, keepdim=True)  # a - 1 >= 0
        return torch.log1p(misleading) - misleading / (misleading + 1.0)
    a = y + (1.0 - y) * alpha
    s = a.sum(dim=1, keepdim=True)
    log_norm = (
        torch.lgamma(s)
        - torch.lgamma(torch.tensor(float(k), dtype=a.dtype, device=a.device))
        - torch.lgamma(a).sum(dim=1, keepdim=True)
    )
    digamma_term = ((a - 1.0) * (torch.digamma(a) - torch.digamma(s))).sum(dim=1, keepdim=True)
    return log_norm + digamma_term


def soft_dice_loss(prob: Tensor, y: Tensor, smooth: float = 1e-5) -> Tensor:
    """``1 - mean_c (2 sum p y + s) / (sum p + sum y + s)`` over foreground classes ``c >= 1``,
    sums over the batch and all voxels (a class absent from the batch asks for p = 0)."""
    dims = [0] + list(range(2, prob.ndim))
    p, t = prob[:, 1:], y[:, 1:]
    intersection = (p * t).sum(dim=dims)
    total = p.sum(dim=dims) + t.sum(dim=dims)
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def uncertainty_perceptual_loss(alpha: Tensor, y: Tensor, eps: float = 1e-6) -> Tensor:
    """Accuracy-versus-uncertainty loss: low ``u`` where right, high ``u`` where wrong
    (``y`` one-hot).

    Averaged over all voxels. Where the prediction is wrong, ``u`` is raised only by removing
    the misleading evidence: the true class's alpha is detached in that term, so the loss never
    asks the network to withhold evidence for the right answer (which would let it settle on
    "vacuous where unsure" instead of learning the lesion class).
    """
    strength = alpha.sum(dim=1, keepdim=True)
    k = alpha.shape[1]
    u = k / strength
    prob = (alpha / strength).detach()
    confidence, predicted = prob.max(dim=1, keepdim=True)
    correct = y.gather(1, predicted).to(alpha.dtype)  # y one-hot: 1 where predicted = label
    wrong = 1.0 - correct
    strength_misleading = (alpha * (1.0 - y)).sum(dim=1, keepdim=True) + (alpha * y).sum(
        dim=1, keepdim=True
    ).detach()
    u_wrong = k / strength_misleading
    right_term = -(confidence * torch.log((1.0 - u).clamp(min=eps)))
    wrong_term = -(confidence * torch.log(u_wrong.clamp(min=eps)))
    return (right_term * correct + wrong_term * wrong).mean()


def _ramp(epoch: int, epochs: int) -> float:
    return 1.0 if epochs <= 0 else min(1.0, max(0.0, epoch / epochs))


class EvidentialLoss(nn.Module):
    """The MEFN training loss (see the module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights: LossConfig = cfg.loss

    def forward(
        self, output: ModelOutput, target: Tensor, images: Tensor, epoch: int
    ) -> dict[str, Tensor]:
        w = self.weights
        heads: list[tuple[str, Tensor | None, float]] = [
            ("ct", output.alpha_ct, w.modality_weight),
            ("pet", output.alpha_pet, w.modality_weight),
            ("fused", output.alpha_fused, w.fused_weight),
        ]
        if self.cfg.ds_fusion:
            heads.append(("combined", output.alpha, w.combined_weight))
        present = [(n, a.float(), hw) for n, a, hw in heads if a is not None]
        if not present:
            raise InputError("EvidentialLoss needs a MEFN output with alpha fields; found none")
        y = _one_hot(target, self.cfg.num_classes, present[0][1])
        kl_factor = w.kl_weight * _ramp(epoch, w.kl_anneal_epochs)
        unc_factor = w.uncertainty_weight * _ramp(epoch, w.uncertainty_anneal_epochs)
        total = torch.zeros((), device=y.device)
        logs: dict[str, Tensor] = {}
        sums = {"ce": 0.0, "kl": 0.0, "dice": 0.0, "uncertainty": 0.0}
        for name, alpha, head_weight in present:
            ce = edl_cross_entropy(alpha, y, one_hot=True).mean()
            kl = edl_kl_misleading(alpha, y).mean()
            # Dice on the belief e / S, not on alpha / S: alpha >= 1 puts a floor of 1 / S on
            # every class's probability, which over a whole patch of background swamps a small
            # lesion's Dice denominator and stalls learning of the lesion class.
            dice = soft_dice_loss((alpha - 1.0) / alpha.sum(dim=1, keepdim=True), y)
            head = w.ce_weight * ce + kl_factor * kl + w.dice_weight * dice
            if self.cfg.uncertainty_loss:
                unc = uncertainty_perceptual_loss(alpha, y)
                head = head + unc_factor * unc
                sums["uncertainty"] += float(unc.detach())
            total = total + head_weight * head
            logs[f"head_{name}"] = head.detach()
            sums["ce"] += float(ce.detach())
            sums["kl"] += float(kl.detach())
            sums["dice"] += float(dice.detach())
        if output.pseudo_ct is not None and output.pseudo_pet is not None:
            translation = F.l1_loss(output.pseudo_ct.float(), images[:, :1].float()) + F.l1_loss(
                output.pseudo_pet.float(), images[:, 1:2].float()
            )
            total = total + w.translation_weight * translation
            logs["translation"] = translation.detach()
        for key, value in sums.items():
            if key != "uncertainty" or self.cfg.uncertainty_loss:
                logs[key] = torch.tensor(value)
        logs["loss"] = total
        return logs


class BaselineLoss(nn.Module):
    """Cross-entropy plus soft Dice on the softmax, for the DynUNet baselines."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights: LossConfig = cfg.loss

    def forward(
        self, output: ModelOutput, target: Tensor, images: Tensor, epoch: int
    ) -> dict[str, Tensor]:
        if output.logits is None:
            raise InputError("BaselineLoss needs an output with logits (a DynUNet baseline)")
        logits = output.logits.float()
        y = _one_hot(target, self.cfg.num_classes, logits)
        ce = F.cross_entropy(logits, target[:, 0].long())
        dice = soft_dice_loss(torch.softmax(logits, dim=1), y)
        total = self.weights.ce_weight * ce + self.weights.dice_weight * dice
        return {"loss": total, "ce": ce.detach(), "dice": dice.detach()}


def build_loss(cfg: ModelConfig) -> nn.Module:
    """The loss module that matches ``build_model(cfg)``."""
    if cfg.architecture == "mefn":
        return EvidentialLoss(cfg)
    return BaselineLoss(cfg)
