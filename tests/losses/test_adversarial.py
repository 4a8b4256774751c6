"""Adversarial losses, regularisers, adaptive weight and the AdversarialLoss object."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from magtok.losses.adversarial import (
    AdversarialLoss,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    lecam_reg,
    non_saturating_d_loss,
    non_saturating_g_loss,
    r1_penalty,
)
from magtok.losses.discriminators import FrameDiscriminator, MultiScaleDiscriminator, build_discriminator

SMALL = dict(dim=8, max_dim=16, num_layers=2)




class LinearD(nn.Module):
    """D(x) = <w, x> per sample: logits (B,). R1 = ||w||^2 exactly."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


class ConstantD(nn.Module):
    """Ignores its input: logits = bias, one per sample."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return self.bias.expand(x.shape[0])


class Generator(nn.Module):
    """A toy 'decoder': recon = tanh(scale * z + shift); last_layer = scale."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.shift = nn.Parameter(torch.tensor(0.1))

    def forward(self, z):
        return torch.tanh(self.scale * z + self.shift)


def video(b=2, t=3, h=8, w=8):
    return torch.rand(b, 3, t, h, w) * 2 - 1


# --------------------------------------------------------------------------------------------- plain losses


def test_hinge_and_non_saturating_values():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 2.5/3 ; relu(1 + fake) = [0, 1, 2] -> 1
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(2.5 / 3 + 1.0))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1.0 / 3))
    zeros = torch.zeros(4)
    torch.testing.assert_close(non_saturating_d_loss(zeros, zeros), torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(non_saturating_g_loss(fake), F.softplus(-fake).mean())
    # logits maps of any shape are averaged
    torch.testing.assert_close(hinge_d_loss(torch.ones(2, 1, 3, 4), -torch.ones(2, 1, 3, 4)), torch.tensor(0.0))


# --------------------------------------------------------------------------------------------- R1


def test_r1_linear_discriminator_equals_weight_norm_squared():
    d = LinearD((3, 4, 5))
    real = torch.randn(6, 3, 4, 5, requires_grad=True)
    r1 = r1_penalty(real, d(real))
    torch.testing.assert_close(r1, d.w.detach().pow(2).sum())
    # differentiable wrt D's params: d||w||^2/dw = 2w; and nothing was accumulated before backward
    assert d.w.grad is None and real.grad is None
    r1.backward()
    torch.testing.assert_close(d.w.grad, 2 * d.w.detach())


def test_r1_logits_map_sums_over_locations():
    conv = nn.Conv2d(3, 1, 1, bias=True)
    real = torch.randn(2, 3, 4, 5, requires_grad=True)
    r1 = r1_penalty(real, conv(real))
    # every pixel's gradient is w, so the per-sample squared norm is H * W * ||w||^2
    torch.testing.assert_close(r1, 4 * 5 * conv.weight.detach().pow(2).sum())


def test_r1_zero_for_discriminator_ignoring_input():
    real = torch.randn(3, 3, 8, 8, requires_grad=True)
    assert r1_penalty(real, ConstantD()(real)).item() == 0.0  # depends on a param, not on real
    assert r1_penalty(real, torch.zeros(3)).item() == 0.0  # no graph at all


def test_r1_multiscale_list():
    d1, d2 = LinearD((2, 3)), LinearD((2, 3))
    real = torch.randn(4, 2, 3, requires_grad=True)
    torch.testing.assert_close(r1_penalty(real, [d1(real), d2(real)]), (d1.w + d2.w).detach().pow(2).sum())


# --------------------------------------------------------------------------------------------- LeCam


def test_lecam_hand_computed():
    real = torch.tensor([1.0, -1.0, 3.0])
    fake = torch.tensor([0.0, 2.0])
    ema_real, ema_fake = 1.5, 0.5
    # relu(real - .5) = [.5, 0, 2.5] -> (.25 + 0 + 6.25) / 3 ; relu(1.5 - fake) = [1.5, 0] -> 2.25 / 2
    expected = (0.25 + 6.25) / 3 + 2.25 / 2
    torch.testing.assert_close(lecam_reg(real, fake, ema_real, ema_fake), torch.tensor(expected))
    torch.testing.assert_close(
        lecam_reg(real, fake, torch.tensor(ema_real), torch.tensor(ema_fake)), torch.tensor(expected)
    )
    assert lecam_reg(torch.tensor([0.0]), torch.tensor([5.0]), 1.0, 2.0).item() == 0.0


def test_lecam_ema_tracking_in_adversarial_loss():
    adv = AdversarialLoss(ConstantD(), lecam_weight=1.0, lecam_decay=0.75, adaptive=False)
    real, fake = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    adv.discriminator_loss(real, fake, step=0)  # first update copies: ema = 0.3, 0.3
    torch.testing.assert_close(adv.lecam_ema_real, torch.tensor([0.3]))
    with torch.no_grad():
        adv.discriminator.bias.fill_(1.3)
    d_loss, logs = adv.discriminator_loss(real, fake, step=1)  # ema = .75 * .3 + .25 * 1.3 = .55
    torch.testing.assert_close(adv.lecam_ema_real, torch.tensor([0.55]))
    torch.testing.assert_close(adv.lecam_ema_fake, torch.tensor([0.55]))
    # lecam = relu(1.3 - .55)^2 + relu(.55 - 1.3)^2 = .5625 ; hinge = relu(1 - 1.3) + relu(1 + 1.3) = 2.3
    assert logs["lecam"] == pytest.approx(0.5625)
    assert logs["d_loss"] == pytest.approx(2.3 + 0.5625)
    assert d_loss.item() == pytest.approx(2.8625)


# --------------------------------------------------------------------------------------------- adaptive weight


def test_adaptive_weight_is_ratio_of_grad_norms():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = (w**2).sum()  # grad 2w = [2, 4], norm sqrt(20)
    g = (3 * w).sum()  # grad [3, 3], norm sqrt(18)
    weight = adaptive_weight(rec, g, w, eps=1e-4)
    torch.testing.assert_close(weight, torch.tensor(math.sqrt(20) / (math.sqrt(18) + 1e-4)))
    assert not weight.requires_grad
    assert w.grad is None  # autograd.grad, no accumulation
    (rec + g).backward()  # graphs were retained
    torch.testing.assert_close(w.grad, torch.tensor([5.0, 7.0]))


def test_adaptive_weight_clamped_and_guarded():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    tiny = adaptive_weight((w**2).sum(), (1e-9 * w).sum(), w, max_weight=10.0)
    assert tiny.item() == 10.0
    unrelated = nn.Parameter(torch.tensor(1.0))
    assert adaptive_weight((w**2).sum(), unrelated * 2, w, max_weight=7.0).item() == 7.0  # g misses w
    nan = adaptive_weight((w * float("nan")).sum(), (3 * w).sum(), w)
    assert nan.item() == 0.0


# --------------------------------------------------------------------------------------------- generator side


def make_adv(**kw):
    defaults = dict(adaptive=False, weight=1.0, lr=1e-3)
    defaults.update(kw)
    return AdversarialLoss(FrameDiscriminator(**SMALL), **defaults)


def test_generator_loss_reaches_generator_but_not_discriminator():
    adv = make_adv()
    gen = Generator()
    recon = gen(video())
    loss, logs = adv.generator_loss(recon, step=0)
    loss.backward()
    assert gen.scale.grad is not None and gen.scale.grad.abs() > 0
    assert all(p.grad is None for p in adv.discriminator.parameters())
    assert all(p.requires_grad for p in adv.discriminator.parameters())  # restored
    assert set(logs) >= {"g_loss", "adaptive_weight", "g_loss_weighted", "g_logits_fake_mean"}
    assert all(isinstance(v, float) for v in logs.values())


def test_generator_loss_restores_individual_flags_even_on_error():
    adv = make_adv()
    frozen = next(adv.discriminator.parameters())
    frozen.requires_grad_(False)
    adv.generator_loss(video(), step=0)
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(adv.discriminator.parameters())[1:])
    with pytest.raises(ValueError):
        adv.generator_loss(torch.zeros(1, 3, 2, 6, 6), step=0)  # not divisible by 4
    assert all(p.requires_grad for p in list(adv.discriminator.parameters())[1:])


