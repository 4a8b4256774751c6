"""Video and image IO with PyAV, and the resize / crop / value-range helpers.

Layouts and ranges
    frames   uint8 numpy (T, H, W, 3), RGB, as decoded by PyAV ``frame.to_ndarray(format="rgb24")``
    clip     float tensor (3, T, H, W) in [-1, 1]; a batch is (B, 3, T, H, W)
    u8 -> float is ``u / 127.5 - 1`` (bit-identical to the reference arrays in tests/data/reference);
    float -> u8 is ``round((x + 1) * 127.5)`` clamped to [0, 255].

Frame indices
    Frame ``i`` of a file is the ``i``-th frame that a sequential decode from the start yields, in
    presentation order. Decoding ends where the file stops being readable: a file cut short, whose
    last packet is incomplete, or a packet the decoder rejects ends it, and the frames the decoder
    still holds (B-frame reordering) are flushed out, so every frame that decodes is used.
    ``probe_video`` counts exactly these frames (a header that promises more is reported as
    ``declared_frames``). ``read_video`` with a non-zero ``start`` seeks to the key frame at or
    before ``start`` and decodes forward from there, so a crop near the end of a long file never
    decodes the file from frame 0. The key frame's index comes from its timestamp,
    ``round((pts - pts_of_frame_0) * time_base * fps)``, which assumes a constant frame rate (the
    average rate of the stream); the frames after it are counted, not derived from their
    timestamps, which a decoder may hand out out of order (AVI with B-frames). When a frame has no
    timestamp, or the seek cannot land at or before the wanted frame, the reader decodes from the
    start, so the answer is always the same as a sequential decode for constant-frame-rate files.

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


# --------------------------------------------------------------------------------------- decoding
# H.264 allows up to 16 B-frames; after a seek into an open GOP, frames that reference the previous
# GOP can come out before the key frame. More than this many non-key frames before it: give up.
_MAX_LEADING = 18


class _Frames:
    """Decoded frames, in presentation order, from the container's current position to the end of
    the readable part of the stream.

    A demuxing error, a packet the demuxer flags as corrupt (the partial last packet of a file cut
    short) or a packet the decoder rejects ends the readable part (``error`` says which; None at
    the end of the file). The decoder is then flushed, so the frames it still holds for B-frame
    reordering come out too; after an error, those that follow a lost frame (a B-frame whose
    packet was cut off is missing between them) are dropped, so the frames form a gap-free start
    of the video. That check uses the timestamps, so it is skipped for AVI, whose timestamps are
    decode-order counters (the last few frames of an AVI cut inside a group of B-frames can skip
    lost ones), and it needs an error: a Matroska file cut short reports none (its demuxer drops
    the partial block), so the same holds there. Packets of size 0 (AVI's dropped-frame entries, PyAV's final flush
    packet) are not sent to the decoder: an empty packet would put it into draining mode.
    """

    def __init__(self, container, stream):
        self.container, self.stream, self.error = container, stream, None

    def __iter__(self):
        import av
        last_pts = None
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets, None)
            except Exception as e:  # av raises InvalidDataError, OSError, ... from av_read_frame
                self.error = f"the container cannot be read further ({type(e).__name__}: {e})"
                break
            if packet is None:
                break
            if not packet.size:
                continue
            if packet.is_corrupt:
                self.error = "a packet is incomplete (the file is cut short)"
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                self.error = f"a packet does not decode ({e})"
                break
            for frame in frames:
                last_pts = frame.pts
                yield frame
        try:
            held = self.stream.codec_context.decode(None)   # flush: the frames held for reordering
        except av.error.FFmpegError:
            held = []
        tick = self._tick() if self.error is not None else None
        for frame in held:
            if tick is not None and last_pts is not None and (
                    frame.pts is None or abs(frame.pts - last_pts - tick) > tick / 2):
                return   # a frame between them was lost with the damaged part
            last_pts = frame.pts
            yield frame

    def _tick(self) -> float | None:
        """One frame's duration in timestamp units, or None when timestamps cannot show a gap."""
        fps, tb = _stream_fps(self.stream), self.stream.time_base
        if "avi" in (self.container.format.name or "").split(",") or fps <= 0 or not tb:
            return None
        return 1.0 / (fps * float(tb))


