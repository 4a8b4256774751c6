"""``magtok tokenize``, ``detokenize``, ``reconstruct``, ``tokenize-dataset`` and ``info``.

    magtok tokenize VIDEO... --model DIR -o OUT [--size H W | --short-side N] [--fps F]
                    [--start N] [--max-frames N] [--chunk-latents N] [--tile PX --tile-overlap PX]
                    [--frames-policy pad|drop] [--overwrite]
    magtok detokenize TOKENS -o out.mp4 [--model DIR] [--chunk-latents N] [--tile PX] [--overwrite]
    magtok reconstruct VIDEO --model DIR -o out.mp4 [--side-by-side] [same reading options]
    magtok tokenize-dataset DIR --model DIR --out SHARDS/ [same reading options] [--limit N]
    magtok info MODEL_DIR | TOKENS | SHARDS/ [--json]

Streaming
    Videos are decoded chunk by chunk with PyAV (``magtok.data.iter_video_chunks``), resized per
    chunk and encoded inside ``with tok.streaming():``: the first chunk holds ``1 + (N-1) r_t``
    frames, the next ones ``N r_t`` (N = ``--chunk-latents``), so memory stays flat in the length of
    the video and the codes equal whole-clip encoding. Detokenizing decodes N latent frames at a
    time and writes frames to the output file as they come (a hidden temporary file in the output
    folder, renamed over the target at the end: a failure never leaves a half-written file).
    On glibc, the resident memory still creeps up by ~25 % over the first chunks (heap fragmentation,
    not kept state); ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment keeps it flat, a little slower
    (BENCHMARKS.md, "Streaming").

Size
    ``--size H W``: resize so that the frame covers H x W (aspect kept), then centre crop.
    ``--short-side N``: resize so that the shorter side is N (aspect kept). Without either the
    frames keep their size. Either way the result is centre-cropped down to multiples of the
    tokenizer's spatial compression r_s, with a note when that changes the size. The resize and the
    crop are recorded in the token file.

Frame counts (``--frames-policy``)
    A tokenizer takes ``1 + k r_t`` frames. ``pad`` (default) repeats the last frame up to the next
    valid count; ``drop`` drops the last frames down to the previous one. The number of frames read
    is recorded (``extra["frames"]``): ``detokenize`` trims the decoded video back to it, so a padded
    clip comes back with exactly the frames that went in; a dropped tail does not come back.

Token file header (``magtok.data.tokens``, plus ``extra``)
    tokenizer fingerprint (8 bytes; ``tokenizer_fingerprint(tok.fingerprint(), config)``), code grid,
    source frames / fps / height / width, start frame, clip fps (``--fps``), resize and crop; in
    ``extra``: ``frames`` (frames read), ``tokenizer`` (``tok.fingerprint()``, the id ``magtok info
    MODEL`` prints), ``model`` (absolute path of the model folder), and when used
    ``frames_policy`` and ``tile`` ([tile, overlap]). The config travels in the sidecar
    ``magtok-tokenizer-<fingerprint>.json`` written beside the token files.

Finding the model for ``detokenize`` (no ``--model``)
    1. the model folder recorded in the file, if it still exists and holds the same tokenizer;
    2. every model folder found in the folders listed in ``$MAGTOK_MODEL_PATH`` (``os.pathsep``
       separated; each entry may be a model folder, or hold model folders up to two levels down);
    3. otherwise the command refuses, naming the tokenizer id and how to pass ``--model``.
    A model is "the same tokenizer" when its fingerprint (config and weights) matches the file's.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from magtok._io import set_default_mode, temp_path_beside
from magtok.cli.errors import UserError
from magtok.kernels import conv_algorithm

MODEL_PATH_ENV = "MAGTOK_MODEL_PATH"
TOKEN_SUFFIX = ".tokens"
_IMAGE_OUT = (".png", ".jpg", ".jpeg", ".webp")


class CommandError(UserError, ValueError):
    """A message for the user (printed without a traceback, exit code 2). Also a ValueError, like the
    library's own input errors, so that callers of these functions can catch either."""


# ============================================================================ models
def _file_fingerprint(tokenizer_id: str, config: dict) -> str:
    from magtok.data import tokenizer_fingerprint
    return tokenizer_fingerprint(tokenizer_id, config)


@dataclass
class Model:
    tok: "torch.nn.Module"
    path: Path
    id: str            # tok.fingerprint(): config + weights
    file_id: str       # the 8-byte fingerprint written into token files

    @property
    def config(self) -> dict:
        return self.tok.config.to_dict()


