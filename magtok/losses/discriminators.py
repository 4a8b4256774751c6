"""Discriminators for adversarial training of the tokenizer.

They live here, in ``losses/``, never inside the tokenizer: an :class:`~magtok.losses.adversarial.
AdversarialLoss` owns them (and their optimizer), so the tokenizer checkpoint holds only tokenizer
weights.

Three discriminators, all convolutional end to end (no ``Linear`` over a flattened map), so none
is tied to a training resolution:

* :class:`FrameDiscriminator` - 2D, scores video frames one by one (or images). StyleGAN-like
  residual blocks; every downsampling is preceded by a binomial blur (anti-aliasing, Zhang 2019).
* :class:`SpaceTimeDiscriminator` - 3D convolutions, blurred downsampling in space (every block)
  and time (the first ``time_layers`` blocks); any clip length >= 1.
* :class:`MultiScaleDiscriminator` - one discriminator per spatial scale (input avg-pooled by 2
  per scale); returns a list of logits maps.

Every discriminator returns a *logits map* (PatchGAN-style, one logit per output location), never
probabilities; losses average over it. ``build_discriminator(kind, **kwargs)`` builds one by name.

Layouts: images ``(B, C, H, W)``, videos ``(B, C, T, H, W)``, values in ``[-1, 1]``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "Blur",
    "FrameDiscriminator",
    "SpaceTimeDiscriminator",
    "MultiScaleDiscriminator",
    "build_discriminator",
    "available_discriminators",
]


# ---------------------------------------------------------------------------------------------
# anti-aliasing blur
# ---------------------------------------------------------------------------------------------


class Blur(nn.Module):
    """Separable binomial low-pass filter ``[1, 2, 1] / 4`` per axis, applied channel by channel.

    Used before every downsampling so that striding does not alias. Implemented as grouped 1D
    convolutions (one per blurred axis) with *replicate* padding, so the output has the input's
    shape for any size >= 1 (a single frame or a 1-pixel map included) and a constant input stays
    constant.

    Args:
        time: also blur along time (only for 5D video inputs).

    Input / output: ``(B, C, H, W)`` (blurs H, W) or ``(B, C, T, H, W)`` (blurs H, W, and T if
    ``time``); same shape and dtype, any value range.
    """

    def __init__(self, time: bool = False):
        super().__init__()
        self.time = time
        self.register_buffer("taps", torch.tensor([1.0, 2.0, 1.0]) / 4.0, persistent=False)

    def _blur_axis(self, x: Tensor, axis: int) -> Tensor:
        """Blur along ``axis`` (an index into x.shape, >= 2)."""
        channels, spatial_dims = x.shape[1], x.ndim - 2
        kernel_shape = [1] * spatial_dims
        kernel_shape[axis - 2] = 3
        kernel = self.taps.to(dtype=x.dtype).reshape(1, 1, *kernel_shape)
        kernel = kernel.expand(channels, 1, *kernel_shape)  # (C, 1, k...) grouped, one per channel
        # F.pad lists pads from the last axis backwards: (w_l, w_r, h_l, h_r, t_l, t_r)
        pad = [0, 0] * spatial_dims
        slot = 2 * (x.ndim - 1 - axis)
        pad[slot], pad[slot + 1] = 1, 1
        x = F.pad(x, pad, mode="replicate")
        conv = F.conv2d if spatial_dims == 2 else F.conv3d
        return conv(x, kernel, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (4, 5):
            raise ValueError(f"Blur expects (B, C, H, W) or (B, C, T, H, W); got shape {tuple(x.shape)}")
        axes = [x.ndim - 2, x.ndim - 1]  # H, W
        if self.time and x.ndim == 5:
            axes.insert(0, 2)  # T
        for axis in axes:
            x = self._blur_axis(x, axis)
        return x


# ---------------------------------------------------------------------------------------------
# residual downsampling block (2D or 3D)
# ---------------------------------------------------------------------------------------------


class _ResidualDownBlock(nn.Module):
    """StyleGAN-like residual block that halves H and W (and T if ``time_down``).

    main:  conv3 -> lrelu -> conv3 -> lrelu -> blur -> space-to-depth (2x2) -> conv1
    skip:  blur -> subsample by 2 -> conv1
    out = (main + skip) / sqrt(2)

    Time (3D with ``time_down``): blurred along T then every other frame is kept,
    ``T -> ceil(T / 2)`` (frame 0 kept), so odd clip lengths (17 -> 9 -> 5) are fine.
    Space needs even H and W (checked by the owning discriminator).
    """

    def __init__(self, in_channels: int, out_channels: int, *, dims: int, time_down: bool, negative_slope: float):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims, self.time_down = dims, time_down and dims == 3
        self.conv1 = conv(in_channels, in_channels, 3, padding=1)
        self.conv2 = conv(in_channels, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope)
        self.blur = Blur(time=self.time_down)
        self.to_out = conv(out_channels * 4, out_channels, 1)  # after 2x2 space-to-depth
        self.skip = conv(in_channels, out_channels, 1)

    def _subsample_time(self, x: Tensor) -> Tensor:
        return x[:, :, ::2] if self.time_down else x

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, [T,] H, W)
        skip = self._subsample_time(self.blur(x))
        skip = self.skip(skip[..., ::2, ::2])  # (B, C_out, [T',] H/2, W/2)

        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = self._subsample_time(self.blur(h))
        if self.dims == 2:
            h = rearrange(h, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2)
        else:
            h = rearrange(h, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=2, p2=2)
        h = self.to_out(h)  # (B, C_out, [T',] H/2, W/2)
        return (h + skip) * (2.0 ** -0.5)


def _channel_widths(dim: int, max_dim: int, num_layers: int) -> list[int]:
    """Widths after the stem and after each block: dim, 2*dim, 4*dim, ... capped at max_dim."""
    return [min(dim * 2**i, max_dim) for i in range(num_layers + 1)]


def _check_spatial(h: int, w: int, factor: int, who: str) -> None:
    if h % factor or w % factor:
        raise ValueError(
            f"{who} needs height and width divisible by {factor}; got {h}x{w} "
            f"(e.g. crop or resize to {max(factor, h // factor * factor)}x{max(factor, w // factor * factor)}, "
            f"or build it with fewer layers)"
        )


def _check_channels(c: int, expected: int, who: str) -> None:
    if c != expected:
        raise ValueError(f"{who} was built for {expected} input channels; got {c}")


# ---------------------------------------------------------------------------------------------
# per-frame 2D discriminator
# ---------------------------------------------------------------------------------------------


class FrameDiscriminator(nn.Module):
    """2D discriminator scoring images, or video frames independently.

    stem conv3 (C -> dim) -> ``num_layers`` residual blocks, each halving H and W with blurred
    space-to-depth and doubling the width (capped at ``max_dim``) -> conv3 -> lrelu -> conv1 -> 1.

    Args:
        in_channels: C of the input.
        dim: width after the stem; block ``i`` outputs ``min(dim * 2**(i+1), max_dim)``.
        max_dim: width cap.
        num_layers: number of downsampling blocks; H and W must be divisible by ``2**num_layers``
            (any size otherwise: non-square is fine, no tie to a training resolution).
        negative_slope: leaky-ReLU slope.
        frames_per_clip: for video inputs, ``None`` scores every frame; an int ``k`` scores ``k``
            frames drawn uniformly without replacement per clip (different for each clip and call,
            kept in time order; all frames if ``T <= k``). Uses the global torch RNG.

    Input:  images ``(B, C, H, W)`` or videos ``(B, C, T, H, W)``, in ``[-1, 1]``.
    Output: logits map, images ``(B, 1, H / 2**L, W / 2**L)``; videos
            ``(B, 1, T_s, H / 2**L, W / 2**L)`` with ``T_s = T`` or ``min(T, frames_per_clip)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 64,
        max_dim: int = 512,
        num_layers: int = 4,
        negative_slope: float = 0.2,
        frames_per_clip: int | None = None,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        if frames_per_clip is not None and frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be None or >= 1; got {frames_per_clip}")
        self.in_channels, self.num_layers, self.frames_per_clip = in_channels, num_layers, frames_per_clip
        widths = _channel_widths(dim, max_dim, num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(negative_slope))
        self.blocks = nn.Sequential(
            *(
                _ResidualDownBlock(c_in, c_out, dims=2, time_down=False, negative_slope=negative_slope)
                for c_in, c_out in zip(widths[:-1], widths[1:])
            )
        )
        self.to_logits = nn.Sequential(
            nn.Conv2d(widths[-1], widths[-1], 3, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv2d(widths[-1], 1, 1),
        )

    @property
    def downsample_factor(self) -> int:
        return 2**self.num_layers

    def _select_frames(self, video: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C, T_s, H, W), a random time-ordered subset of T_s frames per clip."""
        b, _, t = video.shape[:3]
        k = self.frames_per_clip
        if k is None or k >= t:
            return video
        idx = torch.rand(b, t, device=video.device).argsort(dim=1)[:, :k].sort(dim=1).values  # (B, k)
        frames = rearrange(video, "b c t h w -> b t c h w")
        frames = frames[torch.arange(b, device=video.device)[:, None], idx]  # (B, k, C, H, W)
        return rearrange(frames, "b t c h w -> b c t h w")

    def score_images(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> logits (N, 1, H / 2**L, W / 2**L)."""
        return self.to_logits(self.blocks(self.stem(images)))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (4, 5):
            raise ValueError(f"FrameDiscriminator expects (B, C, H, W) or (B, C, T, H, W); got {tuple(x.shape)}")
        _check_channels(x.shape[1], self.in_channels, "FrameDiscriminator")
        _check_spatial(x.shape[-2], x.shape[-1], self.downsample_factor, "FrameDiscriminator")
        if x.ndim == 4:
            return self.score_images(x)
        video = self._select_frames(x)  # (B, C, T_s, H, W)
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        logits = self.score_images(frames)  # (B*T_s, 1, h, w)
        return rearrange(logits, "(b t) one h w -> b one t h w", b=b)


# ---------------------------------------------------------------------------------------------
# 3D space-time discriminator
# ---------------------------------------------------------------------------------------------


class SpaceTimeDiscriminator(nn.Module):
    """3D-convolutional discriminator scoring whole clips (motion included).

    stem conv3x3x3 (C -> dim) -> ``num_layers`` residual blocks (3D), each halving H and W; the
    first ``time_layers`` also halve time (``T -> ceil(T / 2)``, blurred along T first) ->
    conv3x3x3 -> lrelu -> conv1 -> 1. Time padding is zero padding (the discriminator need not be
    causal).

    Args:
        in_channels, dim, max_dim, num_layers, negative_slope: as :class:`FrameDiscriminator`.
        time_layers: how many of the blocks (the first ones) downsample time; ``<= num_layers``.

    Input:  videos ``(B, C, T, H, W)`` with any ``T >= 1`` (odd T fine; temporal context grows
            with T, useful from about ``2**time_layers`` frames), H and W divisible by
            ``2**num_layers``; or images ``(B, C, H, W)``, scored as one-frame clips. In ``[-1, 1]``.
    Output: logits map ``(B, 1, T', H / 2**L, W / 2**L)``, ``T'`` = T after ``time_layers``
            ceil-halvings (17 -> 9 -> 5 for two). Images give ``T' = 1``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 32,
        max_dim: int = 256,
        num_layers: int = 4,
        time_layers: int = 2,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        if not 0 <= time_layers <= num_layers:
            raise ValueError(f"time_layers must be in [0, num_layers={num_layers}]; got {time_layers}")
        self.in_channels, self.num_layers, self.time_layers = in_channels, num_layers, time_layers
        widths = _channel_widths(dim, max_dim, num_layers)
        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(negative_slope))
        self.blocks = nn.Sequential(
            *(
                _ResidualDownBlock(c_in, c_out, dims=3, time_down=i < time_layers, negative_slope=negative_slope)
                for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
            )
        )
        self.to_logits = nn.Sequential(
            nn.Conv3d(widths[-1], widths[-1], 3, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv3d(widths[-1], 1, 1),
        )

    @property
    def downsample_factor(self) -> int:
        return 2**self.num_layers

    def output_frames(self, t: int) -> int:
        """Number of logit frames for a clip of ``t`` frames."""
        for _ in range(self.time_layers):
            t = math.ceil(t / 2)
        return t

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = rearrange(x, "b c h w -> b c 1 h w")
        if x.ndim != 5:
            raise ValueError(f"SpaceTimeDiscriminator expects (B, C, T, H, W) or (B, C, H, W); got {tuple(x.shape)}")
        _check_channels(x.shape[1], self.in_channels, "SpaceTimeDiscriminator")
        _check_spatial(x.shape[-2], x.shape[-1], self.downsample_factor, "SpaceTimeDiscriminator")
        return self.to_logits(self.blocks(self.stem(x)))  # (B, 1, T', h, w)


# ---------------------------------------------------------------------------------------------
# multi-scale wrapper
# ---------------------------------------------------------------------------------------------


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per spatial scale; scale ``s`` sees the input avg-pooled by ``2**s`` in H, W.

    Time is never pooled. Each scale has its own weights (built by calling ``factory()`` once per
    scale).

    Args:
        factory: zero-argument callable returning a discriminator (e.g. a :class:`FrameDiscriminator`).
        num_scales: number of scales (>= 1).

    Input:  ``(B, C, H, W)`` or ``(B, C, T, H, W)`` in ``[-1, 1]``; H and W divisible by
            ``2**(num_scales - 1)`` times what each discriminator needs.
    Output: list of ``num_scales`` logits maps, full resolution first.
    """

    def __init__(self, factory: Callable[[], nn.Module], num_scales: int = 2):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1; got {num_scales}")
        self.num_scales = num_scales
        self.discriminators = nn.ModuleList(factory() for _ in range(num_scales))

    @staticmethod
    def _halve(x: Tensor) -> Tensor:
        if x.ndim == 4:
            return F.avg_pool2d(x, 2)
        return F.avg_pool3d(x, kernel_size=(1, 2, 2))

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim not in (4, 5):
            raise ValueError(f"MultiScaleDiscriminator expects (B, C, H, W) or (B, C, T, H, W); got {tuple(x.shape)}")
        _check_spatial(x.shape[-2], x.shape[-1], 2 ** (self.num_scales - 1), "MultiScaleDiscriminator")
        outputs = []
        for scale, disc in enumerate(self.discriminators):
            if scale > 0:
                x = self._halve(x)
            outputs.append(disc(x))
        return outputs


# ---------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------


def _build_frame(**kwargs) -> nn.Module:
    return FrameDiscriminator(**kwargs)


def _build_spacetime(**kwargs) -> nn.Module:
    return SpaceTimeDiscriminator(**kwargs)


def _build_multiscale_frame(num_scales: int = 2, **kwargs) -> nn.Module:
    FrameDiscriminator(**kwargs)  # fail early, once, on bad arguments
    return MultiScaleDiscriminator(lambda: FrameDiscriminator(**kwargs), num_scales=num_scales)


def _build_multiscale_spacetime(num_scales: int = 2, **kwargs) -> nn.Module:
    SpaceTimeDiscriminator(**kwargs)
    return MultiScaleDiscriminator(lambda: SpaceTimeDiscriminator(**kwargs), num_scales=num_scales)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "frame": _build_frame,
    "spacetime": _build_spacetime,
    "multiscale_frame": _build_multiscale_frame,
    "multiscale_spacetime": _build_multiscale_spacetime,
}


def available_discriminators() -> Sequence[str]:
    """Names accepted by :func:`build_discriminator`."""
    return tuple(_BUILDERS)


def build_discriminator(kind: str, **kwargs) -> nn.Module:
    """Build a discriminator by name.

    ``kind``: ``'frame'`` (:class:`FrameDiscriminator`), ``'spacetime'``
    (:class:`SpaceTimeDiscriminator`), ``'multiscale_frame'`` / ``'multiscale_spacetime'``
    (:class:`MultiScaleDiscriminator` over them; takes ``num_scales``, default 2). Other keyword
    arguments go to the discriminator's constructor.
    """
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown discriminator kind {kind!r}; known kinds: {', '.join(sorted(_BUILDERS))}"
        ) from None
    return builder(**kwargs)
