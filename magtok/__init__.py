"""magtok: MagViT2-style discrete video tokenization.

    from magtok import VideoTokenizer, get_config
    tok = VideoTokenizer(get_config("magvit2-17x128-lfq18"))
    codes = tok.encode(video)      # (B, 3, 17, 128, 128) in [-1, 1] -> (B, 5, 16, 16) int64
    recon = tok.decode(codes)

The public names are imported on first use (PEP 562), so ``import magtok`` and ``magtok --help`` do
not pay for importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

_PUBLIC = {
    "QuantizerConfig": "magtok.configs",
    "TokenizerConfig": "magtok.configs",
    "TrainConfig": "magtok.configs",
    "get_config": "magtok.configs",
    "list_configs": "magtok.configs",
    "register_config": "magtok.configs",
    "TokenizerOutput": "magtok.models",
    "VideoTokenizer": "magtok.models",
    "QuantizerOutput": "magtok.quantizers",
    "build_quantizer": "magtok.quantizers",
    "UserError": "magtok.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"magtok.{name}") is not None:
            return importlib.import_module(f"magtok.{name}")  # a subpackage, as with an eager import
        raise AttributeError(f"module 'magtok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
