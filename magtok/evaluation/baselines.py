"""Reference reconstructions that a tokenizer's numbers are read against.

* ``temporal_mean``: every frame of a window replaced by the window's mean frame. A tokenizer that
  does not beat it on a clip with motion has not learned to code motion.
* ``h264``: the window coded by libx264 (through PyAV) at the smallest CRF whose bitstream fits the
  tokenizer's budget for the same window (tokens x bits per token). Only the H.264 elementary
  stream is counted (no container), as only the tokens are counted on the tokenizer's side.

    recon, info = h264_at_bits(clip, budget_bits=17920)   # clip (3, T, H, W) in [-1, 1]
    info -> {"crf": 31, "bits": 17504, "budget_bits": 17920, "fits": True}
"""

from __future__ import annotations

import io

import numpy as np
import torch

__all__ = ["BASELINES", "temporal_mean", "h264_encode", "h264_at_bits", "run_baseline"]

BASELINES = ("temporal_mean", "h264")


def temporal_mean(clip: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> the same shape, every frame the clip's mean frame."""
    return clip.mean(dim=1, keepdim=True).expand_as(clip).contiguous()


def _to_u8(clip: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((clip.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def h264_encode(clip: torch.Tensor, crf: int, preset: str = "slow") -> tuple[torch.Tensor, int]:
    """Code ``clip`` (3, T, H, W in [-1, 1], even H and W) with libx264 at ``crf`` (yuv420p).

    Returns (decoded clip in [-1, 1], bits of the H.264 packets).
    """
    import av

    frames = _to_u8(clip)
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {h}x{w}")
    buf = io.BytesIO()
    bits = 0
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": str(int(crf)), "preset": preset}
        for arr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                bits += p.size * 8
                out.mux(p)
        for p in s.encode():
            bits += p.size * 8
            out.mux(p)
    buf.seek(0)
    with av.open(buf) as inp:
        dec = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    if len(dec) != t:
        raise RuntimeError(f"H.264 round trip returned {len(dec)} of {t} frames")
    x = torch.from_numpy(np.stack(dec)).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return x, bits


def h264_at_bits(clip: torch.Tensor, budget_bits: float, preset: str = "slow") -> tuple[torch.Tensor, dict]:
    """The smallest CRF (best quality) whose H.264 bitstream fits ``budget_bits``.

    Binary search over CRF 0..51 (size falls with CRF); when even CRF 51 does not fit, CRF 51 is
    used and ``fits`` is False.
    """
    lo, hi = 0, 51
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        recon, bits = h264_encode(clip, mid, preset)
        if bits <= budget_bits:
            best = (mid, recon, bits)
            hi = mid - 1
        else:
            lo = mid + 1
    if best is None:
        recon, bits = h264_encode(clip, 51, preset)
        return recon, {"crf": 51, "bits": bits, "budget_bits": float(budget_bits), "fits": False}
    crf, recon, bits = best
    return recon, {"crf": crf, "bits": bits, "budget_bits": float(budget_bits), "fits": True}


def run_baseline(name: str, clip: torch.Tensor, budget_bits: float) -> tuple[torch.Tensor, dict]:
    """(reconstruction, info) of baseline ``name`` for one clip (3, T, H, W) in [-1, 1]."""
    if name == "temporal_mean":
        return temporal_mean(clip), {}
    if name == "h264":
        return h264_at_bits(clip, budget_bits)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
