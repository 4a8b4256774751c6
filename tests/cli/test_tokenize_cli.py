"""`magtok tokenize / detokenize / reconstruct / tokenize-dataset / info` on real clips.

Most tests call ``magtok.cli.main.main([...])`` in-process (fast); one runs the console entry in a
subprocess and one launches two processes with torch.distributed.run. Sizes are kept tiny (the
`tiny` preset, short side 32, a few frames) so that the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from magtok import VideoTokenizer
from magtok.data import (ShardReader, center_crop, load_tokens, probe_video, read_video, resize_short_side,
                         sample_images, save_tokens, to_tensor, tokenizer_fingerprint)

from .conftest import leftovers

REPO = Path(__file__).resolve().parents[2]


def _tok(model_dir) -> VideoTokenizer:
    return VideoTokenizer.from_pretrained(model_dir).eval()


def _frames(path) -> tuple[int, float, int, int]:
    info = probe_video(path, mode="decode")
    return info.num_frames, info.fps, info.height, info.width


# ============================================================================ round trips
def test_round_trip_non_square_clip(cli, tiny_model, clips, tmp_path):
    """bikes.mp4 (272x640, 25 fps): 9 frames = 1 + 4 r_t, short side 32 -> 32x75 -> crop 32x74."""
    tokens, video = tmp_path / "bikes.tokens", tmp_path / "bikes.mp4"
    code, out, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tokens,
                         "--short-side", "32", "--max-frames", "9")
    assert code == 0, err
    assert "32x75 centre-cropped to 32x74" in err
    tf = load_tokens(tokens)
    h = tf.header
    tok = _tok(tiny_model)
    assert tuple(tf.codes.shape) == (5, 16, 37) == tok.latent_shape(9, 32, 74)
    assert h["tokenizer_id"] == tok.fingerprint() == h["extra"]["tokenizer"]
    assert h["tokenizer_fingerprint"] == tokenizer_fingerprint(tok.fingerprint(), tok.config.to_dict())
    assert h["config"] == json.loads(json.dumps(tok.config.to_dict()))
    assert h["extra"]["model"] == str(Path(tiny_model).resolve())
    assert h["extra"]["frames"] == 9 and "frames_policy" not in h["extra"]
    assert h["source"] == {"frames": 250, "fps": 25.0, "height": 272, "width": 640}
    assert h["clip"] == {"start": 0, "fps": 25.0, "resize": [32, 75], "crop": [0, 0, 32, 74]}

    code, out, err = cli("detokenize", tokens, "-o", video)   # model found through the header
    assert code == 0, err
    assert _frames(video) == (9, 25.0, 32, 74)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("policy,grid_t,frames_out", [("pad", 7, 12), ("drop", 6, 11)])
def test_frame_count_not_1_plus_k_rt(cli, tiny_model, clips, tmp_path, policy, grid_t, frames_out):
    """bigbuckbunny (720x1280) cut to 12 frames (not 1 + 2k): pad gives 12 frames back, drop 11."""
    tokens, video = tmp_path / "bbb.tokens", tmp_path / "bbb.mp4"
    code, _, err = cli("tokenize", clips["bigbuckbunny"], "--model", tiny_model, "-o", tokens,
                       "--short-side", "32", "--max-frames", "12", "--frames-policy", policy, "-q")
    assert code == 0, err
    h = load_tokens(tokens).header
    assert h["grid"] == [grid_t, 16, 28]
    assert h["extra"]["frames"] == 12 and h["extra"]["frames_policy"] == policy
    assert h["clip"]["resize"] == [32, 57] and h["clip"]["crop"] == [0, 0, 32, 56]
    code, _, err = cli("detokenize", tokens, "-o", video, "--model", tiny_model, "--chunk-latents", "2")
    assert code == 0, err
    assert _frames(video) == (frames_out, 25.0, 32, 56)


def test_fps_resampling_and_start_survive_the_round_trip(cli, tiny_model, clips, tmp_path):
    tokens, video = tmp_path / "c.tokens", tmp_path / "c.mp4"
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tokens, "--size", "33", "40",
                       "--fps", "12.5", "--start", "10", "--max-frames", "5", "-q")
    assert code == 0, err
    assert "--size 33 40 rounded down to 32x40" in err
    h = load_tokens(tokens).header
    assert h["clip"]["fps"] == 12.5 and h["clip"]["start"] == 10 and h["source"]["fps"] == 25.0
    assert h["clip"]["crop"][2:] == [32, 40]
    assert cli("detokenize", tokens, "-o", video)[0] == 0
    assert _frames(video) == (5, 12.5, 32, 40)


def test_streaming_equals_whole_clip_codes(cli, tiny_model, clips, tmp_path):
    """Chunk size is a memory knob: 1 latent per chunk, 3, or the whole clip give the same codes, which
    equal tok.encode of the clip read and resized in one piece."""
    codes = []
    for n in (1, 3, 100):
        out = tmp_path / f"n{n}.tokens"
        code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", out, "--short-side", "32",
                           "--max-frames", "9", "--chunk-latents", n, "-q")
        assert code == 0, err
        codes.append(load_tokens(out).codes)
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])
    frames, _ = read_video(clips["bikes"], num_frames=9)
    x = center_crop(resize_short_side(to_tensor(frames), 32), (32, 74))
    with torch.no_grad():
        whole = _tok(tiny_model).encode(x[None])[0]
    assert torch.equal(codes[0], whole)
    # and decoding in chunks equals decoding the whole grid
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert cli("detokenize", tmp_path / "n1.tokens", "-o", a, "--chunk-latents", "1", "-q")[0] == 0
    assert cli("detokenize", tmp_path / "n1.tokens", "-o", b, "--chunk-latents", "50", "-q")[0] == 0
    fa, _ = read_video(a)
    fb, _ = read_video(b)
    # float32 results of different chunkings can differ in the last bit (oneDNN picks kernels by shape),
    # which can move a pixel across a uint8 rounding boundary: at most 1 level, and rarely
    diff = np.abs(fa.astype(int) - fb.astype(int))
    assert fa.shape == (9, 32, 74, 3) and diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_winograd_option_reaches_the_convolutions(cli, tiny_model, clips, tmp_path, monkeypatch):
    from magtok.kernels import get_conv_algorithm, winograd

    seen = []
    real = winograd.applies
    monkeypatch.setattr(winograd, "applies", lambda conv, x: seen.append(get_conv_algorithm()) or real(conv, x))
    a, b = tmp_path / "a.tokens", tmp_path / "b.tokens"
    args = ("--model", tiny_model, "--short-side", "32", "--max-frames", "9")
    assert cli("tokenize", clips["bikes"], "-o", a, *args)[0] == 0
    assert seen and set(seen) == {"direct"}
    seen.clear()
    assert cli("tokenize", clips["bikes"], "-o", b, *args, "--winograd")[0] == 0
    assert seen and set(seen) == {"winograd"}
    assert get_conv_algorithm() == "direct"
    assert (load_tokens(a).codes == load_tokens(b).codes).float().mean() >= 0.999


def test_tiling_option(cli, tiny_model, clips, tmp_path):
    tokens, video = tmp_path / "t.tokens", tmp_path / "t.mp4"
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tokens, "--short-side", "32",
                       "--max-frames", "5", "--tile", "32", "--tile-overlap", "8", "--chunk-latents", "2", "-q")
    assert code == 0, err
    tf = load_tokens(tokens)
    assert tf.header["extra"]["tile"] == [32, 8]
    frames, _ = read_video(clips["bikes"], num_frames=5)
    x = center_crop(resize_short_side(to_tensor(frames), 32), (32, 74))[None]
    tok = _tok(tiny_model)
    tiled = tok.encode_tiled(x, 32, 8)[0]
    assert torch.equal(tf.codes, tiled)                      # streaming tiles == whole-clip tiles
    untiled = tok.encode(x)[0]
    assert (tf.codes == untiled).float().mean() > 0.5        # an approximation of the untiled codes
    code, _, err = cli("detokenize", tokens, "-o", video, "--tile", "32", "--tile-overlap", "8", "-q")
    assert code == 0, err
    assert _frames(video) == (5, 25.0, 32, 74)
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tmp_path / "u.tokens",
                       "--short-side", "32", "--max-frames", "3", "--tile", "15")
    assert code == 2 and "multiples of r_s=2" in err


def test_several_videos_go_into_a_folder_and_images_work(cli, tiny_model, clips, tmp_path):
    img = sample_images(tmp_path / "img", names=("coffee",))["coffee"]
    out = tmp_path / "toks"
    code, stdout, err = cli("tokenize", clips["bikes"], clips["carphone_pristine"], img, "--model", tiny_model,
                            "-o", out, "--short-side", "32", "--max-frames", "3", "-q")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".tokens")
    assert names == ["bikes.tokens", "carphone_pristine.tokens", "coffee.tokens"]
    h = load_tokens(out / "carphone_pristine.tokens").header
    assert h["source"]["fps"] == pytest.approx(30000 / 1001) and h["grid"] == [2, 16, 19]
    hi = load_tokens(out / "coffee.tokens").header
    assert hi["source"]["fps"] == 0 and hi["grid"][0] == 1 and hi["extra"]["frames"] == 1
    assert cli("detokenize", out / "coffee.tokens", "-o", tmp_path / "coffee.png", "-q")[0] == 0
    assert (tmp_path / "coffee.png").stat().st_size > 0
    assert cli("detokenize", out / "carphone_pristine.tokens", "-o", tmp_path / "car.mp4", "-q")[0] == 0
    n, fps, _, _ = _frames(tmp_path / "car.mp4")
    assert n == 3 and fps == pytest.approx(30000 / 1001)


def test_reconstruct_prints_psnr_ssim_and_writes_side_by_side(cli, tiny_model, clips, tmp_path):
    out = tmp_path / "rec.mp4"
    code, stdout, err = cli("reconstruct", clips["bikes"], "--model", tiny_model, "-o", out, "--short-side", "32",
                            "--max-frames", "6", "--side-by-side", "--chunk-latents", "2", "-q")
    assert code == 0, err
    assert "PSNR" in stdout and "SSIM" in stdout
    assert _frames(out) == (6, 25.0, 32, 148)
    # the printed PSNR is the per-frame mean of the decoded tokens vs the resized input
    from magtok.metrics import psnr
    frames, _ = read_video(clips["bikes"], num_frames=6)
    x = center_crop(resize_short_side(to_tensor(frames), 32), (32, 74))[None]
    x = torch.cat([x, x[:, :, -1:]], dim=2)                      # padded to 7 = 1 + 3 r_t
    tok = _tok(tiny_model)
    with torch.no_grad():
        recon = tok.decode(tok.encode(x)).clamp(-1, 1)[:, :, :6]
    want = float(psnr(recon, x[:, :, :6], max_db=100).mean())
    got = float(stdout.split("PSNR")[1].split("dB")[0])
    assert got == pytest.approx(want, abs=0.01)
    assert cli("reconstruct", clips["bikes"], "--model", tiny_model, "-o", out, "--short-side", "32",
               "--max-frames", "3")[0] == 2                        # exists: refused


def test_info_for_model_tokens_and_shards(cli, tiny_model, clips, tmp_path):
    code, out, err = cli("info", tiny_model)
    assert code == 0, err
    tok = _tok(tiny_model)
    assert tok.fingerprint() in out and "r_t=2" in out and "r_s=2" in out and "70,135" in out
    assert "codebook size 256" in out and "compression ratio 20.0x" in out
    tokens = tmp_path / "b.tokens"
    assert cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tokens, "--short-side", "32",
               "--max-frames", "5", "-q")[0] == 0
    code, out, _ = cli("info", tokens, "--json")
    d = json.loads(out)
    assert d["tokenizer"] == tok.fingerprint() and d["grid"] == [3, 16, 37] and d["bits_per_token"] == 8
    assert d["payload_bytes"] == 3 * 16 * 37 and d["file_bytes"] > d["payload_bytes"]
    assert d["source"]["frames"] == 250 and d["clip"]["crop"] == [0, 0, 32, 74]
    code, out, _ = cli("info", tokens)
    assert "tokenizer:" in out and "272x640" in out and "packed payload" in out


# ============================================================================ finding the model
def test_detokenize_finds_the_model_or_refuses(cli, tiny_model, other_model, clips, tmp_path, monkeypatch):
    model = tmp_path / "models" / "mine"
    shutil.copytree(tiny_model, model)
    tokens = tmp_path / "b.tokens"
    assert cli("tokenize", clips["bikes"], "--model", model, "-o", tokens, "--short-side", "32",
               "--max-frames", "3", "-q")[0] == 0
    tok_id = _tok(model).fingerprint()
    # another tokenizer given explicitly: refused, naming both ids
    other_id = _tok(other_model).fingerprint()
    code, _, err = cli("detokenize", tokens, "-o", tmp_path / "x.mp4", "--model", other_model)
    assert code == 2 and tok_id in err and other_id in err and "Traceback" not in err
    # the recorded model folder is gone and nothing else is known: refused, naming the id and --model
    moved = tmp_path / "elsewhere" / "zoo" / "mine"
    moved.parent.mkdir(parents=True)
    model.rename(moved)
    code, _, err = cli("detokenize", tokens, "-o", tmp_path / "x.mp4")
    assert code == 2 and tok_id in err and "--model" in err and "MAGTOK_MODEL_PATH" in err
    # a folder of model folders in $MAGTOK_MODEL_PATH (with another tokenizer in it too)
    shutil.copytree(other_model, moved.parent / "a-other")
    monkeypatch.setenv("MAGTOK_MODEL_PATH", os.pathsep.join([str(tmp_path / "nowhere"), str(tmp_path / "elsewhere")]))
    code, _, err = cli("detokenize", tokens, "-o", tmp_path / "x.mp4", "-q")
    assert code == 0, err
    assert _frames(tmp_path / "x.mp4")[0] == 3
    assert leftovers(tmp_path) == []


# ============================================================================ bad input
def _faststart(path, frames, fps=25):
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    frames = np.random.default_rng(1).integers(0, 256, (30, 32, 48, 3), dtype=np.uint8)
    _faststart(d / "full.mp4", frames)
    data = (d / "full.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: int(len(data) * 0.6)])
    out = av.open(str(d / "noframes.mp4"), "w", format="mp4")       # a container without frames
    s = out.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    out.start_encoding()
    out.close()
    return {k: d / f"{k}.mp4" for k in ("empty", "garbage", "truncated", "noframes")} | {"missing": d / "missing.mp4"}


@pytest.mark.parametrize("name,message", [
    ("empty", "not a readable video"), ("garbage", "not a readable video"),
    ("noframes", "cannot read"), ("missing", "no such file")])
def test_bad_videos_give_one_message_and_no_output(cli, tiny_model, bad_videos, tmp_path, name, message):
    out = tmp_path / "out"
    out.mkdir()
    for cmd, target in (("tokenize", out / "v.tokens"), ("reconstruct", out / "v.mp4")):
        code, stdout, err = cli(cmd, bad_videos[name], "--model", tiny_model, "-o", target, "--short-side", "16")
        assert code == 2, (cmd, err)
        assert message in err and bad_videos[name].name in err and "Traceback" not in err
        assert list(out.iterdir()) == []


def test_a_cut_short_video_is_used_with_the_frames_that_decode(cli, tiny_model, bad_videos, tmp_path):
    """A file whose container promises more frames than decode (here: cut to 60% of its bytes) is
    tokenized and reconstructed from the frames that decode, with one warning giving both counts; a
    start past the frames that decode still fails, in one line naming both counts and the fix."""
    path = bad_videos["truncated"]
    info = probe_video(path)
    decodable = probe_video(path, mode="decode").num_frames       # counted independently, by decoding
    assert info.declared_frames == 30 and 0 < decodable < 30 and info.num_frames == decodable
    warning = f"the container declares 30 frames but only {decodable} decode"
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli("reconstruct", path, "--model", tiny_model, "-o", out / "v.mp4", "--short-side", "16")
    assert code == 0, err
    assert err.count(warning) == 1 and path.name in err and "Traceback" not in err
    assert _frames(out / "v.mp4")[0] == decodable
    code, _, err = cli("tokenize", path, "--model", tiny_model, "-o", out / "v.tokens", "--short-side", "16")
    assert code == 0, err
    assert err.count(warning) == 1
    h = load_tokens(out / "v.tokens").header
    assert h["source"]["frames"] == decodable and h["extra"]["frames"] == decodable
    assert h["extra"]["declared_frames"] == 30
    code, _, err = cli("tokenize", path, "--model", tiny_model, "-o", out / "w.tokens", "--short-side", "16",
                       "--start", decodable)
    assert code == 2 and "Traceback" not in err
    assert f"--start {decodable} is past the end of {path}" in err
    assert f"{decodable} frames decode; the container declares 30" in err and "start=" not in err
    assert not (out / "w.tokens").exists()


def test_tokenize_a_cut_short_mp4_records_the_decodable_frames(cli, tiny_model, tmp_path):
    """An mp4 written by libx264 and cut short by bytes: ``tokenize`` records the frames that decode."""
    full, cut = tmp_path / "full.mp4", tmp_path / "cut.mp4"
    frames = np.random.default_rng(7).integers(0, 256, (25, 24, 32, 3), dtype=np.uint8)
    _faststart(full, frames)
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    decodable = probe_video(cut, mode="decode").num_frames              # every frame decoded and counted
    assert 0 < decodable < 25 and len(read_video(cut)[0]) == decodable
    assert probe_video(cut).declared_frames == 25
    code, _, err = cli("tokenize", cut, "--model", tiny_model, "-o", tmp_path / "cut.tokens", "-q")
    assert code == 0, err
    assert f"declares 25 frames but only {decodable} decode" in err
    tf = load_tokens(tmp_path / "cut.tokens")
    assert tf.header["source"]["frames"] == decodable and tf.header["extra"]["frames"] == decodable
    r_t = 2                                                          # the tiny preset
    assert tf.codes.shape[0] == 1 + -(-(decodable - 1) // r_t)      # padded up to 1 + k r_t, nothing lost
    # tokenize-dataset, through a manifest: the file is usable, its row records the frames that decode
    (tmp_path / "vids").mkdir()
    cut.rename(tmp_path / "vids" / "cut.mp4")
    m = tmp_path / "m.parquet"
    assert cli("manifest", tmp_path / "vids", "-o", m, "-q")[0] == 0
    import pyarrow.parquet as pq
    row = pq.read_table(m).to_pylist()[0]
    assert row["error"] is None and (row["frames"], row["declared_frames"]) == (decodable, 25)
    code, _, err = cli("tokenize-dataset", m, "--model", tiny_model, "--out", tmp_path / "shards", "-q")
    assert code == 0, err
    rows = [r for p in (tmp_path / "shards").glob("part-*.parquet") for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 1 and rows[0]["source_frames"] == rows[0]["frames"] == decodable
    assert json.loads(rows[0]["extra"])["declared_frames"] == 25


def test_a_bad_video_among_good_ones_fails_before_any_output(cli, tiny_model, clips, bad_videos, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("tokenize", clips["bikes"], bad_videos["garbage"], "--model", tiny_model, "-o", out,
                       "--short-side", "32", "--max-frames", "3")
    assert code == 2 and "garbage.mp4" in err
    assert not any(p.suffix == ".tokens" for p in out.iterdir()) and leftovers(out) == []


def test_missing_or_broken_model(cli, clips, tmp_path):
    code, _, err = cli("tokenize", clips["bikes"], "--model", tmp_path / "nope", "-o", tmp_path / "a.tokens")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"xx")
    code, _, err = cli("tokenize", clips["bikes"], "--model", broken, "-o", tmp_path / "a.tokens")
    assert code == 2 and "config.json" in err and "Traceback" not in err
    assert not (tmp_path / "a.tokens").exists()


@pytest.fixture
def good_tokens(cli, tiny_model, clips, tmp_path) -> Path:
    p = tmp_path / "toks" / "good.tokens"
    p.parent.mkdir()
    assert cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", p, "--short-side", "32",
               "--max-frames", "3", "-q")[0] == 0
    return p


def test_damaged_token_files(cli, tiny_model, good_tokens, tmp_path):
    data = good_tokens.read_bytes()
    flipped = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]          # a payload byte
    cases = {"truncated": (data[:-40], "truncated"), "flipped": (flipped, "CRC"),
             "notokens": (b"hello world, not tokens", "not a magtok token file")}
    out = tmp_path / "out"
    out.mkdir()
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.tokens"
        bad.write_bytes(content)
        code, _, err = cli("detokenize", bad, "-o", out / "v.mp4", "--model", tiny_model)
        assert code == 2 and message in err and name in err and "Traceback" not in err, (name, err)
        code, _, err = cli("info", bad)
        assert code == 2 and message in err
    code, _, err = cli("detokenize", tmp_path / "missing.tokens", "-o", out / "v.mp4", "--model", tiny_model)
    assert code == 2 and "no such file" in err
    assert list(out.iterdir()) == []


def test_out_of_range_codes_are_refused(cli, tiny_model, tmp_path):
    tok = _tok(tiny_model)
    codes = torch.randint(0, 512, (3, 8, 8))
    codes[0, 0, 0] = 400
    p = tmp_path / "range.tokens"
    save_tokens(p, codes, 512, dict(tokenizer_id=tok.fingerprint(), config=tok.config.to_dict(), source_frames=5,
                                    fps=25.0, height=16, width=16))
    code, _, err = cli("detokenize", p, "-o", tmp_path / "v.mp4", "--model", tiny_model)
    assert code == 2 and "out of range" in err and "256" in err and "Traceback" not in err
    assert not (tmp_path / "v.mp4").exists() and leftovers(tmp_path) == []


def test_existing_outputs_are_refused_unless_overwrite(cli, tiny_model, clips, good_tokens, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"keep me")
    code, _, err = cli("detokenize", good_tokens, "-o", video)
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert video.read_bytes() == b"keep me"
    before = good_tokens.read_bytes()
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", good_tokens, "--short-side", "16")
    assert code == 2 and "exists" in err and good_tokens.read_bytes() == before
    assert cli("detokenize", good_tokens, "-o", video, "--overwrite", "-q")[0] == 0
    assert _frames(video)[0] == 3
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", good_tokens, "--short-side", "16",
                       "--max-frames", "3", "--overwrite", "-q")
    assert code == 0 and load_tokens(good_tokens).header["grid"] == [2, 8, 19]
    assert leftovers(tmp_path) == [] and leftovers(good_tokens.parent) == []


def test_a_failure_while_writing_leaves_no_partial_video(cli, tiny_model, good_tokens, tmp_path, monkeypatch):
    """Frames are written chunk by chunk into a hidden temporary file: a failure after the first chunk
    (here a decoder error; the same holds for Ctrl-C) removes it and leaves no output."""
    import magtok.pipeline.api as T
    real, calls = T._decode, []

    def failing(tok, codes, tile):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("decoder exploded")
        return real(tok, codes, tile)

    monkeypatch.setattr(T, "_decode", failing)
    out = tmp_path / "out"
    out.mkdir()
    # a RuntimeError is a bug, not a user error: magtok's main lets it through with its traceback
    with pytest.raises(RuntimeError, match="decoder exploded"):
        cli("detokenize", good_tokens, "-o", out / "v.mp4", "--chunk-latents", "1")
    assert len(calls) == 2
    assert list(out.iterdir()) == []


def test_unwritable_outputs(cli, tiny_model, clips, good_tokens, tmp_path):
    cases = [tmp_path / "no" / "such" / "dir" / "x", Path("/sys/magtok-test-x")]
    (tmp_path / "afile").write_text("")
    cases.append(tmp_path / "afile" / "x")
    for base in cases:
        for argv in (("tokenize", clips["bikes"], "--model", tiny_model, "-o", f"{base}.tokens", "--max-frames", "3"),
                     ("detokenize", good_tokens, "-o", f"{base}.mp4"),
                     ("reconstruct", clips["bikes"], "--model", tiny_model, "-o", f"{base}.mp4", "--max-frames", "3")):
            code, _, err = cli(*argv)
            assert code == 2 and "cannot write" in err and "Traceback" not in err, (argv, err)
    code, _, err = cli("detokenize", good_tokens, "-o", tmp_path / "v.avi")
    assert code == 2 and ".mp4" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(cli, good_tokens, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = cli("detokenize", good_tokens, "-o", ro / "v.mp4")
        assert code == 2 and "not writable" in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_console_entry_in_a_subprocess(tiny_model, tmp_path):
    """`python -m magtok.cli.main`: exit codes and one-line errors on stderr, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MAGTOK_DEBUG", None)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    r = subprocess.run([sys.executable, "-m", "magtok.cli.main", "tokenize", str(bad), "--model", str(tiny_model),
                        "-o", str(tmp_path / "x.tokens")], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("magtok tokenize: error:") and "bad.mp4" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.tokens").exists() and leftovers(tmp_path) == []


