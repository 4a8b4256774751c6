"""Adversarial objectives and the object that owns the discriminator and its optimizer.

The tokenizer never holds a discriminator. A training step reads as a few named calls::

    adv = AdversarialLoss(build_discriminator("frame", dim=64), lr=1e-4, start_step=20_000,
                          r1_weight=1.0, r1_every=16, lecam_weight=1e-3)
    adv.prepare(accelerator)           # optional: DDP/AMP wrapping + accelerator.backward

    # generator step: adversarial term on the reconstructions of *this* batch
    out = tokenizer(video)
    rec = l1 + perceptual
    g_adv, g_logs = adv.generator_loss(out.recon, step, rec_loss=rec, last_layer=decoder_last_weight)
    accelerator.backward(rec + g_adv + out.aux_loss); opt_g.step(); opt_g.zero_grad()

    # discriminator step: the SAME reconstructions, detached (no fresh batch, no re-encoding)
    d_loss, d_logs = adv.discriminator_loss(video, out.recon.detach(), step)
    step_logs = adv.discriminator_step(d_loss, step)   # zero_grad/backward/clip/step/sched.step once

All loss functions take logits of any shape (a PatchGAN logits map or one logit per sample) and
average over every element; the discriminator losses put real first. Values are unbounded logits,
not probabilities.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "hinge_d_loss",
    "hinge_g_loss",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "r1_penalty",
    "lecam_reg",
    "adaptive_weight",
    "AdversarialLoss",
]


# ---------------------------------------------------------------------------------------------
# loss functions
# ---------------------------------------------------------------------------------------------


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge discriminator loss ``mean(relu(1 - real)) + mean(relu(1 + fake))`` (no 1/2 factor).

    Zero once real logits are >= 1 and fake logits <= -1 everywhere; 2 at all-zero logits.
    """
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Hinge generator loss ``-mean(fake)``."""
    return -fake_logits.float().mean()


def non_saturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic discriminator loss ``mean(softplus(-real)) + mean(softplus(fake))``; 2 ln 2 at zero logits."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def non_saturating_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean(softplus(-fake))`` (= -log sigmoid(fake))."""
    return F.softplus(-fake_logits.float()).mean()


