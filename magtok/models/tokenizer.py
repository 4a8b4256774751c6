"""VideoTokenizer: encoder -> quantizer -> decoder, with validation, streaming and save/load.

    tok = VideoTokenizer(get_config("magvit2-17x128-lfq18"))
    codes = tok.encode(video)        # (B, 3, 17, 128, 128) in [-1, 1] -> (B, 5, 16, 16) int64
    recon = tok.decode(codes)        # -> (B, 3, 17, 128, 128)
    out = tok(video)                 # TokenizerOutput(recon, codes, aux_loss, metrics)
    with tok.streaming():            # chunked == whole clip
        codes = torch.cat([tok.encode(c) for c in chunks], dim=1)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from magtok._io import atomic_write
from magtok.configs import TokenizerConfig, get_config
from magtok.layers import start_streaming, stop_streaming
from magtok.models.blocks import build_blocks
from magtok.models.decoder import Decoder
from magtok.models.encoder import Encoder
from magtok.quantizers import build_quantizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "magtok-tokenizer/1"


@dataclass
class TokenizerOutput:
    """What ``VideoTokenizer.forward`` returns, always.

    recon: (B, C, T, H, W) (or (B, C, H, W) for image input), same range as the input.
    codes: (B, T', H', W') int64 ((..., num_codebooks) with several codebooks).
    aux_loss: scalar, the quantizer's weighted loss. metrics: dict of scalar tensors.
    """

    recon: torch.Tensor
    codes: torch.Tensor
    aux_loss: torch.Tensor
    metrics: dict = field(default_factory=dict)


_atomic_write = atomic_write


class VideoTokenizer(nn.Module):
    """MagViT2-style video tokenizer. Build from a :class:`TokenizerConfig` or a preset name."""

    def __init__(self, config: TokenizerConfig | str):
        super().__init__()
        if isinstance(config, str):
            config = get_config(config)
        if config.pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode {config.pad_mode!r} is not supported; use 'constant' or 'replicate'")
        self.config = config
        dim_cond = int(config.dim_cond * config.dim_cond_expansion_factor) if config.dim_cond else None
        built = build_blocks(config, dim_cond)
        self.time_compression = math.prod(b.time_factor for b in built)
        self.space_compression = math.prod(b.space_factor for b in built)
        self.needs_cond = any(b.conditioned for b in built)
        latent_dim = built[-1].dim_out if built else config.init_dim
        self.latent_dim = latent_dim
        self.encoder = Encoder(config, [b.encoder for b in built], latent_dim, self.time_compression)
        self.quantizer = build_quantizer(latent_dim, config.quantizer)
        self.decoder = Decoder(config, [b.decoder for b in reversed(built)], self.time_compression)
        self._stream_pos: dict | None = None

    # ------------------------------------------------------------------ properties
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def bits_per_token(self) -> float:
        """log2(codebook_size) x num_codebooks."""
        return self.quantizer.bits_per_token

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Code grid (T', H', W') for a clip of ``frames`` x ``height`` x ``width``."""
        return (1 + (frames - 1) // self.time_compression, height // self.space_compression,
                width // self.space_compression)

    def compression_ratio_for(self, frames: int, height: int, width: int) -> float:
        """Bits of the uint8 RGB input / bits of its codes."""
        t, h, w = self.latent_shape(frames, height, width)
        return (frames * height * width * self.config.channels * 8) / (t * h * w * self.bits_per_token)

    @property
    def compression_ratio(self) -> float:
        """Compression ratio at the config's nominal size (``frames`` x ``image_size``)."""
        h, w = self.config.image_size
        return self.compression_ratio_for(self.config.frames, h, w)

    # ------------------------------------------------------------------ validation
    def _expected_video(self) -> str:
        """The input this tokenizer takes, for error messages."""
        c, r_t, r_s = self.config.channels, self.time_compression, self.space_compression
        return (f"(B, {c}, 1 + k*{r_t}, H, W) (or images (B, {c}, H, W)) in [-1, 1], B >= 1, "
                f"H and W multiples of {r_s}")

    def _check_video(self, video, first_frame: bool) -> tuple[torch.Tensor, bool]:
        """Validate a video batch; float64 / float16 / bfloat16 input is converted to the weights' dtype."""
        if not isinstance(video, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor video {self._expected_video()}, got {type(video).__name__}"
                             + (" (convert with torch.from_numpy)" if type(video).__name__ == "ndarray" else ""))
        if not video.dtype.is_floating_point:
            raise ValueError(f"video has dtype {video.dtype}; the tokenizer takes float values in [-1, 1] "
                             "(for uint8 frames use video.float() / 127.5 - 1)")
        if video.ndim not in (4, 5):
            raise ValueError(f"video has shape {tuple(video.shape)} ({video.ndim} dims); expected "
                             "(B, C, T, H, W) for video or (B, C, H, W) for images")
        if video.shape[0] == 0 or video.numel() == 0:
            raise ValueError(f"video is empty (shape {tuple(video.shape)}); expected {self._expected_video()}")
        is_image = video.ndim == 4
        if is_image:
            video = video.unsqueeze(2)
            first_frame = True
        b, c, t, h, w = video.shape
        if c != self.config.channels:
            raise ValueError(f"video has {c} channels in dim 1; this tokenizer takes {self.config.channels} "
                             "(layout B, C, T, H, W; for channels-last input use x.permute(0, 4, 1, 2, 3))")
        r_t, r_s = self.time_compression, self.space_compression
        if first_frame and (t - 1) % r_t:
            k = (t - 1) // r_t
            raise ValueError(f"video has {t} frames; this tokenizer needs 1 + {r_t}k frames "
                             f"(e.g. {1 + k * r_t} or {1 + (k + 1) * r_t}): crop or pad the clip")
        if not first_frame and (t == 0 or t % r_t):
            raise ValueError(f"a continuation chunk has {t} frames; it needs a positive multiple of {r_t} "
                             f"frames (e.g. {max(1, t // r_t) * r_t})")
        if h % r_s or w % r_s or h == 0 or w == 0:
            raise ValueError(f"frame size {h}x{w} is not divisible by {r_s} (the spatial compression); "
                             f"crop or resize to e.g. {max(1, h // r_s) * r_s}x{max(1, w // r_s) * r_s}")
        if not torch.isfinite(video.detach()).all():
            bad = int((~torch.isfinite(video)).sum())
            raise ValueError(f"video contains {bad} NaN or Inf values; clean the input before tokenizing")
        lo, hi = float(video.detach().min()), float(video.detach().max())
        if lo < -1.5 or hi > 1.5:
            raise ValueError(f"video values range over [{lo:.3g}, {hi:.3g}]; the tokenizer expects [-1, 1] "
                             "(for 0..255 pixels use x / 127.5 - 1)")
        weights = next((p.dtype for p in self.parameters() if p.dtype.is_floating_point), video.dtype)
        if video.dtype != weights:       # float64 / float16 / bfloat16 -> the weights' dtype (float32)
            video = video.to(weights)
        return video, is_image

    def _check_cond(self, cond, batch: int):
        if not self.needs_cond:
            return None if cond is None else cond
        if cond is None:
            raise ValueError(f"this tokenizer has conditioned layers: pass cond of shape (B, {self.config.dim_cond})")
        if cond.shape != (batch, self.config.dim_cond):
            raise ValueError(f"cond has shape {tuple(cond.shape)}; expected ({batch}, {self.config.dim_cond})")
        return cond

    def _first_frame(self, which: str, requested: bool) -> bool:
        """Whether this call starts a clip. While streaming, only the first call does."""
        if self._stream_pos is None:
            return requested
        first = requested and not self._stream_pos[which]
        self._stream_pos[which] = True
        return first

    # ------------------------------------------------------------------ encode / decode
    def encode_latents(self, video: torch.Tensor, cond: torch.Tensor | None = None,
                       video_contains_first_frame: bool = True) -> torch.Tensor:
        """Pre-quantization latents (B, D, T', H', W')."""
        first = self._first_frame("encode", video_contains_first_frame)
        video, _ = self._check_video(video, first)
        cond = self._check_cond(cond, video.shape[0])
        return self.encoder(video, cond, first_frame=first)

    def encode(self, video: torch.Tensor, cond: torch.Tensor | None = None,
               video_contains_first_frame: bool = True) -> torch.Tensor:
        """Video (B, C, T, H, W) or images (B, C, H, W) in [-1, 1] -> codes (B, T', H', W') int64."""
        z = self.encode_latents(video, cond, video_contains_first_frame)
        return self.quantizer.codes_from(z)

    def decode_latents(self, quantized: torch.Tensor, cond: torch.Tensor | None = None,
                       video_contains_first_frame: bool = True) -> torch.Tensor:
        """Quantized latents (B, D, T', H', W') -> video (B, C, T, H, W)."""
        first = self._first_frame("decode", video_contains_first_frame)
        cond = self._check_cond(cond, quantized.shape[0])
        return self.decoder(quantized, cond, first_frame=first)

    def decode(self, codes: torch.Tensor, cond: torch.Tensor | None = None,
               video_contains_first_frame: bool = True) -> torch.Tensor:
        """Codes (B, T', H', W') -> video (B, C, 1 + (T'-1)*r_t, H'*r_s, W'*r_s) in about [-1, 1]."""
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.numel() == 0:
            grid = "(B, T', H', W', num_codebooks)" if self.quantizer.num_codebooks > 1 else "(B, T', H', W')"
            raise ValueError(f"codes are empty (shape {tuple(codes.shape)}); expected int64 {grid} with "
                             f"B >= 1, as returned by encode()")
        codes = codes.to(self.device)
        return self.decode_latents(self.quantizer.decode_codes(codes), cond, video_contains_first_frame)

    # the name users of magvit2-pytorch look for
    decode_from_code_indices = decode

    def forward(self, video: torch.Tensor, cond: torch.Tensor | None = None,
                video_contains_first_frame: bool = True) -> TokenizerOutput:
        """Encode, quantize and decode. Images in, images out."""
        is_image = isinstance(video, torch.Tensor) and video.ndim == 4
        z = self.encode_latents(video, cond, video_contains_first_frame)
        q = self.quantizer(z)
        recon = self.decode_latents(q.quantized, cond, video_contains_first_frame)
        if is_image:
            recon = recon[:, :, 0]
        return TokenizerOutput(recon, q.codes, q.aux_loss, q.metrics)

    def for_inference(self, compile: bool | None = None, dtype="float32", winograd: bool = False):
        """A fast encode/decode of this tokenizer as it is now: ``torch.compile`` with frozen weights
        (float32: the same codes as :meth:`encode`) and optionally bfloat16 (faster, approximate);
        or, with ``winograd=True``, eager float32 with the Winograd 3x3x3 convolutions
        (:mod:`magtok.kernels.winograd`; the fastest float32 path on CPU). Puts the tokenizer in eval
        mode. See :mod:`magtok.models.inference`."""
        from magtok.models.inference import InferenceTokenizer

        return InferenceTokenizer(self, compile=compile, dtype=dtype, winograd=winograd)

    # ------------------------------------------------------------------ streaming
    @contextlib.contextmanager
    def streaming(self) -> Iterator["VideoTokenizer"]:
        """Chunked encoding/decoding with causal caches; results equal whole-clip processing.

        The first ``encode`` call takes the chunk holding frame 0 (1 + k*r_t frames); later calls
        take continuation chunks of k*r_t frames. The same for ``decode`` with code chunks. State
        exists only inside the ``with`` block.
        """
        if self._stream_pos is not None:
            raise RuntimeError("tok.streaming() is already active; streaming contexts do not nest")
        start_streaming(self)
        self._stream_pos = {"encode": False, "decode": False}
        try:
            yield self
        finally:
            stop_streaming(self)
            self._stream_pos = None

    def iter_video_chunks(self, video: torch.Tensor, chunk_latent_frames: int) -> Iterator[torch.Tensor]:
        """Split (B, C, T, H, W) into encode chunks of ``chunk_latent_frames`` latent frames each."""
        if chunk_latent_frames < 1:
            raise ValueError("chunk_latent_frames must be >= 1")
        r_t = self.time_compression
        first = 1 + (chunk_latent_frames - 1) * r_t
        yield video[:, :, :first]
        for s in range(first, video.shape[2], chunk_latent_frames * r_t):
            yield video[:, :, s:s + chunk_latent_frames * r_t]

    @torch.no_grad()
    def encode_chunked(self, video_or_chunks, chunk_latent_frames: int = 4,
                       cond: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a long video (tensor, or an iterable of chunks) with streaming: memory stays flat
        as the video grows; codes equal ``encode`` of the whole clip."""
        chunks: Iterable = (self.iter_video_chunks(video_or_chunks, chunk_latent_frames)
                            if isinstance(video_or_chunks, torch.Tensor) else video_or_chunks)
        with self.streaming():
            return torch.cat([self.encode(c, cond) for c in chunks], dim=1)

    @torch.no_grad()
    def decode_chunked(self, codes: torch.Tensor, chunk_latent_frames: int = 4,
                       cond: torch.Tensor | None = None) -> torch.Tensor:
        """Decode codes (B, T', H', W') ``chunk_latent_frames`` at a time with streaming."""
        if chunk_latent_frames < 1:
            raise ValueError("chunk_latent_frames must be >= 1")
        with self.streaming():
            return torch.cat([self.decode(codes[:, s:s + chunk_latent_frames], cond)
                              for s in range(0, codes.shape[1], chunk_latent_frames)], dim=2)

    # ------------------------------------------------------------------ tiling
    def encode_tiled(self, video: torch.Tensor, tile=256, overlap: int = 32, cond=None,
                     video_contains_first_frame: bool = True) -> torch.Tensor:
        """Codes computed on overlapping spatial tiles (see :mod:`magtok.models.tiling`)."""
        from magtok.models.tiling import encode_tiled

        return encode_tiled(self, video, tile, overlap, cond, video_contains_first_frame)

    def decode_tiled(self, codes: torch.Tensor, tile=256, overlap: int = 32, cond=None,
                     video_contains_first_frame: bool = True) -> torch.Tensor:
        """Video decoded on overlapping spatial tiles (see :mod:`magtok.models.tiling`)."""
        from magtok.models.tiling import decode_tiled

        return decode_tiled(self, codes, tile, overlap, cond, video_contains_first_frame)

    # ------------------------------------------------------------------ identity, save / load
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fingerprint(self) -> str:
        """A hash of the config and the weights: the tokenizer's identity in token files."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickle) into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        existing = [p.name for p in (d / CONFIG_NAME, d / WEIGHTS_NAME) if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{d} already holds {', '.join(existing)}; pass overwrite=True to replace it")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        _atomic_write(d / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": FORMAT}))
        meta = {"format": FORMAT, "fingerprint": self.fingerprint(), "config": self.config.to_dict()}
        _atomic_write(d / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2, sort_keys=True)))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> "VideoTokenizer":
        """Restore a tokenizer written by :meth:`save_pretrained`, in eval mode.

        ``directory``: a model folder, or the name of a tokenizer bundled with magtok
        (``"magtok-small"``; :func:`magtok.models.pretrained.list_pretrained`), or a Hugging Face Hub
        id when ``huggingface_hub`` is installed (:func:`magtok.models.pretrained.resolve_pretrained`).
        """
        from safetensors.torch import load_file

        from magtok.models.pretrained import resolve_pretrained

        d = resolve_pretrained(directory)
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        if not cfg_path.exists() or not w_path.exists():
            raise FileNotFoundError(f"{d} is not a magtok model folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME} "
                                    "(written by VideoTokenizer.save_pretrained or `magtok train`)")
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{cfg_path} has format {meta.get('format')!r}; this magtok reads {FORMAT!r}")
        model = cls(TokenizerConfig.from_dict(meta["config"]))
        model.load_state_dict(load_file(str(w_path), device=map_location))
        return model.to(map_location).eval()

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    commit_message: str = "Upload magtok tokenizer", revision: str | None = None,
                    create_pr: bool = False):
        """Upload this tokenizer (``config.json`` + ``model.safetensors`` + a short model card) to the
        Hugging Face Hub repo ``repo_id`` ("owner/name"), creating it if needed; returns the commit info.
        ``VideoTokenizer.from_pretrained(repo_id)`` loads it back. Needs ``huggingface-cli login`` or a token."""
        from magtok.models.hub import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message,
                           revision=revision, create_pr=create_pr)