# ============================================================================ tokenize-dataset
@pytest.fixture(scope="module")
def dataset(tmp_path_factory, bad_videos) -> Path:
    clips = __import__("magtok.data", fromlist=["sample_videos"]).sample_videos()
    d = tmp_path_factory.mktemp("dataset")
    (d / "sub").mkdir()
    shutil.copy(clips["bikes"], d / "bikes.mp4")
    shutil.copy(clips["carphone_pristine"], d / "sub" / "carphone.mp4")
    shutil.copy(clips["bigbuckbunny"], d / "sub" / "bbb.mp4")
    sample_images(d / "photos", names=("coffee", "chelsea"))
    shutil.copy(bad_videos["garbage"], d / "sub" / "broken.mp4")
    (d / "notes.txt").write_text("not media")
    return d


DS_ARGS = ("--short-side", "16", "--max-frames", "4", "-q")
GOOD = ["bikes.mp4", "photos/chelsea.png", "photos/coffee.png", "sub/bbb.mp4", "sub/carphone.mp4"]


def _contents(folder) -> dict:
    """id -> (codes, code_shape, extra), read with pyarrow alone."""
    import pyarrow.parquet as pq
    parts = sorted(p for p in Path(folder).glob("part-*.parquet"))
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    return {r["id"]: (r["codes"], r["code_shape"], json.loads(r["extra"] or "{}")) for r in rows}


