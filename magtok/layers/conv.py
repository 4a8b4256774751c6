"""Causal 3D convolutions: time is padded on the left only, space symmetrically.

Frame convention (kernel k_t along time)::

    input frames      f0 f1 f2 ... f(T-1)
    left pad          k_t - 1 frames (zeros, or copies of f0 with pad_mode="replicate")
    output frame t    sees f(t-k_t+1) .. f(t), never a later frame; T frames out
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magtok.layers.streaming import StreamingModule, causal_time_pad

PAD_MODES = ("constant", "replicate")


def _triple(k) -> tuple[int, int, int]:
    return tuple(k) if isinstance(k, (tuple, list)) else (k, k, k)


def check_pad_mode(pad_mode: str) -> str:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode {pad_mode!r} is not supported; use one of {PAD_MODES}")
    return pad_mode


class CausalConv3d(StreamingModule):
    """(B, C_in, T, H, W) -> (B, C_out, T, H, W); output frame t depends on input frames <= t."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size=3, pad_mode: str = "constant",
                 dilation: int = 1, bias: bool = True):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"spatial kernel sizes must be odd, got {(kh, kw)}")
        self.pad_mode = check_pad_mode(pad_mode)
        self.time_pad = dilation * (kt - 1)
        self.space_pad = (kw // 2, kw // 2, kh // 2, kh // 2, 0, 0)
        conv_padding = (0, kh // 2, kw // 2) if pad_mode == "constant" else 0
        self.conv = nn.Conv3d(dim_in, dim_out, (kt, kh, kw), dilation=(dilation, 1, 1),
                              padding=conv_padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = causal_time_pad(self, x, self.time_pad, self.pad_mode)
        if self.pad_mode == "replicate":
            x = F.pad(x, self.space_pad, mode="replicate")
        return self.conv(x)


class SameConv2d(nn.Conv2d):
    """2D convolution with 'same' padding, for the separate first-frame path: (B, C, H, W)."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size=3):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(dim_in, dim_out, (kh, kw), padding=(kh // 2, kw // 2))


class CausalConvTranspose3d(nn.Module):
    """Transposed 3D convolution that upsamples time by ``time_stride`` causally.

    (B, C_in, T, H, W) -> (B, C_out, T * time_stride, H, W): output frames s*t .. s*t+s-1 are
    produced from input frames <= t (the overhang at the end is cropped).
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size=3, time_stride: int = 2):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        self.time_stride = time_stride
        self.conv = nn.ConvTranspose3d(dim_in, dim_out, (kt, kh, kw), stride=(time_stride, 1, 1),
                                       padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        return self.conv(x)[:, :, : t * self.time_stride]
