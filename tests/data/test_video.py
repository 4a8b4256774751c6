import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import magtok.data.video as V
from magtok.data import (VideoReadError, center_crop, frame_indices, iter_video_chunks, probe_video,
                         random_crop, read_image, read_video, resize_and_crop, resize_short_side,
                         resize_to_cover, sample_videos, to_tensor, to_uint8, write_side_by_side,
                         write_video)
from tests.data import smooth_clip

CLIPS = sample_videos()


# ----------------------------------------------------------------------------------- probing
@pytest.mark.parametrize("name,frames,fps,hw", [
    ("bikes", 250, 25.0, (272, 640)),
    ("bigbuckbunny", 132, 25.0, (720, 1280)),
    ("carphone_pristine", 120, 30000 / 1001, (144, 176)),
])
def test_probe_sample_clips(name, frames, fps, hw):
    info = probe_video(CLIPS[name])
    assert info.num_frames == frames == info.declared_frames
    assert info.fps == pytest.approx(fps, rel=1e-9)
    assert (info.height, info.width) == hw
    assert info.duration == pytest.approx(frames / fps)


def test_probe_modes_agree_and_count_by_decoding():
    path = CLIPS["carphone_pristine"]
    counts = {m: probe_video(path, mode=m).num_frames for m in ("header", "packets", "decode")}
    assert counts == {"header": 120, "packets": 120, "decode": 120}
    # the full decode really has that many frames (the last frame is not dropped)
    frames, fps = read_video(path)
    assert frames.shape == (120, 144, 176, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(30000 / 1001)


# seeded garbage: os.urandom once produced bytes that FFmpeg took for an audio-only stream ("no video
# stream", also a clear error, but not this case's)
@pytest.mark.parametrize("content,reason", [(b"", "not a readable video"),
                                            (np.random.default_rng(0).bytes(4096), "not a readable video")])
def test_unreadable_files_raise_video_read_error(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match="bad.mp4") as e:
        probe_video(path)
    assert reason in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        read_video(path, num_frames=2)
    with pytest.raises(VideoReadError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


def _write_faststart(path, frames, fps=25):
    """An mp4 with its index (moov) first, so that a truncated copy still opens."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"threads": "1"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_truncated_file_with_index_first_is_detected(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 32, 48, 3), dtype=np.uint8)   # noise: big packets
    full = tmp_path / "full.mp4"
    _write_faststart(full, frames)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    info = probe_video(cut)
    assert info.declared_frames == 30 and 0 < info.num_frames < 30
    with pytest.raises(VideoReadError, match="cut.mp4"):
        read_video(cut, start=25, num_frames=5)   # frames past the cut do not exist


def _write_bframes(path, frames, fps=25, gop=8, faststart=False):
    """H.264 by libx264 with 3 B-frames (b-pyramid) and a key frame every ``gop`` frames, so that
    windows start mid-file and frames come out of the decoder in a different order than their
    packets; the container follows the suffix (.avi .mp4 .mkv)."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"bf": "3", "b-pyramid": "normal", "g": str(gop), "keyint_min": str(gop),
                     "sc_threshold": "0", "threads": "1"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _sequential(path) -> tuple[np.ndarray, list]:
    """Every frame of a plain PyAV decode from frame 0 (the reference), and their timestamps."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [f.pts for f in frames]


def _header_claims(path, frames):
    """Make an AVI's header claim ``frames`` frames (avih dwTotalFrames and the video strh dwLength)."""
    import struct
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, frames)
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, frames)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def bframe_clips(tmp_path_factory):
    """45 distinct frames (key frames at 0, 8, ..., 40) as .avi, .mp4 and .mkv, and their reference decode."""
    d = tmp_path_factory.mktemp("bframes")
    frames = smooth_clip(45, 32, 48, seed=4)
    out = {}
    for ext in ("avi", "mp4", "mkv"):
        _write_bframes(d / f"clip.{ext}", frames)
        out[ext] = (d / f"clip.{ext}", *_sequential(d / f"clip.{ext}"))
    return out


