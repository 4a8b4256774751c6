"""Training data from a manifest (`magtok manifest`): no file is probed at start-up."""

from __future__ import annotations

import os
import warnings

import av
import numpy as np
import pytest

from magtok.data import VideoFolderDataset, build_training_datasets, probe_video, sample_images, sample_videos
from magtok.pipeline.manifest import build_manifest, write_manifest

CLIPS = sample_videos()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """train/ (two clips, one cut short by bytes, a photo, a broken file) and val/ (one clip), and a
    manifest of both written by build_manifest (which probes, once)."""
    root = tmp_path_factory.mktemp("mf")
    train, val = root / "train", root / "val"
    (train / "sub").mkdir(parents=True)
    val.mkdir()
    os.symlink(CLIPS["carphone_pristine"], train / "carphone.mp4")
    full = root / "full.mp4"
    with av.open(str(full), "w", format="mp4", options={"movflags": "+faststart"}) as out:   # index first
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in np.random.default_rng(1).integers(0, 256, (30, 48, 64, 3), dtype=np.uint8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    data = full.read_bytes()
    full.unlink()
    (train / "sub" / "cut.mp4").write_bytes(data[: int(0.6 * len(data))])      # cut short by bytes
    sample_images(train / "photos", names=("astronaut",))
    (train / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    os.symlink(CLIPS["carphone_distorted"], val / "val.mp4")
    manifest = root / "manifest.parquet"
    write_manifest(build_manifest(root, workers=2), manifest)
    return root, manifest


@pytest.fixture
def no_probe(monkeypatch):
    import magtok.data as D
    import magtok.data.dataset as DS
    import magtok.data.video as V

    def fail(*a, **k):
        raise AssertionError(f"probed {a[0] if a else k}")

    for mod in (D, DS, V):
        monkeypatch.setattr(mod, "probe_video", fail)


def test_from_manifest_probes_nothing_and_loads_samples(media, no_probe):
    root, manifest = media
    cut = str(root / "train" / "sub" / "cut.mp4")
    with pytest.warns(UserWarning) as record:
        ds = VideoFolderDataset.from_manifest(manifest, frames=5, size=(32, 48), seed=0, images=False)
    paths = sorted(it.path for it in ds.items)
    assert paths == sorted([str(root / "train" / "carphone.mp4"), cut, str(root / "val" / "val.mp4")])
    assert list(ds.skipped) == [str(root / "train" / "broken.mp4")]
    assert "not a readable video" in ds.skipped[str(root / "train" / "broken.mp4")]
    assert "cannot read" not in ds.skipped[str(root / "train" / "broken.mp4")]       # said once, not twice
    declared, decodable = ds.shortened[cut]
    assert 5 <= decodable < declared == 30
    assert any(f"declares 30 frames but only {decodable} decode" in str(w.message) for w in record)
    for i in range(len(ds)):
        s = ds[i]
        assert s["video"].shape == (3, 5, 32, 48) and s["video"].abs().max() <= 1
        assert s["start"] + 5 <= next(it.num_frames for it in ds.items if it.path == s["path"])
    assert not ds.skipped.keys() - {str(root / "train" / "broken.mp4")}     # every listed file loaded


def test_from_manifest_rows_are_checked_without_probing(media, no_probe, tmp_path):
    rows = [dict(path=str(tmp_path / "short.mp4"), kind="video", frames=3, fps=25.0, height=32, width=32),
            dict(path="s3://bucket/a.mp4", kind="video", frames=50, fps=25.0, height=32, width=32),
            dict(path=str(tmp_path / "nosize.mp4"), kind="video", frames=None, fps=None, height=None, width=None)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no usable media in the manifest <manifest rows>: 3 rows, 3 skipped"):
            VideoFolderDataset.from_manifest(rows, frames=5, size=16)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        VideoFolderDataset.from_manifest(rows, frames=0, size=16)


def test_build_training_datasets_from_a_manifest(media, no_probe):
    from magtok.configs import DataConfig, TrainConfig
    root, manifest = media
    cfg = TrainConfig(data=DataConfig(manifest=str(manifest), val_dir=str(root / "val"), frames=5, size=(32, 48),
                                      image_batch_ratio=0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val, images = build_training_datasets(cfg, cfg.tokenizer_config())
    assert sorted(os.path.basename(it.path) for it in train.items) == ["carphone.mp4", "cut.mp4"]
    assert [os.path.basename(it.path) for it in val.items] == ["val.mp4"] and not val.train
    assert images.kinds == ["image"] and images[0]["video"].shape == (3, 1, 32, 48)
    assert train[0]["video"].shape == (3, 5, 32, 48) and val[0]["video"].shape == (3, 5, 32, 48)
    # train_dir narrows the training rows; a manifest without them says so in one line
    cfg.data.train_dir, cfg.data.image_batch_ratio = str(root / "train" / "sub"), 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _, _ = build_training_datasets(cfg, cfg.tokenizer_config())
    assert [os.path.basename(it.path) for it in train.items] == ["cut.mp4"]
    cfg.data.train_dir = str(root / "elsewhere")
    with pytest.raises(ValueError, match="lists no training files under data.train_dir="):
        build_training_datasets(cfg, cfg.tokenizer_config())


def test_the_manifest_counts_equal_a_probe(media):
    """The rows the dataset trusts are what probe_video says (so skipping the probe changes nothing)."""
    root, manifest = media
    import pyarrow.parquet as pq
    for r in pq.read_table(manifest).to_pylist():
        if r["error"] is None and r["kind"] == "video":
            info = probe_video(r["path"])
            assert (r["frames"], r["declared_frames"], r["height"], r["width"]) == \
                (info.num_frames, info.declared_frames, info.height, info.width)
