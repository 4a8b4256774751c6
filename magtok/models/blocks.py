"""The layer spec -> modules table.

A layer spec is a tuple of names or (name, int) pairs. Each name maps to a builder that returns
the encoder block, the mirrored decoder block and the channel count after the block. Adding a
block type is one ``@register_block`` function of a few lines.

    compress_space [dim_out]   2x spatial down (encoder) / up (decoder); dim_out defaults to 2*dim
    compress_time [dim_out]    2x temporal down / up, causal
    residual                   causal residual unit with squeeze-excite
    consecutive_residual N     N residual units
    attend_space / attend_time / linear_attend_space / gateloop_time    (+ feed-forward)
    cond_residual / cond_attend_space / cond_attend_time / cond_linear_attend_space
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from magtok.configs import TokenizerConfig
from magtok.layers import (FeedForward, GateLoop, LinearSpaceAttention, ResidualUnit, ResidualUnitMod,
                           SpaceAttention, SpatialDownsample2x, SpatialUpsample2x, TimeAttention,
                           TimeDownsample2x, TimeUpsample2x, TokenShift)


class Stack(nn.Module):
    """Blocks applied in order, each called as block(x, cond)."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class AttentionBlock(nn.Module):
    """x + attn(x); x + ff(x): the transformer-style pair used by every attention layer type."""

    def __init__(self, attn: nn.Module, ff: nn.Module):
        super().__init__()
        self.attn, self.ff = attn, ff

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(x, cond)
        return x + self.ff(x, cond)


@dataclass
class BuildContext:
    cfg: TokenizerConfig
    dim: int  # channels entering the block
    dim_cond: int | None  # width of the (expanded) condition vector, None if unconditioned


@dataclass
class BuiltBlock:
    encoder: nn.Module
    decoder: nn.Module
    dim_out: int
    time_factor: int = 1
    space_factor: int = 1
    conditioned: bool = False


BLOCK_BUILDERS: dict[str, Callable[[BuildContext, tuple], BuiltBlock]] = {}


def register_block(name: str):
    def wrap(fn):
        BLOCK_BUILDERS[name] = fn
        return fn
    return wrap


def _twice(make: Callable[[], nn.Module], dim: int, **kw) -> BuiltBlock:
    return BuiltBlock(make(), make(), dim, **kw)


def _need_cond(ctx: BuildContext, name: str) -> int:
    if ctx.dim_cond is None:
        raise ValueError(f"layer {name!r} is conditioned: set dim_cond in the tokenizer config")
    return ctx.dim_cond


def _out_dim(ctx: BuildContext, params: tuple) -> int:
    dim_out = params[0] if params else ctx.dim * 2
    return min(dim_out, ctx.cfg.max_dim) if ctx.cfg.max_dim else dim_out


@register_block("residual")
def _residual(ctx, params):
    c = ctx.cfg
    return _twice(lambda: ResidualUnit(ctx.dim, c.residual_conv_kernel_size, c.pad_mode), ctx.dim)


@register_block("consecutive_residual")
def _consecutive_residual(ctx, params):
    if len(params) != 1 or params[0] < 1:
        raise ValueError("consecutive_residual needs a count, e.g. ('consecutive_residual', 2)")
    c = ctx.cfg
    return _twice(lambda: Stack([ResidualUnit(ctx.dim, c.residual_conv_kernel_size, c.pad_mode)
                                 for _ in range(params[0])]), ctx.dim)


@register_block("cond_residual")
def _cond_residual(ctx, params):
    dc, c = _need_cond(ctx, "cond_residual"), ctx.cfg
    return _twice(lambda: ResidualUnitMod(ctx.dim, dc, c.residual_conv_kernel_size, c.pad_mode),
                  ctx.dim, conditioned=True)


@register_block("compress_space")
def _compress_space(ctx, params):
    out = _out_dim(ctx, params)
    return BuiltBlock(SpatialDownsample2x(ctx.dim, out, antialias=ctx.cfg.antialias),
                      SpatialUpsample2x(out, ctx.dim, antialias=ctx.cfg.antialias), out, space_factor=2)