@pytest.mark.parametrize("ext", ["avi", "mp4", "mkv"])
def test_windows_at_every_offset_of_a_bframe_clip_equal_a_sequential_decode(bframe_clips, ext, monkeypatch):
    path, ref, pts = bframe_clips[ext]
    n = len(ref)
    assert n == 45 and all(np.abs(ref[i].astype(int) - ref[i + 1]).mean() > 1 for i in range(n - 1))
    if ext == "avi":    # the trap: decode-order stamps that the decoder hands out permuted
        assert pts != sorted(pts)
    infos = {m: probe_video(path, mode=m) for m in ("header", "packets", "decode")}
    assert {m: i.num_frames for m, i in infos.items()} == {"header": 45, "packets": 45, "decode": 45}
    assert infos["packets"].declared_frames in (0, 45)

    landed = []
    seek_near = V._seek_near

    def spy(*args):
        found = seek_near(*args)
        landed.append(None if found is None else found[0])
        return found

    monkeypatch.setattr(V, "_seek_near", spy)
    for length in (1, 2, 5, 17):
        for start in range(n - length + 1):
            got, _ = read_video(path, start=start, num_frames=length)
            np.testing.assert_array_equal(got, ref[start:start + length], err_msg=f"{ext} {start}+{length}")
    for start in range(n - 9):
        got, _ = read_video(path, start=start, num_frames=5, stride=2)
        np.testing.assert_array_equal(got, ref[start:start + 9:2], err_msg=f"{ext} {start} stride 2")
    for start in (0, 7, 9, 23, 40):
        chunks = list(iter_video_chunks(path, chunk_frames=4, first_chunk_frames=5, start=start))
        np.testing.assert_array_equal(np.concatenate(chunks), ref[start:])
    np.testing.assert_array_equal(read_video(path)[0], ref)
    # the windows really seek (to the key frame at or before the start), not decode from frame 0
    assert landed and set(landed) <= {0, 8, 16, 24, 32, 40} and 40 in landed
    with pytest.raises(VideoReadError, match=r"frames 45\.\.45 are missing: only 45 frames decode"):
        read_video(path, start=41, num_frames=5)


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_file_cut_short_gives_the_frames_that_decode(tmp_path, ext, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (40, 32, 48, 3), dtype=np.uint8)  # big packets
    full = tmp_path / f"full.{ext}"
    _write_bframes(full, frames, faststart=ext == "mp4")   # mp4: the index first, so a cut copy opens
    ref, _ = _sequential(full)
    data = full.read_bytes()
    tails = []
    real_tail = V._count_from_last_key
    monkeypatch.setattr(V, "_count_from_last_key", lambda *a: tails.append(real_tail(*a)) or tails[-1])
    for fraction in (0.45, 0.62, 0.8):
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[: int(len(data) * fraction)])
        info = probe_video(cut)
        n = info.num_frames
        assert info.declared_frames == 40 and 10 < n < 40
        assert probe_video(cut, mode="decode").num_frames == n       # the count is what decodes
        got, _ = read_video(cut)                                      # all of it: the header is not trusted
        assert len(got) == n
        if ext == "mp4":   # timestamps show which held B-frames lost a neighbour: a gap-free start
            np.testing.assert_array_equal(got, ref[:n])
        else:              # AVI's are decode-order counters: at most the last 3 frames may skip some
            np.testing.assert_array_equal(got[:n - 3], ref[:n - 3])
        for start in range(n):                                        # every frame that decodes is reachable
            np.testing.assert_array_equal(read_video(cut, start=start, num_frames=1)[0], got[start:start + 1])
        with pytest.raises(VideoReadError, match=f"cut.{ext}: frames {n}..{n + 1} are missing: only {n} "
                                                 f"frames decode .*read fewer frames or start earlier"):
            read_video(cut, start=n - 1, num_frames=3)
    if ext == "mp4":
        assert tails and all(t is not None for t in tails)   # counted from the last key frame, not decoded whole


def test_header_that_promises_more_frames_than_the_file_holds(tmp_path):
    path = tmp_path / "claims.avi"
    _write_bframes(path, smooth_clip(30, 32, 48))
    ref, _ = _sequential(path)
    _header_claims(path, 40)
    assert probe_video(path, mode="header").num_frames == 40          # the header's promise
    info = probe_video(path)
    assert (info.num_frames, info.declared_frames) == (30, 40)
    got, _ = read_video(path)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(read_video(path, start=13, num_frames=17)[0], ref[13:])


# ----------------------------------------------------------------------------------- reading
def test_seek_gives_the_same_frames_as_sequential_decoding():
    path = CLIPS["bikes"]                       # key frames at 0, 30, 76, 137, ...
    ref, _ = read_video(path, start=0, num_frames=112)
    assert ref.shape == (112, 272, 640, 3)
    for start, n, stride in [(1, 5, 1), (31, 6, 2), (77, 9, 3), (100, 12, 1)]:
        got, fps = read_video(path, start=start, num_frames=n, stride=stride)
        np.testing.assert_array_equal(got, ref[start:start + (n - 1) * stride + 1:stride])
        assert fps == 25.0 / stride


