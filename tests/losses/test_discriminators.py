"""Discriminators: shapes over sizes (non-square, odd frame counts), blur, multi-scale, builder."""

import pytest
import torch
import torch.nn.functional as F

from magtok.losses.discriminators import (
    Blur,
    FrameDiscriminator,
    MultiScaleDiscriminator,
    SpaceTimeDiscriminator,
    available_discriminators,
    build_discriminator,
)

SMALL = dict(dim=8, max_dim=16)




# --------------------------------------------------------------------------------------------- blur


def test_blur_impulse_is_binomial_and_mass_preserving():
    x = torch.zeros(1, 2, 7, 7)
    x[:, :, 3, 3] = 1.0
    y = Blur()(x)
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = torch.outer(k, k)
    assert y.shape == x.shape
    torch.testing.assert_close(y[0, 0], expected)
    torch.testing.assert_close(y[0, 1], expected)  # per channel, no mixing
    torch.testing.assert_close(y.sum(), x.sum())


def test_blur_time_axis_only_when_asked():
    x = torch.zeros(1, 1, 5, 5, 5)
    x[:, :, 2, 2, 2] = 1.0
    space = Blur(time=False)(x)
    spacetime = Blur(time=True)(x)
    assert space[0, 0, 1].abs().sum() == 0  # space-only blur does not leak into other frames
    torch.testing.assert_close(spacetime[0, 0, 1].sum(), torch.tensor(0.25))
    torch.testing.assert_close(spacetime[0, 0, 2].sum(), torch.tensor(0.5))


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (1, 3, 1, 4, 6), (2, 1, 3, 5, 2)])
def test_blur_keeps_constants_and_shape_for_tiny_sizes(shape):
    x = torch.full(shape, 0.7)
    y = Blur(time=True)(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)


def test_blur_removes_nyquist_checkerboard():
    h = w = 8
    checker = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).float() * 2 - 1
    y = Blur()(checker.expand(1, 1, h, w))
    assert y[..., 1:-1, 1:-1].abs().max() < 1e-6  # interior: [1,2,1] kills the highest frequency


# --------------------------------------------------------------------------------------------- frame


