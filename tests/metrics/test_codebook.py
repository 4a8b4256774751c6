"""Codebook usage, bits per token, compression ratio, and per-clip aggregation."""

import math

import pytest
import torch

from magtok.metrics import (ClipAverage, CodebookUsage, bits_per_token, clip_means, codebook_usage,
                            compression_ratio, dataset_mean)


def test_two_of_four_codes_equally():
    s = codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert (s.used, s.tokens, s.codebook_size) == (2, 4, 4)
    assert s.utilization == 0.5
    assert s.entropy_bits == pytest.approx(1.0)
    assert s.perplexity == pytest.approx(2.0)


def test_uniform_and_single_code():
    s = codebook_usage(torch.arange(8).repeat(3), 8)
    assert s.utilization == 1.0 and s.perplexity == pytest.approx(8.0) and s.entropy_bits == pytest.approx(3.0)
    s = codebook_usage(torch.full((5, 7), 3), 16)
    assert s.used == 1 and s.utilization == 1 / 16 and s.perplexity == pytest.approx(1.0)


def test_skewed_histogram_and_incremental_updates():
    acc = CodebookUsage(10)
    acc.update(torch.tensor([7, 7]))
    acc.update(torch.tensor([[7], [2]]))  # counts: 7 -> 3, 2 -> 1
    s = acc.compute()
    # p = (3/4, 1/4): perplexity = (3/4)^(-3/4) * (1/4)^(-1/4)
    assert s.perplexity == pytest.approx(0.75 ** -0.75 * 0.25 ** -0.25, rel=1e-12)
    assert s.used == 2 and s.tokens == 4 and s.utilization == 0.2
    other = CodebookUsage(10)
    other.update(torch.tensor([2, 2]))
    acc.merge(other)  # counts: 3 and 3 -> perplexity 2
    assert acc.compute().perplexity == pytest.approx(2.0)
    acc.reset()
    with pytest.raises(ValueError, match="update"):
        acc.compute()


def test_codebook_bad_inputs():
    acc = CodebookUsage(4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        acc.update(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        acc.update(torch.tensor([-1]))
    with pytest.raises(ValueError, match="integer"):
        acc.update(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="merge"):
        acc.merge(CodebookUsage(5))
    with pytest.raises(ValueError, match=">= 1"):
        CodebookUsage(0)


def test_bits_and_compression():
    assert bits_per_token(2 ** 18) == 18.0
    assert bits_per_token(1000) == pytest.approx(math.log2(1000))
    # 17x128x128 RGB 8-bit video -> 5x16x16 tokens of an 18-bit codebook
    expected = 17 * 128 * 128 * 3 * 8 / (5 * 16 * 16 * 18)
    assert compression_ratio((17, 128, 128), (5, 16, 16), 2 ** 18) == pytest.approx(expected)
    assert compression_ratio((4, 3, 17, 128, 128), (4, 5, 16, 16), 2 ** 18) == pytest.approx(expected)
    assert compression_ratio((1, 17, 128, 128), (5, 16, 16), 2 ** 18) == pytest.approx(expected / 3)  # grey
    with pytest.raises(ValueError, match="batch sizes differ"):
        compression_ratio((4, 3, 17, 128, 128), (2, 5, 16, 16), 2 ** 18)
    with pytest.raises(ValueError, match="video_shape"):
        compression_ratio((128, 128), (5, 16, 16), 2 ** 18)
    with pytest.raises(ValueError, match="no information"):
        compression_ratio((17, 128, 128), (5, 16, 16), 1)


def test_clip_aggregation_weights_clips_not_frames():
    assert torch.equal(clip_means(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])),
                       torch.tensor([2.0, 5.0], dtype=torch.float64))
    acc = ClipAverage()
    acc.update(torch.tensor([[1.0, 2.0, 3.0]]))  # one 3-frame clip, mean 2
    acc.update(torch.tensor([[4.0], [6.0]]))  # two 1-frame clips
    assert acc.compute() == pytest.approx(4.0)  # (2 + 4 + 6) / 3, not the frame mean 3.2
    assert dataset_mean([torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0, 6.0])]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="update"):
        ClipAverage().compute()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        clip_means(torch.zeros(2, 3, 4))