def _failures(folder) -> dict:
    import pyarrow.parquet as pq
    return {r["source"]: r["reason"] for p in sorted(Path(folder).glob("failures-*.parquet"))
            for r in pq.read_table(p).to_pylist()}


@pytest.fixture(scope="module")
def one_process_shards(dataset, tiny_model, tmp_path_factory) -> Path:
    from magtok.cli.main import main
    out = tmp_path_factory.mktemp("shards") / "one"
    # the broken file makes the run end with exit code 1; everything else is tokenized
    assert main(["tokenize-dataset", str(dataset), "--model", str(tiny_model), "--out", str(out), *DS_ARGS]) == 1
    return out


def test_tokenize_dataset_one_process(one_process_shards, cli, dataset, tiny_model):
    c = _contents(one_process_shards)
    assert sorted(c) == GOOD
    assert c["bikes.mp4"][1] == [3, 8, 19] and len(c["bikes.mp4"][0]) == 3 * 8 * 19     # 4 frames padded to 5
    assert c["bikes.mp4"][2] == {"frames": 4, "frames_policy": "pad"}
    assert c["photos/coffee.png"][1][0] == 1
    fails = _failures(one_process_shards)
    assert list(fails) == ["sub/broken.mp4"] and "not a readable video" in fails["sub/broken.mp4"]
    doc = json.loads((one_process_shards / "tokenizer.json").read_text())
    assert doc["tokenizer_id"] == _tok(tiny_model).fingerprint()
    # a second run writes nothing again, skips the failed file (exit 1: the output is still incomplete)
    parts = sorted(p.name for p in one_process_shards.iterdir())
    code, out, err = cli("tokenize-dataset", dataset, "--model", tiny_model, "--out", one_process_shards, *DS_ARGS)
    assert code == 1
    assert "0 inputs tokenized (0 rows), 5 already present, 0 failed, 1 failed earlier" in err
    assert "--retry-failed" in err and "sub/broken.mp4" in err
    assert sorted(p.name for p in one_process_shards.iterdir()) == parts
    code, out, _ = cli("info", one_process_shards)
    assert code == 0 and "rows:            5" in out and "failures:        1" in out


