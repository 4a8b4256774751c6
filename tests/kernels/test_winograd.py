"""The Winograd F(4x4, 3x3) causal convolution kernel (magtok.kernels.winograd).

The first test builds the C++ extension (~30 s once per machine; cached under ~/.cache/magtok).
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

from magtok import VideoTokenizer
from magtok.configs import QuantizerConfig, TokenizerConfig
from magtok.kernels import conv_algorithm, get_conv_algorithm, set_conv_algorithm, winograd
from magtok.layers import CausalConv3d, start_streaming, stop_streaming


def _direct(x, w, b, replicate):
    return F.conv3d(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate" if replicate else "constant"), w, b)


@pytest.mark.parametrize("shape", [(1, 16, 3, 32, 32), (2, 5, 6, 9, 7), (1, 24, 4, 30, 34)])
@pytest.mark.parametrize("replicate", [False, True])
def test_kernel_matches_direct_convolution(shape, replicate):
    torch.manual_seed(0)
    b, c, t, h, w = shape
    co = c + 3
    x = torch.randn(b, c, t, h, w)
    weight = torch.randn(co, c, 3, 3, 3) / (27 * c) ** 0.5
    bias = torch.randn(co)
    ref = _direct(x, weight, bias, replicate)
    out = winograd.causal_conv3d(x, winograd.transform_weight(weight), bias, replicate)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    no_bias = winograd.causal_conv3d(x, winograd.transform_weight(weight), None, replicate)
    assert torch.allclose(no_bias + bias.view(1, -1, 1, 1, 1), out, atol=1e-5)


def test_algorithm_switch_is_scoped_and_validated():
    assert get_conv_algorithm() == "direct"
    with conv_algorithm("winograd"):
        assert get_conv_algorithm() == "winograd"
    assert get_conv_algorithm() == "direct"
    with pytest.raises(ValueError, match="unknown convolution algorithm 'fft'"):
        set_conv_algorithm("fft")


def _count_kernel_calls(monkeypatch):
    calls = []
    real = winograd.causal_conv3d

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd, "causal_conv3d", spy)
    return calls


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_causal_conv_uses_it_only_where_it_applies(monkeypatch, pad_mode):
    torch.manual_seed(0)
    calls = _count_kernel_calls(monkeypatch)
    conv = CausalConv3d(16, 16, 3, pad_mode=pad_mode)
    x = torch.randn(1, 16, 5, 32, 32)
    with torch.no_grad():
        ref = conv(x)
        assert calls == []  # default: direct
        with conv_algorithm("winograd"):
            out = conv(x)
            assert len(calls) == 1
            conv(x[..., :8, :8])  # 4 tiles < MIN_TILES: direct
            assert len(calls) == 1
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    with conv_algorithm("winograd"):  # autograd needs the direct kernel's backward
        conv(x).sum().backward()
    assert len(calls) == 1 and conv.conv.weight.grad is not None


def test_transformed_weight_follows_weight_updates():
    torch.manual_seed(0)
    conv = CausalConv3d(16, 16, 3)
    x = torch.randn(1, 16, 3, 32, 32)

    def both():
        with torch.no_grad():
            ref = conv(x)
            with conv_algorithm("winograd"):
                out = conv(x)
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
        return out

    first = both()
    with torch.no_grad():
        conv.conv.weight.mul_(-2.0)  # in place: the cached transform must be refreshed
    assert torch.allclose(both(), -2 * first + 3 * conv.conv.bias.view(1, -1, 1, 1, 1), atol=1e-4)
    conv.conv.weight = torch.nn.Parameter(torch.randn_like(conv.conv.weight))  # replaced
    both()


def test_streaming_with_winograd_equals_whole_clip():
    torch.manual_seed(0)
    conv = CausalConv3d(16, 16, 3)
    x = torch.randn(1, 16, 9, 32, 32)
    with torch.no_grad(), conv_algorithm("winograd"):
        whole = conv(x)
        start_streaming(conv)
        parts = torch.cat([conv(x[:, :, :1]), conv(x[:, :, 1:5]), conv(x[:, :, 5:])], dim=2)
        stop_streaming(conv)
    # equal up to float rounding: a chunk's frames use the ring slots in another order
    assert (parts - whole).abs().max() <= 1e-5 * whole.abs().max()


def _tokenizer():
    torch.manual_seed(0)
    cfg = TokenizerConfig(layers=("residual", ("compress_space", 32), "compress_time", "residual"),
                          init_dim=16, max_dim=32, quantizer=QuantizerConfig(kind="lfq", codebook_size=2**8))
    return VideoTokenizer(cfg).eval()


def test_tokenizer_for_inference_winograd_agrees_with_encode_decode(monkeypatch):
    calls = _count_kernel_calls(monkeypatch)
    tok = _tokenizer()
    x = torch.rand(1, 3, 5, 64, 48) * 2 - 1
    codes = tok.encode(x)
    video = tok.decode(codes)
    fast = tok.for_inference(winograd=True)
    assert fast.winograd and not fast.compile and "winograd" in repr(fast)
    fast_codes = fast.encode(x)
    assert len(calls) >= 2  # the full-resolution residual conv and the one after compress_space
    assert (fast_codes == codes).float().mean() >= 0.999
    assert (fast.decode(codes) - video).abs().max() < 1e-4
    assert get_conv_algorithm() == "direct"  # scoped to the calls


def test_for_inference_winograd_rejects_what_it_cannot_do():
    tok = _tokenizer()
    with pytest.raises(ValueError, match="runs eagerly"):
        tok.for_inference(winograd=True, compile=True)
    with pytest.raises(ValueError, match="float32"):
        tok.for_inference(winograd=True, dtype="bfloat16")


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension as cpp

    monkeypatch.setattr(winograd, "_ext", None)
    monkeypatch.setattr(winograd, "_ext_error", None)

    def broken(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp, "load", broken)
    conv = CausalConv3d(16, 16, 3)
    x = torch.randn(1, 16, 3, 32, 32)
    with torch.no_grad():
        ref = conv(x)
        with conv_algorithm("winograd"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = conv(x)
            conv(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "Ninja is required" in messages[0] and "direct convolution" in messages[0]
    assert torch.equal(out, ref)