def _as_list(logits: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


def r1_penalty(real: Tensor, real_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): per-sample ``||d sum(logits) / d real||^2``, batch mean.

    ``real`` must be the tensor (with ``requires_grad=True``) that was fed to the discriminator;
    ``real_logits`` its output (a logits map, or a list of maps for multi-scale; all are summed, so
    each logit counts as one discriminator output as in StyleGAN2). The graph is kept
    (``create_graph=True``) so the penalty can be back-propagated into the discriminator; nothing is
    accumulated into any ``.grad``.

    Returns a scalar >= 0 (fp32). Zero for a discriminator whose output does not depend on ``real``.
    For a linear ``D(x) = <w, x>`` it is ``||w||^2``.
    """
    total = sum(logit.float().sum() for logit in _as_list(real_logits))
    if not isinstance(total, Tensor) or not total.requires_grad:
        return real.new_zeros((), dtype=torch.float32)
    (grad,) = torch.autograd.grad(total, real, create_graph=True, allow_unused=True)
    if grad is None:
        return real.new_zeros((), dtype=torch.float32)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


def lecam_reg(real_logits: Tensor, fake_logits: Tensor, ema_real: Tensor | float, ema_fake: Tensor | float) -> Tensor:
    """LeCam regularisation (Yu et al. 2021).

    ``mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)``, with ``ema_real`` /
    ``ema_fake`` running means of past real / fake logits (treated as constants). Scalar >= 0.
    """
    ema_real = torch.as_tensor(ema_real, dtype=torch.float32, device=real_logits.device).detach()
    ema_fake = torch.as_tensor(ema_fake, dtype=torch.float32, device=real_logits.device).detach()
    return (
        F.relu(real_logits.float() - ema_fake).pow(2).mean()
        + F.relu(ema_real - fake_logits.float()).pow(2).mean()
    )


def adaptive_weight(
    rec_loss: Tensor,
    g_loss: Tensor,
    last_layer: nn.Parameter,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """VQGAN adaptive weight ``||d rec / d W|| / (||d g / d W|| + eps)``, clamped to ``[0, max_weight]``.

    ``W`` is ``last_layer`` (usually the weight of the decoder's output conv). Gradients come from
    ``torch.autograd.grad(..., retain_graph=True)``: both graphs stay usable for the real backward
    and nothing is accumulated into ``.grad``. Norms are taken in fp32. The result is a detached
    fp32 scalar. A loss that does not reach ``last_layer`` counts as a zero gradient; a non-finite
    ratio gives 0 (the adversarial term is dropped for that step rather than spreading NaN).
    """

    def grad_norm(loss: Tensor) -> Tensor:
        (grad,) = torch.autograd.grad(loss, last_layer, retain_graph=True, allow_unused=True)
        if grad is None:
            return torch.zeros((), device=last_layer.device)
        return grad.detach().float().norm(2)

    weight = grad_norm(rec_loss) / (grad_norm(g_loss) + eps)
    weight = torch.where(torch.isfinite(weight), weight, torch.zeros_like(weight))
    return weight.clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------------
# the object the trainer talks to
# ---------------------------------------------------------------------------------------------

_LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def _unwrap(module: nn.Module) -> nn.Module:
    """Strip DDP / FSDP-style ``.module`` and ``torch.compile``'s ``._orig_mod`` wrappers."""
    while True:
        inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def _default_backward(loss: Tensor) -> None:
    loss.backward()


class AdversarialLoss(nn.Module):
    """Owns a discriminator and its Adam optimizer; computes generator and discriminator losses.

    Args:
        discriminator: any module mapping ``(B, C, [T,] H, W)`` in ``[-1, 1]`` to a logits map, or
            to a list of maps (:class:`~magtok.losses.discriminators.MultiScaleDiscriminator`; each
            scale's loss is averaged, each scale has its own LeCam EMAs).
        loss: ``'hinge'`` or ``'non_saturating'``.
        weight: base weight of the generator's adversarial term.
        adaptive: multiply by :func:`adaptive_weight` (needs ``rec_loss`` and ``last_layer`` in
            :meth:`generator_loss`).
        max_adaptive_weight: clamp of the adaptive weight.
        start_step: before this step the generator term is 0 (no discriminator forward) and the
            discriminator is neither evaluated nor stepped.
        r1_weight: weight of the R1 penalty on real inputs (0 disables).
        r1_every: lazy regularisation: R1 only on steps with ``(step - start_step) % r1_every == 0``,
            then multiplied by ``r1_every`` so its average strength does not change.
        lecam_weight: weight of the LeCam regulariser (0 disables).
        lecam_decay: EMA decay of the logits means LeCam anchors to (first update copies the value).
        lr, betas, weight_decay: Adam settings of the discriminator optimizer.
        grad_clip: max global grad norm of the discriminator (``None``: no clipping; the norm is
            still measured and logged).
        backward: callable ``backward(loss)`` used by :meth:`discriminator_step`
            (e.g. ``accelerator.backward``); default ``loss.backward()``.
        clip_grad_norm: callable ``clip_grad_norm(params, max_norm) -> norm`` (e.g.
            ``accelerator.clip_grad_norm_``); default ``torch.nn.utils.clip_grad_norm_``.
        scheduler: optional LR scheduler over :attr:`optimizer` (see :meth:`attach_scheduler`).

    Attributes the trainer may replace with wrapped versions (e.g. ``accelerator.prepare``):
    :attr:`discriminator`, :attr:`optimizer`, :attr:`scheduler`, :attr:`backward_fn`,
    :attr:`clip_grad_norm_fn`. :meth:`prepare` does this for an Accelerate ``Accelerator``.

    The generator pass runs the *unwrapped* discriminator with its parameters frozen, so it never
    triggers DDP gradient hooks and never leaves gradients in the discriminator. The discriminator
    pass runs the (possibly wrapped) discriminator once on ``cat([real, fake])`` so DDP sees one
    forward and one backward per step.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        *,
        loss: str = "hinge",
        weight: float = 0.1,
        adaptive: bool = True,
        max_adaptive_weight: float = 1e4,
        start_step: int = 0,
        r1_weight: float = 0.0,
        r1_every: int = 1,
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.0, 0.99),
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
        backward: Callable[[Tensor], Any] | None = None,
        clip_grad_norm: Callable[[Iterable[nn.Parameter], float], Tensor] | None = None,
        scheduler: Any | None = None,
    ):
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"unknown adversarial loss {loss!r}; known: {', '.join(sorted(_LOSSES))}")
        if r1_every < 1:
            raise ValueError(f"r1_every must be >= 1; got {r1_every}")
        if not 0.0 <= lecam_decay < 1.0:
            raise ValueError(f"lecam_decay must be in [0, 1); got {lecam_decay}")
        self.discriminator = discriminator
        self.loss_name = loss
        self._d_loss_fn, self._g_loss_fn = _LOSSES[loss]
        self.base_weight = weight
        self.adaptive = adaptive
        self.max_adaptive_weight = max_adaptive_weight
        self.start_step = start_step
        self.r1_weight, self.r1_every = r1_weight, r1_every
        self.lecam_weight, self.lecam_decay = lecam_weight, lecam_decay
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.scheduler = scheduler
        self.backward_fn: Callable[[Tensor], Any] = backward or _default_backward
        self.clip_grad_norm_fn = clip_grad_norm or torch.nn.utils.clip_grad_norm_

        num_outputs = getattr(discriminator, "num_scales", 1)  # one LeCam EMA pair per logits map
        self.register_buffer("lecam_ema_real", torch.zeros(num_outputs))
        self.register_buffer("lecam_ema_fake", torch.zeros(num_outputs))
        self.register_buffer("lecam_ema_initialized", torch.zeros((), dtype=torch.bool))

    # -- wiring ----------------------------------------------------------------------------

    @property
    def discriminator_module(self) -> nn.Module:
        """The bare discriminator (wrappers such as DDP or torch.compile stripped)."""
        return _unwrap(self.discriminator)

    def attach_scheduler(self, scheduler: Any) -> None:
        """Attach an LR scheduler built over :attr:`optimizer`; :meth:`discriminator_step` steps it once per call."""
        self.scheduler = scheduler

    def prepare(self, accelerator: Any) -> "AdversarialLoss":
        """Let an Accelerate ``Accelerator`` wrap the discriminator, optimizer and scheduler.

        Also routes backward and clipping through the accelerator. Note Accelerate's own rules: a
        prepared scheduler may step once per process per call, and with gradient accumulation a
        prepared optimizer only steps on sync steps.
        """
        if self.scheduler is None:
            self.discriminator, self.optimizer = accelerator.prepare(self.discriminator, self.optimizer)
        else:
            self.discriminator, self.optimizer, self.scheduler = accelerator.prepare(
                self.discriminator, self.optimizer, self.scheduler
            )
        self.backward_fn = accelerator.backward
        self.clip_grad_norm_fn = accelerator.clip_grad_norm_
        return self

    def is_active(self, step: int) -> bool:
        """Whether the adversarial game has started at ``step`` (``step >= start_step``)."""
        return step >= self.start_step

    def r1_due(self, step: int) -> bool:
        """Whether :meth:`discriminator_loss` adds the R1 penalty at ``step``."""
        return self.r1_weight > 0 and self.is_active(step) and (step - self.start_step) % self.r1_every == 0

    # -- generator side --------------------------------------------------------------------

    def generator_loss(
        self,
        recon: Tensor,
        step: int,
        rec_loss: Tensor | None = None,
        last_layer: nn.Parameter | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Weighted adversarial loss for the generator on ``recon``.

        Args:
            recon: reconstructions ``(B, C, [T,] H, W)`` in ``[-1, 1]``, attached to the generator graph.
            step: global training step (for ``start_step``).
            rec_loss: the reconstruction(+perceptual) loss, scalar; needed if ``adaptive``.
            last_layer: parameter the adaptive weight is measured at (decoder's last conv weight).

        Returns:
            ``(loss, logs)``: ``loss = weight * adaptive_weight * g_loss`` (fp32 scalar; exactly 0 and
            without graph before ``start_step``); logs ``g_loss`` (unweighted), ``g_loss_weighted``,
            ``adaptive_weight``, ``g_logits_fake_mean``.

        The discriminator's parameters are frozen (``requires_grad_(False)``) for the forward and
        restored afterwards, so the backward of ``loss`` reaches ``recon`` but leaves every
        discriminator ``.grad`` untouched. Without grad mode (e.g. validation under ``torch.no_grad``)
        the adaptive weight cannot be measured and is taken as 1.
        """
        if not self.is_active(step):
            zero = torch.zeros((), device=recon.device)
            return zero, {"g_loss": 0.0, "g_loss_weighted": 0.0, "adaptive_weight": 0.0}
        if self.adaptive and (rec_loss is None or last_layer is None):
            raise ValueError("adaptive adversarial weighting needs rec_loss and last_layer in generator_loss")

        disc = self.discriminator_module
        params = list(disc.parameters())
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            fake_logits = _as_list(disc(recon))
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

        g_loss = torch.stack([self._g_loss_fn(logits) for logits in fake_logits]).mean()
        if self.adaptive and torch.is_grad_enabled() and g_loss.requires_grad:
            weight = adaptive_weight(rec_loss, g_loss, last_layer, max_weight=self.max_adaptive_weight)
        else:
            weight = torch.ones((), device=g_loss.device)
        loss = self.base_weight * weight * g_loss
        logs = {
            "g_loss": g_loss.item(),
            "g_loss_weighted": loss.item(),
            "adaptive_weight": weight.item(),
            "g_logits_fake_mean": _mean_of(fake_logits),
        }
        return loss, logs

    # -- discriminator side ----------------------------------------------------------------

    def discriminator_loss(self, real: Tensor, recon: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        """Discriminator loss on real inputs vs. the generator step's reconstructions.

        Args:
            real: ground truth ``(B, C, [T,] H, W)`` in ``[-1, 1]``.
            recon: the reconstructions produced by this step's generator pass, same shape. Pass them
                detached; they are detached again here, so no gradient can reach the generator.
            step: global training step (``start_step`` gating, lazy R1 schedule).

        Returns:
            ``(d_loss, logs)``. ``d_loss = d_adv + lecam_weight * lecam + r1_weight * r1_every * r1``
            (fp32 scalar; the R1 term only on :meth:`r1_due` steps). Before ``start_step``: a zero
            without graph and ``{}`` (no forward is run). Logs: ``d_loss`` (total), ``d_adv``,
            ``logits_real_mean``, ``logits_fake_mean``, and when computed ``r1``, ``lecam``,
            ``lecam_ema_real``, ``lecam_ema_fake``.

        Real and fake go through the discriminator in one batch (``cat`` along B).
        """
        if not self.is_active(step):
            return torch.zeros((), device=real.device), {}
        if real.shape != recon.shape:
            raise ValueError(f"real {tuple(real.shape)} and recon {tuple(recon.shape)} must have the same shape")
        with_r1 = self.r1_due(step)
        real = real.detach().requires_grad_(with_r1)
        recon = recon.detach()
        b = real.shape[0]
        logits = _as_list(self.discriminator(torch.cat([real, recon], dim=0)))  # each (2B, ...)
        if len(logits) != self.lecam_ema_real.numel():
            raise ValueError(
                f"the discriminator returned {len(logits)} logits maps; this AdversarialLoss was built for "
                f"{self.lecam_ema_real.numel()} (num_scales of the discriminator)"
            )
        real_logits = [lg[:b] for lg in logits]
        fake_logits = [lg[b:] for lg in logits]

        d_adv = torch.stack([self._d_loss_fn(r, f) for r, f in zip(real_logits, fake_logits)]).mean()
        d_loss = d_adv
        logs: dict[str, float] = {
            "d_adv": d_adv.item(),
            "logits_real_mean": _mean_of(real_logits),
            "logits_fake_mean": _mean_of(fake_logits),
        }
        if with_r1:
            r1 = r1_penalty(real, real_logits)
            d_loss = d_loss + self.r1_weight * self.r1_every * r1
            logs["r1"] = r1.item()
        if self.lecam_weight > 0:
            self._update_lecam_ema(real_logits, fake_logits)
            lecam = torch.stack(
                [
                    lecam_reg(r, f, er, ef)
                    for r, f, er, ef in zip(real_logits, fake_logits, self.lecam_ema_real, self.lecam_ema_fake)
                ]
            ).mean()
            d_loss = d_loss + self.lecam_weight * lecam
            logs.update(
                lecam=lecam.item(),
                lecam_ema_real=self.lecam_ema_real.mean().item(),
                lecam_ema_fake=self.lecam_ema_fake.mean().item(),
            )
        logs["d_loss"] = d_loss.item()
        return d_loss, logs

    @torch.no_grad()
    def _update_lecam_ema(self, real_logits: list[Tensor], fake_logits: list[Tensor]) -> None:
        real_means = torch.stack([lg.detach().float().mean() for lg in real_logits]).to(self.lecam_ema_real)
        fake_means = torch.stack([lg.detach().float().mean() for lg in fake_logits]).to(self.lecam_ema_fake)
        if not bool(self.lecam_ema_initialized):
            self.lecam_ema_real.copy_(real_means)
            self.lecam_ema_fake.copy_(fake_means)
            self.lecam_ema_initialized.fill_(True)
        else:
            self.lecam_ema_real.lerp_(real_means, 1.0 - self.lecam_decay)
            self.lecam_ema_fake.lerp_(fake_means, 1.0 - self.lecam_decay)

    def discriminator_step(self, d_loss: Tensor, step: int) -> dict[str, float]:
        """One optimizer update of the discriminator, exactly once per call.

        Before ``start_step`` does nothing and returns ``{}``. Otherwise:
        ``optimizer.zero_grad`` -> ``backward_fn(d_loss)`` -> ``clip_grad_norm_fn`` (always called:
        clips at ``grad_clip``, or only measures with ``inf``) -> ``optimizer.step()`` ->
        ``scheduler.step()`` if a scheduler is attached -> ``optimizer.zero_grad`` (no discriminator
        gradient outlives the call). Returns ``{'d_grad_norm', 'd_lr'}``.

        Gradient accumulation over several calls is not supported (each call zeroes first).
        Non-finite gradients are not skipped here: with DDP and AMP grad scalers the skip decision
        belongs to the trainer / scaler.
        """
        if not self.is_active(step):
            return {}
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_fn(d_loss)
        max_norm = float("inf") if self.grad_clip is None else self.grad_clip
        grad_norm = self.clip_grad_norm_fn(params, max_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"d_grad_norm": float(grad_norm), "d_lr": float(self.optimizer.param_groups[0]["lr"])}

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Everything needed to resume exactly: discriminator weights (unwrapped keys), optimizer,
        scheduler (if any), LeCam EMAs. A flat checkpoint dict, not a prefixable module state."""
        return {
            "discriminator": self.discriminator_module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "lecam_ema_real": self.lecam_ema_real.detach().clone(),
            "lecam_ema_fake": self.lecam_ema_fake.detach().clone(),
            "lecam_ema_initialized": self.lecam_ema_initialized.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:  # type: ignore[override]
        """Restore from :meth:`state_dict` (optimizer tensors follow the discriminator's device)."""
        self.discriminator_module.load_state_dict(state["discriminator"], strict=strict)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            if self.scheduler is None:
                if strict:
                    raise ValueError("checkpoint has a discriminator LR scheduler state but none is attached")
            else:
                self.scheduler.load_state_dict(state["scheduler"])
        for name in ("lecam_ema_real", "lecam_ema_fake", "lecam_ema_initialized"):
            buf = getattr(self, name)
            if state[name].shape != buf.shape:
                raise ValueError(f"{name} has shape {tuple(state[name].shape)}; expected {tuple(buf.shape)}")
            buf.copy_(state[name])


def _mean_of(logits: list[Tensor]) -> float:
    return torch.stack([lg.detach().float().mean() for lg in logits]).mean().item()
