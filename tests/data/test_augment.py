"""Camera motion over still photos (magtok.data.augment) and its use from a training config."""

import numpy as np
import pytest
import torch
from PIL import Image

from magtok.configs import TrainConfig
from magtok.data.augment import CameraMotion, MixtureDataset, MovingStillsDataset, animate_still


def _coord_photo(h=240, w=320) -> torch.Tensor:
    """R = x, G = y (both -0.9 .. 0.9), B = 0: every output pixel shows where it sampled the photo."""
    ys, xs = torch.meshgrid(torch.linspace(-0.9, 0.9, h), torch.linspace(-0.9, 0.9, w), indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)])


def _rng(seed):
    return np.random.default_rng(seed)


def test_shape_range_and_determinism():
    img = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    a = animate_still(img, 9, (32, 48), rng=_rng(1))
    b = animate_still(img, 9, (32, 48), rng=_rng(1))
    c = animate_still(img, 9, (32, 48), rng=_rng(2))
    assert a.shape == (3, 9, 32, 48) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_static_shot_has_identical_frames():
    img = _coord_photo()
    clip = animate_still(img, 5, 16, CameraMotion(still=1.0), rng=_rng(3))
    assert torch.allclose(clip[:, 0], clip[:, -1])


@pytest.mark.parametrize("seed", range(12))
def test_view_stays_inside_and_motion_is_bounded(seed):
    motion = CameraMotion(max_zoom=1.4, max_pan=0.3, max_rotate=6.0, brightness=0.0, still=0.0)
    clip = animate_still(_coord_photo(), 9, (24, 32), motion, rng=_rng(seed))
    x, y = clip[0], clip[1]                                    # (T, h, w) sampled coordinates
    # inside the photo: coordinates stay in the photo's range, never clamped to its border value
    assert x.min() > -0.9 and x.max() < 0.9 and y.min() > -0.9 and y.max() < 0.9
    x, y = x * 320 / 1.8, y * 240 / 1.8                        # in photo pixels (the photo is 240x320)
    # the view's centre moves at most max_pan of the first view's width (plus the ease overshoot)
    centre = torch.stack([x.mean(dim=(1, 2)), y.mean(dim=(1, 2))], 1)
    width0 = float(x[0, :, -1].mean() - x[0, :, 0].mean())
    travel = float((centre[-1] - centre[0]).norm())
    assert travel <= motion.max_pan * abs(width0) * 1.35 + 1e-3
    # zoom between first and last frame within [1/max_zoom, max_zoom] (span along the rows' diagonal;
    # 2% slack: the antialiased pre-downscale bends the coordinate ramps near the photo's edges)
    span = [float(((x[t, -1, -1] - x[t, 0, 0]) ** 2 + (y[t, -1, -1] - y[t, 0, 0]) ** 2).sqrt()) for t in (0, -1)]
    assert 0.98 / motion.max_zoom <= span[1] / span[0] <= motion.max_zoom * 1.02
    # rotation: the direction of a row turns by at most max_rotate degrees
    ang = [float(torch.atan2(y[t, :, -1].mean() - y[t, :, 0].mean(), x[t, :, -1].mean() - x[t, :, 0].mean()))
           for t in (0, -1)]
    assert abs(np.degrees(ang[1] - ang[0])) <= motion.max_rotate + 0.5


def test_moving_clips_move():
    motion = CameraMotion(still=0.0, max_pan=0.3, max_zoom=1.2)
    moved = [float((c[:, 0] - c[:, -1]).abs().mean()) for c in
             (animate_still(_coord_photo(), 9, 16, motion, rng=_rng(s)) for s in range(6))]
    assert min(moved) > 1e-3


def test_brightness_drift_is_bounded():
    grey = torch.zeros(3, 64, 64)                              # value 0 = mid grey
    gains = []
    for seed in range(20):
        clip = animate_still(grey, 5, 16, CameraMotion(brightness=0.1, still=0.0), rng=_rng(seed))
        level = (clip + 1) / 2
        gains.append(float(level[:, -1].mean() / level[:, 0].mean()))
    assert all(0.9 - 1e-4 <= g <= 1.1 + 1e-4 for g in gains)
    assert max(abs(g - 1) for g in gains) > 0.02             # it does drift


