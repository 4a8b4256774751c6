"""Tokenizers bundled with magtok: one folder per name (config.json, model.safetensors, MODEL_CARD.md).

Load them with ``VideoTokenizer.from_pretrained("magtok-small")``; see :mod:`magtok.models.pretrained`.
"""
