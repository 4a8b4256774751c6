"""Video and image IO with PyAV, and the resize / crop / value-range helpers.

Layouts and ranges
    frames   uint8 numpy (T, H, W, 3), RGB, as decoded by PyAV ``frame.to_ndarray(format="rgb24")``
    clip     float tensor (3, T, H, W) in [-1, 1]; a batch is (B, 3, T, H, W)
    u8 -> float is ``u / 127.5 - 1`` (bit-identical to the reference arrays in shared/reference);
    float -> u8 is ``round((x + 1) * 127.5)`` clamped to [0, 255].

Frame indices
    Frame ``i`` of a file is the ``i``-th decoded frame in presentation order. ``read_video`` with a
    non-zero ``start`` seeks to the key frame at or before ``start`` and decodes forward from there,
    so a crop near the end of a long file never decodes the file from frame 0. The index of a frame
    after a seek is derived from its timestamp, ``round((pts - start_time) * time_base * fps)``, which
    assumes a constant frame rate (the average rate of the stream). When a frame has no timestamp,
    or the seek lands after the wanted frame, the reader falls back to decoding from the start, so
    the answer is always the same as a sequential decode for constant-frame-rate files.

Writing
    ``write_video`` writes H.264 (libx264) in an MP4 (or whatever the suffix names), atomically: into
    a temporary file in the target's directory, then ``os.replace``. Even sizes use yuv420p (plays
    everywhere). libx264 cannot encode yuv420p at odd sizes, so odd widths/heights use yuv444p
    (High 4:4:4 profile): the file keeps the exact size, at the cost of players that only know 4:2:0
    (some browsers). Pass ``pix_fmt`` to choose yourself.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from magtok._io import atomic_write

__all__ = [
    "VideoReadError", "VideoInfo", "probe_video", "read_video", "iter_video_chunks", "read_image",
    "write_video", "write_side_by_side", "to_tensor", "to_uint8", "resize_short_side",
    "resize_to_cover", "center_crop", "random_crop", "resize_and_crop", "frame_indices",
]


class VideoReadError(ValueError):
    """A video or image that cannot be read: unreadable, corrupt, truncated or without frames."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")


