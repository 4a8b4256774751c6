import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from magtok.data import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, KindBatchSampler, VideoFolderDataset,
                         build_training_datasets, read_video, resize_and_crop, sample_images,
                         sample_videos, to_tensor, write_video)
from tests.data import smooth_clip

CLIPS = sample_videos()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two good clips (one nested), two photos, and three bad files the dataset must skip."""
    root = tmp_path_factory.mktemp("media")
    (root / "sub" / "deeper").mkdir(parents=True)
    os.symlink(CLIPS["carphone_pristine"], root / "carphone.mp4")
    os.symlink(CLIPS["bikes"], root / "sub" / "deeper" / "bikes.mp4")
    sample_images(root / "photos", names=("astronaut", "chelsea"))
    bad = {
        "corrupt": root / "corrupt.mp4",
        "truncated": root / "sub" / "truncated.mp4",
        "short": root / "short.mp4",
    }
    bad["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    data = CLIPS["bikes"].read_bytes()
    bad["truncated"].write_bytes(data[: int(0.3 * len(data))])
    write_video(bad["short"], smooth_clip(3, 32, 32), 25)
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden.tmp.mp4").write_bytes(b"half-written temporary file, ignored")
    return root, {k: str(v) for k, v in bad.items()}


def make(root, **kw):
    kw.setdefault("frames", 9)
    kw.setdefault("size", (48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolderDataset(root, **kw)


def test_bad_files_are_skipped_with_one_warning_each(folder):
    root, bad = folder
    with pytest.warns(UserWarning) as record:
        ds = VideoFolderDataset(root, frames=9, size=(48, 64))
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    for path in bad.values():
        assert sum(path in m for m in messages) == 1
    assert set(ds.skipped) == set(bad.values())
    assert "not a readable video" in ds.skipped[bad["corrupt"]]
    assert "not a readable video" in ds.skipped[bad["truncated"]]   # its index (moov) was cut off
    assert "too short: 3 frames" in ds.skipped[bad["short"]] and "needs 9" in ds.skipped[bad["short"]]
    paths = [it.path for it in ds.items]
    assert paths == sorted(paths) and len(ds) == 4
    assert ds.kinds == ["video", "image", "image", "video"]   # carphone, photos/astronaut+chelsea, sub/deeper/bikes
    assert not any(".hidden" in p for p in paths)


def test_samples_shapes_ranges_and_images(folder):
    root, _ = folder
    ds = make(root)
    kinds = ds.kinds
    for i in range(len(ds)):
        s = ds[i]
        t = 9 if kinds[i] == "video" else 1
        assert s["video"].shape == (3, t, 48, 64) and s["video"].dtype == torch.float32
        assert -1 <= s["video"].min() and s["video"].max() <= 1 and s["video"].std() > 0.05
        assert set(s) == {"video", "path", "start", "fps"}
    img = ds[kinds.index("image")]
    assert img["start"] == 0 and img["fps"] == 0.0
    bikes = ds[3]
    assert bikes["path"].endswith("bikes.mp4") and bikes["fps"] == 25.0


def test_training_crops_are_random_reproducible_and_not_from_frame_zero(folder):
    root, _ = folder
    a, b, c = make(root, seed=1), make(root, seed=1), make(root, seed=2)
    i = a.kinds.index("video")
    sa, sb, sc = a[i], b[i], c[i]
    assert torch.equal(sa["video"], sb["video"]) and sa["start"] == sb["start"]
    assert not torch.equal(sa["video"], sc["video"])
    starts = set()
    for epoch in range(12):
        a.set_epoch(epoch)
        starts.add(a[i]["start"])
    assert len(starts) > 6 and max(starts) > 50            # carphone has 120 frames
    # the sample is exactly: read those frames, resize to cover, crop (same rng stream)
    a.set_epoch(0)
    s = a[i]
    frames, _ = read_video(s["path"], s["start"], 9)
    rng = np.random.default_rng((1, 0, i))
    rng.integers(0, 120 - 9 + 1)                            # the temporal draw
    ref, _ = resize_and_crop(to_tensor(frames), (48, 64), rng)
    torch.testing.assert_close(s["video"], ref)


def test_eval_is_deterministic_and_centred(folder):
    root, _ = folder
    ds = make(root, train=False, frames=17, frame_stride=2)
    s1, s2 = ds[0], ds[0]
    assert torch.equal(s1["video"], s2["video"])
    span = 16 * 2 + 1
    assert s1["start"] == (120 - span) // 2
    frames, fps = read_video(s1["path"], s1["start"], 17, stride=2)
    assert s1["fps"] == pytest.approx(fps)
    ref, info = resize_and_crop(to_tensor(frames), (48, 64))
    assert info["crop"][0] == (info["resize"][0] - 48) // 2
    torch.testing.assert_close(s1["video"], ref)


def test_stride_and_target_fps_change_what_is_too_short(folder):
    root, _ = folder
    ds = make(root, frames=17, frame_stride=8, images=False)   # 129 frames needed: carphone skipped
    assert [os.path.basename(it.path) for it in ds.items] == ["bikes.mp4"]
    assert "too short: 120 frames" in ds.skipped[str(root / "carphone.mp4")]
    ds = make(root, frames=120, size=32, images=False)         # exactly all frames: kept
    assert len(ds) == 2 and ds[0]["start"] == 0
    assert make(root, frames=121, size=32, images=False).skipped[str(root / "carphone.mp4")]
    ds = make(root, frames=9, target_fps=5, images=False)      # 30/5=6 -> 49 frames needed
    s = ds[0]
    assert s["fps"] == 5 and s["video"].shape[1] == 9


def test_dataloader_with_two_workers_and_kind_batches(folder):
    root, bad = folder
    ds = make(root)
    assert set(ds.skipped) == set(bad.values())                # known before any worker starts
    loader = DataLoader(ds, batch_sampler=ds.batch_sampler(2), num_workers=2)
    seen = []
    for batch in loader:
        t = batch["video"].shape[2]
        assert t in (1, 9) and batch["video"].shape[0] == 2
        seen += batch["path"]
    assert sorted(seen) == sorted(it.path for it in ds.items)
    videos = make(root, images=False, frames=5, size=32)
    batch = next(iter(DataLoader(videos, batch_size=2, num_workers=2)))
    assert batch["video"].shape == (2, 3, 5, 32, 32)


def test_kind_batch_sampler():
    kinds = ["video"] * 7 + ["image"] * 3
    s = KindBatchSampler(kinds, 3, shuffle=True, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 4
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:
        assert len({kinds[i] for i in b}) == 1
    s.set_epoch(1)
    assert list(s) != batches
    assert len(KindBatchSampler(kinds, 3, drop_last=True)) == 3


def test_runtime_decode_failure_falls_back_deterministically(tmp_path):
    for name in ("a", "b", "c"):
        shutil.copyfile(CLIPS["carphone_pristine"], tmp_path / f"{name}.mp4")
    ds = make(tmp_path, frames=5, size=32, train=False)
    assert len(ds) == 3 and not ds.skipped
    (tmp_path / "b.mp4").write_bytes(b"\0" * 1000)            # damaged after the scan
    with pytest.warns(UserWarning, match="b.mp4"):
        s = ds[1]
    assert s["path"].endswith("c.mp4")
    assert str(tmp_path / "b.mp4") in ds.skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # no second warning
        assert ds[1]["path"].endswith("c.mp4")


def test_file_promising_more_frames_than_decode_is_used_with_one_warning(tmp_path):
    """A file cut short (the mp4 header promises 30 frames) and an AVI whose header overcounts give
    the frames that decode, with one warning each naming both counts; only a file with fewer
    decodable frames than one sample is skipped."""
    from magtok.data import probe_video
    from tests.data.test_video import _header_claims, _write_bframes, _write_faststart
    _write_faststart(tmp_path / "full.mp4", np.random.default_rng(0).integers(0, 256, (30, 32, 48, 3), dtype=np.uint8))
    data = (tmp_path / "full.mp4").read_bytes()
    cut, stub, claims = (str(tmp_path / n) for n in ("cut.mp4", "stub.mp4", "claims.avi"))
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])      # about 17 of 30 frames decode
    (tmp_path / "stub.mp4").write_bytes(data[: int(len(data) * 0.25)])    # about 5: less than a sample
    (tmp_path / "full.mp4").unlink()
    _write_bframes(tmp_path / "claims.avi", smooth_clip(12, 32, 48))
    _header_claims(tmp_path / "claims.avi", 20)
    n_cut, n_stub = (probe_video(p, mode="decode").num_frames for p in (cut, stub))
    assert 9 <= n_cut < 30 and 0 < n_stub < 9     # (libx264's bytes, and so these counts, can vary by one)

    with pytest.warns(UserWarning) as record:
        ds = VideoFolderDataset(tmp_path, frames=9, size=32, seed=0)
    messages = [str(w.message) for w in record]
    assert len(messages) == 3                                    # one per file, nothing else
    assert ds.shortened == {claims: (20, 12), cut: (30, n_cut)}
    for path, (declared, n) in ds.shortened.items():
        assert sum(path in m and f"declares {declared} frames but only {n} decode" in m for m in messages) == 1
    assert list(ds.skipped) == [stub]
    assert ds.skipped[stub] == (f"too short: {n_stub} frames decode (the container declares 30), a sample "
                                f"of 9 frames at frame_stride=1 needs 9")
    assert sum(stub in m for m in messages) == 1
    assert [(it.path, it.num_frames) for it in ds.items] == [(claims, 12), (cut, n_cut)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # no runtime skip, no second warning
        starts = set()
        for epoch in range(40):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                sample = ds[i]
                assert sample["path"] == ds.items[i].path and sample["video"].shape == (3, 9, 32, 32)
                starts.add((i, sample["start"]))
        assert {s for i, s in starts if i == 1} == set(range(n_cut - 9 + 1))   # every start, the last too
        centred = make(tmp_path, frames=9, size=32, train=False)
        assert [centred[i]["start"] for i in range(2)] == [(12 - 9) // 2, (n_cut - 9) // 2]
    assert not ds.skipped.keys() - {stub}


def test_empty_and_missing_folders_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.*does not exist.*mp4.*webp"):
        VideoFolderDataset(tmp_path / "nope", frames=5, size=32)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no media files found under .*empty") as e:
        VideoFolderDataset(tmp_path / "empty", frames=5, size=32)
    for ext in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        assert ext in str(e.value)
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "x.mp4").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="all 1 files were skipped"):
        VideoFolderDataset(tmp_path / "only_bad", frames=5, size=32)
    with pytest.raises(ValueError, match="frames"):
        VideoFolderDataset(tmp_path, frames=0, size=32)


def test_unseeded_crops_follow_torch_global_rng(folder):
    root, _ = folder
    ds = make(root, images=False)                                # seed=None: the default
    torch.manual_seed(5)
    a = [ds[0]["start"] for _ in range(6)]
    torch.manual_seed(5)
    b = [ds[0]["start"] for _ in range(6)]
    assert a == b and len(set(a)) > 2                            # reproducible, fresh every call


def test_build_training_datasets_from_train_config(folder, tmp_path):
    from magtok.configs import DataConfig, TrainConfig
    root, _ = folder
    os.symlink(CLIPS["carphone_distorted"], tmp_path / "val.mp4")
    cfg = TrainConfig(data=DataConfig(train_dir=str(root), val_dir=str(tmp_path), frames=5,
                                      size=(32, 48), image_batch_ratio=0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val, images = build_training_datasets(cfg, cfg.tokenizer_config())
    assert train.kinds == ["video", "video"] and images.kinds == ["image", "image"]
    assert train[0]["video"].shape == (3, 5, 32, 48) and images[0]["video"].shape == (3, 1, 32, 48)
    assert not val.train and val[0]["path"].endswith("val.mp4")
    cfg = TrainConfig(data=DataConfig(train_dir=str(tmp_path)))    # tokenizer defaults, no photos
    with pytest.warns(UserWarning, match="no image batches"):
        cfg.data.image_batch_ratio = 0.5
        train, val, images = build_training_datasets(cfg, cfg.tokenizer_config())
    tc = cfg.tokenizer_config()
    assert images is None and val is None
    assert train[0]["video"].shape == (3, tc.frames, *tc.image_size)