def test_tokenize_dataset_interrupted_then_resumed(one_process_shards, cli, dataset, tiny_model, tmp_path):
    out = tmp_path / "resumed"
    code, _, err = cli("tokenize-dataset", dataset, "--model", tiny_model, "--out", out, "--limit", "2", *DS_ARGS)
    assert code == 0 and "2 inputs tokenized" in err
    assert len(_contents(out)) == 2
    code, _, err = cli("tokenize-dataset", dataset, "--model", tiny_model, "--out", out, *DS_ARGS)
    assert code == 1 and "3 inputs tokenized (3 rows), 2 already present, 1 failed" in err
    assert _contents(out) == _contents(one_process_shards)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tokenize_dataset_two_processes_equal_one(one_process_shards, dataset, tiny_model, tmp_path):
    """torchrun sets RANK / WORLD_SIZE: each process takes its shard of the inputs."""
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "magtok.cli.main", "tokenize-dataset", str(dataset),
           "--model", str(tiny_model), "--out", str(out), *DS_ARGS]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode != 0 and "sub/broken.mp4: cannot read" in r.stderr, r.stderr[-3000:]   # the broken file
    assert "[shard 0/2]" in r.stderr and "[shard 1/2]" in r.stderr
    names = [p.name for p in out.glob("part-*.parquet")]
    assert any(n.startswith("part-s00000-of-00002") for n in names)
    assert any(n.startswith("part-s00001-of-00002") for n in names)
    assert _contents(out) == _contents(one_process_shards)