# --------------------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class VideoInfo:
    """What a file holds. ``num_frames`` counts readable frames (see ``probe_video``)."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    duration: float          # seconds, num_frames / fps
    declared_frames: int     # what the container says (0 when it says nothing)


def _open(path):
    import av
    path = str(path)
    if not os.path.isfile(path):
        raise VideoReadError(path, "no such file")
    try:
        container = av.open(path)
    except Exception as e:  # av raises InvalidDataError, EOFError, ... all FFmpegError
        raise VideoReadError(path, f"not a readable video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "no video stream")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe_video(path, mode: str = "packets") -> VideoInfo:
    """Frame count, rate and size of a video file.

    ``mode`` says how frames are counted:
      * ``"header"``: trust the container's frame count (no I/O beyond the header; 0-frame headers,
        e.g. some webm/gif, fall back to ``"packets"``).
      * ``"packets"`` (default): count the video packets by demuxing the whole file without decoding
        (one pass of I/O, a few ms for a short clip). One packet is one frame in mp4/mov/mkv/webm/
        gif. A count below the container's declared count means the file is truncated: it is
        reported as ``num_frames`` (the readable frames) and ``declared_frames``.
      * ``"decode"``: decode every frame and count them (exact, slow: about 0.5 ms per 640x272 frame).
    Every mode decodes the first frame, so a file whose codec cannot decode raises here.
    Raises ``VideoReadError`` for a missing, unreadable or zero-frame file.
    """
    if mode not in ("header", "packets", "decode"):
        raise ValueError(f"mode must be 'header', 'packets' or 'decode', not {mode!r}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)
        fps = _stream_fps(stream)
        try:
            first = next(container.decode(stream), None)
        except Exception as e:
            raise VideoReadError(path, f"first frame does not decode ({e})") from None
        if first is None:
            raise VideoReadError(path, "no frames")
        height, width = first.height, first.width
        if mode == "header" and declared > 0:
            n = declared
        elif mode == "decode":
            n = 1
            try:
                for _ in container.decode(stream):
                    n += 1
            except Exception:
                pass  # a decode error ends the readable part; the count says how far it got
        else:
            container.seek(0)
            n = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        n += 1
            except Exception:
                pass
    finally:
        container.close()
    if n == 0:
        raise VideoReadError(path, "no frames")
    return VideoInfo(str(path), n, fps, height, width, n / fps if fps else 0.0, declared)


# --------------------------------------------------------------------------------------- reading
def frame_indices(start: int, num_frames: int, step: float) -> np.ndarray:
    """Source frame indices of ``num_frames`` output frames taken every ``step`` source frames.

    ``step`` is the stride, or ``source_fps / target_fps`` for a rate change; a fractional step picks
    the nearest frame, ``start + floor(i * step + 0.5)``.
    """
    return np.array([start + _offset(i, step) for i in range(num_frames)], dtype=np.int64)


def _offset(i: int, step: float) -> int:
    return int(math.floor(i * step + 0.5 + 1e-9))


def _step(stride: int, target_fps: float | None, fps: float) -> float:
    if target_fps is not None:
        if stride != 1:
            raise ValueError("give either stride or target_fps, not both")
        if target_fps <= 0 or fps <= 0:
            raise ValueError(f"target_fps={target_fps} needs a positive source rate (got {fps})")
        return fps / target_fps
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, not {stride}")
    return float(stride)


def _decode_range(container, stream, path, first: int, last: int) -> Iterator[tuple[int, object]]:
    """Yield (index, av.VideoFrame) for frames first..last (inclusive), seeking when first > 0."""
    fps = _stream_fps(stream)
    tb = stream.time_base
    t0 = stream.start_time or 0
    can_seek = first > 0 and fps > 0 and tb is not None
    if can_seek:
        target = t0 + int(math.floor(first / fps / tb))
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except Exception:
            can_seek = False
    if can_seek:
        it = container.decode(stream)
        try:
            frame = next(it, None)
        except Exception as e:
            raise VideoReadError(path, f"decoding failed after seeking to frame {first} ({e})") from None
        ok = frame is not None and frame.pts is not None
        idx = round(float((frame.pts - t0) * tb) * fps) if ok else None
        if ok and idx <= first:
            yield from _walk(it, frame, idx, first, last, t0, tb, fps, path)
            return
        container.seek(0)  # the seek overshot or timestamps are missing: decode from the start
    idx = -1
    try:
        for frame in container.decode(stream):
            idx += 1
            if idx > last:
                return
            if idx >= first:
                yield idx, frame
    except Exception as e:
        raise VideoReadError(path, f"decoding failed near frame {idx + 1} ({e})") from None


def _walk(it, frame, idx, first, last, t0, tb, fps, path):
    try:
        while frame is not None:
            if idx > last:
                return
            if idx >= first:
                yield idx, frame
            frame = next(it, None)
            if frame is not None:
                idx = round(float((frame.pts - t0) * tb) * fps) if frame.pts is not None else idx + 1
    except Exception as e:
        raise VideoReadError(path, f"decoding failed near frame {idx + 1} ({e})") from None


def _gather(container, stream, path, wanted: np.ndarray) -> np.ndarray:
    """Decode the frames at the (sorted, possibly repeated) indices ``wanted`` -> (T, H, W, 3) uint8."""
    first, last = int(wanted[0]), int(wanted[-1])
    needed = set(wanted.tolist())
    got: dict[int, np.ndarray] = {}
    for idx, frame in _decode_range(container, stream, path, first, last):
        if idx in needed and idx not in got:
            got[idx] = frame.to_ndarray(format="rgb24")
    missing = [i for i in needed if i not in got]
    if missing:
        raise VideoReadError(path, f"frames {min(missing)}..{max(missing)} are missing "
                                   f"(the file ends or is truncated before them)")
    return np.stack([got[i] for i in wanted.tolist()])


def read_video(path, start: int = 0, num_frames: int | None = None, stride: int = 1,
               target_fps: float | None = None) -> tuple[np.ndarray, float]:
    """Decode frames of ``path`` -> (uint8 (T, H, W, 3), fps of the returned frames).

    Takes ``num_frames`` frames (all remaining ones when None) starting at frame ``start``, every
    ``stride`` frames, or resampled to ``target_fps`` (nearest frame; see ``frame_indices``). Seeks
    to the key frame before ``start`` instead of decoding from frame 0 (see the module docstring).
    Raises ``VideoReadError`` when the file cannot be read or has fewer frames than asked for.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        step = _step(stride, target_fps, fps)
        out_fps = target_fps if target_fps is not None else fps / step
        if num_frames is None:
            total = int(stream.frames or 0) or probe_video(path).num_frames
            if start >= total:
                raise VideoReadError(path, f"start frame {start} is past the end ({total} frames)")
            num_frames = int(math.floor((total - 1 - start) / step + 1e-9)) + 1
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, not {num_frames}")
        frames = _gather(container, stream, path, frame_indices(start, num_frames, step))
    finally:
        container.close()
    return frames, float(out_fps)


