"""Subjective-logic maths on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mefn.model.evidential import (
    EVIDENCE_MAX,
    alpha_to_opinion,
    combine_many,
    combine_opinions,
    evidence_to_opinion,
    expected_probability,
    logits_to_alpha,
    opinion_to_alpha,
)


def _op(*values: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An opinion (belief, u) over K = len(values) - 1 classes, shape (1, K) and (1, 1)."""
    t = torch.tensor([values], dtype=torch.float64)
    return t[:, :-1], t[:, -1:]


def test_evidence_to_opinion_hand_values() -> None:
    b, u = evidence_to_opinion(torch.tensor([[3.0, 1.0]]))  # S = 3 + 1 + 2 = 6
    assert torch.allclose(b, torch.tensor([[0.5, 1 / 6]]))
    assert torch.allclose(u, torch.tensor([[1 / 3]]))
    assert torch.allclose(b.sum(1) + u[:, 0], torch.ones(1))


def test_alpha_to_opinion_and_back_round_trip() -> None:
    alpha = torch.tensor([[[1.5, 4.0, 2.0], [7.0, 1.0, 3.0]]])  # (B=1, K=2, 3 voxels)
    b, u = alpha_to_opinion(alpha)
    assert torch.allclose(b.sum(1, keepdim=True) + u, torch.ones_like(u))
    assert torch.allclose(opinion_to_alpha(b, u), alpha, atol=1e-5)
    assert torch.allclose(expected_probability(alpha)[0, :, 0], torch.tensor([1.5, 7.0]) / 8.5)


def test_logits_to_alpha_is_softplus_plus_one() -> None:
    alpha = logits_to_alpha(torch.tensor([[0.0, 2.0, -50.0]]))
    expected = torch.tensor([[math.log(2) + 1, math.log1p(math.exp(2)) + 1, 1.0]])
    assert torch.allclose(alpha, expected)


def test_combine_hand_values() -> None:
    # C = 0.5*0.6 + 0.2*0.1 = 0.32; b = (0.23, 0.36) / 0.68; u = 0.09 / 0.68
    b, u = combine_opinions(*_op(0.5, 0.2, 0.3), *_op(0.1, 0.6, 0.3))
    assert torch.allclose(b, torch.tensor([[0.23 / 0.68, 0.36 / 0.68]], dtype=torch.float64))
    assert torch.allclose(u, torch.tensor([[0.09 / 0.68]], dtype=torch.float64))
    assert torch.allclose(b.sum(1) + u[:, 0], torch.ones(1, dtype=torch.float64))


def test_vacuous_opinion_leaves_the_other_unchanged() -> None:
    b2, u2 = _op(0.1, 0.6, 0.05, 0.25)
    b, u = combine_opinions(*_op(0.0, 0.0, 0.0, 1.0), b2, u2)
    assert torch.allclose(b, b2) and torch.allclose(u, u2)
    b, u = combine_opinions(b2, u2, *_op(0.0, 0.0, 0.0, 1.0))
    assert torch.allclose(b, b2) and torch.allclose(u, u2)


def test_combination_is_commutative_and_associative_on_random_maps() -> None:
    g = torch.Generator().manual_seed(0)
    ops = [alpha_to_opinion(1 + 10 * torch.rand(2, 3, 5, 6, 7, generator=g)) for _ in range(3)]
    b12, u12 = combine_opinions(*ops[0], *ops[1])
    b21, u21 = combine_opinions(*ops[1], *ops[0])
    assert torch.allclose(b12, b21) and torch.allclose(u12, u21)
    left = combine_opinions(b12, u12, *ops[2])
    right = combine_opinions(*ops[0], *combine_opinions(*ops[1], *ops[2]))
    assert torch.allclose(left[0], right[0], atol=1e-6) and torch.allclose(left[1], right[1])
    b, u = combine_many(ops)
    assert torch.allclose(b, left[0]) and torch.allclose(u, left[1])
    assert torch.allclose(b.sum(1, keepdim=True) + u, torch.ones_like(u), atol=1e-6)
    # 1 - C >= max(u1, u2), so the combined u never exceeds the smaller input u
    assert bool((u <= torch.minimum(ops[0][1], ops[1][1]) + 1e-6).all())


def test_confident_modality_outweighs_an_uncertain_one() -> None:
    # C = 0.9 * 0.2 = 0.18; b0 = 0.9 * 0.8 / 0.82 = 0.878; b1 = 0.2 * 0.1 / 0.82 = 0.024
    b, u = combine_opinions(*_op(0.9, 0.0, 0.1), *_op(0.0, 0.2, 0.8))
    assert b[0, 0].item() == pytest.approx(0.72 / 0.82)
    assert b[0, 1].item() == pytest.approx(0.02 / 0.82)
    assert u[0, 0].item() == pytest.approx(0.08 / 0.82)


def test_total_conflict_gives_vacuous_opinion_and_finite_gradients() -> None:
    b1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    u1 = torch.zeros(1, 1, requires_grad=True)
    b, u = combine_opinions(b1, u1, torch.tensor([[0.0, 1.0]]), torch.zeros(1, 1))
    assert torch.equal(b, torch.zeros(1, 2)) and torch.equal(u, torch.ones(1, 1))
    (b.sum() + u.sum()).backward()
    assert b1.grad is not None and torch.isfinite(b1.grad).all()
    assert u1.grad is not None and torch.isfinite(u1.grad).all()
    alpha = opinion_to_alpha(b, u)
    assert torch.equal(alpha, torch.ones(1, 2))  # vacuous -> uniform Dirichlet


def test_extreme_evidence_stays_finite() -> None:
    evidence = torch.tensor([[1e38, 0.0], [0.0, 3e38], [1e30, 1e30]])
    b, u = evidence_to_opinion(evidence)
    assert torch.isfinite(b).all() and torch.isfinite(u).all() and bool((u > 0).all())
    assert torch.allclose(b.sum(1, keepdim=True) + u, torch.ones(3, 1))
    alpha = logits_to_alpha(torch.tensor([[1e38, -1e38]]))
    assert alpha[0, 0].item() == pytest.approx(EVIDENCE_MAX + 1)
    # three near-certain, agreeing opinions: u underflows towards 0, alpha stays finite
    ops = [evidence_to_opinion(evidence[:1]) for _ in range(3)]
    b3, u3 = combine_many(ops)
    alpha3 = opinion_to_alpha(b3, u3)
    assert torch.isfinite(alpha3).all() and bool((alpha3 >= 1).all())
    assert expected_probability(alpha3)[0, 0].item() == pytest.approx(1.0)


def test_combine_many_refuses_an_empty_list() -> None:
    with pytest.raises(ValueError, match="at least one opinion"):
        combine_many([])
