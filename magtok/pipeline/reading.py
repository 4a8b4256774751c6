"""Reading inputs for the tokenizer: options, probing and planning a source, encoder-ready chunks.

    read = ReadOptions(short_side=128, max_frames=17)
    src = open_source("clip.mp4", r_s=8, read=read)        # probes; raises VideoReadError if unreadable
    for chunk in model_chunks(src, r_t=4, chunk_latents=4, policy="pad"):
        ...                                                # Chunk(video (1, 3, t, H, W) in [-1, 1], real)

Chunks: the first holds ``1 + (N-1) r_t`` frames, the next ``N r_t`` (N = ``chunk_latents``), so
streaming encoding gives the codes of the whole clip. The last chunk is padded (``pad``: the last frame
repeated up to ``1 + k r_t`` frames) or cut (``drop``).

Inputs may be local paths or fsspec URLs; ``local_input`` gives a local file for a URL (downloaded
to a temporary file, removed afterwards), because FFmpeg reads local files.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from magtok.pipeline.geometry import Geometry, plan_geometry

__all__ = ["ReadOptions", "ComputeOptions", "Source", "Chunk", "Counter", "ShortenedVideoWarning", "open_source",
           "raw_chunks", "model_chunks", "prepare_frames", "local_input", "is_url", "is_image"]


@dataclass
class ReadOptions:
    """How a source is read: size (``size`` (H, W) to cover then crop, or ``short_side``), frame rate
    (``fps``: nearest-frame resampling), first frame, frame cap, and ``frames_policy`` for counts that
    are not ``1 + k r_t`` (``pad`` repeats the last frame, ``drop`` drops the last frames)."""

    size: tuple[int, int] | None = None
    short_side: int | None = None
    fps: float | None = None
    start: int = 0
    max_frames: int | None = None
    frames_policy: str = "pad"

    def __post_init__(self):
        if self.size is not None and self.short_side is not None:
            raise ValueError("give size or short_side, not both")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps={self.fps}: the frame rate must be positive")
        if self.start is None or self.start < 0:
            raise ValueError(f"start={self.start}: the first frame must be >= 0")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames={self.max_frames}: must be >= 1")
        if self.frames_policy not in ("pad", "drop"):
            raise ValueError(f"frames_policy={self.frames_policy!r}: must be 'pad' or 'drop'")


@dataclass
class ComputeOptions:
    """Memory and speed knobs: latent frames per streaming chunk, spatial tiles (approximate),
    device ("auto": cuda when available) and the Winograd convolution (float32 CPU)."""

    chunk_latents: int = 4
    tile: int | None = None
    tile_overlap: int | None = None
    device: str = "auto"
    winograd: bool = False

    def __post_init__(self):
        if self.chunk_latents < 1:
            raise ValueError(f"chunk_latents={self.chunk_latents}: must be >= 1")

    def tiles(self, r_s: int) -> tuple[int, int] | None:
        """(tile, overlap) in pixels, checked against the tokenizer's r_s; None without tiling."""
        if not self.tile:
            return None
        tile = self.tile
        overlap = self.tile_overlap if self.tile_overlap is not None else min(32, tile // 4) // r_s * r_s
        if tile % r_s or overlap % r_s or overlap < 0 or overlap >= tile:
            raise ValueError(f"tile={tile} and tile_overlap={overlap} must be multiples of r_s={r_s} "
                             f"with the overlap smaller than the tile")
        return (tile, overlap)


@dataclass
class Source:
    """What will be read from one input file and how."""

    path: Path
    kind: str                    # "video" or "image"
    frames_total: int            # frames in the file
    fps: float                   # source rate (0 for an image)
    height: int
    width: int
    start: int
    target_fps: float | None
    frames: int                  # frames that will be read (after fps, start, max_frames)
    geometry: Geometry
    declared_frames: int = 0     # what the container promised, when more than decode (else 0)

    @property
    def clip_fps(self) -> float:
        return self.target_fps if self.target_fps is not None else self.fps

    @property
    def step(self) -> float:
        """Source frames per read frame."""
        return self.fps / self.target_fps if self.target_fps else 1.0

    def source_range(self, first: int, count: int) -> tuple[int, int]:
        """Source frames [start, end) covered by read frames first .. first + count - 1."""
        from magtok.data import frame_indices
        if self.kind == "image":
            return 0, 1
        idx = frame_indices(self.start, first + count, self.step)
        return int(idx[first]), int(idx[-1]) + 1


def is_url(path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def is_image(path) -> bool:
    from magtok.data import IMAGE_EXTENSIONS
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


@contextlib.contextmanager
def local_input(path):
    """A local path for ``path``: itself, or a temporary copy of an fsspec URL (removed on exit)."""
    s = str(path)
    if s.startswith("file://"):
        yield Path(s[len("file://"):])
        return
    if not is_url(s):
        yield Path(s)
        return
    import fsspec
    from magtok.data import VideoReadError
    fd, tmp = tempfile.mkstemp(prefix=".magtok-in-", suffix=os.path.splitext(s)[1])
    os.close(fd)
    try:
        try:
            with fsspec.open(s, "rb") as src, open(tmp, "wb") as dst:
                while True:
                    block = src.read(1 << 22)
                    if not block:
                        break
                    dst.write(block)
        except FileNotFoundError:
            raise VideoReadError(s, "no such file") from None
        except OSError as e:
            raise VideoReadError(s, f"cannot be read ({e})") from None
        yield Path(tmp)
    finally:
        os.unlink(tmp)


# an fps this close above the source rate (29.97 -> 30) is taken as the source rate's nominal value
FPS_TOLERANCE = 0.01


class ShortenedVideoWarning(UserWarning):
    """A file's container promises more frames than decode (cut short, or a header that overcounts);
    the frames that decode are used."""


def shortened_message(name, declared: int, decodable: int) -> str:
    return (f"{name}: the container declares {declared} frames but only {decodable} decode (cut short or a "
            f"wrong header); using the {decodable} that decode")


def open_source(path, r_s: int, read: ReadOptions | None = None, info=None, name: str | None = None) -> Source:
    """Probe a local ``path`` and plan what is read (raises VideoReadError for unreadable or zero-frame
    files, ValueError when the options do not fit this file). A file whose container promises more
    frames than decode is read with the frames that decode, with one ``ShortenedVideoWarning`` giving
    both counts (``Source.declared_frames`` keeps the promise). ``info``: a known ``VideoInfo`` (e.g.
    from a manifest) instead of probing again."""
    from magtok.data import VideoReadError, probe_video, read_image
    read = read or ReadOptions()
    path = Path(path)
    name = name or str(path)
    if is_image(path):
        img = read_image(path)
        h, w = img.shape[:2]
        return Source(path, "image", 1, 0.0, h, w, 0, None, 1,
                      plan_geometry(h, w, r_s, read.size, read.short_side, name))
    if info is None:
        info = probe_video(path)
    declared = int(info.declared_frames or 0)
    if declared > info.num_frames:           # cut short, or a header that overcounts: use what decodes
        warnings.warn(shortened_message(name, declared, info.num_frames), ShortenedVideoWarning, stacklevel=2)
    fps = info.fps
    if read.fps is not None:
        if fps <= 0:
            raise VideoReadError(name, f"has no frame rate, so it cannot be resampled to fps={read.fps}")
        if read.fps > fps * (1 + FPS_TOLERANCE):
            raise ValueError(f"fps={read.fps:g} is above the frame rate of {name} ({fps:g} fps): resampling "
                             f"up only repeats frames; give fps={fps:g} or lower, or leave fps out")
        step = fps / read.fps
    else:
        step = 1.0
    if read.start >= info.num_frames:
        promised = f"; the container declares {declared}" if declared > info.num_frames else ""
        raise ValueError(f"start={read.start} is past the end of {name} ({info.num_frames} frames decode"
                         f"{promised}); give a start below {info.num_frames}")
    frames = int(math.floor((info.num_frames - 1 - read.start) / step + 1e-9)) + 1
    if read.max_frames is not None:
        frames = min(frames, int(read.max_frames))
    geo = plan_geometry(info.height, info.width, r_s, read.size, read.short_side, name)
    return Source(path, "video", info.num_frames, fps, info.height, info.width, read.start, read.fps, frames, geo,
                  declared if declared > info.num_frames else 0)


def raw_chunks(src: Source, first: int, size: int) -> Iterator[np.ndarray]:
    """uint8 (t, H, W, 3) chunks of the source: ``first`` frames, then ``size`` each; capped at
    ``src.frames``; raises VideoReadError when the file ends early."""
    from magtok.data import VideoReadError, iter_video_chunks, read_image
    if src.kind == "image":
        yield read_image(src.path)[None]
        return
    got = 0
    it = iter_video_chunks(src.path, size, first_chunk_frames=first, start=src.start, target_fps=src.target_fps)
    try:
        for c in it:
            c = c[:src.frames - got]
            got += len(c)
            if len(c):
                yield c
            if got >= src.frames:
                break
    finally:
        it.close()
    if got < src.frames:
        raise VideoReadError(src.path, f"only {got} of {src.frames} frames could be decoded "
                                       f"(the file is truncated or corrupt)")


@dataclass
class Chunk:
    video: torch.Tensor      # (1, 3, t, H, W) in [-1, 1], t valid for the tokenizer
    real: int                # frames of it that came from the file (the rest is padding)


@dataclass
class Counter:
    frames_in: int = 0       # frames read from the file
    frames_enc: int = 0      # frames given to the encoder
    notes: list = field(default_factory=list)


def prepare_frames(raw: np.ndarray, geometry: Geometry, r_t: int, is_first: bool, is_last: bool,
                   policy: str, counter: Counter | None = None) -> Chunk | None:
    """uint8 (t, H, W, 3) -> an encoder-ready Chunk: resized, cropped, the last one padded or cut."""
    from magtok.data import to_tensor
    x = geometry.apply(to_tensor(raw))                      # (3, t, H, W)
    t = x.shape[1]
    real = t
    if is_last:
        rem = (t - 1) % r_t if is_first else t % r_t
        if rem and policy == "pad":
            x = torch.cat([x, x[:, -1:].expand(-1, r_t - rem, -1, -1)], dim=1)
        elif rem:
            x = x[:, :t - rem]
            real = t - rem
    if counter is not None:
        counter.frames_in += t
        counter.frames_enc += x.shape[1]
    if x.shape[1] == 0:
        return None
    return Chunk(x.unsqueeze(0).contiguous(), real)


def model_chunks(src: Source, r_t: int, chunk_latents: int, policy: str,
                 counter: Counter | None = None) -> Iterator[Chunk]:
    """Encoder-ready chunks of a whole source (see the module docstring)."""
    from magtok.data import VideoReadError
    if chunk_latents < 1:
        raise ValueError(f"chunk_latents={chunk_latents}: must be >= 1")
    first_size, size = 1 + (chunk_latents - 1) * r_t, chunk_latents * r_t
    prev, is_first = None, True
    for raw in raw_chunks(src, first_size, size):
        if prev is not None:
            yield prepare_frames(prev, src.geometry, r_t, is_first, False, policy, counter)
            is_first = False
        prev = raw
    if prev is None:
        raise VideoReadError(src.path, "no frames")
    chunk = prepare_frames(prev, src.geometry, r_t, is_first, True, policy, counter)
    if chunk is not None:
        yield chunk
