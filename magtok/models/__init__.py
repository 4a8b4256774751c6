"""Encoder, decoder and the VideoTokenizer, built from a layer spec through a name -> builder table."""

from magtok.models.blocks import BLOCK_BUILDERS, build_blocks, register_block
from magtok.models.tokenizer import TokenizerOutput, VideoTokenizer

__all__ = ["BLOCK_BUILDERS", "TokenizerOutput", "VideoTokenizer", "build_blocks", "register_block"]
