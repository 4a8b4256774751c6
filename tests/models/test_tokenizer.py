import pytest
import torch

from magtok import TokenizerConfig, VideoTokenizer, get_config, list_configs

ALL_STREAMING_LAYERS = ("residual", "compress_space", "attend_time", "compress_time", "gateloop_time",
                        "attend_space", "linear_attend_space", "compress_time", ("consecutive_residual", 2))


def video(b=1, t=5, h=16, w=16):
    return torch.rand(b, 3, t, h, w) * 2 - 1


@pytest.fixture
def tiny():
    return VideoTokenizer(get_config("tiny")).eval()


def test_presets_are_registered_and_build():
    names = list_configs()
    assert {"tiny", "demo", "magvit2-17x128-lfq18"} <= set(names)
    for name in names:
        cfg = get_config(name)
        assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg  # config is data


def test_magvit2_preset_shapes():
    tok = VideoTokenizer(get_config("magvit2-17x128-lfq18"))
    assert tok.latent_shape(17, 128, 128) == (5, 16, 16)
    assert tok.codebook_size == 2**18 and tok.bits_per_token == 18
    assert tok.compression_ratio == pytest.approx(17 * 128 * 128 * 3 * 8 / (5 * 16 * 16 * 18))
    with torch.no_grad():  # a small input through the full-size network
        assert tok.eval().encode(video(t=5, h=16, w=24)).shape == (1, 2, 2, 3)


def test_unknown_preset():
    with pytest.raises(ValueError, match="known presets"):
        get_config("magvit3")


def test_config_unknown_key_is_named():
    d = get_config("tiny").to_dict()
    d["init_dims"] = 3
    with pytest.raises(ValueError, match="init_dims"):
        TokenizerConfig.from_dict(d)


def test_decode_of_encode_equals_forward(tiny):
    x = video(b=2)
    with torch.no_grad():
        out = tiny(x)
        assert torch.equal(tiny.encode(x), out.codes)
        assert torch.allclose(tiny.decode(out.codes), out.recon, atol=1e-6)
        assert torch.allclose(tiny.decode_from_code_indices(out.codes), out.recon, atol=1e-6)


def test_causality_by_gradient():
    """Latent frame j depends on input frames <= j*r_t only, and every frame reaches a latent."""
    tok = VideoTokenizer(get_config("tiny").replace(layers=ALL_STREAMING_LAYERS))
    r_t = tok.time_compression
    assert r_t == 4
    x = video(t=17).requires_grad_(True)
    z = tok.encode_latents(x)
    assert z.shape[2] == 5
    for j in range(5):
        (g,) = torch.autograd.grad(z[:, :, j].sum(), x, retain_graph=True)
        frames = (g.abs().sum(dim=(0, 1, 3, 4)) > 0).nonzero().flatten().tolist()
        assert max(frames) == j * r_t, f"latent {j} depends on frames {frames}"
        assert 0 in frames


def test_image_tokens_equal_first_latent_frame(tiny):
    x = video(t=5)
    with torch.no_grad():
        img_codes = tiny.encode(x[:, :, 0])
        vid_codes = tiny.encode(x)
    assert img_codes.shape == (1, 1, 8, 8)
    assert torch.equal(img_codes[:, 0], vid_codes[:, 0])
    out = tiny(x[:, :, 0])
    assert out.recon.shape == (1, 3, 16, 16)  # images in, images out


def test_straight_through_gradients_reach_the_encoder():
    tok = VideoTokenizer(get_config("tiny"))
    out = tok(video())
    out.recon.square().mean().backward()  # reconstruction only, no aux loss
    g = tok.encoder.conv_in.conv.weight.grad
    assert g is not None and g.abs().sum() > 0