def iter_video_chunks(path, chunk_frames: int, first_chunk_frames: int | None = None, start: int = 0,
                      stride: int = 1, target_fps: float | None = None,
                      drop_last: bool = False) -> Iterator[np.ndarray]:
    """Stream a long video as uint8 (t, H, W, 3) chunks without holding the whole file.

    The first chunk has ``first_chunk_frames`` frames (default ``chunk_frames``), the others
    ``chunk_frames``; the last one may be shorter unless ``drop_last``. For a causal tokenizer with
    temporal compression r_t, ``first_chunk_frames = 1 + k * r_t`` and ``chunk_frames = m * r_t``
    give chunks that streaming encoding turns into the same codes as the whole clip.
    Frames are chosen exactly as ``read_video`` chooses them (stride or target_fps).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, not {chunk_frames}")
    size = first_chunk_frames or chunk_frames
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        step = _step(stride, target_fps, fps)
        out_i = 0          # index of the next output frame
        next_src = start   # source index of the next output frame
        buf: list[np.ndarray] = []
        for idx, frame in _decode_range(container, stream, path, start, 2**62):
            if idx < next_src:
                continue
            arr = frame.to_ndarray(format="rgb24")
            while next_src <= idx:   # a step below 1 repeats a frame
                buf.append(arr)
                out_i += 1
                next_src = start + _offset(out_i, step)
            if len(buf) >= size:
                yield np.stack(buf[:size])
                buf = buf[size:]
                size = chunk_frames
        if buf and not drop_last:
            yield np.stack(buf)
    finally:
        container.close()


def read_image(path) -> np.ndarray:
    """Read a png/jpg/webp/... image -> uint8 (H, W, 3) RGB (EXIF rotation applied, alpha dropped)."""
    from PIL import Image, ImageOps
    path = str(path)
    if not os.path.isfile(path):
        raise VideoReadError(path, "no such file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise VideoReadError(path, f"not a readable image ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------------- writing
def _as_frames(x, name: str = "video") -> np.ndarray:
    """uint8 ndarray (T, H, W, 3), or a float tensor/array (3, T, H, W) in [-1, 1] -> uint8 THWC."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.uint8:
            x = x.cpu().numpy()
        else:
            if x.dim() == 5 and x.shape[0] == 1:
                x = x[0]
            if x.dim() != 4 or x.shape[0] != 3:
                raise ValueError(f"{name}: a float tensor must be (3, T, H, W) in [-1, 1], got {tuple(x.shape)}")
            return to_uint8(x)
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{name}: an array must be uint8 (T, H, W, 3), got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name}: a uint8 array must be (T, H, W, 3), got {x.shape}")
    return x


CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov"}  # suffix -> PyAV format


def fps_fraction(fps: float) -> Fraction:
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, not {fps}")
    return Fraction(fps).limit_denominator(1001)


