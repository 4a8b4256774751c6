"""Leaf modules (torch + einops only): causal convolutions, resampling, norms, attention, gate
loop, residual units and conditioning. Every block maps (B, C, T, H, W) -> (B, C', T', H', W')."""

from magtok.layers.attention import (Attention, FeedForward, LinearSpaceAttention, SpaceAttention,
                                     TimeAttention, TokenShift)
from magtok.layers.conv import CausalConv3d, CausalConvTranspose3d, SameConv2d
from magtok.layers.gateloop import GateLoop
from magtok.layers.norms import AdaptiveRMSNorm, ChannelLayerNorm, RMSNorm
from magtok.layers.resample import (CausalTimeBlur, SpaceBlur, SpatialDownsample2x, SpatialUpsample2x,
                                    TimeDownsample2x, TimeUpsample2x)
from magtok.layers.residual import Conv3DMod, ResidualUnit, ResidualUnitMod, SqueezeExcite
from magtok.layers.streaming import StreamingModule, start_streaming, stop_streaming

__all__ = [
    "AdaptiveRMSNorm", "Attention", "CausalConv3d", "CausalConvTranspose3d", "CausalTimeBlur",
    "ChannelLayerNorm", "Conv3DMod", "FeedForward", "GateLoop", "LinearSpaceAttention", "RMSNorm",
    "ResidualUnit", "ResidualUnitMod", "SameConv2d", "SpaceAttention", "SpaceBlur",
    "SpatialDownsample2x", "SpatialUpsample2x", "SqueezeExcite", "StreamingModule", "TimeAttention",
    "TimeDownsample2x", "TimeUpsample2x", "TokenShift", "start_streaming", "stop_streaming",
]