@pytest.mark.parametrize("h,w", [(16, 40), (24, 8)])
def test_non_square_inputs(tiny, h, w):
    x = video(t=3, h=h, w=w)
    with torch.no_grad():
        out = tiny(x)
    assert out.recon.shape == x.shape
    assert out.codes.shape == (1, 2, h // 2, w // 2)


def test_continuation_chunk_without_first_frame(tiny):
    x = video(t=4)
    with torch.no_grad():
        codes = tiny.encode(x, video_contains_first_frame=False)
        recon = tiny.decode(codes, video_contains_first_frame=False)
    assert codes.shape == (1, 2, 8, 8) and recon.shape == (1, 3, 4, 16, 16)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 16, 16), "expected"),
    (torch.zeros(1, 3, 5, 16, 16, 1), "expected"),
    (torch.zeros(1, 4, 5, 16, 16), "channels"),
    (torch.zeros(1, 3, 4, 16, 16), r"4 frames; this tokenizer needs 1 \+ 2k frames \(e.g. 3 or 5\)"),
    (torch.zeros(1, 3, 5, 15, 16), "not divisible by 2"),
    (torch.full((1, 3, 5, 16, 16), float("nan")), "NaN or Inf"),
    (torch.full((1, 3, 5, 16, 16), float("inf")), "NaN or Inf"),
    (torch.full((1, 3, 5, 16, 16), 200.0), r"\[-1, 1\]"),
    (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "dtype"),
])
def test_bad_inputs_raise_clear_value_errors(tiny, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode(bad)


def test_bad_codes(tiny):
    with pytest.raises(ValueError, match="out of range"):
        tiny.decode(torch.full((1, 2, 8, 8), 256))
    with pytest.raises(ValueError, match="shape"):
        tiny.decode(torch.zeros(1, 128, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.Tensor"):
        tiny.decode([[1, 2]])


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_streaming_equals_whole_clip(chunk):
    tok = VideoTokenizer(get_config("tiny").replace(layers=ALL_STREAMING_LAYERS, antialias=True,
                                                    pad_mode="replicate")).eval()
    x = video(t=1 + 4 * 6, w=24)
    with torch.no_grad():
        codes = tok.encode(x)
        recon = tok.decode(codes)
        assert torch.equal(tok.encode_chunked(x, chunk), codes)
        assert (tok.decode_chunked(codes, chunk) - recon).abs().max() < 1e-5
    assert tok._stream_pos is None


def test_streaming_with_separate_first_frame_path():
    tok = VideoTokenizer(get_config("tiny").replace(separate_first_frame_encoding=True)).eval()
    x = video(t=9)
    with torch.no_grad():
        codes = tok.encode(x)
        assert torch.equal(tok.encode_chunked(x, 1), codes)
        assert (tok.decode_chunked(codes, 1) - tok.decode(codes)).abs().max() < 1e-5


def test_streaming_does_not_nest(tiny):
    with tiny.streaming():
        with pytest.raises(RuntimeError, match="nest"):
            with tiny.streaming():
                pass


def test_save_pretrained_refuses_to_overwrite(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny.save_pretrained(tmp_path / "m")
    tiny.save_pretrained(tmp_path / "m", overwrite=True)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "model.safetensors"]


def test_from_pretrained_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a magtok model folder"):
        VideoTokenizer.from_pretrained(tmp_path)


def test_fingerprint_tracks_weights(tiny):
    a = tiny.fingerprint()
    assert a == tiny.fingerprint()
    with torch.no_grad():
        tiny.decoder.conv_out.conv.bias.add_(1e-3)
    assert tiny.fingerprint() != a


def test_checkpoint_holds_only_tokenizer_weights(tiny):
    keys = tiny.state_dict().keys()
    assert all(k.split(".")[0] in {"encoder", "decoder", "quantizer"} for k in keys)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_float64_and_float16_video_is_converted_to_the_weights_dtype(tiny, dtype):
    """Not a raw torch "Input type (double) and bias type (float)" error: the input is cast to float32."""
    x = video()
    with torch.no_grad():
        codes = tiny.encode(x.to(dtype))
        ref = tiny.encode(x.to(dtype).float())
        out = tiny(x.to(dtype))
    assert torch.equal(codes, ref)
    assert out.recon.dtype == torch.float32 and out.recon.shape == x.shape


@pytest.mark.parametrize("call", ["encode", "forward"])
@pytest.mark.parametrize("bad", [torch.zeros(0, 3, 5, 16, 16), torch.zeros(0, 3, 16, 16), torch.zeros(1, 3, 0, 16, 16)])
def test_empty_batches_name_the_expected_shape(tiny, call, bad):
    fn = tiny.encode if call == "encode" else tiny
    with pytest.raises(ValueError, match=r"empty .*\(B, 3, 1 \+ k\*2, H, W\).*in \[-1, 1\]"):
        fn(bad)


@pytest.mark.parametrize("bad", [[[0.0]], 0.5, None])
def test_a_non_tensor_video_names_the_expected_shape(tiny, bad):
    for fn in (tiny.encode, tiny):
        with pytest.raises(ValueError, match=r"torch.Tensor video \(B, 3, 1 \+ k\*2, H, W\).*in \[-1, 1\]"):
            fn(bad)


def test_empty_codes_are_refused(tiny):
    with pytest.raises(ValueError, match=r"codes are empty .*\(B, T', H', W'\)"):
        tiny.decode(torch.zeros(0, 3, 8, 8, dtype=torch.long))