def test_late_start_seeks_instead_of_decoding_from_frame_zero(monkeypatch):
    landed = []
    seek_near = V._seek_near

    def spy(*args):
        found = seek_near(*args)
        landed.append(None if found is None else found[0])
        return found

    monkeypatch.setattr(V, "_seek_near", spy)
    read_video(CLIPS["bikes"], start=100, num_frames=3)
    assert landed == [76]                       # the key frame before 100, not frame 0


def test_iter_video_chunks_streams_the_whole_clip():
    path = CLIPS["carphone_pristine"]
    full, _ = read_video(path)
    chunks = list(iter_video_chunks(path, chunk_frames=16, first_chunk_frames=17, start=3))
    assert [len(c) for c in chunks] == [17] + [16] * 6 + [4]
    np.testing.assert_array_equal(np.concatenate(chunks), full[3:])
    kept = list(iter_video_chunks(path, chunk_frames=16, first_chunk_frames=17, start=3, drop_last=True))
    assert [len(c) for c in kept] == [17] + [16] * 6
    strided = np.concatenate(list(iter_video_chunks(path, chunk_frames=10, stride=3)))
    np.testing.assert_array_equal(strided, full[::3])


def test_target_fps_picks_the_nearest_frames():
    path = CLIPS["carphone_pristine"]
    full, src_fps = read_video(path)
    got, fps = read_video(path, start=4, num_frames=20, target_fps=10)
    assert fps == 10
    idx = frame_indices(4, 20, src_fps / 10)
    assert idx[1] - idx[0] == 3 and idx[-1] == 4 + round(19 * src_fps / 10)
    np.testing.assert_array_equal(got, full[idx])
    with pytest.raises(ValueError, match="either"):
        read_video(path, stride=2, target_fps=10)


