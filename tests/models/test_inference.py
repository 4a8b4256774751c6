"""tokenizer.for_inference(): compiled float32 gives the same codes, bfloat16 is close, and a stale or
misused InferenceTokenizer says what to do. (Speed is measured in benchmarks/bench_peer.py.)"""

import pytest
import torch

from magtok import VideoTokenizer, get_config
from magtok.models.inference import InferenceTokenizer, parse_inference_dtype


def video(b=2, t=5, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def build(name="tiny", seed=0):
    torch.manual_seed(seed)
    return VideoTokenizer(get_config(name)).eval()


@pytest.mark.parametrize("name", ["tiny", "tiny-fsq", "tiny-vq"])
def test_compiled_float32_equals_eager(name):
    tok = build(name)
    x = video()
    with torch.no_grad():
        codes, recon = tok.encode(x), tok.decode(tok.encode(x))
    fast = tok.for_inference()
    assert isinstance(fast, InferenceTokenizer) and fast.compile
    got = fast.encode(x)
    assert fast.compile_error is None, fast.compile_error  # it really ran compiled
    assert got.dtype == torch.int64 and torch.equal(got, codes)
    dec = fast.decode(codes)
    assert dec.dtype == torch.float32 and dec.shape == recon.shape
    assert (dec - recon).abs().max() < 1e-5
    assert torch.equal(fast.decode_from_code_indices(codes), dec)


def test_images_and_continuation_chunks_match_the_tokenizer():
    tok = build()
    fast = tok.for_inference(compile=False)
    img = video(t=5)[:, :, 0]
    with torch.no_grad():
        assert torch.equal(fast.encode(img), tok.encode(img))
        chunk = video(t=4)
        assert torch.equal(fast.encode(chunk, video_contains_first_frame=False),
                           tok.encode(chunk, video_contains_first_frame=False))


def test_bfloat16_is_close_and_returns_float32():
    tok = build()
    x = video(b=2, t=9, h=32, w=32)
    with torch.no_grad():
        codes = tok.encode(x)
        recon = tok.decode(codes)
    fast = tok.for_inference(compile=False, dtype="bf16")
    assert fast.dtype == torch.bfloat16
    agree = (fast.encode(x) == codes).float().mean().item()
    assert agree > 0.9, agree  # measured 0.997 on this input; sign flips only near LFQ boundaries
    dec = fast.decode(codes)
    assert dec.dtype == torch.float32
    assert (dec - recon).abs().max() < 0.05  # bfloat16 has an 8-bit mantissa
    assert (dec - recon).abs().max() > 0  # and it did run in bfloat16


def test_inputs_are_checked_like_the_tokenizer():
    fast = build().for_inference(compile=False)
    with pytest.raises(ValueError, match="needs 1 \\+ 2k frames"):
        fast.encode(video(t=6))
    with pytest.raises(ValueError, match="NaN or Inf"):
        x = video()
        x[0, 0, 0, 0, 0] = float("nan")
        fast.encode(x)
    with pytest.raises(ValueError, match="codes must be a torch.Tensor"):
        fast.decode([[1, 2]])
    with pytest.raises(ValueError, match="out of range|range"):
        fast.decode(torch.full((1, 2, 2, 3), 10**6))


def test_bad_dtype_is_named():
    with pytest.raises(ValueError, match="float16.*'float32'.*'bfloat16'"):
        parse_inference_dtype(torch.float16)
    with pytest.raises(ValueError, match="'fp64'"):
        build().for_inference(dtype="fp64")
    assert parse_inference_dtype("FP32") == torch.float32


def test_changed_weights_or_train_mode_are_refused():
    tok = build()
    fast = tok.for_inference(compile=False)
    x = video()
    fast.encode(x)
    with torch.no_grad():
        next(tok.parameters()).add_(0.01)  # an optimizer step would do the same
    with pytest.raises(ValueError, match="weights changed.*for_inference\\(\\) again"):
        fast.encode(x)
    fast = tok.for_inference(compile=False)
    fast.encode(x)
    tok.train()
    with pytest.raises(ValueError, match="train mode"):
        fast.decode(torch.zeros(1, 2, 2, 3, dtype=torch.long))


def test_streaming_is_refused():
    tok = build()
    with tok.streaming():
        with pytest.raises(ValueError, match="outside the with-block"):
            tok.for_inference()
    fast = tok.for_inference(compile=False)
    with tok.streaming():
        with pytest.raises(ValueError, match="encode_chunked"):
            fast.encode(video())


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    tok = build()
    x = video()
    with torch.no_grad():
        codes = tok.encode(x)

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: CppCompileError: g++ not found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    fast = tok.for_inference()
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*g\\+\\+ not found.*eagerly"):
        got = fast.encode(x)
    assert torch.equal(got, codes)
    assert "g++ not found" in fast.compile_error
    assert torch.equal(fast.encode(x), codes)  # later calls: eager, no second warning needed
    assert "eager" in repr(fast)