def test_generator_loss_adaptive_weight_matches_manual():
    adv = make_adv(adaptive=True, weight=0.5)
    gen = Generator()
    real = video()
    recon = gen(real * 0.9)
    rec = (recon - real).abs().mean()
    loss, logs = adv.generator_loss(recon, step=0, rec_loss=rec, last_layer=gen.scale)
    g = hinge_g_loss(adv.discriminator(recon))
    (g_rec,) = torch.autograd.grad(rec, gen.scale, retain_graph=True)
    (g_adv,) = torch.autograd.grad(g, gen.scale, retain_graph=True)
    expected_w = g_rec.norm() / (g_adv.norm() + 1e-4)
    assert logs["adaptive_weight"] == pytest.approx(expected_w.item(), rel=1e-4)
    assert loss.item() == pytest.approx(0.5 * expected_w.item() * g.item(), rel=1e-4)
    assert gen.scale.grad is None
    with pytest.raises(ValueError, match="rec_loss and last_layer"):
        adv.generator_loss(recon, step=0)


def test_generator_loss_under_no_grad_uses_unit_weight():
    adv = make_adv(adaptive=True)
    with torch.no_grad():
        loss, logs = adv.generator_loss(video(), step=0, rec_loss=torch.tensor(1.0), last_layer=nn.Parameter(torch.ones(1)))
    assert logs["adaptive_weight"] == 1.0 and math.isfinite(loss.item())