def test_read_image_formats(tmp_path):
    from PIL import Image
    img = smooth_clip(1, 37, 53)[0]
    for ext in ("png", "webp", "jpg"):
        path = tmp_path / f"x.{ext}"
        Image.fromarray(img).save(path, quality=95) if ext != "png" else Image.fromarray(img).save(path)
        got = read_image(path)
        assert got.shape == (37, 53, 3) and got.dtype == np.uint8
        tol = 0 if ext == "png" else 12
        assert np.abs(got.astype(int) - img).mean() <= tol
    Image.fromarray(img[..., 0]).save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (37, 53, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(VideoReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")


# ----------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 12.5])
def test_write_video_round_trip(tmp_path, fps):
    clip = smooth_clip(9, 32, 48)
    path = write_video(tmp_path / "out.mp4", clip, fps)
    got, got_fps = read_video(path)
    assert got.shape == clip.shape                       # no frame lost, same size
    assert got_fps == pytest.approx(fps, rel=1e-9)
    assert Fraction(got_fps).limit_denominator(1001) == Fraction(fps).limit_denominator(1001)
    err = np.abs(got.astype(float) - clip)
    mse = (err ** 2).mean()
    assert err.mean() < 3 and 10 * np.log10(255 ** 2 / mse) > 35


def test_write_video_odd_size_and_tensor_input(tmp_path):
    clip = smooth_clip(5, 13, 17)
    x = to_tensor(clip)                                  # (3, T, H, W) in [-1, 1]
    path = write_video(tmp_path / "odd.mp4", x, 10)
    got, _ = read_video(path)
    assert got.shape == (5, 13, 17, 3)
    assert np.abs(got.astype(float) - clip).mean() < 3
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd2.mp4", clip, 10, pix_fmt="yuv420p")


def test_write_video_is_atomic_and_refuses_to_overwrite(tmp_path):
    clip = smooth_clip(3, 16, 16)
    path = write_video(tmp_path / "a.mp4", clip, 8)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"a\.mp4.*overwrite=True"):
        write_video(path, clip[::-1].copy(), 8)
    assert path.read_bytes() == before
    write_video(path, smooth_clip(4, 16, 16, seed=1), 8, overwrite=True)
    assert read_video(path)[0].shape[0] == 4
    with pytest.raises(Exception):                       # a failing encode leaves nothing behind
        write_video(tmp_path / "fail.mp4", clip, 8, preset="no-such-preset")
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


def test_write_side_by_side(tmp_path):
    a, b = smooth_clip(4, 16, 24), smooth_clip(4, 16, 24, seed=3)
    path = write_side_by_side(tmp_path / "sbs.mp4", a, to_tensor(b), 10)
    got, _ = read_video(path)
    assert got.shape == (4, 16, 48, 3)
    assert np.abs(got[:, :, :24].astype(float) - a).mean() < 4
    assert np.abs(got[:, :, 24:].astype(float) - b).mean() < 4
    with pytest.raises(ValueError, match="same"):
        write_side_by_side(tmp_path / "x.mp4", a, b[:, :8], 10)


# ---------------------------------------------------------------------- tensors, resize, crop
def test_to_tensor_and_back():
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    x = to_tensor(u)
    assert x.shape == (3, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x[0, 0].flatten(), torch.arange(256).float() / 127.5 - 1)
    assert x.min() == -1 and x.max() == 1
    np.testing.assert_array_equal(to_uint8(x), u)
    np.testing.assert_array_equal(to_uint8(x + 0.005), u + (u < 255))   # rounds, clamps at 255
    assert to_uint8(torch.full((3, 1, 2, 2), 5.0)).max() == 255


def _ramp(h, w):
    """(3, 1, h, w): value rises linearly from -1 (left) to 1 (right)."""
    row = torch.linspace(-1, 1, w)
    return row.expand(3, 1, h, w).clone()


def test_resize_happens_before_crop():
    x = _ramp(272, 640)                                  # bikes' aspect ratio
    y, info = resize_and_crop(x, 128)                    # short side 128 -> 128 x 301, crop 128
    assert y.shape == (3, 1, 128, 128) and info == {"resize": (128, 301), "crop": (0, 86, 128, 128)}
    slope = (y[0, 0, 0, -1] - y[0, 0, 0, 0]).item() / 127
    assert slope == pytest.approx(2 / 639 * 640 / 301, rel=0.02)   # cropping first: 2 / 639
    # a wide target keeps almost the whole field of view, scaled down
    y, _ = resize_and_crop(x, (128, 300))
    assert y[0, 0, 0, 0] < -0.98 and y[0, 0, 0, -1] > 0.98
    ref = F.interpolate(x[:, :1], size=(128, 301), mode="bilinear", antialias=True)
    torch.testing.assert_close(y[:, 0], ref[..., :300].squeeze(1).expand(3, 128, 300))


@pytest.mark.parametrize("size", [(33, 47), (17, 129), 65, (144, 176)])
def test_odd_and_non_square_sizes(size):
    frames, _ = read_video(CLIPS["carphone_pristine"], num_frames=3)
    x = to_tensor(frames)
    y, info = resize_and_crop(x, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert y.shape == (3, 3, h, w)
    assert info["resize"][0] >= h and info["resize"][1] >= w
    assert min(info["resize"][0] - h, info["resize"][1] - w) == 0   # the smallest covering resize
    assert y.min() >= -1 and y.max() <= 1
    assert resize_short_side(x, 65).shape[-2:] == (65, 79)
    assert resize_to_cover(x, (17, 129)).shape[-2:] == (106, 129)
    assert center_crop(x, (33, 47)).shape[-2:] == (33, 47)
    with pytest.raises(ValueError, match="resize first"):
        center_crop(x, (200, 47))


def test_random_crop_is_reproducible_and_seed_dependent():
    x = torch.randn(3, 2, 64, 80)
    a = random_crop(x, (16, 24), np.random.default_rng(1))
    b = random_crop(x, (16, 24), np.random.default_rng(1))
    assert a.shape == (3, 2, 16, 24) and torch.equal(a, b)
    crops = {random_crop(x, 16, np.random.default_rng(s)).sum().item() for s in range(10)}
    assert len(crops) > 5
    r1, i1 = resize_and_crop(x, 32, np.random.default_rng(3))
    r2, i2 = resize_and_crop(x, 32, np.random.default_rng(3))
    assert torch.equal(r1, r2) and i1 == i2


def test_seek_that_overshoots_falls_back_to_decoding_from_the_start(monkeypatch):
    path = CLIPS["bikes"]
    ref, _ = read_video(path, start=0, num_frames=50)
    real_open = V._open
    seeks = []

    class LateSeek:                    # a container whose seeks land 4 s too late
        def __init__(self, c):
            self.c = c

        def __getattr__(self, name):
            return getattr(self.c, name)

        def seek(self, offset, **kw):
            seeks.append(offset)
            if offset > 0:
                offset += 4 * 12800    # bikes' time base is 1/12800
            return self.c.seek(offset, **kw)

    monkeypatch.setattr(V, "_open", lambda p: LateSeek(real_open(p)))
    got, _ = read_video(path, start=40, num_frames=10)
    np.testing.assert_array_equal(got, ref[40:50])
    assert len(seeks) >= 2 and seeks[-1] == 0   # it tried to seek, then decoded from the start
