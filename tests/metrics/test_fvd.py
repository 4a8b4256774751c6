"""Fréchet distance against the float64 oracle (shared/reference/fvd_ref.npz) and the FVD pipeline."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from magtok.metrics import FVDAccumulator, SmallSampleWarning, frechet_distance, fvd, i3d_features
from magtok.nets.i3d import I3DOutput

from . import load_reference


def test_singular_case_matches_oracle():
    ref = load_reference("fvd_ref.npz")
    with pytest.warns(SmallSampleWarning, match="64 and 64 samples"):  # N=64 < 2 * 400
        value = frechet_distance(ref["x"], ref["y"])
    np.testing.assert_allclose(value, ref["fvd"], rtol=1e-6)  # measured: bit-identical (848.9839161079725)
    # the ddof=0 convention would be 1.1% off: make sure this is not that one
    assert abs(value - ref["fvd_ddof0"]) / ref["fvd"] > 1e-3


def test_full_rank_case_matches_oracle_without_warning():
    ref = load_reference("fvd_ref.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # N=256 >= 2 * 32: no small-sample warning
        value = frechet_distance(torch.from_numpy(ref["x_fullrank"]), ref["y_fullrank"])
    np.testing.assert_allclose(value, ref["fvd_fullrank"], rtol=1e-6)  # measured: bit-identical


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert abs(frechet_distance(x, x)) < 1e-9
    assert frechet_distance(x, x + 1.0) == pytest.approx(16.0, rel=1e-9)  # mean shift only: |1|^2 * d


def test_frechet_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        frechet_distance(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_fvd_of_identical_videos_is_zero():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 16, 32, 32, generator=g) * 2 - 1  # resized to 224x224 inside
    with pytest.warns(SmallSampleWarning):
        value = fvd(video, video)
    assert abs(value) < 1e-2  # measured -2.4e-4 (sqrtm of a rank-1 product); FVDs of real pairs are ~100s


def test_i3d_features_input_checks():
    with pytest.raises(ValueError, match=r"video\[:, :, :16\]"):
        i3d_features(torch.zeros(1, 3, 17, 32, 32))
    with pytest.raises(ValueError, match="127.5"):
        i3d_features(torch.zeros(1, 3, 16, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        i3d_features(torch.zeros(1, 16, 3, 32, 32))


class _StubI3D(nn.Module):
    """Cheap stand-in: 'logits' = per-channel mean and std of the (resized) clip."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, video):
        self.shapes.append(tuple(video.shape))
        f = torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)  # (B, 6)
        return I3DOutput(logits=f, features=f)


def test_accumulator_equals_one_shot():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(10, 3, 16, 4, 4, generator=g) * 2 - 1
    fake = torch.rand(10, 3, 16, 4, 4, generator=g) * 1.5 - 0.7
    stub = _StubI3D()
    acc = FVDAccumulator(model=stub, batch_size=4)
    for s in range(0, 10, 5):
        acc.update(real=real[s:s + 5])
    acc.update(fake=fake[:3])
    acc.update(fake=fake[3:])
    assert all(s[2:] == (16, 224, 224) for s in stub.shapes)  # frames resized to 224x224
    assert max(s[0] for s in stub.shapes) == 4  # batch_size respected
    expected = frechet_distance(i3d_features(real, model=stub), i3d_features(fake, model=stub), warn_below=0)
    assert acc.compute(warn_below=0) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.01
    with pytest.raises(ValueError, match="update"):
        FVDAccumulator(model=stub).compute()