# --------------------------------------------------------------------------------------------- discriminator side


def test_discriminator_loss_backward_gives_d_grads_and_detaches_recon():
    adv = make_adv()
    gen = Generator()
    recon = gen(video())  # attached to the generator graph on purpose
    d_loss, logs = adv.discriminator_loss(video(), recon, step=0)
    d_loss.backward()
    assert all(p.grad is not None for p in adv.discriminator.parameters())
    assert gen.scale.grad is None and gen.shift.grad is None  # defensively detached
    assert {"d_loss", "d_adv", "logits_real_mean", "logits_fake_mean"} <= set(logs)
    assert "r1" not in logs and "lecam" not in logs


def test_discriminator_loss_matches_separate_passes():
    adv = make_adv(loss="non_saturating")
    real, fake = video(), video()
    d_loss, _ = adv.discriminator_loss(real, fake, step=0)
    d = adv.discriminator
    torch.testing.assert_close(d_loss, non_saturating_d_loss(d(real), d(fake)), rtol=1e-5, atol=1e-6)


def test_r1_lazy_schedule_and_scaling():
    d = LinearD((3, 2, 4, 4))
    adv = AdversarialLoss(d, adaptive=False, r1_weight=0.5, r1_every=4, start_step=10)
    real, fake = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    due = [s for s in range(10, 20) if "r1" in adv.discriminator_loss(real, fake, s)[1]]
    assert due == [10, 14, 18]
    d_loss, logs = adv.discriminator_loss(real, fake, step=14)
    r1 = d.w.detach().pow(2).sum().item()
    assert logs["r1"] == pytest.approx(r1, rel=1e-5)
    assert d_loss.item() == pytest.approx(logs["d_adv"] + 0.5 * 4 * r1, rel=1e-5)


def test_multiscale_discriminator_loss_and_per_scale_lecam():
    disc = MultiScaleDiscriminator(lambda: FrameDiscriminator(**SMALL), num_scales=2)
    adv = AdversarialLoss(disc, adaptive=False, lecam_weight=0.1, r1_weight=1.0)
    d_loss, logs = adv.discriminator_loss(video(h=16, w=8), video(h=16, w=8), step=0)
    assert adv.lecam_ema_real.shape == (2,)
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    g, _ = adv.generator_loss(video(h=16, w=8), step=0)
    assert g.ndim == 0


# --------------------------------------------------------------------------------------------- gating and stepping


class CountingOptimizer:
    """Wraps an optimizer and counts step() calls."""

    def __init__(self, opt):
        self.opt, self.steps = opt, 0

    def step(self, *a, **k):
        self.steps += 1
        return self.opt.step(*a, **k)

    def __getattr__(self, name):
        return getattr(self.opt, name)


def test_start_step_gating():
    adv = make_adv(start_step=5)
    adv.optimizer = CountingOptimizer(adv.optimizer)
    gen = Generator()
    recon = gen(video())
    g, g_logs = adv.generator_loss(recon, step=4)
    assert g.item() == 0.0 and not g.requires_grad and g_logs["g_loss"] == 0.0
    d_loss, d_logs = adv.discriminator_loss(video(), recon.detach(), step=4)
    assert d_loss.item() == 0.0 and d_logs == {}
    before = copy.deepcopy(adv.discriminator.state_dict())
    assert adv.discriminator_step(d_loss, step=4) == {}
    assert adv.optimizer.steps == 0
    assert all(torch.equal(before[k], v) for k, v in adv.discriminator.state_dict().items())
    g, _ = adv.generator_loss(recon, step=5)
    assert g.requires_grad and g.item() != 0.0
    d_loss, _ = adv.discriminator_loss(video(), recon.detach(), step=5)
    adv.discriminator_step(d_loss, step=5)
    assert adv.optimizer.steps == 1


def test_discriminator_step_steps_optimizer_and_scheduler_exactly_once():
    adv = make_adv(grad_clip=1.0)
    adv.attach_scheduler(torch.optim.lr_scheduler.StepLR(adv.optimizer, step_size=1, gamma=0.5))
    adv.optimizer = CountingOptimizer(adv.optimizer)
    backward_calls = []

    def backward(loss):
        backward_calls.append(1)
        loss.backward()

    adv.backward_fn = backward
    real, fake = video(), video()
    for i in range(3):
        d_loss, _ = adv.discriminator_loss(real, fake, step=i)
        logs = adv.discriminator_step(d_loss, step=i)
        assert adv.optimizer.steps == i + 1
        assert adv.scheduler.last_epoch == i + 1
        assert logs["d_lr"] == pytest.approx(1e-3 * 0.5 ** (i + 1))
        assert math.isfinite(logs["d_grad_norm"])
    assert len(backward_calls) == 3
    assert all(p.grad is None for p in adv.discriminator.parameters())  # nothing lingers