def load_model(path, device: str = "cpu") -> Model:
    """Load a model folder (``config.json`` + ``model.safetensors``) in eval mode."""
    from magtok.models.tokenizer import CONFIG_NAME, VideoTokenizer
    path = Path(path)
    if not path.exists():
        raise CommandError(f"model folder {path} does not exist")
    if not path.is_dir() or not (path / CONFIG_NAME).exists():
        raise CommandError(f"{path} is not a magtok model folder (it needs config.json and model.safetensors, "
                           f"as written by VideoTokenizer.save_pretrained or `magtok train`)")
    try:
        tok = VideoTokenizer.from_pretrained(path, map_location=device)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    except Exception as e:  # safetensors / state-dict errors: a damaged or foreign model folder
        raise CommandError(f"cannot load the model in {path}: {type(e).__name__}: {e}") from None
    if tok.needs_cond:
        raise CommandError(f"the model in {path} is conditioned (dim_cond={tok.config.dim_cond}); "
                           f"the command line does not pass conditions: use the Python API")
    tok.eval()
    fp = tok.fingerprint()
    return Model(tok, path.resolve(), fp, _file_fingerprint(fp, tok.config.to_dict()))


def _declared_file_id(model_dir: Path) -> str | None:
    """The token-file fingerprint a model folder declares in its config.json (cheap pre-check)."""
    try:
        meta = json.loads((model_dir / "config.json").read_text())
        return _file_fingerprint(meta["fingerprint"], meta["config"])
    except Exception:
        return None


def _model_candidates(env: str) -> list[Path]:
    out: list[Path] = []
    for entry in env.split(os.pathsep):
        if not entry:
            continue
        root = Path(entry).expanduser()
        level = [root]
        for _ in range(3):       # the entry itself, its children, its grandchildren
            nxt = []
            for d in level:
                if (d / "config.json").is_file():
                    out.append(d)
                elif d.is_dir():
                    try:
                        nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                    except OSError:
                        pass
            level = nxt
    return out


def _token_file_ids(header: dict) -> tuple[str, str]:
    """(tokenizer id to show, token-file fingerprint) of a token file header."""
    fp = header["tokenizer_fingerprint"]
    shown = (header.get("extra") or {}).get("tokenizer") or header.get("tokenizer_id") or f"file fingerprint {fp}"
    return shown, fp


def find_model(header: dict, token_path, model_arg, device: str) -> Model:
    """The model for a token file: ``--model``, the recorded model folder, or $MAGTOK_MODEL_PATH."""
    shown, fp = _token_file_ids(header)
    if model_arg is not None:
        m = load_model(model_arg, device)
        if m.file_id != fp:
            raise CommandError(f"{token_path} was made by tokenizer {shown}, but --model {model_arg} is "
                               f"tokenizer {m.id}: pass the model folder the tokens were made with")
        return m
    tried = []
    recorded = (header.get("extra") or {}).get("model")
    if recorded:
        d = Path(recorded)
        if (d / "config.json").is_file() and _declared_file_id(d) == fp:
            m = load_model(d, device)
            if m.file_id == fp:
                return m
        tried.append(f"the recorded model folder {recorded} "
                     + ("holds another tokenizer" if d.exists() else "no longer exists"))
    env = os.environ.get(MODEL_PATH_ENV, "")
    for d in _model_candidates(env):
        if _declared_file_id(d) == fp:
            m = load_model(d, device)
            if m.file_id == fp:
                return m
    tried.append(f"${MODEL_PATH_ENV} ({env!r}) has no model with this tokenizer" if env
                 else f"${MODEL_PATH_ENV} is not set")
    raise CommandError(f"cannot find the model for {token_path}: it was made by tokenizer {shown}; "
                       f"{'; '.join(tried)}. Pass --model DIR, or list a folder holding the model folder "
                       f"in ${MODEL_PATH_ENV}")


