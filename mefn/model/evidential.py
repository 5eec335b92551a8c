"""Subjective-logic maths for evidential segmentation: pure functions on tensors.

Conventions (Sensoy et al. 2018; Han et al., Trusted Multi-view Classification, 2021/2022):
the class axis is ``dim`` (1 for ``(B, K, X, Y, Z)`` maps); evidence ``e >= 0`` per class,
Dirichlet ``alpha = e + 1``, strength ``S = sum_k alpha_k``, belief ``b_k = e_k / S`` and
uncertainty mass ``u = K / S``, so that ``sum_k b_k + u = 1``. Expected probabilities are
``alpha / S``.

All functions are safe at the extremes: evidence is capped at :data:`EVIDENCE_MAX` (so ``S``
never overflows in float32), total conflict between two opinions gives the vacuous opinion
(``u = 1``) instead of 0/0, and ``opinion_to_alpha`` caps the strength at ``K / U_MIN``.
Compute them in float32 (the network casts its heads before calling them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EVIDENCE_MAX",
    "U_MIN",
    "alpha_to_opinion",
    "combine_many",
    "combine_opinions",
    "evidence_to_opinion",
    "expected_probability",
    "logits_to_alpha",
    "logits_to_evidence",
    "opinion_to_alpha",
]

#: Largest evidence per class; keeps ``S`` finite in float32 and digamma/lgamma well defined.
EVIDENCE_MAX = 1.0e12
#: Smallest uncertainty mass ``opinion_to_alpha`` accepts (caps the Dirichlet strength).
U_MIN = 1.0e-12
#: Denominators ``1 - C`` below this count as total conflict.
_CONFLICT_TINY = 1.0e-20


def logits_to_evidence(logits: Tensor) -> Tensor:
    """Non-negative evidence ``softplus(logits)``, capped at :data:`EVIDENCE_MAX`."""
    return F.softplus(logits).clamp(max=EVIDENCE_MAX)


def logits_to_alpha(logits: Tensor) -> Tensor:
    """Dirichlet parameters ``alpha = softplus(logits) + 1``."""
    return logits_to_evidence(logits) + 1.0


def evidence_to_opinion(evidence: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Belief masses ``e / S`` and uncertainty ``K / S`` (kept as a size-1 ``dim``)."""
    evidence = evidence.clamp(min=0.0, max=EVIDENCE_MAX)
    k = evidence.shape[dim]
    strength = evidence.sum(dim=dim, keepdim=True) + k
    return evidence / strength, k / strength


def alpha_to_opinion(alpha: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Belief masses and uncertainty of the Dirichlet ``alpha`` (``alpha >= 1``)."""
    return evidence_to_opinion(alpha - 1.0, dim=dim)


def expected_probability(alpha: Tensor, dim: int = 1) -> Tensor:
    """Mean of the Dirichlet: ``alpha / S``."""
    return alpha / alpha.sum(dim=dim, keepdim=True)


def combine_opinions(
    b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor, dim: int = 1
) -> tuple[Tensor, Tensor]:
    """Reduced Dempster rule of two opinions over the same ``K`` classes.

    With conflict ``C = sum_{i != j} b1_i b2_j``:
    ``b_k = (b1_k b2_k + b1_k u2 + b2_k u1) / (1 - C)`` and ``u = u1 u2 / (1 - C)``.
    ``1 - C`` is computed as the sum of the numerators (equal for normalised opinions, and free
    of cancellation when C is near 1). Under total conflict (``1 - C`` below 1e-20) the result is
    the vacuous opinion ``b = 0, u = 1``: two sources that contradict each other completely
    leave us knowing nothing. The rule is commutative and associative, and a vacuous opinion
    (``u = 1``) leaves the other unchanged.
    """
    b_num = b1 * b2 + b1 * u2 + b2 * u1
    u_num = u1 * u2
    denom = b_num.sum(dim=dim, keepdim=True) + u_num
    ok = denom > _CONFLICT_TINY
    safe = torch.where(ok, denom, torch.ones_like(denom))
    belief = torch.where(ok, b_num / safe, torch.zeros_like(b_num))
    uncertainty = torch.where(ok, u_num / safe, torch.ones_like(u_num))
    return belief, uncertainty


def combine_many(opinions: list[tuple[Tensor, Tensor]], dim: int = 1) -> tuple[Tensor, Tensor]:
    """Fold :func:`combine_opinions` over a non-empty list of ``(belief, u)`` pairs."""
    if not opinions:
        raise ValueError("combine_many needs at least one opinion")
    belief, uncertainty = opinions[0]
    for b, u in opinions[1:]:
        belief, uncertainty = combine_opinions(belief, uncertainty, b, u, dim=dim)
    return belief, uncertainty


def opinion_to_alpha(belief: Tensor, uncertainty: Tensor, dim: int = 1) -> Tensor:
    """Dirichlet ``alpha`` of an opinion: ``S = K / u``, ``alpha = b S + 1``.

    ``u`` is clamped to ``[U_MIN, 1]`` so that a near-certain opinion gives a large but finite
    strength.
    """
    k = belief.shape[dim]
    strength = k / uncertainty.clamp(min=U_MIN, max=1.0)
    return belief.clamp(min=0.0) * strength + 1.0
