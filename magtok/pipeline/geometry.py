"""The one resize / crop planner: source size -> resize (aspect kept) -> centre crop -> tokenizer size.

    geo = plan_geometry(272, 640, r_s=8, short_side=64)     # Geometry(resize=(64, 151), crop=(0, 3, 64, 144))
    x = geo.apply(clip)                                     # (3, T, 272, 640) -> (3, T, 64, 144)

``size=(H, W)``: resize so that the frame covers H x W, then centre crop (never crop before resizing,
so HD frames are scaled down whole). ``short_side=N``: the shorter side becomes N. Neither: the frames
keep their size. In every case the result is centre-cropped down to multiples of the tokenizer's
spatial compression r_s, with a note when that changes the size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Geometry", "plan_geometry"]


@dataclass
class Geometry:
    """Resize then centre crop: source (h, w) -> ``resize`` (or none) -> ``crop`` (or none) -> out."""

    src: tuple[int, int]
    resize: tuple[int, int] | None
    crop: tuple[int, int, int, int] | None
    out: tuple[int, int]
    mode: str                                # "size", "short-side" or "none"
    target: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(3, T, H, W) float -> (3, T, out_h, out_w)."""
        from magtok.data import resize_short_side, resize_to_cover
        if self.mode == "size":
            x = resize_to_cover(x, self.target)
        elif self.mode == "short-side":
            x = resize_short_side(x, self.target[0])
        if self.crop is not None:
            top, left, h, w = self.crop
            x = x[..., top:top + h, left:left + w]
        return x


def plan_geometry(h: int, w: int, r_s: int, size=None, short_side=None, name: str = "") -> Geometry:
    """Plan the resize and crop of (h, w) frames for a tokenizer with spatial compression ``r_s``."""
    from magtok.data import resize_short_side, resize_to_cover
    notes = []
    probe = torch.zeros(1, h, w)
    if size is not None and short_side is not None:
        raise ValueError("give size or short_side, not both")
    if size is not None:
        th, tw = (int(s) for s in size)
        if th < 1 or tw < 1:
            raise ValueError(f"size=({th}, {tw}): sizes must be positive")
        rh_, rw_ = th // r_s * r_s, tw // r_s * r_s
        if (rh_, rw_) != (th, tw):
            notes.append(f"size=({th}, {tw}) rounded down to {rh_}x{rw_} (multiples of r_s={r_s})")
        if rh_ == 0 or rw_ == 0:
            raise ValueError(f"size=({th}, {tw}) is smaller than the tokenizer's spatial compression {r_s}")
        mode, target = "size", (rh_, rw_)
        rh, rw = resize_to_cover(probe, target).shape[-2:]
        oh, ow = rh_, rw_
    elif short_side is not None:
        n = int(short_side)
        if n < r_s:
            raise ValueError(f"short_side={n} is smaller than the tokenizer's spatial compression {r_s}")
        mode, target = "short-side", (n,)
        rh, rw = resize_short_side(probe, n).shape[-2:]
        oh, ow = rh // r_s * r_s, rw // r_s * r_s
    else:
        mode, target = "none", ()
        rh, rw = h, w
        oh, ow = h // r_s * r_s, w // r_s * r_s
    if oh == 0 or ow == 0:
        raise ValueError(f"{name}: frames of {rh}x{rw} are smaller than the tokenizer's spatial "
                         f"compression {r_s}; resize with size=(H, W) or short_side=N")
    if mode != "size" and (oh, ow) != (rh, rw):
        notes.append(f"{rh}x{rw} centre-cropped to {oh}x{ow} (multiples of r_s={r_s})")
    resize = (int(rh), int(rw)) if (rh, rw) != (h, w) else None
    crop = ((rh - oh) // 2, (rw - ow) // 2, oh, ow) if (oh, ow) != (rh, rw) else None
    return Geometry((h, w), resize, crop, (int(oh), int(ow)), mode, target, notes)
