"""The encoder's cached pad-frame prefix (Encoder._prefix_setup): the same latents as the plain path,
used only where it is exact, refreshed when the weights, frame size or precision change."""

import pytest
import torch

from magtok import VideoTokenizer, get_config


def video(b=2, t=5, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def plain_latents(tok, x):
    enc = tok.encoder
    ok, enc._prefix_ok = enc._prefix_ok, False
    try:
        return tok.encode_latents(x)
    finally:
        enc._prefix_ok = ok


@pytest.mark.parametrize("overrides", [
    {},
    {"antialias": True},  # CausalTimeBlur (replicate left context) before compress_time
    {"layers": ("residual", "compress_space", ("consecutive_residual", 2), "compress_time", "compress_time",
                "residual")},
])
def test_prefix_equals_the_plain_path(overrides):
    tok = VideoTokenizer(get_config("tiny").replace(**overrides)).eval()
    assert tok.encoder._prefix_ok
    calls = []
    orig = tok.encoder.forward_with_prefix
    tok.encoder.forward_with_prefix = lambda *a: calls.append(1) or orig(*a)
    r_t = tok.time_compression
    for x in (video(), video(b=1, t=1 + 2 * r_t, h=32, w=16, seed=1), video(b=3, seed=2)[:, :, :1]):
        with torch.no_grad():
            got, ref = tok.encode_latents(x), plain_latents(tok, x)
        assert got.shape == ref.shape and (got - ref).abs().max() < 1e-5
    assert len(calls) == 3  # the prefix path really ran


def test_prefix_follows_weight_changes_and_is_cached():
    tok = VideoTokenizer(get_config("tiny")).eval()
    x = video()
    with torch.no_grad():
        tok.encode_latents(x)
        key = tok.encoder._prefix_cache[0]
        tok.encode_latents(x)
        assert tok.encoder._prefix_cache[0] is key  # same frame size and weights: reused
        tok.encoder.conv_in.conv.bias.add_(0.5)
        got = tok.encode_latents(x)
        assert tok.encoder._prefix_cache[0] != key
        assert (got - plain_latents(tok, x)).abs().max() < 1e-5


def test_prefix_not_used_where_it_would_not_be_exact():
    # a time attention layer before compress_time keeps keys/values, not just left context
    tok = VideoTokenizer(get_config("tiny").replace(layers=("residual", "attend_time", "compress_time"))).eval()
    assert not tok.encoder._prefix_ok
    tok = VideoTokenizer(get_config("tiny").replace(pad_mode="replicate")).eval()
    assert not tok.encoder._prefix_ok  # the pad frames are copies of frame 0: data-dependent
    tok = VideoTokenizer(get_config("tiny")).eval()
    x = video()
    out = tok(x)  # autograd on (training): the plain path, gradients reach every frame
    out.recon.sum().backward()
    assert tok.encoder._prefix_cache is None
    with torch.no_grad():
        tok.encode_latents(x[:, :, 1:], video_contains_first_frame=False)  # continuation: no pad frames
        assert tok.encoder._prefix_cache is None
        with tok.streaming():
            tok.encode_latents(x)
        assert tok.encoder._prefix_cache is None
