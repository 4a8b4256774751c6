"""One call per job: tokenize a file or an array, detokenize, reconstruct.

    from magtok.pipeline import ReadOptions, tokenize_file, detokenize, reconstruct
    r = tokenize_file("clip.mp4", "runs/demo/model", ReadOptions(short_side=128))
    r.codes                      # int64 (T', H', W') (or (N, T', H', W') with N codebooks)
    r.save("clip.tokens")        # a token file (magtok.data.tokens)
    detokenize("clip.tokens", "clip_recon.mp4")              # finds the model from the header
    rep = reconstruct("clip.mp4", "recon.mp4", "runs/demo/model")
    rep.psnr, rep.ssim

Everything streams: the video is decoded chunk by chunk and encoded inside ``tok.streaming()``, so
memory stays flat in the video's length and the codes equal whole-clip encoding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from magtok.pipeline.model import Model, find_model, load_model
from magtok.pipeline.reading import (ComputeOptions, Counter, ReadOptions, Source, local_input, model_chunks,
                                     open_source, prepare_frames)
from magtok.pipeline.writer import (IMAGE_OUTPUTS, OutputError, VideoSink, check_not_input, check_output,
                                    write_image_atomic)

__all__ = ["TokenizeResult", "DetokenizeResult", "ReconstructResult", "tokenize_file", "tokenize_array",
           "detokenize", "reconstruct", "to_file_layout", "from_file_layout"]

Progress = Callable[[int], object] | None


@dataclass
class TokenizeResult:
    """Codes in token-file layout and what a token file records (``meta``: TokenMeta fields)."""

    codes: torch.Tensor
    meta: dict
    source: Source | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return int(self.meta["extra"]["frames"])

    def save(self, path, overwrite: bool = False) -> Path:
        from magtok._io import set_default_mode
        from magtok.data import save_tokens
        if self.source is not None and self.source.path != Path("<array>"):
            check_not_input(path, [self.source.path], "tokenized video")
        p = save_tokens(path, self.codes, int(self.meta["codebook_size"]),
                        {k: v for k, v in self.meta.items() if k != "codebook_size"}, overwrite=overwrite)
        set_default_mode(p)
        return p


@dataclass
class DetokenizeResult:
    path: Path
    frames: int
    height: int
    width: int
    fps: float


@dataclass
class ReconstructResult:
    path: Path
    frames: int
    height: int
    width: int
    psnr: float
    ssim: float | None           # None for frames smaller than SSIM's 11x11 window


# ---------------------------------------------------------------------------- codes layout
def to_file_layout(codes: torch.Tensor) -> torch.Tensor:
    """Tokenizer codes (T', H', W') or (T', H', W', N) -> token file layout (T', H', W') or (N, T', H', W')."""
    return codes.permute(3, 0, 1, 2).contiguous() if codes.dim() == 4 else codes


def from_file_layout(codes: torch.Tensor) -> torch.Tensor:
    """Token file codes -> batched tokenizer codes (1, T', H', W'[, N])."""
    if codes.dim() == 4:
        codes = codes.permute(1, 2, 3, 0)
    return codes.unsqueeze(0)


def _encode(tok, x: torch.Tensor, tile) -> torch.Tensor:
    return tok.encode_tiled(x, tile[0], tile[1]) if tile else tok.encode(x)


def _decode(tok, codes: torch.Tensor, tile) -> torch.Tensor:
    return tok.decode_tiled(codes, tile[0], tile[1]) if tile else tok.decode(codes)


def algorithm(compute: ComputeOptions):
    """The convolution algorithm context for ``compute`` (Winograd only when asked)."""
    if compute.winograd:
        from magtok.kernels import conv_algorithm
        return conv_algorithm("winograd")
    return contextlib.nullcontext()


def _meta(model: Model, src: Source, counter: Counter, policy: str, tile) -> dict:
    extra = {"frames": counter.frames_in}
    if counter.frames_enc != counter.frames_in:
        extra["frames_policy"] = policy
    if tile:
        extra["tile"] = list(tile)
    if src.declared_frames:
        extra["declared_frames"] = src.declared_frames     # the container promised more than decode
    extra.update(tokenizer=model.id, model=str(model.path))
    return dict(tokenizer_id=model.id, config=model.config, codebook_size=model.tok.codebook_size,
                source_frames=src.frames_total, fps=src.fps, height=src.height, width=src.width, start=src.start,
                clip_fps=src.target_fps, resize=src.geometry.resize, crop=src.geometry.crop, extra=extra)


@torch.no_grad()
def encode_source(model: Model, src: Source, read: ReadOptions, compute: ComputeOptions,
                  progress: Progress = None) -> TokenizeResult:
    """Stream an opened source through the encoder."""
    tok = model.tok
    tile = compute.tiles(tok.space_compression)
    counter = Counter()
    parts = []
    with algorithm(compute), tok.streaming():
        for chunk in model_chunks(src, tok.time_compression, compute.chunk_latents, read.frames_policy, counter):
            parts.append(_encode(tok, chunk.video.to(tok.device), tile).cpu())
            if progress is not None:
                progress(chunk.real)
    codes = to_file_layout(torch.cat(parts, dim=1)[0])
    return TokenizeResult(codes, _meta(model, src, counter, read.frames_policy, tile), src, list(src.geometry.notes))


def tokenize_file(path, model, read: ReadOptions | None = None, compute: ComputeOptions | None = None,
                  progress: Progress = None) -> TokenizeResult:
    """Tokenize a video or image file (a local path or an fsspec URL). ``model``: a ``Model``, a model
    folder or a bundled name. Raises VideoReadError (a ValueError) for an unreadable file."""
    read, compute = read or ReadOptions(), compute or ComputeOptions()
    model = load_model(model, compute.device)
    with local_input(path) as local:
        src = open_source(local, model.tok.space_compression, read, name=str(path))
        return encode_source(model, src, read, compute, progress)


@torch.no_grad()
def tokenize_array(video, model, fps: float = 0.0, read: ReadOptions | None = None,
                   compute: ComputeOptions | None = None) -> TokenizeResult:
    """Tokenize frames in memory: uint8 (T, H, W, 3), or a float tensor (3, T, H, W) in [-1, 1].

    ``read.size`` / ``short_side`` / ``frames_policy`` apply as for files (``fps``/``start``/
    ``max_frames`` do not: slice the array instead)."""
    from magtok.data import to_uint8
    from magtok.pipeline.geometry import plan_geometry
    read, compute = read or ReadOptions(), compute or ComputeOptions()
    model = load_model(model, compute.device)
    tok = model.tok
    if isinstance(video, torch.Tensor):
        if video.dim() != 4 or video.shape[0] != 3:
            raise ValueError(f"a video tensor must be (3, T, H, W) in [-1, 1], got {tuple(video.shape)}")
        video = to_uint8(video)
    frames = np.asarray(video)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"video must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    geo = plan_geometry(h, w, tok.space_compression, read.size, read.short_side, "the array")
    src = Source(Path("<array>"), "video" if t > 1 else "image", t, float(fps), h, w, 0, None, t, geo)
    tile = compute.tiles(tok.space_compression)
    r_t, n = tok.time_compression, compute.chunk_latents
    bounds = [0, min(t, 1 + (n - 1) * r_t)]
    while bounds[-1] < t:
        bounds.append(min(t, bounds[-1] + n * r_t))
    counter, parts = Counter(), []
    with algorithm(compute), tok.streaming():
        for i in range(len(bounds) - 1):
            chunk = prepare_frames(frames[bounds[i]:bounds[i + 1]], geo, r_t, i == 0, i == len(bounds) - 2,
                                   read.frames_policy, counter)
            if chunk is not None:
                parts.append(_encode(tok, chunk.video.to(tok.device), tile).cpu())
    codes = to_file_layout(torch.cat(parts, dim=1)[0])
    meta = _meta(model, src, counter, read.frames_policy, tile)
    return TokenizeResult(codes, meta, src, list(geo.notes))


# ---------------------------------------------------------------------------- decoding
def _clip_frames(header: dict, decoded: int) -> int:
    return min(decoded, int((header.get("extra") or {}).get("frames") or decoded))


@torch.no_grad()
def detokenize(tokens, output, model=None, compute: ComputeOptions | None = None, overwrite: bool = False,
               progress: Progress = None) -> DetokenizeResult:
    """Decode a token file (path or ``TokenFile``) into an H.264 video (or .png for one frame), streaming,
    with as many frames as were tokenized. ``model``: as for ``tokenize_file``; default: the model
    recorded in the file or one in ``$MAGTOK_MODEL_PATH`` (``find_model``)."""
    from magtok.data import TokenFile, load_tokens, to_uint8
    compute = compute or ComputeOptions()
    if not isinstance(tokens, TokenFile):
        check_not_input(output, [tokens], "token file")
    tf = tokens if isinstance(tokens, TokenFile) else load_tokens(tokens)
    name = tf.path or "<tokens>"
    check_not_input(output, [tf.path], "token file")
    header = tf.header
    m = find_model(header, name, model, compute.device)
    tok = m.tok
    codes = tf.codes
    k = tok.codebook_size
    if header["codebook_size"] != k or int(codes.max()) >= k or int(codes.min()) < 0:
        raise ValueError(f"{name}: codes out of range for the model: values up to {int(codes.max())}, "
                         f"the codebook has {k} codes (0 .. {k - 1})")
    if header["num_codebooks"] != tok.quantizer.num_codebooks:
        raise ValueError(f"{name} has {header['num_codebooks']} codebooks; the model has {tok.quantizer.num_codebooks}")
    codes = from_file_layout(codes)                # (1, T', H', W'[, N])
    t_lat = codes.shape[1]
    n_out = _clip_frames(header, 1 + (t_lat - 1) * tok.time_compression)
    fps = float(header["clip"]["fps"])
    out = Path(output)
    tile = compute.tiles(tok.space_compression)
    h, w = codes.shape[2] * tok.space_compression, codes.shape[3] * tok.space_compression
    if out.suffix.lower() in IMAGE_OUTPUTS:
        if n_out != 1:
            raise OutputError(f"{name} holds {n_out} frames; write it to a video file (.mp4), not {out.suffix}")
        check_output(out, overwrite)
        with algorithm(compute):
            frame = to_uint8(_decode(tok, codes, tile)[0, :, :1].clamp(-1, 1))[0]
        write_image_atomic(out, frame, overwrite)
        return DetokenizeResult(out, 1, frame.shape[0], frame.shape[1], fps)
    if fps <= 0:
        if n_out != 1:
            raise ValueError(f"{name} records no frame rate; cannot write a video")
        fps = 1.0
    n = compute.chunk_latents
    written = 0
    with VideoSink(out, fps, overwrite=overwrite) as sink, algorithm(compute), tok.streaming():
        for s in range(0, t_lat, n):
            video = _decode(tok, codes[:, s:s + n], tile)[0].clamp(-1, 1)      # (3, t, H, W)
            video = video[:, :n_out - written]
            if video.shape[1]:
                sink.write(to_uint8(video))
                written += video.shape[1]
                if progress is not None:
                    progress(video.shape[1])
    return DetokenizeResult(out, written, h, w, fps)


@torch.no_grad()
def reconstruct(path, output, model, read: ReadOptions | None = None, compute: ComputeOptions | None = None,
                side_by_side: bool = False, overwrite: bool = False, progress: Progress = None) -> ReconstructResult:
    """Tokenize and detokenize a video in memory (streaming), write the reconstruction (or input |
    reconstruction) and return PSNR / SSIM against the resized input."""
    from magtok.data import to_uint8
    from magtok.metrics import psnr, ssim
    read, compute = read or ReadOptions(), compute or ComputeOptions()
    out = Path(output)
    check_not_input(out, [path], "video")
    m = load_model(model, compute.device)
    tok = m.tok
    with local_input(path) as local:
        src = open_source(local, tok.space_compression, read, name=str(path))
        tile = compute.tiles(tok.space_compression)
        fps = src.clip_fps if src.clip_fps > 0 else 1.0
        oh, ow = src.geometry.out
        use_ssim = oh >= 11 and ow >= 11
        psnr_sum = ssim_sum = 0.0
        n_frames = 0
        with VideoSink(out, fps, overwrite=overwrite) as sink, algorithm(compute), tok.streaming():
            for chunk in model_chunks(src, tok.time_compression, compute.chunk_latents, read.frames_policy):
                x = chunk.video.to(tok.device)
                recon = _decode(tok, _encode(tok, x, tile), tile).clamp(-1, 1)[:, :, :chunk.real]
                x = x[:, :, :chunk.real]
                psnr_sum += float(psnr(recon, x, max_db=100.0).sum())
                if use_ssim:
                    ssim_sum += float(ssim(recon, x).sum())
                n_frames += chunk.real
                frames = to_uint8(recon[0])
                if side_by_side:
                    frames = np.concatenate([to_uint8(x[0]), frames], axis=2)
                sink.write(frames)
                if progress is not None:
                    progress(chunk.real)
    return ReconstructResult(out, n_frames, oh, ow, psnr_sum / n_frames, ssim_sum / n_frames if use_ssim else None)