@register_block("compress_time")
def _compress_time(ctx, params):
    out = _out_dim(ctx, params)
    return BuiltBlock(TimeDownsample2x(ctx.dim, out, antialias=ctx.cfg.antialias,
                                       left_pad=ctx.cfg.time_downsample_left_pad),
                      TimeUpsample2x(out, ctx.dim, antialias=ctx.cfg.antialias), out, time_factor=2)


def _attn_kwargs(ctx, dim_cond):
    c = ctx.cfg
    return dict(heads=c.attn_heads, dim_head=c.attn_dim_head, num_memory_kv=c.num_memory_kv,
                dim_cond=dim_cond)


def _space_attention(ctx, dim_cond):
    return AttentionBlock(SpaceAttention(ctx.dim, **_attn_kwargs(ctx, dim_cond)),
                          FeedForward(ctx.dim, dim_cond=dim_cond))


def _time_attention(ctx, dim_cond):
    return AttentionBlock(TokenShift(TimeAttention(ctx.dim, **_attn_kwargs(ctx, dim_cond))),
                          TokenShift(FeedForward(ctx.dim, dim_cond=dim_cond)))


def _linear_attention(ctx, dim_cond):
    c = ctx.cfg
    return AttentionBlock(LinearSpaceAttention(ctx.dim, c.linear_attn_heads, c.linear_attn_dim_head,
                                               dim_cond=dim_cond),
                          FeedForward(ctx.dim, dim_cond=dim_cond))


@register_block("attend_space")
def _attend_space(ctx, params):
    return _twice(lambda: _space_attention(ctx, None), ctx.dim)


@register_block("attend_time")
def _attend_time(ctx, params):
    return _twice(lambda: _time_attention(ctx, None), ctx.dim)


@register_block("linear_attend_space")
def _linear_attend_space(ctx, params):
    return _twice(lambda: _linear_attention(ctx, None), ctx.dim)


@register_block("gateloop_time")
def _gateloop_time(ctx, params):
    return _twice(lambda: GateLoop(ctx.dim), ctx.dim)


@register_block("cond_attend_space")
def _cond_attend_space(ctx, params):
    dc = _need_cond(ctx, "cond_attend_space")
    return _twice(lambda: _space_attention(ctx, dc), ctx.dim, conditioned=True)


@register_block("cond_attend_time")
def _cond_attend_time(ctx, params):
    dc = _need_cond(ctx, "cond_attend_time")
    return _twice(lambda: _time_attention(ctx, dc), ctx.dim, conditioned=True)


@register_block("cond_linear_attend_space")
def _cond_linear_attend_space(ctx, params):
    dc = _need_cond(ctx, "cond_linear_attend_space")
    return _twice(lambda: _linear_attention(ctx, dc), ctx.dim, conditioned=True)


def parse_entry(entry) -> tuple[str, tuple]:
    if isinstance(entry, str):
        return entry, ()
    if isinstance(entry, (tuple, list)) and entry and isinstance(entry[0], str):
        return entry[0], tuple(entry[1:])
    raise ValueError(f"layer spec entry {entry!r} is neither a name nor a (name, int) pair")


def build_blocks(cfg: TokenizerConfig, dim_cond: int | None) -> list[BuiltBlock]:
    """Walk the layer spec; returns one BuiltBlock per entry (encoder order)."""
    dim, built = cfg.init_dim, []
    for entry in cfg.layers:
        name, params = parse_entry(entry)
        if name not in BLOCK_BUILDERS:
            raise ValueError(f"unknown layer {name!r} in the layer spec; known layers: "
                             f"{sorted(BLOCK_BUILDERS)}")
        block = BLOCK_BUILDERS[name](BuildContext(cfg, dim, dim_cond), params)
        built.append(block)
        dim = block.dim_out
    return built
