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

from magtok.kernels import winograd
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
        if winograd.applies(self.conv, x):
            return winograd.causal_conv3d(x, self._winograd_weight(), self.conv.bias, self.pad_mode == "replicate")
        if self.pad_mode == "replicate":
            x = F.pad(x, self.space_pad, mode="replicate")
        if x.shape[2] < _BF16_MIN_FRAMES and x.requires_grad and _cpu_bf16_autocast(x):
            # oneDNN's bf16 weight gradient of a 3D conv returns NaNs for short clips (measured: 32
            # channels at 64x64 with 3-7 padded frames, e.g. one-frame image batches); such inputs
            # are small, so they run in float32 (tests/layers/test_layers.py::test_bf16_short_clip)
            with torch.autocast("cpu", enabled=False):
                return self.conv(x.float())
        return self.conv(x)

    def _winograd_weight(self) -> torch.Tensor:
        """The transformed weight, recomputed when the weight changes (in place or replaced)."""
        w = self.conv.weight
        key = (w.data_ptr(), w._version)
        cached = self.__dict__.get("_winograd_cache")
        if cached is None or cached[0] != key:
            cached = (key, winograd.transform_weight(w))
            self.__dict__["_winograd_cache"] = cached
        return cached[1]


_BF16_MIN_FRAMES = 9


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and \
        torch.get_autocast_dtype("cpu") == torch.bfloat16


def pointwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1x1 convolution of (B, C, T, H, W) with a (Co, C, ...) weight of unit kernel.

    Eager CPU runs it as one matrix product on the (C, T*H*W) view, 1.5-1.7x faster than oneDNN's
    convolution at 128-256 channels (which reorders its input and output) and ~10x for a single
    output channel (BENCHMARKS.md); elsewhere, under torch.compile and autocast, it is ``F.conv3d``.
    """
    co = weight.shape[0]
    if (x.device.type != "cpu" or x.dim() != 5 or not x.is_contiguous() or x.dtype != weight.dtype
            or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")):
        return F.conv3d(x, weight.reshape(co, -1, 1, 1, 1), bias)
    b, c = x.shape[:2]
    w = weight.reshape(co, c)
    if b == 1:
        flat = x.view(c, -1)
        y = torch.mm(w, flat) if bias is None else torch.addmm(bias[:, None], w, flat)
    else:
        y = torch.matmul(w, x.view(b, c, -1))
        if bias is not None:
            y = y + bias[:, None]
    return y.view(b, co, *x.shape[2:])


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