def write_video(path, video, fps: float, crf: int = 18, preset: str = "medium",
                pix_fmt: str | None = None, overwrite: bool = False) -> Path:
    """Write ``video`` (uint8 (T, H, W, 3), or a tensor (3, T, H, W) in [-1, 1]) as H.264.

    Atomic: encodes into a temporary file in the same directory and renames it over ``path``, so a
    reader never sees a half-written file. Refuses to replace an existing file unless ``overwrite``.
    ``pix_fmt`` defaults to yuv420p for even sizes and yuv444p for odd ones (see module docstring).
    Returns the path.
    """
    import av
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    frames = _as_frames(video)
    t, h, w, _ = frames.shape
    if pix_fmt is None:
        pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    elif pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"yuv420p needs even sizes; {path} would be {h}x{w}: use pix_fmt='yuv444p' or None")
    rate = fps_fraction(fps)
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: H.264 is written into {', '.join(CONTAINERS)} files, not {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def encode(tmp: str) -> None:
        with av.open(tmp, "w", format=fmt) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.options = {"crf": str(crf), "preset": preset}
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        if path.exists() and not overwrite:  # someone else wrote it meanwhile
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

    atomic_write(path, encode)
    return path


def write_side_by_side(path, a, b, fps: float, **kwargs) -> Path:
    """Write ``a | b`` (e.g. original | reconstruction) side by side; same layouts as ``write_video``."""
    fa, fb = _as_frames(a, "a"), _as_frames(b, "b")
    if fa.shape[:3] != fb.shape[:3]:
        raise ValueError(f"a and b need the same (T, H, W), got {fa.shape[:3]} and {fb.shape[:3]}")
    return write_video(path, np.concatenate([fa, fb], axis=2), fps, **kwargs)


# --------------------------------------------------------------------------- tensors, resize, crop
def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1], ``u / 127.5 - 1``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"to_tensor expects uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return x.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), rounded and clamped."""
    if x.dim() != 4 or x.shape[0] != 3:
        raise ValueError(f"to_uint8 expects (3, T, H, W), got {tuple(x.shape)}")
    u = ((x.detach().float().cpu() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return u.permute(1, 2, 3, 0).contiguous().numpy()


def _hw(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear antialiased resize of a float tensor (..., H, W) to (..., h, w)."""
    if not x.is_floating_point():
        raise ValueError(f"resize works on float tensors, got {x.dtype}; use to_tensor first")
    if x.shape[-2:] == (h, w):
        return x
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]), size=(h, w), mode="bilinear",
                      antialias=True, align_corners=False)
    return y.reshape(*lead, h, w)


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (..., H, W) so that min(H, W) == size, keeping the aspect ratio."""
    h, w = x.shape[-2:]
    s = size / min(h, w)
    return _resize(x, max(size, round(h * s)), max(size, round(w * s)))


def resize_to_cover(x: torch.Tensor, size) -> torch.Tensor:
    """Resize (..., H, W) by one factor so that it covers ``size`` = (h, w) (or int): the smallest
    aspect-preserving resize with H' >= h and W' >= w. Crop afterwards to get exactly ``size``."""
    th, tw = _hw(size)
    h, w = x.shape[-2:]
    s = max(th / h, tw / w)
    return _resize(x, max(th, round(h * s)), max(tw, round(w * s)))


def _check_crop(x, th, tw):
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} is larger than the frame {h}x{w}; resize first")


def center_crop(x: torch.Tensor, size) -> torch.Tensor:
    """Central (h, w) crop of (..., H, W)."""
    th, tw = _hw(size)
    _check_crop(x, th, tw)
    top, left = (x.shape[-2] - th) // 2, (x.shape[-1] - tw) // 2
    return x[..., top:top + th, left:left + tw]


def random_crop(x: torch.Tensor, size, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Uniformly random (h, w) crop of (..., H, W); ``rng`` makes it reproducible."""
    th, tw = _hw(size)
    _check_crop(x, th, tw)
    rng = rng if rng is not None else np.random.default_rng()
    top = int(rng.integers(0, x.shape[-2] - th + 1))
    left = int(rng.integers(0, x.shape[-1] - tw + 1))
    return x[..., top:top + th, left:left + tw]


def resize_and_crop(x: torch.Tensor, size, rng: np.random.Generator | None = None
                    ) -> tuple[torch.Tensor, dict]:
    """Resize (..., H, W) to cover ``size``, then crop to exactly ``size``: randomly when ``rng`` is
    given, centrally otherwise. Never crops before resizing, so the whole field of view is scaled
    down first. An int ``size`` means the short side becomes ``size`` and the crop is square.
    Returns the tensor and ``{"resize": (H', W'), "crop": (top, left, h, w)}``.
    """
    th, tw = _hw(size)
    y = resize_to_cover(x, (th, tw))
    rh, rw = y.shape[-2:]
    if rng is None:
        top, left = (rh - th) // 2, (rw - tw) // 2
    else:
        top, left = int(rng.integers(0, rh - th + 1)), int(rng.integers(0, rw - tw + 1))
    return y[..., top:top + th, left:left + tw], {"resize": (rh, rw), "crop": (top, left, th, tw)}
