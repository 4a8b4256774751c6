"""Residual units: causal conv -> ELU -> 1x1 conv -> ELU -> global-context squeeze-excite, and
the conditioned variant built on a StyleGAN2-style modulated causal 3D convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from magtok.layers.conv import CausalConv3d, _triple, check_pad_mode, pointwise_conv3d
from magtok.layers.streaming import StreamingModule, causal_time_pad


class SqueezeExcite(nn.Module):
    """Global context block (arXiv 2012.13375): per frame, an attention-pooled channel vector
    gates every channel. (B, C, T, H, W) -> same."""

    def __init__(self, dim: int, dim_hidden_min: int = 16, init_bias: float = -10.0):
        super().__init__()
        hidden = max(dim_hidden_min, dim // 2)
        self.to_k = nn.Conv2d(dim, 1, 1)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, init_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if torch.compiler.is_compiling():
            # under torch.compile (tokenizer.for_inference) the per-frame form fuses better (~5% of a
            # decode of the `conv` benchmark spec); the rearranges become layout changes, not copies
            frames = rearrange(x, "b c t h w -> (b t) c h w")
            attn = rearrange(self.to_k(frames), "n 1 h w -> n (h w)").softmax(dim=-1)
            pooled = torch.einsum("np,ncp->nc", attn, rearrange(frames, "n c h w -> n c (h w)"))
            gates = torch.sigmoid(self.fc2(F.leaky_relu(self.fc1(pooled[..., None, None]), 0.1)))
            return x * rearrange(gates, "(b t) c 1 1 -> b c t 1 1", b=b)
        # eager: computed on (B, C, T, H, W) directly, without per-frame rearrange copies of x (the
        # 1x1 Conv2d weights used as a 1x1x1 conv and as linear layers): ~1.5x faster than the above
        logits = pointwise_conv3d(x, self.to_k.weight, self.to_k.bias)  # (b, 1, t, h, w)
        attn = logits.reshape(b, t, h * w).softmax(dim=-1)
        pooled = torch.einsum("btp,bctp->btc", attn, x.reshape(b, c, t, h * w))
        hidden = F.leaky_relu(F.linear(pooled, self.fc1.weight.flatten(1), self.fc1.bias), 0.1)
        gates = torch.sigmoid(F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias))  # (b, t, c)
        return x * gates.transpose(1, 2)[..., None, None]


class ResidualUnit(nn.Module):
    """x + SE(ELU(conv1x1(ELU(causal_conv(x))))): (B, C, T, H, W) -> same."""

    def __init__(self, dim: int, kernel_size=3, pad_mode: str = "constant"):
        super().__init__()
        self.conv = CausalConv3d(dim, dim, kernel_size, pad_mode=pad_mode)
        self.proj = nn.Conv3d(dim, dim, 1)
        self.se = SqueezeExcite(dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.se(F.elu(pointwise_conv3d(F.elu(self.conv(x)), self.proj.weight, self.proj.bias)))


class Conv3DMod(StreamingModule):
    """StyleGAN2 modulated (and demodulated) causal 3D convolution.

    Weights are scaled per sample by (1 + cond) over input channels, then normalised per output
    channel. x (B, C_in, T, H, W), cond (B, C_in) -> (B, C_out, T, H, W).
    """

    def __init__(self, dim: int, dim_out: int | None = None, kernel_size=3, demod: bool = True,
                 pad_mode: str = "constant", eps: float = 1e-8):
        super().__init__()
        dim_out = dim_out or dim
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0 or kt % 2 == 0:
            raise ValueError(f"Conv3DMod needs odd kernel sizes, got {(kt, kh, kw)}")
        self.pad_mode = check_pad_mode(pad_mode)
        self.demod, self.eps = demod, eps
        self.time_pad = kt - 1
        self.space_pad = (kw // 2, kw // 2, kh // 2, kh // 2, 0, 0)
        self.weight = nn.Parameter(torch.empty(dim_out, dim, kt, kh, kw))
        nn.init.kaiming_normal_(self.weight, a=0, mode="fan_in", nonlinearity="selu")

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = self.weight.unsqueeze(0) * (cond + 1)[:, None, :, None, None, None]  # (b o i kt kh kw)
        if self.demod:
            w = w * w.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True).clamp(min=self.eps).rsqrt()
        x = causal_time_pad(self, x, self.time_pad, self.pad_mode)
        x = F.pad(x, self.space_pad, mode=self.pad_mode)
        out = F.conv3d(rearrange(x, "b c t h w -> 1 (b c) t h w"),
                       rearrange(w, "b o i kt kh kw -> (b o) i kt kh kw"), groups=b)
        return rearrange(out, "1 (b o) t h w -> b o t h w", b=b)


class ResidualUnitMod(nn.Module):
    """Conditioned residual unit: x + ELU(conv1x1(ELU(modconv(x, Linear(cond)))))."""

    def __init__(self, dim: int, dim_cond: int, kernel_size=3, pad_mode: str = "constant",
                 demod: bool = True):
        super().__init__()
        self.to_cond = nn.Linear(dim_cond, dim)
        self.conv = Conv3DMod(dim, kernel_size=kernel_size, demod=demod, pad_mode=pad_mode)
        self.proj = nn.Conv3d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            raise ValueError("cond_residual is conditioned: pass cond=(B, dim_cond) to the tokenizer")
        return x + F.elu(pointwise_conv3d(F.elu(self.conv(x, self.to_cond(cond))), self.proj.weight, self.proj.bias))
