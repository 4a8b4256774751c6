"""Videos from still photos: camera-like motion over time.

A photo becomes a clip by moving a virtual camera over it: a random crop (the field of view), then
over the clip a pan, a zoom in or out, a small rotation and a brightness drift, all smooth
(constant velocity plus a little acceleration). The view never leaves the photo, so no frame shows
padding. This gives a tokenizer trained on few real videos the variety of many scenes and the
motion statistics of a handheld or panning camera.

    motion = CameraMotion(max_zoom=1.3, max_pan=0.35, max_rotate=4.0, brightness=0.08)
    clip = animate_still(photo, frames=17, size=(64, 64), motion=motion, rng=np.random.default_rng(0))
    # (3, 17, 64, 64) float32 in [-1, 1]

    ds = MovingStillsDataset("photos/", frames=17, size=64, motion=motion)   # one clip per photo
    ds = MixtureDataset([videos, ds], weights=[0.5, 0.5])                     # what the trainer uses

From YAML (``magtok train``): ``data.still_motion: 0.5`` makes half of the training clips animated
photos of ``data.train_dir`` (or of ``data.stills_dir``), and ``data.motion: {max_zoom: ...}`` sets
the motion (keys of :class:`CameraMotion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["CameraMotion", "animate_still", "MovingStillsDataset", "MixtureDataset"]


@dataclass
class CameraMotion:
    """Ranges of the random camera path over one clip (each clip draws its own values).

    max_zoom: the field of view scales by a factor in [1/max_zoom, max_zoom] from first to last frame.
    max_pan: the view centre travels at most this fraction of the view's width/height over the clip.
    max_rotate: degrees of rotation from first to last frame, at most.
    brightness: the gain drifts by at most this fraction from first to last frame.
    min_view, max_view: the first frame's view covers this fraction of the photo's limiting side
        (smaller = closer crops, more detail per pixel).
    still: probability that a clip does not move at all (a static shot).
    """

    max_zoom: float = 1.3
    max_pan: float = 0.35
    max_rotate: float = 4.0
    brightness: float = 0.08
    min_view: float = 0.3
    max_view: float = 0.9
    still: float = 0.05

    def __post_init__(self):
        checks = [
            (self.max_zoom >= 1.0, "max_zoom must be >= 1 (1 = no zoom)"),
            (self.max_pan >= 0.0, "max_pan must be >= 0"),
            (0.0 <= self.max_rotate <= 45.0, "max_rotate must be in [0, 45] degrees"),
            (0.0 <= self.brightness < 1.0, "brightness must be in [0, 1)"),
            (0.0 < self.min_view <= self.max_view <= 1.0, "need 0 < min_view <= max_view <= 1"),
            (0.0 <= self.still <= 1.0, "still must be a probability in [0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"CameraMotion: {msg} (got {self})")

    @classmethod
    def from_dict(cls, data: dict | None, path: str = "data.motion") -> "CameraMotion":
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of motion settings such as "
                             f"{{max_zoom: 1.3, max_pan: 0.35}}, got {data!r}")
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


def _as_image_tensor(image) -> torch.Tensor:
    """uint8 (H, W, 3) array or float (3, H, W) tensor in [-1, 1] -> float32 (3, H, W) in [-1, 1]."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) photo, got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
    if not torch.is_tensor(image) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("expected a (3, H, W) tensor in [-1, 1] or a uint8 (H, W, 3) array")
    return image.float()


