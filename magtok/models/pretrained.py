"""Tokenizers that ship inside the package, loadable by name and offline.

    VideoTokenizer.from_pretrained("magtok-small")       # bundled weights (a few MB, safetensors)
    VideoTokenizer.from_pretrained("runs/small/model")   # any folder written by save_pretrained
    magtok tokenize clip.mp4 --model magtok-small -o clip.tokens

A bundled model is a folder ``magtok/pretrained/<name>/`` holding ``config.json`` and
``model.safetensors`` (and its ``MODEL_CARD.md``); :func:`list_pretrained` names them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["list_pretrained", "resolve_pretrained", "pretrained_dir", "PRETRAINED_ROOT"]

PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"


def list_pretrained() -> list[str]:
    """Names of the tokenizers bundled with this install."""
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_ROOT.iterdir()
                  if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def pretrained_dir(name: str) -> Path:
    """The folder of the bundled tokenizer ``name`` (ValueError naming the known ones otherwise)."""
    known = list_pretrained()
    if name not in known:
        raise ValueError(f"{name!r} is not a bundled tokenizer; bundled: {', '.join(known) or 'none'} "
                         "(or pass the folder of a model written by save_pretrained / `magtok train`)")
    return PRETRAINED_ROOT / name


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))
            and not any(c in text for c in ("\\", ":", " ")))


def resolve_pretrained(name_or_path: str | os.PathLike) -> Path:
    """The model folder for ``name_or_path``.

    In order: an existing folder is used as is; a bundled name (:func:`list_pretrained`) gives its
    folder inside the package; an ``owner/name`` id that is not a local folder is looked up on the
    Hugging Face Hub (its local cache when offline) through :mod:`magtok.models.hub`, if that module
    and ``huggingface_hub`` are installed. Anything else raises FileNotFoundError naming what was
    tried and the bundled names.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    text = str(name_or_path)
    if text in list_pretrained():
        return PRETRAINED_ROOT / text
    if _looks_like_hub_id(text):
        try:
            from magtok.models.hub import hub_snapshot
        except ImportError:
            hub_snapshot = None
        if hub_snapshot is not None:
            return Path(hub_snapshot(text))
    known = ", ".join(list_pretrained()) or "none"
    raise FileNotFoundError(f"model {text!r} is neither a folder nor a bundled tokenizer name "
                            f"(bundled: {known}); pass a folder written by save_pretrained / `magtok train`")