@pytest.mark.parametrize("h,w,layers", [(32, 32, 3), (16, 48, 3), (24, 8, 2), (8, 8, 3)])
def test_frame_discriminator_image_shapes(h, w, layers):
    d = FrameDiscriminator(num_layers=layers, **SMALL)
    out = d(torch.rand(2, 3, h, w) * 2 - 1)
    assert out.shape == (2, 1, h // 2**layers, w // 2**layers)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("t", [1, 4, 5, 17])
def test_frame_discriminator_video_scores_every_frame(t):
    d = FrameDiscriminator(num_layers=2, **SMALL)
    video = torch.rand(2, 3, t, 8, 12) * 2 - 1
    out = d(video)
    assert out.shape == (2, 1, t, 2, 3)
    # scoring the clip == scoring each frame as an image
    per_frame = torch.stack([d(video[:, :, i]) for i in range(t)], dim=2)
    torch.testing.assert_close(out, per_frame, rtol=1e-5, atol=1e-5)


def test_frame_discriminator_random_frame_subset():
    d = FrameDiscriminator(num_layers=2, frames_per_clip=2, **SMALL)
    video = torch.rand(3, 3, 7, 8, 8) * 2 - 1
    out = d(video)
    assert out.shape == (3, 1, 2, 2, 2)
    # every chosen logit frame equals the image score of some frame of the same clip, in time order
    scores = torch.stack([d.score_images(video[:, :, i]) for i in range(7)], dim=2)  # (B, 1, T, h, w)
    for b in range(3):
        idx = [
            next(i for i in range(7) if torch.allclose(out[b, :, k], scores[b, :, i], atol=1e-5))
            for k in range(2)
        ]
        assert idx[0] < idx[1]
    # fewer frames than frames_per_clip: all of them
    assert d(video[:, :, :1]).shape == (3, 1, 1, 2, 2)


def test_frame_discriminator_not_tied_to_a_size():
    d = FrameDiscriminator(num_layers=2, **SMALL)
    for h, w in [(8, 8), (16, 40), (36, 4)]:
        assert d(torch.zeros(1, 3, h, w)).shape == (1, 1, h // 4, w // 4)


def test_frame_discriminator_clear_errors():
    d = FrameDiscriminator(num_layers=3, **SMALL)
    with pytest.raises(ValueError, match="divisible by 8; got 20x16"):
        d(torch.zeros(1, 3, 20, 16))
    with pytest.raises(ValueError, match="3 input channels; got 1"):
        d(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expects"):
        d(torch.zeros(3, 16, 16))


def test_frame_discriminator_widths_capped():
    d = FrameDiscriminator(dim=8, max_dim=16, num_layers=3)
    widths = [blk.conv2.out_channels for blk in d.blocks]
    assert widths == [16, 16, 16]
    assert d.stem[0].out_channels == 8


# --------------------------------------------------------------------------------------------- spacetime


@pytest.mark.parametrize(
    "t,h,w,t_out", [(1, 16, 16, 1), (2, 16, 16, 1), (5, 16, 24, 2), (8, 8, 16, 2), (17, 16, 8, 5)]
)
def test_spacetime_discriminator_shapes(t, h, w, t_out):
    d = SpaceTimeDiscriminator(num_layers=2, time_layers=2, **SMALL)
    out = d(torch.rand(2, 3, t, h, w) * 2 - 1)
    assert out.shape == (2, 1, t_out, h // 4, w // 4)
    assert d.output_frames(t) == t_out
    assert torch.isfinite(out).all()


def test_spacetime_discriminator_images_are_one_frame_clips():
    d = SpaceTimeDiscriminator(num_layers=2, time_layers=1, **SMALL)
    img = torch.rand(2, 3, 8, 12)
    torch.testing.assert_close(d(img), d(img[:, :, None]))


def test_spacetime_discriminator_sees_motion():
    # unlike a per-frame discriminator, swapping frames changes the logits
    d = SpaceTimeDiscriminator(num_layers=2, time_layers=1, **SMALL)
    video = torch.rand(1, 3, 4, 8, 8) * 2 - 1
    shuffled = video[:, :, [1, 0, 3, 2]]
    assert not torch.allclose(d(video).mean(), d(shuffled).mean(), atol=1e-6)


def test_spacetime_discriminator_errors():
    d = SpaceTimeDiscriminator(num_layers=2, **SMALL)
    with pytest.raises(ValueError, match="divisible by 4"):
        d(torch.zeros(1, 3, 5, 10, 8))
    with pytest.raises(ValueError, match="time_layers"):
        SpaceTimeDiscriminator(num_layers=2, time_layers=3)


# --------------------------------------------------------------------------------------------- multi-scale


def test_multiscale_runs_each_scale_on_pooled_input():
    m = MultiScaleDiscriminator(lambda: FrameDiscriminator(num_layers=2, **SMALL), num_scales=3)
    video = torch.rand(1, 3, 3, 32, 16) * 2 - 1
    outs = m(video)
    assert [o.shape for o in outs] == [(1, 1, 3, 8, 4), (1, 1, 3, 4, 2), (1, 1, 3, 2, 1)]
    # scale 1 == its own discriminator on the 2x avg-pooled clip
    pooled = F.avg_pool3d(video, (1, 2, 2))
    torch.testing.assert_close(outs[1], m.discriminators[1](pooled))
    # scales have independent weights
    p0, p1 = (next(d.parameters()) for d in m.discriminators[:2])
    assert p0 is not p1 and not torch.equal(p0, p1)


def test_multiscale_divisibility_error():
    m = MultiScaleDiscriminator(lambda: FrameDiscriminator(num_layers=1, **SMALL), num_scales=3)
    with pytest.raises(ValueError, match="divisible by 4"):
        m(torch.zeros(1, 3, 6, 8))


# --------------------------------------------------------------------------------------------- builder


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("frame", [(2, 1, 2, 4, 6)]),
        ("spacetime", [(2, 1, 1, 4, 6)]),  # two frames -> one after one time halving
        ("multiscale_frame", [(2, 1, 2, 4, 6), (2, 1, 2, 2, 3)]),
        ("multiscale_spacetime", [(2, 1, 1, 4, 6), (2, 1, 1, 2, 3)]),
    ],
)
def test_build_discriminator_table(kind, expected):
    kwargs = dict(num_layers=2, **SMALL)
    if "spacetime" in kind:
        kwargs["time_layers"] = 1
    d = build_discriminator(kind, **kwargs)
    outs = d(torch.rand(2, 3, 2, 16, 24) * 2 - 1)
    outs = [outs] if isinstance(outs, torch.Tensor) else outs
    assert [tuple(o.shape) for o in outs] == expected


def test_build_discriminator_unknown_names_known_ones():
    with pytest.raises(ValueError) as err:
        build_discriminator("stylegan9")
    for name in ("frame", "spacetime", "multiscale_frame", "multiscale_spacetime"):
        assert name in str(err.value)
    assert set(available_discriminators()) == {"frame", "spacetime", "multiscale_frame", "multiscale_spacetime"}


def test_build_multiscale_bad_kwargs_fail_early():
    with pytest.raises(TypeError):
        build_discriminator("multiscale_frame", num_scales=2, not_an_arg=1)


def test_discriminators_backprop_to_input_and_params():
    for d in (FrameDiscriminator(num_layers=2, **SMALL), SpaceTimeDiscriminator(num_layers=2, **SMALL)):
        x = (torch.rand(1, 3, 3, 8, 8) * 2 - 1).requires_grad_(True)
        d(x).mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in d.parameters())