# ============================================================================ geometry
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
    from magtok.data import resize_short_side, resize_to_cover
    notes = []
    probe = torch.zeros(1, h, w)
    if size is not None:
        th, tw = (int(s) for s in size)
        if th < 1 or tw < 1:
            raise CommandError(f"--size {th} {tw}: sizes must be positive")
        rh_, rw_ = th // r_s * r_s, tw // r_s * r_s
        if (rh_, rw_) != (th, tw):
            notes.append(f"--size {th} {tw} rounded down to {rh_}x{rw_} (multiples of r_s={r_s})")
        if rh_ == 0 or rw_ == 0:
            raise CommandError(f"--size {th} {tw} is smaller than the tokenizer's spatial compression {r_s}")
        mode, target = "size", (rh_, rw_)
        rh, rw = resize_to_cover(probe, target).shape[-2:]
        oh, ow = rh_, rw_
    elif short_side is not None:
        n = int(short_side)
        if n < r_s:
            raise CommandError(f"--short-side {n} is smaller than the tokenizer's spatial compression {r_s}")
        mode, target = "short-side", (n,)
        rh, rw = resize_short_side(probe, n).shape[-2:]
        oh, ow = rh // r_s * r_s, rw // r_s * r_s
    else:
        mode, target = "none", ()
        rh, rw = h, w
        oh, ow = h // r_s * r_s, w // r_s * r_s
    if oh == 0 or ow == 0:
        raise CommandError(f"{name}: frames of {rh}x{rw} are smaller than the tokenizer's spatial "
                           f"compression {r_s}; resize with --size or --short-side")
    if mode != "size" and (oh, ow) != (rh, rw):
        notes.append(f"{rh}x{rw} centre-cropped to {oh}x{ow} (multiples of r_s={r_s})")
    resize = (int(rh), int(rw)) if (rh, rw) != (h, w) else None
    crop = ((rh - oh) // 2, (rw - ow) // 2, oh, ow) if (oh, ow) != (rh, rw) else None
    return Geometry((h, w), resize, crop, (oh, ow), mode, target, notes)


# ============================================================================ reading
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
    frames: int                  # frames that will be read (after --fps, --start, --max-frames)
    geometry: Geometry

    @property
    def clip_fps(self) -> float:
        return self.target_fps if self.target_fps is not None else self.fps


def _is_image(path) -> bool:
    from magtok.data import IMAGE_EXTENSIONS
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_source(path, r_s: int, args) -> Source:
    """Probe ``path`` (raises VideoReadError for unreadable, truncated, zero-frame files) and plan."""
    from magtok.data import VideoReadError, probe_video, read_image
    path = Path(path)
    size, short_side = getattr(args, "size", None), getattr(args, "short_side", None)
    max_frames = getattr(args, "max_frames", None)
    start = int(getattr(args, "start", 0) or 0)
    if _is_image(path):
        img = read_image(path)
        h, w = img.shape[:2]
        geo = plan_geometry(h, w, r_s, size, short_side, str(path))
        return Source(path, "image", 1, 0.0, h, w, 0, None, 1, geo)
    info = probe_video(path)
    if info.declared_frames and info.num_frames < info.declared_frames:
        raise VideoReadError(path, f"truncated: the file declares {info.declared_frames} frames but only "
                                   f"{info.num_frames} are in it")
    fps = info.fps
    target_fps = getattr(args, "fps", None)
    if target_fps is not None:
        if target_fps <= 0:
            raise CommandError(f"--fps must be positive, not {target_fps}")
        if fps <= 0:
            raise VideoReadError(path, "has no frame rate, so it cannot be resampled with --fps")
        step = fps / target_fps
    else:
        step = 1.0
    if start >= info.num_frames:
        raise CommandError(f"--start {start} is past the end of {path} ({info.num_frames} frames)")
    frames = int(math.floor((info.num_frames - 1 - start) / step + 1e-9)) + 1
    if max_frames is not None:
        if max_frames < 1:
            raise CommandError(f"--max-frames must be >= 1, not {max_frames}")
        frames = min(frames, int(max_frames))
    geo = plan_geometry(info.height, info.width, r_s, size, short_side, str(path))
    return Source(path, "video", info.num_frames, fps, info.height, info.width, start, target_fps, frames, geo)


def _raw_chunks(src: Source, first: int, size: int) -> Iterator[np.ndarray]:
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


def model_chunks(src: Source, r_t: int, chunk_latents: int, policy: str, counter: Counter) -> Iterator[Chunk]:
    """Encoder-ready chunks: resized, cropped, the last one padded or cut (``policy``)."""
    from magtok.data import to_tensor
    if chunk_latents < 1:
        raise CommandError(f"--chunk-latents must be >= 1, not {chunk_latents}")
    first_size, size = 1 + (chunk_latents - 1) * r_t, chunk_latents * r_t

    def prepare(raw: np.ndarray, is_first: bool, is_last: bool) -> Chunk | None:
        x = src.geometry.apply(to_tensor(raw))                      # (3, t, H, W)
        t = x.shape[1]
        counter.frames_in += t
        real = t
        if is_last:
            rem = (t - 1) % r_t if is_first else t % r_t
            if rem and policy == "pad":
                x = torch.cat([x, x[:, -1:].expand(-1, r_t - rem, -1, -1)], dim=1)
            elif rem:
                x = x[:, :t - rem]
                real = t - rem
        if x.shape[1] == 0:
            return None
        counter.frames_enc += x.shape[1]
        return Chunk(x.unsqueeze(0).contiguous(), real)

    prev, is_first = None, True
    for raw in _raw_chunks(src, first_size, size):
        if prev is not None:
            chunk = prepare(prev, is_first, False)
            is_first = False
            yield chunk
        prev = raw
    if prev is None:
        from magtok.data import VideoReadError
        raise VideoReadError(src.path, "no frames")
    chunk = prepare(prev, is_first, True)
    if chunk is not None:
        yield chunk


# ============================================================================ codes <-> file layout
def _to_file_layout(codes: torch.Tensor) -> torch.Tensor:
    """Tokenizer codes (T', H', W') or (T', H', W', N) -> token file layout (T', H', W') or (N, T', H', W')."""
    return codes.permute(3, 0, 1, 2).contiguous() if codes.dim() == 4 else codes


def _from_file_layout(codes: torch.Tensor) -> torch.Tensor:
    """Token file codes -> batched tokenizer codes (1, T', H', W'[, N])."""
    if codes.dim() == 4:
        codes = codes.permute(1, 2, 3, 0)
    return codes.unsqueeze(0)


def _encode(tok, x: torch.Tensor, tile) -> torch.Tensor:
    if tile:
        return tok.encode_tiled(x, tile[0], tile[1])
    return tok.encode(x)


def _decode(tok, codes: torch.Tensor, tile) -> torch.Tensor:
    if tile:
        return tok.decode_tiled(codes, tile[0], tile[1])
    return tok.decode(codes)


def _tile_arg(args, r_s: int):
    tile = getattr(args, "tile", None)
    if not tile:
        return None
    overlap = args.tile_overlap if args.tile_overlap is not None else min(32, tile // 4) // r_s * r_s
    if tile % r_s or overlap % r_s or overlap < 0 or overlap >= tile:
        raise CommandError(f"--tile {tile} and --tile-overlap {overlap} must be multiples of r_s={r_s} "
                           f"with the overlap smaller than the tile")
    return (tile, overlap)


def _progress(total, desc, quiet, position=None, unit="frame"):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, dynamic_ncols=True, leave=position is None,
                position=position, file=sys.stderr)


@torch.no_grad()
def tokenize_source(model: Model, src: Source, args, bar=None) -> tuple[torch.Tensor, dict]:
    """Stream one source through the encoder -> (codes in file layout, TokenMeta fields)."""
    tok = model.tok
    r_t = tok.time_compression
    tile = _tile_arg(args, tok.space_compression)
    counter = Counter()
    parts = []
    with tok.streaming():
        for chunk in model_chunks(src, r_t, args.chunk_latents, args.frames_policy, counter):
            parts.append(_encode(tok, chunk.video.to(tok.device), tile).cpu())
            if bar is not None:
                bar.update(chunk.real)
    codes = _to_file_layout(torch.cat(parts, dim=1)[0])
    extra = {"frames": counter.frames_in}
    if counter.frames_enc != counter.frames_in:
        extra["frames_policy"] = args.frames_policy
    if tile:
        extra["tile"] = list(tile)
    meta = dict(source_frames=src.frames_total, fps=src.fps, height=src.height, width=src.width,
                start=src.start, clip_fps=src.target_fps, resize=src.geometry.resize, crop=src.geometry.crop,
                extra=extra)
    return codes, meta


# ============================================================================ output files
def _check_writable_folder(folder: Path, what: str) -> None:
    """Refuse early (before any work) when ``folder`` is missing or cannot take new files."""
    if not folder.exists():
        raise CommandError(f"cannot write {what}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise CommandError(f"cannot write {what}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".magtok-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CommandError(f"cannot write {what}: the folder {folder} is not writable "
                           f"({e.strerror or e})") from None


def _check_output(path: Path, overwrite: bool, what: str = None) -> None:
    what = what or str(path)
    if path.is_dir():
        raise CommandError(f"output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    _check_writable_folder(path.parent if str(path.parent) else Path("."), what)


_default_mode = set_default_mode  # mkstemp files are owner-only; outputs get the usual umask mode


class VideoSink:
    """Write frames to an H.264 video chunk by chunk; the file appears (atomically) only at ``close``.

    Frames go to a hidden temporary file in the target's folder that is renamed over the target when
    everything is written; any failure (or leaving the ``with`` block by an exception) deletes it.
    """

    def __init__(self, path, fps: float, overwrite: bool = False, crf: int = 18, preset: str = "medium"):
        from magtok.data.video import CONTAINERS, fps_fraction
        self.path = Path(path)
        self.overwrite = overwrite
        self.format = CONTAINERS.get(self.path.suffix.lower())
        if self.format is None:
            raise CommandError(f"{self.path}: videos are written as H.264 into "
                               f"{', '.join(CONTAINERS)} files, not {self.path.suffix or 'no suffix'!r}")
        self.rate = fps_fraction(fps)
        self.crf, self.preset = crf, preset
        _check_output(self.path, overwrite)
        self.tmp = temp_path_beside(self.path)
        self._out = self._stream = None
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        """uint8 (t, H, W, 3)."""
        import av
        if self._out is None:
            h, w = frames.shape[1:3]
            self._out = av.open(self.tmp, "w", format=self.format)
            s = self._out.add_stream("libx264", rate=self.rate)
            s.width, s.height = w, h
            s.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
            s.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream = s
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = self.frames
            frame.time_base = 1 / self.rate
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
            self.frames += 1

    def close(self) -> Path:
        try:
            if self._out is None:
                raise CommandError(f"no frames to write into {self.path}")
            for packet in self._stream.encode():
                self._out.mux(packet)
            self._out.close()
            self._out = None
            if self.path.exists() and not self.overwrite:
                raise FileExistsError(f"{self.path} exists; pass --overwrite to replace it")
            _default_mode(self.tmp)
            os.replace(self.tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_image_atomic(path: Path, frame: np.ndarray, overwrite: bool) -> None:
    from PIL import Image
    _check_output(path, overwrite)
    tmp = temp_path_beside(path)
    try:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
        Image.fromarray(frame).save(tmp, format=fmt)
        _default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ============================================================================ commands
def _device(args) -> str:
    d = getattr(args, "device", None) or "auto"
    if d == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        local = os.environ.get("LOCAL_RANK")   # one GPU per process under torchrun / accelerate launch
        return f"cuda:{int(local) % torch.cuda.device_count()}" if local and local.isdigit() else "cuda"
    return d


def _note(msg: str) -> None:
    print(f"magtok: note: {msg}", file=sys.stderr)


def _token_outputs(videos: list[Path], out: str, overwrite: bool) -> list[Path]:
    out_p = Path(out)
    as_folder = len(videos) > 1 or out.endswith(("/", os.sep)) or out_p.is_dir()
    if not as_folder:
        return [out_p]
    if out_p.exists() and not out_p.is_dir():
        raise CommandError(f"-o {out}: several videos need an output folder, and {out} is a file")
    if not out_p.exists():
        if not out_p.parent.is_dir():
            raise CommandError(f"cannot create the output folder {out_p}: its parent {out_p.parent} does not exist")
        out_p.mkdir()
    paths = [out_p / (v.stem + TOKEN_SUFFIX) for v in videos]
    seen: dict[Path, Path] = {}
    for v, p in zip(videos, paths):
        if p in seen:
            raise CommandError(f"{seen[p]} and {v} would both be written to {p}; tokenize them separately")
        seen[p] = v
    return paths


def cmd_tokenize(args) -> int:
    from magtok.data import save_tokens
    videos = [Path(v) for v in args.videos]
    model = load_model(args.model, _device(args))
    tok = model.tok
    outputs = _token_outputs(videos, args.output, args.overwrite)
    for p in outputs:
        _check_output(p, args.overwrite)
    sources = [open_source(v, tok.space_compression, args) for v in videos]   # fail before any work
    _tile_arg(args, tok.space_compression)
    for src, out in zip(sources, outputs):
        for n in src.geometry.notes:
            _note(f"{src.path.name}: {n}")
        with _progress(src.frames, src.path.name, args.quiet) as bar:
            codes, meta = tokenize_source(model, src, args, bar)
        meta["extra"].update(tokenizer=model.id, model=str(model.path))
        meta.update(tokenizer_id=model.id, config=model.config)
        save_tokens(out, codes, tok.codebook_size, meta, overwrite=args.overwrite)
        _default_mode(out)
        if not args.quiet:
            grid = "x".join(str(s) for s in codes.shape)
            print(f"{src.path} -> {out}  ({meta['extra']['frames']} frames "
                  f"{src.geometry.out[0]}x{src.geometry.out[1]}, codes {grid})")
    return 0


def _clip_frames(header: dict, decoded: int) -> int:
    return min(decoded, int((header.get("extra") or {}).get("frames") or decoded))


@torch.no_grad()
def cmd_detokenize(args) -> int:
    from magtok.data import load_tokens, to_uint8
    tf = load_tokens(args.tokens)
    header = tf.header
    model = find_model(header, args.tokens, args.model, _device(args))
    tok = model.tok
    codes = tf.codes
    k = tok.codebook_size
    if header["codebook_size"] != k or int(codes.max()) >= k or int(codes.min()) < 0:
        raise CommandError(f"{args.tokens}: codes out of range for the model: values up to {int(codes.max())}, "
                           f"the codebook has {k} codes (0 .. {k - 1})")
    n_books = header["num_codebooks"]
    if n_books != tok.quantizer.num_codebooks:
        raise CommandError(f"{args.tokens} has {n_books} codebooks; the model has {tok.quantizer.num_codebooks}")
    codes = _from_file_layout(codes)               # (1, T', H', W'[, N])
    r_t = tok.time_compression
    t_lat = codes.shape[1]
    decoded = 1 + (t_lat - 1) * r_t
    n_out = _clip_frames(header, decoded)
    fps = float(header["clip"]["fps"])
    out = Path(args.output)
    tile = _tile_arg(args, tok.space_compression)
    is_image_out = out.suffix.lower() in _IMAGE_OUT
    if is_image_out:
        if n_out != 1:
            raise CommandError(f"{args.tokens} holds {n_out} frames; write it to a video file (.mp4), not {out.suffix}")
        _check_output(out, args.overwrite)
        frame = to_uint8(_decode(tok, codes, tile)[0, :, :1].clamp(-1, 1))[0]
        _write_image_atomic(out, frame, args.overwrite)
        if not args.quiet:
            print(f"{args.tokens} -> {out}  (1 frame {frame.shape[0]}x{frame.shape[1]})")
        return 0
    if fps <= 0:
        if n_out == 1:
            fps = 1.0
        else:
            raise CommandError(f"{args.tokens} records no frame rate; cannot write a video")
    n = args.chunk_latents
    if n < 1:
        raise CommandError(f"--chunk-latents must be >= 1, not {n}")
    written = 0
    with VideoSink(out, fps, overwrite=args.overwrite) as sink, \
            _progress(n_out, Path(args.tokens).name, args.quiet) as bar, tok.streaming():
        for s in range(0, t_lat, n):
            video = _decode(tok, codes[:, s:s + n], tile)[0].clamp(-1, 1)      # (3, t, H, W)
            video = video[:, :n_out - written]
            if video.shape[1]:
                sink.write(to_uint8(video))
                written += video.shape[1]
                bar.update(video.shape[1])
    if not args.quiet:
        h, w = codes.shape[2] * tok.space_compression, codes.shape[3] * tok.space_compression
        print(f"{args.tokens} -> {out}  ({written} frames {h}x{w} at {fps:g} fps)")
    return 0


@torch.no_grad()
def cmd_reconstruct(args) -> int:
    from magtok.data import to_uint8
    from magtok.metrics import psnr, ssim
    model = load_model(args.model, _device(args))
    tok = model.tok
    out = Path(args.output)
    src = open_source(args.video, tok.space_compression, args)
    tile = _tile_arg(args, tok.space_compression)
    for n in src.geometry.notes:
        _note(f"{src.path.name}: {n}")
    fps = src.clip_fps if src.clip_fps > 0 else 1.0
    oh, ow = src.geometry.out
    use_ssim = oh >= 11 and ow >= 11
    psnr_sum = ssim_sum = 0.0
    counter = Counter()
    n_frames = 0
    with VideoSink(out, fps, overwrite=args.overwrite) as sink, \
            _progress(src.frames, src.path.name, args.quiet) as bar, tok.streaming():
        for chunk in model_chunks(src, tok.time_compression, args.chunk_latents, args.frames_policy, counter):
            x = chunk.video.to(tok.device)
            codes = _encode(tok, x, tile)
            recon = _decode(tok, codes, tile).clamp(-1, 1)[:, :, :chunk.real]
            x = x[:, :, :chunk.real]
            psnr_sum += float(psnr(recon, x, max_db=100.0).sum())
            if use_ssim:
                ssim_sum += float(ssim(recon, x).sum())
            n_frames += chunk.real
            frames = to_uint8(recon[0])
            if args.side_by_side:
                frames = np.concatenate([to_uint8(x[0]), frames], axis=2)
            sink.write(frames)
            bar.update(chunk.real)
    p = psnr_sum / n_frames
    line = f"PSNR {p:.2f} dB"
    line += f"  SSIM {ssim_sum / n_frames:.4f}" if use_ssim else "  SSIM n/a (frames smaller than 11x11)"
    print(f"{src.path} -> {out}  ({n_frames} frames {oh}x{ow}{', side by side' if args.side_by_side else ''})")
    print(line)
    return 0


def _rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (torchrun / accelerate launch set both)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise CommandError("RANK / WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise CommandError(f"RANK={rank} WORLD_SIZE={world} is not a valid process layout")
    return rank, world


def cmd_tokenize_dataset(args) -> int:
    from magtok.data import ShardWriter, scan_media
    rank, world = _rank_world()
    root = Path(args.data)
    files = scan_media(root)
    mine = files[rank::world]
    model = load_model(args.model, _device(args))
    tok = model.tok
    _tile_arg(args, tok.space_compression)
    out = Path(args.out)
    if not out.exists() and not out.parent.is_dir():
        raise CommandError(f"cannot create the shard folder {out}: its parent {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; give a folder")
    if out.exists():
        _check_writable_folder(out, f"shards into {out}")
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    failed: list[tuple[str, str]] = []
    skipped = added = 0
    with ShardWriter(out, tok.codebook_size, model.id, model.config, rank=rank) as writer, \
            _progress(len(mine), f"{prefix}tokenize-dataset".strip(), args.quiet,
                      position=rank if world > 1 else None, unit="file") as bar:
        for path, _kind in mine:
            vid = Path(os.path.relpath(path, root)).as_posix()
            if writer.has(vid):
                skipped += 1
                bar.update(1)
                continue
            if args.limit is not None and added >= args.limit:
                break
            try:
                src = open_source(path, tok.space_compression, args)
                codes, meta = tokenize_source(model, src, args)
            except ValueError as e:   # VideoReadError, too small, ...: report at the end, go on
                failed.append((vid, str(e)))
                bar.update(1)
                continue
            writer.add(vid, codes, meta)
            added += 1
            bar.update(1)
    total = len(files)
    print(f"{prefix}{out}: {added} videos tokenized, {skipped} already present, {len(failed)} unreadable "
          f"({len(mine)} of the {total} files under {root} are this process's)", file=sys.stderr)
    if failed:
        print(f"{prefix}{len(failed)} file(s) could not be tokenized:", file=sys.stderr)
        for vid, reason in failed:
            print(f"{prefix}  {vid}: {reason}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- info
def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _info_model(path: Path) -> dict:
    m = load_model(path)
    tok, cfg = m.tok, m.tok.config
    h, w = cfg.image_size
    q = cfg.quantizer
    layers = [x if isinstance(x, str) else "(" + ", ".join(str(v) for v in x) + ")" for x in cfg.layers]
    return {
        "kind": "model", "path": str(path), "name": cfg.name, "fingerprint": m.id, "file_fingerprint": m.file_id,
        "layers": layers, "quantizer": q.kind, "codebook_size": tok.codebook_size,
        "num_codebooks": tok.quantizer.num_codebooks, "bits_per_token": tok.bits_per_token,
        "r_t": tok.time_compression, "r_s": tok.space_compression,
        "nominal": {"frames": cfg.frames, "height": h, "width": w,
                    "latent_shape": list(tok.latent_shape(cfg.frames, h, w)),
                    "compression_ratio": tok.compression_ratio},
        "parameters": sum(p.numel() for p in tok.parameters()),
        "parameters_encoder": sum(p.numel() for p in tok.encoder.parameters()),
        "parameters_decoder": sum(p.numel() for p in tok.decoder.parameters()),
    }


def _info_tokens(path: Path) -> dict:
    from magtok.data import load_tokens
    tf = load_tokens(path)
    hd = tf.header
    shown, fp = _token_file_ids(hd)
    count = math.prod(hd["shape"])
    extra = hd.get("extra") or {}
    return {
        "kind": "tokens", "path": str(path), "tokenizer": shown, "file_fingerprint": fp,
        "codebook_size": hd["codebook_size"], "bits_per_token": hd["bits"] * hd["num_codebooks"],
        "grid": hd["grid"], "num_codebooks": hd["num_codebooks"], "tokens": count,
        "source": hd["source"], "clip": hd["clip"], "frames": extra.get("frames"),
        "frames_policy": extra.get("frames_policy"), "tile": extra.get("tile"), "model": extra.get("model"),
        "file_bytes": path.stat().st_size, "payload_bytes": (count * hd["bits"] + 7) // 8,
        "format_version": hd["format_version"],
    }


def _info_shards(path: Path) -> dict:
    from magtok.data import ShardReader
    r = ShardReader(path, verify=False)
    tokens = sum(math.prod(r.meta(v)["shape"]) for v in r.ids())
    files = [p for p in path.iterdir() if p.name.startswith("shard-")]
    return {
        "kind": "shards", "path": str(path), "videos": len(r), "tokens": tokens,
        "tokenizer": r.tokenizer.get("tokenizer_id"), "file_fingerprint": r.tokenizer.get("fingerprint"),
        "codebook_size": r.codebook_size, "shard_files": len(files),
        "bytes": sum(p.stat().st_size for p in files), "duplicates": r.duplicates,
    }


def _print_info(d: dict) -> None:
    if d["kind"] == "model":
        n = d["nominal"]
        print(f"model {d['path']}")
        print(f"  name:            {d['name']}")
        print(f"  fingerprint:     {d['fingerprint']}  (token-file fingerprint {d['file_fingerprint']})")
        print(f"  layers:          {', '.join(d['layers'])}")
        books = f" x {d['num_codebooks']} codebooks" if d["num_codebooks"] > 1 else ""
        print(f"  quantizer:       {d['quantizer']}, codebook size {d['codebook_size']}{books}, "
              f"{d['bits_per_token']:g} bits per token")
        print(f"  compression:     r_t={d['r_t']} (time), r_s={d['r_s']} (space)")
        print(f"  nominal size:    {n['frames']}x{n['height']}x{n['width']} -> codes "
              f"{'x'.join(map(str, n['latent_shape']))}, compression ratio {n['compression_ratio']:.1f}x "
              f"(uint8 RGB bits / code bits)")
        print(f"  parameters:      {d['parameters']:,} (encoder {d['parameters_encoder']:,}, "
              f"decoder {d['parameters_decoder']:,})")
    elif d["kind"] == "tokens":
        s, c = d["source"], d["clip"]
        print(f"token file {d['path']}")
        print(f"  tokenizer:       {d['tokenizer']}  (file fingerprint {d['file_fingerprint']})")
        if d.get("model"):
            print(f"  made with:       {d['model']}")
        print(f"  codes:           {'x'.join(map(str, d['grid']))}"
              + (f" x {d['num_codebooks']} codebooks" if d["num_codebooks"] > 1 else "")
              + f" = {d['tokens']:,} tokens, codebook size {d['codebook_size']}, {d['bits_per_token']} bits per token")
        print(f"  source:          {s['frames']} frames at {s['fps']:g} fps, {s['height']}x{s['width']}")
        clip = f"from frame {c['start']}, {d['frames'] if d['frames'] is not None else '?'} frames at {c['fps']:g} fps"
        if d.get("frames_policy"):
            clip += f" (frames policy {d['frames_policy']})"
        print(f"  clip:            {clip}")
        print(f"  resize / crop:   {c['resize'] or 'none'} / {c['crop'] or 'none'}"
              + (f"; tiles {d['tile'][0]} px, overlap {d['tile'][1]} px" if d.get("tile") else ""))
        print(f"  size:            {d['file_bytes']:,} bytes ({d['payload_bytes']:,} packed payload, "
              f"{d['file_bytes'] - d['payload_bytes']:,} header + CRC)")
    else:
        print(f"shard folder {d['path']}")
        print(f"  tokenizer:       {d['tokenizer']}  (file fingerprint {d['file_fingerprint']})")
        print(f"  videos:          {d['videos']:,}")
        print(f"  tokens:          {d['tokens']:,} (codebook size {d['codebook_size']})")
        print(f"  shards:          {d['shard_files']} files, {_human(d['bytes'])}"
              + (f"; {d['duplicates']} duplicate records ignored" if d["duplicates"] else ""))


def cmd_info(args) -> int:
    from magtok.data.shards import TOKENIZER_FILE
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / "config.json").exists():
            d = _info_model(path)
        elif (path / TOKENIZER_FILE).exists():
            d = _info_shards(path)
        else:
            raise CommandError(f"{path} is neither a model folder (config.json) nor a token shard folder "
                               f"({TOKENIZER_FILE})")
    else:
        d = _info_tokens(path)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        _print_info(d)
    return 0


# ============================================================================ parsers
def _guarded(fn):
    """Turn OS and FFmpeg errors about the user's files into one-line messages (exit code 2).

    Other exceptions are bugs and keep their traceback."""
    def run(args):
        try:
            with conv_algorithm("winograd" if getattr(args, "winograd", False) else "direct"):
                return fn(args)
        except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as e:  # ENOSPC, EROFS, EIO ...
            raise CommandError(f"{type(e).__name__}: {e}") from None
        except Exception as e:
            import av
            if isinstance(e, av.error.FFmpegError):   # encoding / muxing errors of the output video
                raise CommandError(f"FFmpeg: {e}") from None
            raise
    run.__name__ = fn.__name__
    return run


def _add_reading(p, frames_policy: bool = True) -> None:
    g = p.add_argument_group("reading")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                      help="resize to cover H x W (aspect kept), then centre crop")
    size.add_argument("--short-side", type=int, metavar="N", help="resize so that the shorter side is N")
    g.add_argument("--fps", type=float, help="resample to this frame rate (nearest frame)")
    g.add_argument("--start", type=int, default=0, metavar="N", help="first source frame (default 0)")
    g.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames")
    if frames_policy:
        g.add_argument("--frames-policy", choices=("pad", "drop"), default="pad",
                       help="frame counts not of the form 1 + k*r_t: 'pad' repeats the last frame (default; "
                            "detokenize trims it again), 'drop' drops the last frames")


def _add_compute(p) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--chunk-latents", type=int, default=4, metavar="N",
                   help="latent frames per streaming chunk (memory knob, same result; default 4)")
    g.add_argument("--tile", type=int, metavar="PX", help="spatial tiles of PX pixels (memory knob, approximate)")
    g.add_argument("--tile-overlap", type=int, metavar="PX", help="tile overlap in pixels (default min(32, tile/4))")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--winograd", action="store_true",
                   help="float32 CPU: Winograd F(4x4,3x3) for the 3x3x3 convolutions, ~1.5x faster on large "
                        "models; rounding differs slightly (README 'Inference speed'); built with g++ on first use")


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="videos -> token files",
                              description="Encode videos (or images) into token files, streaming chunk by chunk.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, webm, mkv, ...) or images")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (config.json + model.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="token file for one video; a folder for several (files <name>.tokens)")
    _add_reading(p)
    _add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing token files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(cmd_tokenize))

    p = subparsers.add_parser("detokenize", help="token file -> video",
                              description="Decode a token file into an H.264 video at the clip's frame rate, "
                                          "with as many frames as were tokenized.")
    p.add_argument("tokens", metavar="TOKENS")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .mp4/.mkv/.mov (.png for an image)")
    p.add_argument("--model", metavar="DIR",
                   help=f"model folder; default: the one recorded in the file, else a match in ${MODEL_PATH_ENV}")
    _add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(cmd_detokenize))

    p = subparsers.add_parser("reconstruct", help="video -> tokens -> video, with PSNR / SSIM",
                              description="Tokenize and detokenize a video in memory (streaming), write the "
                                          "reconstruction and print PSNR and SSIM against the resized input.")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .mp4/.mkv/.mov")
    p.add_argument("--side-by-side", action="store_true", help="write input | reconstruction")
    _add_reading(p)
    _add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(cmd_reconstruct))

    p = subparsers.add_parser("tokenize-dataset", help="a folder of videos -> token shards",
                              description="Tokenize every video and image under DIR (recursive, sorted) into "
                                          "token shards. Launched with torchrun / accelerate launch, process r "
                                          "takes files i % world == r. Resumable: ids already in the shards are "
                                          "skipped. Unreadable files are reported at the end.")
    p.add_argument("data", metavar="DIR")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="SHARDS", help="shard folder (created)")
    _add_reading(p)
    _add_compute(p)
    p.add_argument("--limit", type=int, metavar="N", help="stop after N new videos (per process)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(cmd_tokenize_dataset))

    p = subparsers.add_parser("info", help="describe a model folder, a token file or a shard folder")
    p.add_argument("path", metavar="MODEL_OR_TOKENS")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded(cmd_info))