def test_under_torchrun_a_rank_with_failures_does_not_cut_the_others_short(bad_videos, tiny_model, tmp_path):
    """torchrun kills the ranks still working when one exits non-zero: the rank whose only input is
    broken finishes first, so each rank waits for the others before it exits (CI once lost a summary)."""
    import zlib
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    shutil.copy(bad_videos["garbage"], data / "broken.mp4")
    bad_shard = zlib.crc32(b"broken.mp4") % 2
    bikes = __import__("magtok.data", fromlist=["sample_videos"]).sample_videos()["bikes"]
    names = [n for n in (f"v{i:02d}.mp4" for i in range(40)) if zlib.crc32(n.encode()) % 2 != bad_shard][:6]
    for n in names:
        shutil.copy(bikes, data / n)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "magtok.cli.main", "tokenize-dataset", str(data),
           "--model", str(tiny_model), "--out", str(out), "--short-side", "32", "--max-frames", "9", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode != 0, r.stderr[-3000:]
    good = 1 - bad_shard
    assert f"[shard {good}/2] {out}: 6 inputs tokenized (6 rows)" in r.stderr, r.stderr[-3000:]
    assert f"[shard {bad_shard}/2] {out}: 0 inputs tokenized" in r.stderr
    assert sorted(_contents(out)) == names


