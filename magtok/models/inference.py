"""A fast inference path for a trained tokenizer: ``tokenizer.for_inference(...)``.

    fast = tokenizer.for_inference()                      # compiled, float32: the same codes
    fast = tokenizer.for_inference(dtype="bfloat16")      # compiled, bfloat16: much faster, approximate
    fast = tokenizer.for_inference(winograd=True)         # eager float32, Winograd 3x3x3 convolutions
    codes = fast.encode(video)                            # same signature and checks as tokenizer.encode
    video = fast.decode(codes)

Why it is faster, in float32 and with the same arithmetic: ``torch.compile`` (Inductor) with weight
freezing keeps activations in oneDNN's blocked / channels-last layouts from one convolution to the
next (eager PyTorch reorders every conv's input and output, 15-20% of a conv's time), pre-packs the
conv weights, and fuses ELU, squeeze-excite gating, residual adds, padding and the up/downsampling
rearranges into the surrounding kernels. The convolutions themselves are the same oneDNN kernels as in
eager mode. Like the eager encoder, it reuses the cached activations of the constant pad frames of a
first chunk (``Encoder._prefix_setup``), computed eagerly outside the compiled region. Codes equal
``tokenizer.encode`` (up to float rounding in the last bits; see
BENCHMARKS.md for the measured agreement) and decoded videos agree to about 1e-6.

With ``dtype="bfloat16"`` the network runs under ``torch.autocast`` (bfloat16 convolutions: AMX /
AVX512-BF16 on recent Xeons, tensor cores on GPUs). That is several times faster but not the same
function: codes whose latent is near an LFQ sign boundary can flip. Measure the agreement on your data
before relying on it.

With ``winograd=True`` the calls run eagerly (no compile) with ``magtok.kernels.conv_algorithm("winograd")``:
the 3x3x3 convolutions that dominate the MagViT2 preset use Winograd F(4x4, 3x3), a quarter of the
multiplications (:mod:`magtok.kernels.winograd`). On this machine that is the fastest float32 path; its
rounding differs from the direct convolution's (about 1e-5 of a layer's output), so codes near an LFQ sign
boundary can in principle flip (BENCHMARKS.md measures the agreement). It is not combined with
``torch.compile`` yet (the kernel is an opaque C++ call that Dynamo does not trace).

Costs and limits:

* the first call with a new input shape compiles (about 20-40 s on 2 CPU cores); later calls with that
  shape reuse it. ``torch._dynamo.config.cache_size_limit`` shapes are compiled at most (default 8);
  beyond that PyTorch runs those shapes eagerly. Tokenizing a data set of fixed-size clips is the case
  this is built for.
* compiling needs a C++ compiler on CPU (Inductor generates C++). If compiling fails for any reason,
  magtok warns once, names the cause, and runs the same call eagerly: a failed compile loses nothing.
* the weights are frozen into the compiled code: change the tokenizer's weights (training, loading a
  state dict) and the next call raises an error telling you to call ``for_inference`` again.
* no streaming or tiling: for long videos use ``tokenizer.encode_chunked`` / ``decode_chunked``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch

from magtok.kernels import winograd as winograd_kernel

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_inference_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.bfloat16):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"inference dtype {dtype!r} is not supported; use 'float32' (same codes as encode) "
                     "or 'bfloat16' (faster, approximate)")


def _state_versions(module: torch.nn.Module) -> tuple:
    """Identity and in-place version counter of every parameter and buffer: changes when the weights do
    (optimizer steps, load_state_dict, .to(), assigning a new Parameter)."""
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))


class InferenceTokenizer:
    """Encode / decode of a frozen :class:`~magtok.VideoTokenizer`, compiled and/or in bfloat16.

    Build it with ``tokenizer.for_inference(compile=True, dtype="float32")``. It holds the tokenizer
    (put in eval mode), not a copy: see the module docstring for what invalidates it.
    """

    def __init__(self, tokenizer, compile: bool | None = None, dtype="float32", winograd: bool = False):
        if winograd and compile:
            raise ValueError("winograd=True runs eagerly (the Winograd kernel is not traced by torch.compile); "
                             "pass compile=False, or leave compile unset")
        compile = (not winograd) if compile is None else compile
        if tokenizer._stream_pos is not None:
            raise ValueError("for_inference() was called inside tokenizer.streaming(); streaming keeps "
                             "per-chunk state that compiled code cannot hold: call it outside the with-block")
        self.tokenizer = tokenizer.eval()
        self.dtype = parse_inference_dtype(dtype)
        if winograd and self.dtype != torch.float32:
            raise ValueError("winograd=True is a float32 kernel; use dtype='float32' with it")
        # the Winograd kernel is built here (first use: ~30 s); if it cannot be, a warning says why
        self.winograd = bool(winograd) and winograd_kernel.available()
        self.compile = bool(compile)
        self._versions = _state_versions(tokenizer)
        self._fns: dict[str, Callable] = self._eager_fns()
        if self.compile:
            self._fns = {k: torch.compile(f, dynamic=False) for k, f in self._fns.items()}
        self.compile_error: str | None = None

    def __repr__(self) -> str:
        mode = "compiled" if self.compile and self.compile_error is None else "eager"
        mode += ", winograd" if self.winograd else ""
        return f"InferenceTokenizer({mode}, dtype={str(self.dtype)[6:]}, fingerprint={self.tokenizer.fingerprint()})"

    # ------------------------------------------------------------------ the traced cores (inputs checked)
    def _eager_fns(self) -> dict[str, Callable]:
        return {"encode": self._encode_core, "encode_prefixed": self._encode_prefixed_core,
                "decode": self._decode_core}

    def _encode_core(self, video: torch.Tensor, cond, first: bool) -> torch.Tensor:
        z = self.tokenizer.encoder(video, cond, first_frame=first)
        return self.tokenizer.quantizer.codes_from(z.float())

    def _encode_prefixed_core(self, video: torch.Tensor, prefix: torch.Tensor, states: list) -> torch.Tensor:
        # the encoder's constant pad-frame prefix (see Encoder._prefix_setup) is computed eagerly and
        # cached outside the compiled region; the compiled part starts at the first real frame
        z = self.tokenizer.encoder.forward_with_prefix(video, prefix, states)
        return self.tokenizer.quantizer.codes_from(z.float())

    def _decode_core(self, quantized: torch.Tensor, cond, first: bool) -> torch.Tensor:
        return self.tokenizer.decoder(quantized, cond, first_frame=first).float()

    def _check_fresh(self) -> None:
        tok = self.tokenizer
        if tok.training:
            raise ValueError("the tokenizer was put back in train mode after for_inference(); call "
                             "tokenizer.eval() or build a new one with tokenizer.for_inference()")
        if tok._stream_pos is not None:
            raise ValueError("InferenceTokenizer cannot run inside tokenizer.streaming(); use "
                             "tokenizer.encode_chunked / decode_chunked for long videos")
        if _state_versions(tok) != self._versions:
            raise ValueError("the tokenizer's weights changed after for_inference() (training step, "
                             "load_state_dict or .to()); the frozen copy is stale: call "
                             "tokenizer.for_inference() again")

    def _run(self, which: str, *args) -> torch.Tensor:
        amp = (torch.autocast(self.tokenizer.device.type, dtype=torch.bfloat16)
               if self.dtype == torch.bfloat16 else contextlib.nullcontext())
        algorithm = winograd_kernel.conv_algorithm("winograd" if self.winograd else "direct")
        fn = self._fns[which]
        with torch.no_grad(), amp, algorithm:
            if which == "encode_prefixed":
                args = (args[0], *self.tokenizer.encoder._prefix(args[0]))
            if not (self.compile and self.compile_error is None):
                return fn(*args)
            try:
                from torch._inductor import config as inductor_config

                with inductor_config.patch(freezing=True):
                    return fn(*args)
            except Exception as e:  # noqa: BLE001 - any compile failure falls back to the same call, eager
                self.compile_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                warnings.warn(f"torch.compile failed ({self.compile_error[:300]}); magtok runs this tokenizer "
                              "eagerly from now on (same results, without the speed-up). On CPU compiling "
                              "needs a C++ compiler (g++) on PATH.", RuntimeWarning, stacklevel=3)
                self._fns = self._eager_fns()
                return self._fns[which](*args)

    # ------------------------------------------------------------------ public API (as on VideoTokenizer)
    def encode(self, video: torch.Tensor, cond: torch.Tensor | None = None,
               video_contains_first_frame: bool = True) -> torch.Tensor:
        """Video (B, C, T, H, W) or images (B, C, H, W) in [-1, 1] -> codes (B, T', H', W') int64."""
        self._check_fresh()
        tok = self.tokenizer
        video, _ = tok._check_video(video, video_contains_first_frame)
        cond = tok._check_cond(cond, video.shape[0])
        video = video.to(tok.device, torch.float32)
        if cond is None and video_contains_first_frame and tok.encoder._prefix_ok:
            return self._run("encode_prefixed", video)
        return self._run("encode", video, cond, bool(video_contains_first_frame))

    def decode(self, codes: torch.Tensor, cond: torch.Tensor | None = None,
               video_contains_first_frame: bool = True) -> torch.Tensor:
        """Codes (B, T', H', W') -> video (B, C, T, H, W), float32."""
        self._check_fresh()
        tok = self.tokenizer
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        quantized = tok.quantizer.decode_codes(codes.to(tok.device))
        cond = tok._check_cond(cond, quantized.shape[0])
        return self._run("decode", quantized, cond, bool(video_contains_first_frame))

    decode_from_code_indices = decode
