"""magtok: MagViT2-style discrete video tokenization.

    from magtok import VideoTokenizer, get_config
    tok = VideoTokenizer(get_config("magvit2-17x128-lfq18"))
    codes = tok.encode(video)      # (B, 3, 17, 128, 128) in [-1, 1] -> (B, 5, 16, 16) int64
    recon = tok.decode(codes)
"""

from magtok.configs import (QuantizerConfig, TokenizerConfig, TrainConfig, get_config, list_configs,
                            register_config)
from magtok.models import TokenizerOutput, VideoTokenizer
from magtok.quantizers import QuantizerOutput, build_quantizer

__version__ = "0.1.0"

__all__ = ["QuantizerConfig", "QuantizerOutput", "TokenizerConfig", "TokenizerOutput", "TrainConfig",
           "VideoTokenizer", "build_quantizer", "get_config", "list_configs", "register_config",
           "__version__"]