def _first_key_frame(it):
    """The first key frame that ``it`` yields after a seek (leading frames of an open GOP, which
    may reference frames before the seek point, are dropped), or None."""
    for _ in range(_MAX_LEADING):
        frame = next(it, None)
        if frame is None or frame.pts is None:
            return None
        if frame.key_frame:
            return frame
    return None


# --------------------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class VideoInfo:
    """What a file holds. ``num_frames`` counts the frames that decode (see ``probe_video``);
    ``declared_frames > num_frames`` means the file is cut short or its header overcounts."""

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


@dataclass
class _PacketScan:
    frames: int = 0                 # packets that carry a frame, before the first damaged one
    clean: bool = True              # no demuxing error, no incomplete packet
    key_pos: int | None = None      # frames before the last key packet (in demux order)
    key_pts: int | None = None      # that key packet's timestamp
    leading: int = 0                # later packets shown before it (open GOP)


def _scan_packets(container, stream) -> _PacketScan:
    """Demux the stream without decoding (a truncated file's partial last packet is not counted;
    packets that the container marks to be discarded, e.g. outside an mp4 edit list, decode to no
    frame and are not counted)."""
    scan = _PacketScan()
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
        except Exception:
            scan.clean = False
            break
        if packet is None:
            break
        if not packet.size:
            continue
        if packet.is_corrupt:
            scan.clean = False
            break
        if packet.is_discard:
            continue
        if packet.is_keyframe and packet.pts is not None:
            scan.key_pos, scan.key_pts, scan.leading = scan.frames, packet.pts, 0
        elif scan.key_pts is not None and packet.pts is not None and packet.pts < scan.key_pts:
            scan.leading += 1
        scan.frames += 1
    return scan


def _count_from_last_key(container, stream, scan: _PacketScan) -> int | None:
    """Frames a sequential decode yields, decoding only from the last key frame: the frames shown
    before it (one per packet) plus the frames that decode from it on. None when the seek does not
    land on that key frame (the caller then decodes everything)."""
    if scan.key_pts is None:
        return None
    try:
        container.seek(scan.key_pts, stream=stream, backward=True, any_frame=False)
    except Exception:
        return None
    it = iter(_Frames(container, stream))
    key = _first_key_frame(it)
    if key is None or key.pts != scan.key_pts:
        return None
    n = scan.key_pos + scan.leading + 1 + sum(1 for _ in it)
    return n if n <= scan.frames else None