# ============================================================================ bad input (issue 13)
def test_an_output_that_is_its_own_input_is_refused_even_with_overwrite(cli, tiny_model, clips, good_tokens, tmp_path):
    """`tokenize a.mp4 -o a.mp4 --overwrite` would replace the source video with a token file: refused,
    also through a symlink or a hard link, for tokenize, reconstruct and detokenize."""
    src = tmp_path / "a.mp4"
    shutil.copy(clips["carphone_pristine"], src)
    before = src.read_bytes()
    (tmp_path / "link.mp4").symlink_to(src)
    os.link(src, tmp_path / "hard.mp4")
    opts = ("--model", tiny_model, "--short-side", "16", "--max-frames", "3", "--overwrite", "-q")
    for out in (src, tmp_path / "link.mp4", tmp_path / "hard.mp4", Path(os.path.relpath(src))):
        for cmd in ("tokenize", "reconstruct"):
            code, _, err = cli(cmd, src, "-o", out, *opts)
            assert code == 2 and "would replace the" in err and "Traceback" not in err, (cmd, out, err)
            assert src.read_bytes() == before
    tokens = tmp_path / "t.mp4"                         # a token file named like a video
    shutil.copy(good_tokens, tokens)
    code, _, err = cli("detokenize", tokens, "-o", tokens, "--overwrite")
    assert code == 2 and "would replace the token file" in err
    assert tokens.read_bytes() == good_tokens.read_bytes()
    assert leftovers(tmp_path) == []


