"""Contract tests over every registered layer type, plus unit tests of the causal building blocks."""

import pytest
import torch

from magtok import VideoTokenizer, get_config
from magtok.layers.attention import FeedForward
from magtok.layers import (CausalConv3d, CausalConvTranspose3d, Conv3DMod, GateLoop, StreamingModule,
                           TimeAttention, TimeDownsample2x, TokenShift, start_streaming, stop_streaming)
from magtok.models.blocks import BLOCK_BUILDERS

LAYER_ARGS = {"consecutive_residual": ("consecutive_residual", 2)}


def config_with(name):
    entry = LAYER_ARGS.get(name, name)
    cond = name.startswith("cond_")
    return get_config("tiny").replace(
        layers=("compress_space", entry, "compress_time", entry),
        dim_cond=6 if cond else None)


@pytest.mark.parametrize("name", sorted(BLOCK_BUILDERS))
def test_every_layer_type_forward_backward_shapes_save_load(name, tmp_path):
    tok = VideoTokenizer(config_with(name))
    x = torch.rand(2, 3, 9, 8, 16) * 2 - 1
    cond = torch.randn(2, 6) if tok.needs_cond else None
    out = tok(x, cond=cond)
    assert out.recon.shape == x.shape
    r_t, r_s = tok.time_compression, tok.space_compression
    assert out.codes.shape == (2, 1 + 8 // r_t, 8 // r_s, 16 // r_s)
    (out.recon.square().mean() + out.aux_loss).backward()
    grads = [p.grad for p in tok.encoder.blocks.parameters()]
    assert grads and all(g is not None for g in grads), f"{name}: some encoder parameter got no gradient"
    tok.eval()
    tok.save_pretrained(tmp_path / name)
    back = VideoTokenizer.from_pretrained(tmp_path / name).eval()
    with torch.no_grad():
        assert torch.equal(back.encode(x, cond), tok.encode(x, cond))
        assert torch.allclose(back(x, cond).recon, tok(x, cond).recon, atol=1e-6)


def test_unknown_layer_name_lists_known_ones():
    cfg = get_config("tiny").replace(layers=("residual", "compress_spaec"))
    with pytest.raises(ValueError, match=r"unknown layer 'compress_spaec'.*known layers.*compress_space"):
        VideoTokenizer(cfg)


def test_conditioned_layer_without_dim_cond_is_a_clear_error():
    with pytest.raises(ValueError, match="set dim_cond"):
        VideoTokenizer(get_config("tiny").replace(layers=("cond_residual",)))


def test_conditioned_tokenizer_requires_cond():
    tok = VideoTokenizer(config_with("cond_residual"))
    with pytest.raises(ValueError, match="pass cond"):
        tok(torch.zeros(1, 3, 5, 8, 8))
    with pytest.raises(ValueError, match="cond has shape"):
        tok(torch.zeros(1, 3, 5, 8, 8), cond=torch.zeros(1, 5))


def test_cond_changes_the_output():
    tok = VideoTokenizer(config_with("cond_residual")).eval()
    x = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    with torch.no_grad():
        a = tok(x, cond=torch.zeros(1, 6)).recon
        b = tok(x, cond=torch.ones(1, 6)).recon
    assert (a - b).abs().max() > 1e-4


def _time_dependency(module, t=6, c=4, **kw):
    """Which input frames each output frame depends on (by gradient)."""
    x = torch.randn(1, c, t, 5, 5, requires_grad=True)
    y = module(x, **kw)
    deps = []
    for j in range(y.shape[2]):
        (g,) = torch.autograd.grad(y[:, :, j].sum(), x, retain_graph=True)
        deps.append(set((g.abs().sum(dim=(0, 1, 3, 4)) > 0).nonzero().flatten().tolist()))
    return deps


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_causal_conv_sees_only_the_past(pad_mode):
    deps = _time_dependency(CausalConv3d(4, 4, (3, 3, 3), pad_mode=pad_mode))
    for j, d in enumerate(deps):
        assert d == set(range(max(0, j - 2), j + 1))


def test_causal_conv_rejects_even_spatial_kernels_and_unknown_pad_mode():
    with pytest.raises(ValueError, match="odd"):
        CausalConv3d(2, 2, (3, 2, 3))
    with pytest.raises(ValueError, match="pad_mode"):
        CausalConv3d(2, 2, 3, pad_mode="reflect")


def test_time_downsample_grouping():
    deps = _time_dependency(TimeDownsample2x(4, 4), t=8)
    assert deps == [{0, 1}, {1, 2, 3}, {3, 4, 5}, {5, 6, 7}]


def test_causal_transposed_conv_is_causal():
    deps = _time_dependency(CausalConvTranspose3d(4, 4, 3, time_stride=2), t=4)
    assert len(deps) == 8
    for j, d in enumerate(deps):
        assert max(d) <= j // 2


def test_time_attention_and_gateloop_are_causal():
    for m in (TimeAttention(4, heads=2, dim_head=4), GateLoop(4)):
        for j, d in enumerate(_time_dependency(m)):
            assert max(d) == j


def test_modulated_conv_is_causal():
    m = Conv3DMod(4, kernel_size=3)
    cond = torch.randn(1, 4)
    for j, d in enumerate(_time_dependency(m, cond=cond)):
        assert d == set(range(max(0, j - 2), j + 1))


def _assert_state_owns_its_memory(m):
    """Carried state must not be a view of a chunk's activations: a view keeps the whole chunk
    alive until the next one (memory that grows with chunk size and fragments the heap)."""
    states = [t for s in m.modules() if isinstance(s, StreamingModule) for t in s._stream.values()]
    assert states
    for t in states:
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), t.shape


@pytest.mark.parametrize("make", [
    lambda: CausalConv3d(4, 4, 3, pad_mode="replicate"),
    lambda: TimeAttention(4, heads=2, dim_head=4),
    lambda: GateLoop(4),
    lambda: TimeDownsample2x(4, 6, antialias=True),
    lambda: TokenShift(FeedForward(4)),
], ids=["conv", "time_attention", "gateloop", "time_downsample", "token_shift"])
def test_streaming_state_gives_whole_clip_result_and_is_cleared(make):
    m = make()
    x = torch.randn(1, 4, 8, 3, 3)
    with torch.no_grad():
        whole = m(x)
        start_streaming(m)
        outs = [m(x[:, :, :2])]
        _assert_state_owns_its_memory(m)
        outs += [m(x[:, :, 2:4]), m(x[:, :, 4:])]
        _assert_state_owns_its_memory(m)
        parts = torch.cat(outs, dim=2)
        stop_streaming(m)
        assert torch.allclose(parts, whole, atol=1e-6)
        assert all(s._stream is None for s in m.modules() if isinstance(s, StreamingModule))
        assert torch.equal(m(x), whole)  # pure again


def test_bf16_short_clip_gradients_are_finite():
    """One-frame batches under CPU bf16 autocast: oneDNN's bf16 weight gradient gives NaNs for
    3-7 padded frames at 32 channels, 64x64; the causal conv runs those in float32."""
    from magtok.layers.conv import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(32, 32, 3)
    for t in (1, 5):
        conv.zero_grad()
        x = torch.randn(2, 32, t, 64, 64, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().square().mean().backward()
        assert torch.isfinite(conv.conv.weight.grad).all() and torch.isfinite(x.grad).all()