def animate_still(image, frames: int, size, motion: CameraMotion | None = None,
                  rng: np.random.Generator | None = None) -> torch.Tensor:
    """A (3, frames, h, w) clip in [-1, 1] of a virtual camera moving over ``image``.

    ``image``: uint8 (H, W, 3) or (3, H, W) in [-1, 1]; ``size``: int or (h, w) of the output.
    The photo is first downscaled with antialiasing so that one output pixel covers about 1.5
    source pixels at most (no aliasing when the view is resampled bilinearly).
    """
    motion = motion or CameraMotion()
    rng = rng or np.random.default_rng()
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if frames < 1 or h < 1 or w < 1:
        raise ValueError(f"frames and size must be positive, got frames={frames}, size={size}")
    img = _as_image_tensor(image)
    H, W = img.shape[1:]
    # view size in source pixels at t = 0: output pixels times k
    fit = min(H / h, W / w)                                    # k at which the view fills the limiting side
    view = rng.uniform(motion.min_view, motion.max_view)
    moving = rng.uniform() >= motion.still
    zoom = math.exp(rng.uniform(-1, 1) * math.log(motion.max_zoom)) if moving else 1.0
    k0 = fit * view
    k_max = k0 * max(1.0, zoom)
    if k_max > fit:                                            # zooming out must stay inside the photo
        k0 *= fit / k_max
        k_max = fit
    # pre-downscale so that the finest sampling (smallest k) stays near 1.5 source px / output px
    k_min = k0 * min(1.0, zoom)
    shrink = min(1.0, 1.5 / k_min) if k_min > 1.5 else 1.0
    if shrink < 1.0:
        newH, newW = max(h, round(H * shrink)), max(w, round(W * shrink))
        img = F.interpolate(img[None], size=(newH, newW), mode="bilinear", antialias=True,
                            align_corners=False)[0]
        sy, sx = newH / H, newW / W
        H, W = newH, newW
        k0, k_max = k0 * min(sy, sx), k_max * min(sy, sx)
    angle_end = math.radians(rng.uniform(-1, 1) * motion.max_rotate) if moving else 0.0

    def half_extent(k: float, ang: float) -> tuple[float, float]:
        c, s = abs(math.cos(ang)), abs(math.sin(ang))
        ex = c * w * k / 2 + s * h * k / 2
        ey = s * w * k / 2 + c * h * k / 2
        return ex, ey

    ex, ey = half_extent(k_max, angle_end if abs(angle_end) > 0 else 0.0)
    ex0, ey0 = half_extent(k_max, 0.0)
    ex, ey = max(ex, ex0), max(ey, ey0)
    if ex > W / 2 or ey > H / 2:                               # rotation corners leave the photo: shrink
        f = min(W / 2 / ex, H / 2 / ey)
        k0, k_max, ex, ey = k0 * f, k_max * f, ex * f, ey * f
    # centres in pixels, inside [ex, W - ex] x [ey, H - ey]; when the view spans the whole side the
    # range is a point (float rounding can make it a hair negative: use the middle then)
    lo_x, hi_x, lo_y, hi_y = ex, W - ex, ey, H - ey
    if hi_x < lo_x:
        lo_x = hi_x = W / 2
    if hi_y < lo_y:
        lo_y = hi_y = H / 2
    c0 = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    if moving:
        pan = rng.uniform(0, motion.max_pan) * np.array([w * k0, h * k0])
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-12
        c1 = c0 + direction * pan
        c1 = np.clip(c1, [lo_x, lo_y], [hi_x, hi_y])
    else:
        c1 = c0
    curve = rng.uniform(-0.3, 0.3) if moving else 0.0        # a little acceleration or deceleration
    gain_end = 1.0 + rng.uniform(-1, 1) * motion.brightness if moving else 1.0

    t = torch.linspace(0, 1, frames, dtype=torch.float64) if frames > 1 else torch.zeros(1, dtype=torch.float64)
    u = t + curve * t * (1 - t)                               # eased progress, still 0 -> 1
    k = k0 * torch.exp(u * math.log(zoom))
    ang = u * angle_end
    cx = c0[0] + u * (c1[0] - c0[0])
    cy = c0[1] + u * (c1[1] - c0[1])
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(frames, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos * w * k / W
    theta[:, 0, 1] = -sin * h * k / W
    theta[:, 0, 2] = cx / (W / 2) - 1
    theta[:, 1, 0] = sin * w * k / H
    theta[:, 1, 1] = cos * h * k / H
    theta[:, 1, 2] = cy / (H / 2) - 1
    grid = F.affine_grid(theta.float(), [frames, 3, h, w], align_corners=False)
    clip = F.grid_sample(img[None].expand(frames, -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)          # (T, 3, h, w)
    gain = (1.0 + u * (gain_end - 1.0)).float().view(frames, 1, 1, 1)
    clip = ((clip + 1) * gain - 1).clamp(-1, 1)
    return clip.permute(1, 0, 2, 3).contiguous()


class MovingStillsDataset(Dataset):
    """The photos of a folder as clips of camera motion (:func:`animate_still`), one item per photo.

    Photos are decoded once and kept in memory downscaled to ``cache_side`` pixels on the short
    side (default: 4x the output's long side), so an item costs a resample, not a JPEG decode.
    Randomness: ``seed=None`` draws from torch's global RNG (the trainer seeds it per item, so
    runs are reproducible); an int makes item ``i`` of epoch ``e`` a pure function of (seed, e, i).
    Every item is ``dict(video=(3, T, h, w), path, start=0, fps=0.0)`` like VideoFolderDataset's.
    """

    def __init__(self, root, frames: int, size, motion: CameraMotion | dict | None = None,
                 seed: int | None = None, cache_side: int | None = None):
        from magtok.data.dataset import scan_media

        if int(frames) != frames or frames < 1:
            raise ValueError(f"frames must be a positive integer, not {frames}")
        self.frames = int(frames)
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.motion = motion if isinstance(motion, CameraMotion) else CameraMotion.from_dict(motion)
        self.seed, self.epoch = seed, 0
        self.cache_side = int(cache_side or 4 * max(self.size))
        self.root = str(root)
        self.paths = [p for p, _ in scan_media(root, videos=False, images=True)]
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _image(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            from magtok.data.video import read_image

            img = _as_image_tensor(read_image(self.paths[i]))
            H, W = img.shape[1:]
            s = self.cache_side / min(H, W)
            if s < 1:
                img = F.interpolate(img[None], size=(max(1, round(H * s)), max(1, round(W * s))),
                                    mode="bilinear", antialias=True, align_corners=False)[0]
            self._cache[i] = img.contiguous()
        return self._cache[i]

    def __getitem__(self, index: int) -> dict:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} photos")
        index %= n
        rng = (np.random.default_rng(int(torch.randint(2**62, ()).item())) if self.seed is None
               else np.random.default_rng((self.seed, self.epoch, index)))
        clip = animate_still(self._image(index), self.frames, self.size, self.motion, rng)
        return {"video": clip, "path": self.paths[index], "start": 0, "fps": 0.0}


class MixtureDataset(Dataset):
    """Draw from several datasets with fixed weights, deterministically by index.

    Item ``i`` comes from dataset ``j`` with probability ``weights[j]`` (the choice and the item
    within ``j`` are a pure function of ``i``), so a sampler over ``range(len(self))`` sees the
    mixture in the stated proportions however small one of the datasets is. ``length`` defaults
    to the sum of the datasets' lengths.
    """

    def __init__(self, datasets: list, weights: list[float], length: int | None = None):
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("MixtureDataset needs one weight per dataset")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        if any(len(d) == 0 for d, w in zip(datasets, weights) if w > 0):
            raise ValueError("a dataset with a positive weight is empty")
        self.datasets = list(datasets)
        total = float(sum(weights))
        self.weights = [w / total for w in weights]
        self.length = int(length or sum(len(d) for d in datasets))
        self.cum = np.cumsum(self.weights)
        self.skipped = {}
        for d in self.datasets:
            self.skipped.update(getattr(d, "skipped", {}) or {})

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset, item) that index ``index`` reads."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng((0x6D61, index))
        j = int(min(np.searchsorted(self.cum, rng.uniform(), side="right"), len(self.datasets) - 1))
        while self.weights[j] == 0:
            j = (j + 1) % len(self.datasets)
        return j, int(rng.integers(len(self.datasets[j])))

    def __getitem__(self, index: int) -> dict:
        j, i = self.locate(index)
        return self.datasets[j][i]
