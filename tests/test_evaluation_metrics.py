"""The paper's metric formulas against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from hubtools.evaluation import metrics


def test_cosine_matrix_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0], [-1.0, -1.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[0.0, 1.0, -r], [r, r, -1.0]], dtype=torch.float64)
    assert torch.allclose(metrics.cosine_matrix(a, b), expected, atol=1e-12)


def test_mean_pairwise_similarity_averages_every_pair():
    generated = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    real = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # pairs: (g0,r0)=1, (g0,r1)=1/sqrt2, (g1,r0)=0, (g1,r1)=1/sqrt2
    expected = (1 + 2 / math.sqrt(2) + 0) / 4
    assert metrics.mean_pairwise_similarity(generated, real) == pytest.approx(expected, abs=1e-12)


def test_identical_single_embeddings_score_one_and_scale_does_not_matter():
    x = torch.tensor([[0.3, -2.0, 5.0]])
    assert metrics.mean_pairwise_similarity(x.repeat(4, 1), 7 * x) == pytest.approx(1.0, abs=1e-12)


def test_self_similarity_leaves_the_diagonal_out():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    # distinct ordered pairs: (0,1)=0, (0,2)=r, (1,2)=r, each twice
    assert metrics.mean_self_similarity(x) == pytest.approx((0 + r + r) / 3, abs=1e-12)
    assert metrics.mean_self_similarity(x[:1]) is None


def test_paired_similarity_pairs_rows_only():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert metrics.mean_paired_similarity(images, texts) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.mean_paired_similarity(images, texts[:1])


def test_diversity_is_one_minus_within_prompt_similarity_averaged_over_prompts():
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # similarity 1 -> contributes 1.0
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # similarity 0
    single = torch.tensor([[1.0, 1.0]])  # fewer than two images: ignored
    assert metrics.diversity([same, orthogonal, single]) == pytest.approx(1 - (1.0 + 0.0) / 2, abs=1e-12)
    assert metrics.diversity([single]) is None


def test_empty_or_misshapen_embeddings_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        metrics.mean_pairwise_similarity(torch.zeros(0, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        metrics.cosine_matrix(torch.ones(3), torch.ones(1, 3))