def test_broken_folders_on_the_model_path_are_skipped_with_a_warning(cli, tiny_model, clips, tmp_path, monkeypatch):
    """Bad JSON, a config.json that is not text, missing weights: each is passed over with one warning
    naming it, and the search goes on to the good model (sorted after them)."""
    tokens = tmp_path / "b.tokens"
    made_with = tmp_path / "made" / "mine"
    shutil.copytree(tiny_model, made_with)
    assert cli("tokenize", clips["bikes"], "--model", made_with, "-o", tokens, "--short-side", "16",
               "--max-frames", "3", "-q")[0] == 0
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "a-badjson").mkdir()
    (zoo / "a-badjson" / "config.json").write_text("{not json")
    (zoo / "b-binary").mkdir()
    (zoo / "b-binary" / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    shutil.copytree(made_with, zoo / "c-noweights")
    (zoo / "c-noweights" / "model.safetensors").unlink()
    shutil.copytree(made_with, zoo / "d-badweights")
    (zoo / "d-badweights" / "model.safetensors").write_bytes(b"not safetensors")
    shutil.rmtree(made_with)                            # the recorded folder is gone: search the path
    monkeypatch.setenv("MAGTOK_MODEL_PATH", str(zoo))
    code, _, err = cli("detokenize", tokens, "-o", tmp_path / "x.mp4", "-q")
    assert code == 2 and "cannot find the model" in err and "Traceback" not in err
    for name in ("a-badjson", "b-binary", "c-noweights", "d-badweights"):
        assert f"skipped the model folder {zoo / name}" in err, (name, err)
        assert str(zoo / name) in err.splitlines()[-1]  # and listed in the final message
    shutil.copytree(tiny_model, zoo / "e-good")
    code, _, err = cli("detokenize", tokens, "-o", tmp_path / "x.mp4", "-q")
    assert code == 0, err
    assert err.count("magtok: warning: skipped the model folder") == 4
    assert _frames(tmp_path / "x.mp4")[0] == 3


def test_device_cuda_without_cuda_names_the_device_not_the_model(cli, tiny_model, clips, good_tokens, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (("tokenize", clips["bikes"], "--model", tiny_model, "-o", tmp_path / "a.tokens", "--max-frames", "3"),
                 ("detokenize", good_tokens, "-o", tmp_path / "a.mp4"),
                 ("reconstruct", clips["bikes"], "--model", tiny_model, "-o", tmp_path / "a.mp4", "--max-frames", "3")):
        code, _, err = cli(*argv, "--device", "cuda")
        assert code == 2 and "Traceback" not in err, (argv, err)
        assert "--device cuda: CUDA is not available" in err and "--device cpu" in err, err
        assert "CUDA build" in err and str(tiny_model) not in err and "model" not in err.lower(), err
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tmp_path / "a.tokens",
                       "--device", "gpu")
    assert code == 2 and "--device gpu is not a device" in err and "Traceback" not in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "a.tokens").exists()


