"""Tiling is a memory knob: its results stay within the documented bound of untiled results.

Documented bound (README, "Tiling"): with tiles of >= 6 latents and >= 2 latents of overlap, decoded pixels
differ from untiled decoding by at most 0.02 (on the [-1, 1] scale) and at least 90% of codes are
identical. A tile covering the whole frame is exact.
"""

import pytest
import torch
import torch.nn.functional as F

from magtok import VideoTokenizer, get_config
from magtok.models.tiling import tile_starts


def smooth_video(t=9, h=64, w=96):
    return F.interpolate(torch.rand(1, 3, t, h // 8, w // 8), size=(t, h, w), mode="trilinear") * 2 - 1


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    cfg = get_config("tiny").replace(layers=("residual", "compress_space", "residual", "compress_space",
                                             "compress_time", "residual", "compress_space"), init_dim=8)
    return VideoTokenizer(cfg).eval()


def test_tile_starts_cover_the_frame():
    assert tile_starts(100, 200, 16) == [0]
    starts = tile_starts(190, 64, 32)
    assert starts[0] == 0 and starts[-1] + 64 == 190
    assert all(b - a <= 32 for a, b in zip(starts, starts[1:]))


def test_whole_frame_tile_is_exact(demo):
    x = smooth_video()
    with torch.no_grad():
        codes = demo.encode(x)
        assert torch.equal(demo.encode_tiled(x, tile=(64, 96), overlap=0), codes)
        assert torch.allclose(demo.decode_tiled(codes, tile=(64, 96), overlap=0), demo.decode(codes), atol=1e-6)


@pytest.mark.parametrize("tile,overlap", [(48, 16), (64, 32)])
def test_tiled_results_within_documented_bound(demo, tile, overlap):
    x = smooth_video()
    with torch.no_grad():
        codes = demo.encode(x)
        same = (demo.encode_tiled(x, tile, overlap) == codes).float().mean()
        diff = (demo.decode_tiled(codes, tile, overlap) - demo.decode(codes)).abs().max()
    assert same >= 0.90
    assert diff <= 0.02
    # and tiling is not a no-op: a result identical to untiled would mean tiles were not used
    assert same < 1.0 or diff > 0


def test_tiling_composes_with_streaming(demo):
    x = smooth_video(t=9, h=32, w=64)
    with torch.no_grad():
        whole = demo.encode_tiled(x, 32, 16)
        with demo.streaming():
            chunks = torch.cat([demo.encode_tiled(c, 32, 16) for c in demo.iter_video_chunks(x, 1)], dim=1)
    assert torch.equal(chunks, whole)


def test_bad_tile_sizes(demo):
    with pytest.raises(ValueError, match="multiples of 8"):
        demo.encode_tiled(smooth_video(), tile=30, overlap=16)
    with pytest.raises(ValueError, match="smaller than the tile"):
        demo.encode_tiled(smooth_video(), tile=32, overlap=32)
