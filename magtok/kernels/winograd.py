"""Winograd F(4x4, 3x3) for the causal 3x3x3 convolutions (float32, CPU, inference).

A 3x3x3 causal convolution at full resolution is most of the tokenizer's arithmetic, and oneDNN's
direct kernels already run it near the CPU's float32 peak. Winograd's minimal filtering computes a
4x4 output tile of a frame with 36 products per (input channel, output channel, time tap) instead of
144: the 3x3 spatial kernels are transformed once (``U = G g G^T``, 6x6), each 6x6 input patch is
transformed (``V = B^T d B``), the 36 products summed over channels and the 3 time taps are 36
matrix products (MKL), and ``A^T M A`` gives the 4x4 tile. The transforms are a small C++ extension
(``winograd.cpp``), built with the system compiler on first use and cached in ``$MAGTOK_CACHE/kernels``
(default ``~/.cache/magtok/kernels``), one build per source, torch version and CPU feature set.

It is exact in exact arithmetic; in float32 its rounding error is about 10x that of the direct
convolution (1e-5 of the output's magnitude instead of 1e-6), so it is opt-in::

    with magtok.kernels.conv_algorithm("winograd"):
        codes = tok.encode(video)

or ``tok.for_inference(winograd=True)``. It applies only under ``torch.no_grad()`` (or inference
mode), to float32 CPU tensors outside autocast, to 3x3x3 convolutions with stride and dilation 1
whose frames have at least :data:`MIN_TILES` 4x4 tiles (16x16 frames; at 8x8 the direct kernel is faster:
``benchmarks/bench_kernels.py``), any channel counts. Everything else runs the direct kernel,
so the switch is always safe to turn on. BENCHMARKS.md has the measured speed and agreement.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import warnings
from pathlib import Path

import torch

ALGORITHMS = ("direct", "winograd")
MIN_TILES = 16  # 16x16 frames: 1.5x faster at 512 channels; 8x8 (4 tiles) ran at 0.43x

_state = threading.local()
_lock = threading.Lock()
_ext = None
_ext_error: str | None = None

_G = ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0))


def get_conv_algorithm() -> str:
    return getattr(_state, "algorithm", "direct")


def set_conv_algorithm(name: str) -> None:
    """Choose the 3x3x3 causal convolution kernel for this thread: "direct" (default) or "winograd"."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}; use one of {ALGORITHMS}")
    _state.algorithm = name


@contextlib.contextmanager
def conv_algorithm(name: str):
    """``with conv_algorithm("winograd"):`` -- the algorithm for the block, restored afterwards."""
    previous = get_conv_algorithm()
    set_conv_algorithm(name)
    try:
        yield
    finally:
        _state.algorithm = previous


def _cpu_flags() -> bytes:
    """The CPU's feature flags: the build uses -march=native, so a cache shared between machines
    (a network home folder) must not hand one CPU's build to another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.encode()
    except OSError:
        pass
    import platform

    return platform.processor().encode() + platform.machine().encode()


def _build_dir(source: Path) -> Path:
    key = hashlib.sha256(source.read_bytes() + torch.__version__.encode() + _cpu_flags()).hexdigest()[:16]
    root = Path(os.environ.get("MAGTOK_CACHE") or Path.home() / ".cache" / "magtok") / "kernels"
    d = root / f"winograd-{key}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_extension():
    """The compiled extension, building it on first use (about 40 s); None if it cannot be built
    (a RuntimeWarning then says why, once, and the direct kernel is used)."""
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    with _lock:
        if _ext is not None or _ext_error is not None:
            return _ext
        source = Path(__file__).with_name("winograd.cpp")
        try:
            from torch.utils.cpp_extension import load

            # ninja from the environment's own bin/ (the pip package) when it is not on PATH
            bindir = str(Path(sys.executable).parent)
            if bindir not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

            _ext = load(name="magtok_winograd", sources=[str(source)], build_directory=str(_build_dir(source)),
                        extra_cflags=["-O3", "-march=native", "-fopenmp"], verbose=False)
        except Exception as e:  # no compiler, no ninja, read-only cache...
            _ext_error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            warnings.warn(f"magtok: the Winograd convolution kernel could not be built ({_ext_error}); "
                          "using the direct convolution. It needs a C++ compiler (g++) and ninja.",
                          RuntimeWarning, stacklevel=3)
    return _ext


def available() -> bool:
    return load_extension() is not None


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """(Co, C, 3, 3, 3) -> (36, Co, 3C) float32 (4x the weight's size): for each of the 36 Winograd
    points, G g G^T of every (output channel, time tap, input channel), K index = tap * C + c."""
    co, c = weight.shape[:2]
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,ockij,bj->abokc", g, weight.detach().double().cpu(), g)
    return u.reshape(36, co, 3 * c).float().contiguous()


def applies(conv: torch.nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether the Winograd kernel should run ``conv`` on the time-padded input ``x``."""
    if torch.compiler.is_compiling() or get_conv_algorithm() != "winograd":
        return False  # (is_compiling first: Dynamo folds it and never traces the thread-local lookup)
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or conv.weight.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if conv.kernel_size != (3, 3, 3) or conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1:
        return False
    if x.dim() != 5 or x.shape[2] < 3:
        return False
    tiles = ((x.shape[3] + 3) // 4) * ((x.shape[4] + 3) // 4)
    return tiles >= MIN_TILES and available()


def causal_conv3d(x: torch.Tensor, weight_u: torch.Tensor, bias: torch.Tensor | None,
                  replicate: bool) -> torch.Tensor:
    """(B, C, T + 2, H, W) time-padded input -> (B, Co, T, H, W); spatial padding 1 (zeros, or
    edge copies with ``replicate``) is applied inside."""
    ext = load_extension()
    b = bias.detach().contiguous() if bias is not None else torch.empty(0)
    return ext.winograd_causal_conv3d(x.contiguous(), weight_u, b, bool(replicate))
