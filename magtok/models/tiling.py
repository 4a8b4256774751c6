"""Spatial tiling for frames too large for memory.

The frame is cut into overlapping tiles aligned to the latent grid (tile size and overlap are
multiples of r_s). Encoding: each tile's pre-quantization latents are blended with linear ramps
across the overlaps, then the whole latent grid is quantized once. Decoding: overlapping latent
tiles are decoded and the pixels blended the same way.

Tiling is an approximation: convolutions near a tile's border see padding instead of the
neighbouring pixels. With an overlap at least as wide as the receptive field near the border the
blend hides most of it; the measured difference to untiled results is documented in the README
("Tiling") and bounded by tests/models/test_tiling.py. Tiling composes with streaming: inside
``tok.streaming()`` every tile keeps its own causal state.
"""

from __future__ import annotations

import contextlib

import torch

from magtok.layers import StreamingModule


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``size`` with at least ``overlap`` overlap."""
    if tile >= size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(n: int, lo: int, hi: int, like: torch.Tensor) -> torch.Tensor:
    """Weights over n positions rising over the first ``lo`` and falling over the last ``hi``."""
    i = torch.arange(n, dtype=like.dtype, device=like.device) + 0.5
    w = torch.ones(n, dtype=like.dtype, device=like.device)
    if lo:
        w = torch.minimum(w, i / lo)
    if hi:
        w = torch.minimum(w, (n - i) / hi)
    return w


def _tiles(h: int, w: int, tile: tuple[int, int], overlap: int):
    ys, xs = tile_starts(h, tile[0], overlap), tile_starts(w, tile[1], overlap)
    for y in ys:
        for x in xs:
            th, tw = min(tile[0], h), min(tile[1], w)
            lo_y = (ys[ys.index(y) - 1] + th - y) if y != ys[0] else 0
            hi_y = (y + th - ys[ys.index(y) + 1]) if y != ys[-1] else 0
            lo_x = (xs[xs.index(x) - 1] + tw - x) if x != xs[0] else 0
            hi_x = (x + tw - xs[xs.index(x) + 1]) if x != xs[-1] else 0
            yield (y, x, th, tw), (lo_y, hi_y, lo_x, hi_x)


@contextlib.contextmanager
def _tile_state(tok, key):
    """While streaming, give the modules the causal state of tile ``key``."""
    if tok._stream_pos is None:
        yield
        return
    mods = [m for m in tok.modules() if isinstance(m, StreamingModule)]
    states = tok._stream_pos.setdefault("tiles", {}).setdefault(key, [{} for _ in mods])
    saved = [m._stream for m in mods]
    for m, s in zip(mods, states):
        m._stream = s
    try:
        yield
    finally:
        for m, s in zip(mods, saved):
            m._stream = s


def _check_tiling(tok, tile, overlap) -> tuple[tuple[int, int], int]:
    r = tok.space_compression
    tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if any(t % r or t <= 0 for t in tile) or overlap % r or overlap < 0:
        raise ValueError(f"tile size {tile} and overlap {overlap} must be multiples of {r} "
                         "(the spatial compression)")
    if overlap >= min(tile):
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    return tile, overlap


def blend(tiles_out, out_shape, scale: int, like: torch.Tensor) -> torch.Tensor:
    out = like.new_zeros(out_shape)
    weight = like.new_zeros(out_shape[-2:])
    for (y, x, th, tw), (lo_y, hi_y, lo_x, hi_x), value in tiles_out:
        wy = _ramp(th // scale, lo_y // scale, hi_y // scale, like)
        wx = _ramp(tw // scale, lo_x // scale, hi_x // scale, like)
        w2 = wy[:, None] * wx[None, :]
        ys, xs = slice(y // scale, (y + th) // scale), slice(x // scale, (x + tw) // scale)
        out[..., ys, xs] += value * w2
        weight[ys, xs] += w2
    return out / weight


def encode_latents_tiled(tok, video: torch.Tensor, tile=256, overlap: int = 32, cond=None,
                         video_contains_first_frame: bool = True) -> torch.Tensor:
    """Pre-quantization latents (B, D, T', H', W') of ``video`` computed tile by tile."""
    tile, overlap = _check_tiling(tok, tile, overlap)
    first = tok._first_frame("encode", video_contains_first_frame)
    video, _ = tok._check_video(video, first)
    cond = tok._check_cond(cond, video.shape[0])
    b, _, _, h, w = video.shape
    r = tok.space_compression
    results = []
    for box, margins in _tiles(h, w, tile, overlap):
        y, x, th, tw = box
        with _tile_state(tok, ("enc", y, x)):
            z = tok.encoder(video[..., y:y + th, x:x + tw], cond, first_frame=first)
        results.append((box, margins, z))
    z0 = results[0][2]
    return blend(results, (*z0.shape[:3], h // r, w // r), r, z0)


def encode_tiled(tok, video: torch.Tensor, tile=256, overlap: int = 32, cond=None,
                 video_contains_first_frame: bool = True) -> torch.Tensor:
    """Codes of ``video`` with tiled encoding (latents blended, then quantized once)."""
    with torch.no_grad():
        z = encode_latents_tiled(tok, video, tile, overlap, cond, video_contains_first_frame)
        return tok.quantizer.codes_from(z)


def decode_tiled(tok, codes: torch.Tensor, tile=256, overlap: int = 32, cond=None,
                 video_contains_first_frame: bool = True) -> torch.Tensor:
    """Video from ``codes`` decoded tile by tile; ``tile``/``overlap`` in output pixels."""
    tile, overlap = _check_tiling(tok, tile, overlap)
    with torch.no_grad():
        quantized = tok.quantizer.decode_codes(codes.to(tok.device))
        first = tok._first_frame("decode", video_contains_first_frame)
        cond = tok._check_cond(cond, quantized.shape[0])
        r = tok.space_compression
        h, w = quantized.shape[-2] * r, quantized.shape[-1] * r
        results = []
        for box, margins in _tiles(h, w, tile, overlap):
            y, x, th, tw = box
            with _tile_state(tok, ("dec", y, x)):
                v = tok.decoder(quantized[..., y // r:(y + th) // r, x // r:(x + tw) // r], cond, first_frame=first)
            results.append((box, margins, v))
        v0 = results[0][2]
        return blend(results, (*v0.shape[:3], h, w), 1, v0)