def test_discriminator_step_clips_through_supplied_function():
    seen = []

    def clip(params, max_norm):
        seen.append(max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    adv = make_adv(grad_clip=0.25, clip_grad_norm=clip)
    d_loss, _ = adv.discriminator_loss(video(), video(), step=0)
    adv.discriminator_step(d_loss, step=0)
    assert seen == [0.25]


class FakeAccelerator:
    """Mimics accelerate: prepare wraps the module (DDP-like .module), backward counts."""

    class Wrapped(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module
            self.calls = 0

        def forward(self, x):
            self.calls += 1  # a DDP wrapper's forward arms gradient-sync hooks
            return self.module(x)

    def __init__(self):
        self.backward_calls = 0

    def prepare(self, *objs):
        return tuple(self.Wrapped(o) if isinstance(o, nn.Module) else o for o in objs)

    def backward(self, loss):
        self.backward_calls += 1
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def test_prepare_with_wrapper_keeps_checkpoint_keys_and_uses_accelerator():
    adv = make_adv()
    keys = set(adv.state_dict()["discriminator"])
    acc = FakeAccelerator()
    adv.prepare(acc)
    assert isinstance(adv.discriminator, FakeAccelerator.Wrapped)
    assert set(adv.state_dict()["discriminator"]) == keys  # unwrapped, no "module." prefix
    gen = Generator()
    g, _ = adv.generator_loss(gen(video()), step=0)
    g.backward()
    assert gen.scale.grad is not None
    assert all(p.grad is None for p in adv.discriminator.parameters())
    assert adv.discriminator.calls == 0  # generator pass bypasses the wrapper
    d_loss, _ = adv.discriminator_loss(video(), video(), step=0)
    assert adv.discriminator.calls == 1  # one forward on cat([real, fake])
    adv.discriminator_step(d_loss, step=0)
    assert acc.backward_calls == 1


# --------------------------------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_gives_identical_next_step():
    torch.manual_seed(1)
    kwargs = dict(lecam_weight=0.1, r1_weight=0.2, r1_every=2)
    adv = make_adv(**kwargs)
    adv.attach_scheduler(torch.optim.lr_scheduler.ExponentialLR(adv.optimizer, gamma=0.9))
    real, fake = video(), video()
    for s in range(3):
        d_loss, _ = adv.discriminator_loss(real, fake, s)
        adv.discriminator_step(d_loss, s)
    state = copy.deepcopy(adv.state_dict())

    torch.manual_seed(2)  # different init
    other = make_adv(**kwargs)
    other.attach_scheduler(torch.optim.lr_scheduler.ExponentialLR(other.optimizer, gamma=0.9))
    other.load_state_dict(state)
    assert torch.equal(other.lecam_ema_real, adv.lecam_ema_real)

    for s in (3, 4):
        outs = []
        for a in (adv, other):
            d_loss, logs = a.discriminator_loss(real, fake, s)
            step_logs = a.discriminator_step(d_loss, s)
            g, g_logs = a.generator_loss(fake, s)
            outs.append((logs, step_logs, g_logs))
        assert outs[0] == outs[1]
    for (k, v), (k2, v2) in zip(adv.discriminator.state_dict().items(), other.discriminator.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_load_state_dict_rejects_wrong_scale_count():
    state = make_adv().state_dict()
    multi = AdversarialLoss(build_discriminator("multiscale_frame", **SMALL), adaptive=False)
    with pytest.raises(Exception):
        multi.load_state_dict(state)


def test_adversarial_loss_rejects_unknown_loss():
    with pytest.raises(ValueError, match="hinge"):
        make_adv(loss="wasserstein")


# --------------------------------------------------------------------------------------------- sanity


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_discriminator_learns_to_separate_real_from_fake(loss):
    torch.manual_seed(0)
    adv = AdversarialLoss(
        FrameDiscriminator(dim=8, max_dim=16, num_layers=2), loss=loss, adaptive=False, lr=2e-3, betas=(0.5, 0.99)
    )
    grid = torch.linspace(-1, 1, 8)
    real = (grid[None, :] * grid[:, None]).expand(4, 3, 1, 8, 8).contiguous()  # smooth pattern
    fake = torch.rand(4, 3, 1, 8, 8) * 2 - 1  # noise
    losses = []
    for step in range(50):
        d_loss, logs = adv.discriminator_loss(real, fake, step)
        adv.discriminator_step(d_loss, step)
        losses.append(logs["d_loss"])
    assert losses[-1] < 0.25 * losses[0]
    _, logs = adv.discriminator_loss(real, fake, 50)
    assert logs["logits_real_mean"] > logs["logits_fake_mean"]