def test_bad_motion_settings_name_the_problem():
    with pytest.raises(ValueError, match="max_zoom must be >= 1"):
        CameraMotion(max_zoom=0.5)
    with pytest.raises(ValueError, match="unknown key.*max_zom.*known keys"):
        CameraMotion.from_dict({"max_zom": 1.2})
    with pytest.raises(ValueError, match="expected a mapping"):
        CameraMotion.from_dict(5)
    with pytest.raises(ValueError, match="uint8"):
        animate_still(np.zeros((8, 8), np.uint8), 5, 8)


def _photos(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((80 + 10 * i, 100, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_moving_stills_dataset(tmp_path):
    ds = MovingStillsDataset(_photos(tmp_path / "ph"), frames=5, size=(16, 24), seed=7)
    assert len(ds) == 3
    item = ds[1]
    assert item["video"].shape == (3, 5, 16, 24) and item["path"].endswith("p1.png")
    assert torch.equal(ds[1]["video"], item["video"])         # seeded: a pure function of (seed, epoch, i)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["video"], item["video"])
    with pytest.raises(IndexError):
        ds[3]


def test_mixture_proportions_and_determinism():
    a, b = list(range(5)), list(range(100, 300))
    mix = MixtureDataset([a, b], [0.25, 0.75], length=4000)
    picks = [mix.locate(i)[0] for i in range(4000)]
    assert abs(np.mean(picks) - 0.75) < 0.03
    assert [mix[i] for i in range(50)] == [mix[i] for i in range(50)]
    assert {mix[i] for i in range(4000) if mix.locate(i)[0] == 0} == set(a)
    with pytest.raises(ValueError, match="one weight per dataset"):
        MixtureDataset([a], [0.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        MixtureDataset([a, []], [0.5, 0.5])


def _video(path, frames=12, size=(24, 32)):
    import av
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        for _ in range(frames):
            arr = (rng.random((size[0], size[1], 3)) * 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_training_config_mixes_moving_stills(tmp_path):
    from magtok.data.dataset import build_training_datasets

    train = tmp_path / "train"
    train.mkdir()
    _video(train / "a.mp4")
    _photos(train / "photos")
    cfg = TrainConfig.from_dict({"model": "tiny", "data": {"train_dir": str(train), "still_motion": 0.5,
                                                           "motion": {"max_zoom": 1.2, "max_pan": 0.2}}})
    tr, val, images = build_training_datasets(cfg, cfg.tokenizer_config())
    assert isinstance(tr, MixtureDataset)
    kinds = {tr.locate(i)[0] for i in range(len(tr))}
    assert kinds == {0, 1}
    assert tr[0]["video"].shape == (3, 5, 16, 16)
    assert tr.datasets[1].motion.max_zoom == 1.2

    cfg.data.still_motion = 1.5
    with pytest.raises(ValueError, match="still_motion"):
        build_training_datasets(cfg, cfg.tokenizer_config())


def test_trainer_runs_on_moving_stills(tmp_path):
    from magtok.training import Trainer

    train = tmp_path / "train"
    train.mkdir()
    _video(train / "a.mp4")
    _photos(train / "photos")
    cfg = TrainConfig.from_dict({
        "model": "tiny", "output_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 2, "log_every": 1,
        "val_every": 100, "checkpoint_every": 100,
        "data": {"train_dir": str(train), "still_motion": 1.0},
        "loss": {"perceptual": "none", "perceptual_weight": 0.0, "discriminator": "none", "adversarial_weight": 0.0},
    })
    trainer = Trainer(cfg, progress=False)
    assert isinstance(trainer.train_data, MovingStillsDataset)
    trainer.fit()
    assert trainer.step == 2


@pytest.mark.parametrize("hw", [(97, 131), (240, 320), (131, 97), (64, 200)])
def test_a_view_as_large_as_the_photo_never_fails(hw):
    """When the view spans a whole side the centre's range is a point; float rounding once made it
    negative and numpy refused to draw from it (a crash 1,873 steps into a training run)."""
    img = torch.rand(3, *hw) * 2 - 1
    motion = CameraMotion(min_view=1.0, max_view=1.0, max_zoom=1.0, max_rotate=0.0, still=0.0)
    for seed in range(40):
        clip = animate_still(img, 5, (64, 64), motion, rng=_rng(seed))
        assert clip.shape == (3, 5, 64, 64)
    motion = CameraMotion(min_view=1.0, max_view=1.0, max_zoom=1.5, max_rotate=10.0, still=0.0)
    for seed in range(40):
        assert torch.isfinite(animate_still(img, 5, (32, 48), motion, rng=_rng(seed))).all()
