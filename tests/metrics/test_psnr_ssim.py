"""PSNR and SSIM: hand-computed values, identities, skimage agreement."""

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from magtok.metrics import psnr, ssim


def _noisy(seed=0, shape=(2, 3, 4, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 1.6 - 0.8  # (B, C, T, H, W) in [-1, 1]
    return x, g


def test_psnr_hand_value():
    x = torch.zeros(1, 3, 2, 8, 8)
    y = x.clone()
    y[:, :, 0] += 0.2  # 0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    y[:, :, 1] -= 0.02  # 0.01 -> MSE 1e-4 -> 40 dB
    p = psnr(x, y)
    assert p.shape == (1, 2) and p.dtype == torch.float64
    torch.testing.assert_close(p, torch.tensor([[20.0, 40.0]], dtype=torch.float64))
    torch.testing.assert_close(psnr(x[:, :, 0], y[:, :, 0]), torch.tensor([20.0], dtype=torch.float64))  # images


def test_psnr_identical_is_inf_or_cap():
    x, _ = _noisy()
    assert torch.isinf(psnr(x, x)).all()
    assert torch.equal(psnr(x, x, max_db=100.0), torch.full((2, 4), 100.0, dtype=torch.float64))


def test_psnr_equals_uint8_formula():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (1, 3, 2, 16, 16), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-9, 10, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 3, 4))  # (1, T)
    expected = 10 * torch.log10(255.0 ** 2 / mse)
    torch.testing.assert_close(psnr(a.float() / 127.5 - 1, b.float() / 127.5 - 1), expected, atol=1e-5, rtol=0)


def test_ssim_identical_is_one():
    x, _ = _noisy()
    s = ssim(x, x)
    assert s.shape == (2, 4)
    torch.testing.assert_close(s, torch.ones(2, 4), atol=1e-6, rtol=0)


def test_ssim_decreases_with_noise():
    x, g = _noisy(1, (1, 3, 1, 48, 48))
    noise = torch.randn(x.shape, generator=g)
    values = [ssim(x, (x + s * noise).clamp(-1, 1)).item() for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] > 0.99 and values[-1] < 0.9


def test_ssim_matches_skimage():
    g = torch.Generator().manual_seed(2)
    # smooth structure plus noise, so the value is far from both 0 and 1
    base = torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8, generator=g), size=(40, 56), mode="bilinear")
    a = base * 2 - 1  # (N=3, C, H, W) in [-1, 1]
    b = (a + 0.15 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    ours = ssim(a, b)
    for i in range(3):
        ref = structural_similarity(((a[i] + 1) / 2).permute(1, 2, 0).double().numpy(),
                                    ((b[i] + 1) / 2).permute(1, 2, 0).double().numpy(),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=-1)
        assert abs(ours[i].item() - ref) < 1e-4, (ours[i].item(), ref)
        assert 0.2 < ref < 0.95
    # chunking over frames changes nothing
    torch.testing.assert_close(ssim(a, b, frames_per_chunk=1), ours)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_inputs(metric):
    x = torch.zeros(1, 3, 2, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        metric(x, x[:, :, :1])
    with pytest.raises(ValueError, match="127.5"):
        metric(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        metric(x[0, 0], x[0, 0])


def test_ssim_small_frames():
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_psnr_math_inf_is_float_inf():
    assert psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)).item() == math.inf
