"""The encoder: causal input conv -> layer-spec blocks -> LayerNorm. Video -> latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magtok.configs import TokenizerConfig
from magtok.layers import CausalConv3d, ChannelLayerNorm, SameConv2d
from magtok.layers.resample import CausalTimeBlur, TimeDownsample2x
from magtok.layers.streaming import StreamingModule

# streaming modules whose whole state is the left context that causal_time_pad keeps
_CONTEXT_ONLY = (CausalConv3d, CausalTimeBlur)


def cond_stem(dim_cond: int | None, expansion: float) -> nn.Module | None:
    if dim_cond is None:
        return None
    return nn.Sequential(nn.Linear(dim_cond, int(dim_cond * expansion)), nn.SiLU())


def prequant_norm(kind: str, dim: int) -> nn.Module:
    """The normalisation right before the quantizer."""
    if kind == "layernorm":
        return ChannelLayerNorm(dim)
    if kind == "groupnorm":
        return nn.GroupNorm(1, dim, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"prequant_norm {kind!r} is not supported; use 'layernorm', 'groupnorm' or 'none'")


class Encoder(nn.Module):
    """(B, C, T, H, W) in [-1, 1] -> latents (B, D, T', H', W').

    With ``first_frame=True`` the clip (1 + k*r_t frames) is left-padded with r_t - 1 zero frames
    so that frame 0 forms the first latent frame on its own (see magtok.layers.resample). With
    ``first_frame=False`` the clip (k*r_t frames) continues an earlier one.
    """

    def __init__(self, cfg: TokenizerConfig, blocks: list[nn.Module], dim_out: int, time_factor: int):
        super().__init__()
        self.time_pad = time_factor - 1
        self.conv_in = CausalConv3d(cfg.channels, cfg.init_dim, cfg.input_conv_kernel_size, cfg.pad_mode)
        self.conv_in_first_frame = (SameConv2d(cfg.channels, cfg.init_dim, cfg.input_conv_kernel_size[1:])
                                    if cfg.separate_first_frame_encoding else None)
        self.cond_in = cond_stem(cfg.dim_cond, cfg.dim_cond_expansion_factor)
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = prequant_norm(cfg.prequant_norm, dim_out)
        self._prefix_setup(cfg)

    # ------------------------------------------------------------------ the constant prefix
    # With ``first_frame`` the clip is left-padded with r_t - 1 zero frames. Up to the first temporal
    # downsampling every layer is causal in time and frame-local otherwise, so the activations at those
    # pad positions depend on the weights and the frame size only, never on the video. They are computed
    # once per frame size (as a streaming "chunk" of pad frames, keeping each causal conv's left context)
    # and reused: the full-resolution layers then process T frames instead of T + r_t - 1 (17 instead of
    # 20 for the MagViT2 preset, about 13% of an encode). Results equal the plain path up to float
    # rounding, as streaming does. Used for inference (no autograd), without cond or streaming, and only
    # for layer specs whose layers before the first compress_time keep no state other than left context.
    def _prefix_setup(self, cfg: TokenizerConfig) -> None:
        split = next((i for i, b in enumerate(self.blocks)
                      if any(isinstance(m, TimeDownsample2x) for m in b.modules())), len(self.blocks))
        self._prefix_split = split
        pre = [self.conv_in, *self.blocks[:split]]
        mods = [m for part in pre for m in part.modules() if isinstance(m, StreamingModule)]
        self._prefix_ok = (cfg.pad_mode == "constant" and self.time_pad > 0 and split < len(self.blocks)
                           and self.conv_in_first_frame is None and cfg.dim_cond is None
                           and all(type(m) in _CONTEXT_ONLY for m in mods))
        self._prefix_mods = mods
        self._prefix_cache: tuple | None = None

    def _use_prefix(self, first_frame: bool) -> bool:
        return (self._prefix_ok and first_frame and not torch.is_grad_enabled()
                and not torch.compiler.is_compiling() and all(m._stream is None for m in self._prefix_mods))

    def _prefix(self, video: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """(activations at the pad positions entering the first compress_time block, batch 1;
        the left context of every causal module after the pad frames)."""
        versions = tuple((id(t), t._version) for t in (*self.parameters(), *self.buffers()))
        amp = torch.is_autocast_enabled(video.device.type)
        key = (tuple(video.shape[3:]), video.dtype, video.device, versions,
               torch.get_autocast_dtype(video.device.type) if amp else None)
        if self._prefix_cache is not None and self._prefix_cache[0] == key:
            return self._prefix_cache[1], self._prefix_cache[2]
        self._prefix_cache = None  # the old one is stale: free it first
        zeros = video.new_zeros(1, video.shape[1], self.time_pad, *video.shape[3:])
        for m in self._prefix_mods:
            m._stream = {}
        try:
            x = self.conv_in(zeros)
            for block in self.blocks[:self._prefix_split]:
                x = block(x, None)
            states = [dict(m._stream) for m in self._prefix_mods]
        finally:
            for m in self._prefix_mods:
                m._stream = None
        self._prefix_cache = (key, x, states)
        return x, states

    def forward_with_prefix(self, video: torch.Tensor, prefix: torch.Tensor, states: list[dict]) -> torch.Tensor:
        """The encoder of a first chunk given ``self._prefix(video)`` (split so that a compiled caller can
        compute the prefix outside the compiled region)."""
        b = video.shape[0]
        for m, st in zip(self._prefix_mods, states):
            m._stream = {k: v.expand(b, *v.shape[1:]) for k, v in st.items()}
        try:
            x = self.conv_in(video)
            for block in self.blocks[:self._prefix_split]:
                x = block(x, None)
        finally:
            for m in self._prefix_mods:
                m._stream = None
        x = torch.cat((prefix.expand(b, *prefix.shape[1:]), x), dim=2)
        for block in self.blocks[self._prefix_split:]:
            x = block(x, None)
        return self.norm_out(x)

    def forward(self, video: torch.Tensor, cond: torch.Tensor | None = None,
                first_frame: bool = True) -> torch.Tensor:
        if cond is None and self._use_prefix(first_frame):
            return self.forward_with_prefix(video, *self._prefix(video))
        pad = (0, 0, 0, 0, self.time_pad, 0)
        if first_frame and self.conv_in_first_frame is not None:
            x = self.conv_in_first_frame(video[:, :, 0]).unsqueeze(2)
            if video.shape[2] > 1:
                x = torch.cat((x, self.conv_in(video[:, :, 1:])), dim=2)
            x = F.pad(x, pad)
        elif first_frame:
            x = self.conv_in(F.pad(video, pad))
        else:
            x = self.conv_in(video)
        c = self.cond_in(cond) if self.cond_in is not None and cond is not None else None
        for block in self.blocks:
            x = block(x, c)
        return self.norm_out(x)