def probe_video(path, mode: str = "packets") -> VideoInfo:
    """Frame count, rate and size of a video file.

    ``num_frames`` is the number of frames that decode, i.e. what ``read_video(path)`` returns.
    ``mode`` says how they are counted:
      * ``"header"``: trust the container's frame count (no I/O beyond the header; 0-frame headers,
        e.g. some webm/gif, fall back to ``"packets"``). A header can promise more than decodes.
      * ``"packets"`` (default): count the video packets by demuxing the whole file without decoding
        (one pass of I/O, a few ms for a short clip). One packet is one frame in mp4/mov/mkv/webm/
        avi/gif. When the count disagrees with the container's declared count, or the demuxer
        meets damage (a file cut short: its last packet is incomplete), the packets are not
        trusted: the last key frame's group of pictures is decoded to find exactly how many frames
        decode (the whole file when seeking there fails). ``declared_frames`` keeps the promise.
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
        frames = _Frames(container, stream)
        it = iter(frames)
        try:
            first = next(it, None)
        except Exception as e:
            raise VideoReadError(path, f"first frame does not decode ({e})") from None
        if first is None:
            raise VideoReadError(path, f"no frame decodes: {frames.error}" if frames.error else "no frames")
        height, width = first.height, first.width
        if mode == "header" and declared > 0:
            n = declared
        elif mode == "decode":
            n = 1 + sum(1 for _ in it)
        else:
            it.close()
            container.seek(0)
            scan = _scan_packets(container, stream)
            n = scan.frames
            if not scan.clean or (declared and declared != n):
                exact = _count_from_last_key(container, stream, scan)
                if exact is None:
                    container.seek(0)
                    exact = sum(1 for _ in _Frames(container, stream))
                n = exact
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


def _seek_near(container, stream, first: int, fps: float, tb):
    """Seek to a key frame at or before frame ``first``: (its index, the frame, the iterator that
    continues after it, its ``_Frames``), or None when that cannot be done reliably.

    The index comes from the key frame's timestamp measured from the first frame's timestamp
    (decoded first: AVI with B-frames starts at 1, not at the stream's start_time). Only the key
    frame's timestamp is used: later frames are counted, because their timestamps are not always
    in order (AVI stores decode-order stamps, and the decoder hands them out permuted).
    Demuxers that index decode timestamps can land on a key frame just after ``first`` (its
    decode time is earlier than its presentation time); then it seeks again, earlier.
    """
    head = iter(_Frames(container, stream))
    frame = next(head, None)
    head.close()
    if frame is None or frame.pts is None:
        return None
    origin = frame.pts
    want = origin + int(math.floor(first / fps / tb))      # frame `first`'s timestamp
    target = want
    for _ in range(3):
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except Exception:
            return None
        frames = _Frames(container, stream)
        it = iter(frames)
        key = _first_key_frame(it)
        if key is None:
            return None
        idx = round(float((key.pts - origin) * tb) * fps)
        if 0 <= idx <= first:
            return idx, key, it, frames
        if idx < 0 or target <= origin:
            return None
        target = max(origin, target - (key.pts - want) - 1)   # landed after `first`: seek earlier
    return None


def _decode_range(container, stream, path, first: int, last: int,
                  status: dict | None = None) -> Iterator[tuple[int, object]]:
    """Yield (index, av.VideoFrame) for frames first..last (inclusive), seeking when first > 0.

    The frames are exactly those of a sequential decode from frame 0 (see ``_Frames``): after a
    seek, the key frame's index anchors the count and every later frame takes the next index.
    When the readable part ends before ``last``, ``status`` (if given) gets ``"end"`` (the number
    of frames that decode) and ``"error"`` (what ended it; None at the end of the file).
    """
    fps = _stream_fps(stream)
    tb = stream.time_base
    sought = None
    if first > 0 and fps > 0 and tb is not None:
        sought = _seek_near(container, stream, first, fps, tb)
        if sought is None:
            try:
                container.seek(0)  # the seek failed, overshot or lacks timestamps: decode from the start
            except Exception as e:
                raise VideoReadError(path, f"cannot seek back to the start ({e})") from None
    if sought is None:
        frames = _Frames(container, stream)
        it = iter(frames)
        idx, frame = 0, next(it, None)
    else:
        idx, frame, it, frames = sought
    while frame is not None and idx <= last:
        if idx >= first:
            yield idx, frame
        frame = next(it, None)
        idx += 1
    if frame is None and status is not None:
        status.update(end=idx, error=frames.error)


def _gather(container, stream, path, wanted: np.ndarray) -> np.ndarray:
    """Decode the frames at the (sorted, possibly repeated) indices ``wanted`` -> (T, H, W, 3) uint8."""
    first, last = int(wanted[0]), int(wanted[-1])
    needed = set(wanted.tolist())
    got: dict[int, np.ndarray] = {}
    status: dict = {}
    for idx, frame in _decode_range(container, stream, path, first, last, status):
        if idx in needed and idx not in got:
            got[idx] = frame.to_ndarray(format="rgb24")
    missing = [i for i in needed if i not in got]
    if missing:
        why = status.get("error") or "the file ends there"
        raise VideoReadError(path, f"frames {min(missing)}..{max(missing)} are missing: only "
                                   f"{status.get('end', '?')} frames decode ({why}); read fewer frames "
                                   f"or start earlier")
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
            total = probe_video(path).num_frames   # the frames that decode, not the header's promise
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
