"""2x down- and upsampling in space and time, with optional binomial anti-aliasing blur.

Temporal downsampling keeps the frame rule of the tokenizer. The encoder first left-pads a clip
of 1 + k*r_t frames with r_t - 1 frames so that its length is a multiple of r_t; each
TimeDownsample2x (kernel 3, stride 2, ``left_pad`` = 1) then maps positions (2j, 2j+1) to output
j, looking back one more position::

    positions      p  p  p  f0 | f1 f2 f3 f4 | f5 ...        (r_t = 4: 3 pad positions)
    after 1st 2x     [. .][. f0]|[f1 f2][f3 f4]| ...
    after 2nd 2x          z0    |      z1      | ...        z0 <- f0, z_j <- f_(4j-3) .. f_(4j)

So z_j depends on frames <= j*r_t and nothing later. (With ``left_pad`` = 2 instead, as in
magvit2-pytorch 0.5.1, z0 sees no frame at all and the last frames reach no latent.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from magtok.layers.conv import pointwise_conv3d
from magtok.layers.streaming import StreamingModule, causal_time_pad

_BINOMIAL = (1.0, 2.0, 1.0)


class SpaceBlur(nn.Module):
    """Normalised [1,2,1] x [1,2,1] blur of every frame, replicate padding: (B,C,T,H,W) -> same."""

    def __init__(self):
        super().__init__()
        f = torch.tensor(_BINOMIAL)
        self.register_buffer("kernel", (f[:, None] * f[None, :] / 16.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        k = self.kernel.to(x.dtype).expand(c, 1, 3, 3)
        out = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), k, groups=c)
        return rearrange(out, "(b t) c h w -> b c t h w", b=b)


class CausalTimeBlur(StreamingModule):
    """Normalised [1,2,1] blur along time over frames t-2, t-1, t (causal; first frame repeated
    on the left): (B, C, T, H, W) -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = causal_time_pad(self, x, 2, "replicate")
        return (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 4.0


class SpatialDownsample2x(nn.Module):
    """Strided 3x3 conv per frame: (B, C, T, H, W) -> (B, C_out, T, H/2, W/2)."""

    def __init__(self, dim: int, dim_out: int, kernel_size: int = 3, antialias: bool = False):
        super().__init__()
        self.blur = SpaceBlur() if antialias else None
        self.conv = nn.Conv2d(dim, dim_out, kernel_size, stride=2, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        # the per-frame 2D conv as a 3D conv with a time kernel of 1: no (b t) rearrange copies
        return F.conv3d(x, self.conv.weight.unsqueeze(2), self.conv.bias, stride=(1, 2, 2),
                        padding=(0, *self.conv.padding))


class TimeDownsample2x(StreamingModule):
    """Causal strided conv along time: (B, C, T, H, W) -> (B, C_out, T/2, H, W), T even.

    Output j covers input positions 2j+1-k+1+... i.e. (2j - left_pad + 1 .. 2j + 1) for kernel 3
    and ``left_pad`` = 1: positions 2j-1, 2j, 2j+1. See the module docstring for the grouping.
    """

    def __init__(self, dim: int, dim_out: int, kernel_size: int = 3, antialias: bool = False,
                 left_pad: int = 1):
        super().__init__()
        self.blur = CausalTimeBlur() if antialias else None
        self.left_pad = left_pad
        self.conv = nn.Conv1d(dim, dim_out, kernel_size, stride=2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = causal_time_pad(self, x, self.left_pad, "constant")
        # the per-pixel 1D conv as a 3D conv with a 1x1 spatial kernel: no transposes
        return F.conv3d(x, self.conv.weight[..., None, None], self.conv.bias, stride=(2, 1, 1))


def _init_subpixel_(conv: nn.Module, factor: int) -> None:
    """Initialise a conv whose output is rearranged into ``factor`` sub-positions so that all
    sub-positions start equal (nearest-neighbour upsampling at init, no checkerboard)."""
    o = conv.weight.shape[0]
    w = torch.empty(o // factor, *conv.weight.shape[1:])
    nn.init.kaiming_uniform_(w)
    conv.weight.data.copy_(repeat(w, "o ... -> (o r) ...", r=factor))
    nn.init.zeros_(conv.bias.data)


class SpatialUpsample2x(nn.Module):
    """1x1 conv -> SiLU -> depth-to-space per frame: (B, C, T, H, W) -> (B, C_out, T, 2H, 2W)."""

    def __init__(self, dim: int, dim_out: int, antialias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out * 4, 1)
        _init_subpixel_(self.conv, 4)
        self.blur = SpaceBlur() if antialias else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out = F.silu(pointwise_conv3d(x, self.conv.weight, self.conv.bias))
        out = rearrange(out, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=2, p2=2)
        return self.blur(out) if self.blur is not None else out


class TimeUpsample2x(nn.Module):
    """1x1 conv -> SiLU -> depth-to-time: (B, C, T, H, W) -> (B, C_out, 2T, H, W); output frames
    2t and 2t+1 come from input frame t only (causal)."""

    def __init__(self, dim: int, dim_out: int, antialias: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim_out * 2, 1)
        _init_subpixel_(self.conv, 2)
        self.blur = CausalTimeBlur() if antialias else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out = F.silu(pointwise_conv3d(x, self.conv.weight, self.conv.bias))
        out = rearrange(out, "b (c p) t h w -> b c (t p) h w", p=2)
        return self.blur(out) if self.blur is not None else out