def test_an_fps_above_the_source_rate_is_refused(cli, tiny_model, clips, tmp_path):
    """bikes is 25 fps: --fps 100000 would repeat every frame 4000 times; refused, naming 25 fps."""
    for cmd, out in (("tokenize", tmp_path / "a.tokens"), ("reconstruct", tmp_path / "a.mp4")):
        code, _, err = cli(cmd, clips["bikes"], "--model", tiny_model, "-o", out, "--fps", "100000",
                           "--short-side", "16", "--max-frames", "3", "-q")
        assert code == 2 and "Traceback" not in err, err
        assert "--fps 100000 is above the frame rate" in err and "(25 fps)" in err and "--fps 25 or lower" in err
        assert not out.exists()
    assert leftovers(tmp_path) == []
    code, _, err = cli("tokenize", clips["bikes"], "--model", tiny_model, "-o", tmp_path / "b.tokens",
                       "--fps", "25.1", "--short-side", "16", "--max-frames", "3", "-q")   # within 1%: accepted
    assert code == 0, err


_KILLED_WRITER = """
import importlib.util, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("magtok_io", sys.argv[1])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
tmp = io.temp_path_beside(Path(sys.argv[2]))
Path(tmp).write_bytes(b"half a video")
print(tmp, flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_temp_file_left_by_kill_9_is_removed_by_the_next_write(cli, good_tokens, tmp_path):
    """A writer killed with kill -9 leaves its hidden temporary file; the next write of the same target
    removes it (its process is gone), and keeps those of running processes and of other targets."""
    out = tmp_path / "out"
    out.mkdir()
    stale = []
    for target in ("v.mp4", "other.mp4"):
        p = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(REPO / "magtok" / "_io.py"), str(out / target)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == -9, p.stderr
        stale.append(Path(p.stdout.strip()))
        assert stale[-1].exists() and stale[-1].name.startswith(f".{Path(target).stem}.")
    from magtok._io import temp_path_beside
    live = Path(temp_path_beside(out / "v.mp4"))        # this (running) process's own temporary file
    code, _, err = cli("detokenize", good_tokens, "-o", out / "v.mp4", "-q")
    assert code == 0, err
    assert not stale[0].exists()                        # the killed writer's file of v.mp4: removed
    assert stale[1].exists() and live.exists()          # another target's, a running process's: kept
    assert sorted(p.name for p in out.iterdir()) == sorted([stale[1].name, live.name, "v.mp4"])
