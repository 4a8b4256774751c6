"""The trainer: one code path for one CPU, one GPU, or many processes (``accelerate launch``).

A step reads as a few named calls::

    out = model(video)                                  # TokenizerOutput
    nll = recon_loss(out.recon, video) + perceptual(out.recon, video)
    g_adv = adv.generator_loss(out.recon, step, rec_loss=nll, last_layer=decoder_last_weight)
    backward(nll + quantizer_weight * out.aux_loss + g_adv); clip; opt.step(); sched.step()
    ema.update(model)
    adv.discriminator_step(adv.discriminator_loss(video, out.recon.detach(), step))

Pitfalls of other ports this avoids: the EMA exists on every rank; the validation batch is fixed
and evaluated on the main process with the EMA weights; each optimizer and each scheduler steps
exactly once per step (schedulers are not handed to Accelerate, which would step them once per
process); the discriminator sees the reconstructions of the generator step, not a fresh batch;
frozen nets never accumulate gradients; a non-finite loss skips the step (on every rank) and too
many in a row stop the run with a clear message.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from magtok.configs import TrainConfig
from magtok.models import VideoTokenizer
from magtok.training.checkpoints import (list_checkpoints, load_checkpoint, rng_state, save_checkpoint,
                                         set_rng_state)
from magtok.training.ema import EMA
from magtok.training.logging import RunLogger
from magtok.training.sampling import SeededItems, StepBatchSampler
from magtok.training.schedules import warmup_cosine


class NonFiniteLossError(RuntimeError):
    pass


def _collate(items: list[dict]) -> torch.Tensor:
    return torch.stack([it["video"] for it in items])


class Trainer:
    """Train a VideoTokenizer as described by a :class:`TrainConfig`.

    ``train_data`` / ``val_data``: datasets of ``dict(video=(3, T, H, W) in [-1, 1])``; built from
    ``cfg.data`` folders when omitted. ``image_data``: optional one-frame samples mixed in every
    ``round(1 / cfg.data.image_batch_ratio)``-th step. ``resume``: "auto" (continue if the output
    folder holds checkpoints), True (must resume) or False (start fresh; refused if checkpoints
    exist unless ``overwrite``).
    """

    def __init__(self, cfg: TrainConfig, train_data: Dataset | None = None, val_data: Dataset | None = None,
                 image_data: Dataset | None = None, resume: bool | str = "auto", overwrite: bool = False,
                 accelerator=None, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.tcfg = cfg.tokenizer_config()
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.optim.grad_accum < 1:
            raise ValueError("steps, batch_size and optim.grad_accum must all be >= 1")
        self.out = Path(cfg.output_dir)
        existing = list_checkpoints(self.out / "checkpoints")
        if resume is True and not existing:
            raise FileNotFoundError(f"resume requested but {self.out / 'checkpoints'} holds no checkpoint")
        if existing and resume is False and not overwrite:
            raise FileExistsError(f"{self.out} already holds checkpoints of a run; pass --resume to continue it "
                                  "or --overwrite to start over")
        self.resume_from = existing[-1] if existing and resume is not False else None

        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        if mp not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision {cfg.mixed_precision!r}: use 'auto', 'no' or 'bf16'")
        self.acc = accelerator or Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        set_seed(cfg.seed)
        self.progress = progress and self.acc.is_main_process

        # data ----------------------------------------------------------------------------
        if train_data is None:
            train_data, val_data, image_data = self._build_datasets(val_data)
        self.train_data, self.val_data, self.image_data = train_data, val_data, image_data
        if len(train_data) == 0:
            raise ValueError("the training set is empty")

        # model, optimizers, losses ----------------------------------------------------------
        model = VideoTokenizer(self.tcfg)
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_start_step)
        o = cfg.optim
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched = warmup_cosine(opt, o.warmup_steps, cfg.steps, o.min_lr_ratio)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.ema.model.to(self.acc.device)
        self.perceptual = self._build_perceptual().to(self.acc.device)
        self.adv = self._build_adversarial()
        self.step = 0
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0
        self.logger = RunLogger(self.out, enabled=self.acc.is_main_process)
        skipped = getattr(train_data, "skipped", None) or {}
        if skipped:
            self.logger.info(f"skipped {len(skipped)} unusable training file(s): "
                             + "; ".join(f"{p}: {why}" for p, why in sorted(skipped.items())))
        if self.resume_from is not None:
            self._load(self.resume_from)

    # ------------------------------------------------------------------ builders
    def _build_datasets(self, val_data):
        from magtok.data import build_training_datasets

        return build_training_datasets(self.cfg, self.tcfg, val_data)

    def _build_perceptual(self):
        from magtok.losses.perceptual import build_perceptual_loss

        lc = self.cfg.loss
        kind = lc.perceptual if lc.perceptual_weight > 0 else "none"
        return build_perceptual_loss(kind, lc.vgg_weights if kind == "vgg" else None,
                                     frames_per_clip=lc.perceptual_frames or None)

    def _build_adversarial(self):
        lc = self.cfg.loss
        if lc.discriminator == "none" or lc.adversarial_weight <= 0:
            return None
        from magtok.losses.adversarial import AdversarialLoss
        from magtok.losses.discriminators import build_discriminator

        disc = build_discriminator(lc.discriminator, dim=lc.discriminator_dim)
        adv = AdversarialLoss(disc, loss=lc.gan_loss, weight=lc.adversarial_weight, adaptive=lc.adaptive_weight,
                              start_step=lc.adversarial_start_step, r1_weight=lc.r1_weight,
                              lecam_weight=lc.lecam_weight, lr=self.cfg.optim.disc_lr,
                              grad_clip=self.cfg.optim.grad_clip)
        adv.to(self.acc.device)
        adv.prepare(self.acc)
        o = self.cfg.optim
        adv.attach_scheduler(warmup_cosine(adv.optimizer, o.warmup_steps,
                                           max(1, self.cfg.steps - lc.adversarial_start_step), o.min_lr_ratio))
        return adv

    # ------------------------------------------------------------------ state
    @property
    def unwrapped(self) -> VideoTokenizer:
        return self.acc.unwrap_model(self.model)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.unwrapped.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "adversarial": self.adv.state_dict() if self.adv is not None else None,
            "rng": rng_state(),
            "data_position": {"step": self.step, "seed": self.cfg.seed},
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "skipped_steps": self.skipped_steps,
        }

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path)
        self.unwrapped.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.adv is not None and state.get("adversarial") is not None:
            self.adv.load_state_dict(state["adversarial"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.logger.info(f"resumed from {path} at step {self.step}")

    def save_checkpoint(self) -> Path | None:
        self.acc.wait_for_everyone()
        path = None
        if self.acc.is_main_process:
            path = save_checkpoint(self.out / "checkpoints", self.step, self.state_dict(), self.cfg.to_dict(),
                                   self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        return path

    # ------------------------------------------------------------------ data
    def _loader(self, start: int, stop: int) -> DataLoader:
        sampler = StepBatchSampler(len(self.train_data), self.cfg.batch_size, stop, start,
                                   self.cfg.optim.grad_accum, self.acc.process_index, self.acc.num_processes,
                                   self.cfg.seed, n_images=len(self.image_data) if self.image_data else 0,
                                   image_every=self._image_every())
        items = SeededItems(self.train_data, self.image_data) if self.image_data else SeededItems(self.train_data)
        return DataLoader(items, batch_sampler=sampler, collate_fn=_collate, num_workers=self.cfg.data.num_workers,
                          persistent_workers=False)

    def _image_every(self) -> int:
        r = self.cfg.data.image_batch_ratio
        return 0 if r <= 0 or not self.image_data else max(1, round(1 / r))

    def val_batch(self) -> torch.Tensor | None:
        if self.val_data is None or len(self.val_data) == 0:
            return None
        n = min(self.cfg.data.val_clips, len(self.val_data))
        return torch.stack([self.val_data[i]["video"] for i in range(n)])

    # ------------------------------------------------------------------ losses
    def _recon_loss(self, recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss.recon == "l1":
            return F.l1_loss(recon, video)
        if self.cfg.loss.recon == "mse":
            return F.mse_loss(recon, video)
        raise ValueError(f"loss.recon {self.cfg.loss.recon!r}: use 'l1' or 'mse'")

    def _all_finite(self, loss: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=self.acc.device)
        return float(self.acc.reduce(flag, reduction="sum")) == 0.0

    # ------------------------------------------------------------------ the loop
    def train_step(self, micro_batches: list[torch.Tensor]) -> dict:
        lc, step = self.cfg.loss, self.step
        logs: dict[str, float] = {}
        last_layer = self.unwrapped.decoder.conv_out.conv.weight
        accum = len(micro_batches)
        finite = True
        out = video = None
        for i, video in enumerate(micro_batches):
            video = video.to(self.acc.device)
            sync = self.acc.no_sync(self.model) if i < accum - 1 else _null()
            with sync:
                out = self.model(video)
                rec = self._recon_loss(out.recon, video)
                perc = self.perceptual(out.recon, video) * lc.perceptual_weight if lc.perceptual_weight > 0 \
                    else rec.new_zeros(())
                nll = lc.recon_weight * rec + perc
                loss = nll + lc.quantizer_weight * out.aux_loss
                if self.adv is not None:
                    g_adv, g_logs = self.adv.generator_loss(out.recon, step, rec_loss=nll, last_layer=last_layer)
                    loss = loss + g_adv
                    logs.update({f"gen/{k}": v for k, v in g_logs.items()})
                if not self._all_finite(loss):
                    finite = False
                    break
                self.acc.backward(loss / accum)
            logs.update({"loss/total": loss.item(), "loss/recon": rec.item(), "loss/perceptual": perc.item(),
                         "loss/quantizer": out.aux_loss.item()})
            logs.update({f"quantizer/{k}": float(v) for k, v in out.metrics.items()})
        grad_norm = None
        if finite:
            grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip) \
                if self.cfg.optim.grad_clip else None
            finite = grad_norm is None or self._all_finite(grad_norm)
        if not finite:
            self.opt.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            self.skipped_steps += 1
            self.logger.info(f"step {step}: non-finite loss or gradient, step skipped "
                             f"({self.nonfinite_in_a_row} in a row)")
            if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient (last at step {step}); "
                    "lower optim.lr, check the data for corrupt frames, or set mixed_precision=no")
            return {"skipped": 1.0}
        self.nonfinite_in_a_row = 0
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.unwrapped, step + 1)
        if grad_norm is not None:
            logs["optim/grad_norm"] = float(grad_norm)
        logs["optim/lr"] = self.sched.get_last_lr()[0]
        if self.adv is not None and self.adv.is_active(step):
            d_loss, d_logs = self.adv.discriminator_loss(video, out.recon.detach(), step)
            d_logs.update(self.adv.discriminator_step(d_loss, step))
            logs.update({f"disc/{k}": v for k, v in d_logs.items()})
            logs["optim/disc_lr"] = self.adv.optimizer.param_groups[0]["lr"]
        return logs

    @torch.no_grad()
    def validate(self) -> dict:
        from magtok.metrics import psnr, ssim

        batch = self.val_batch()
        if batch is None:
            return {}
        model = self.ema.model
        recon = torch.cat([model(batch[i:i + 1].to(self.acc.device)).recon.clamp(-1, 1).cpu()
                           for i in range(batch.shape[0])])
        metrics = {"val/psnr": float(psnr(recon, batch).mean()), "val/ssim": float(ssim(recon, batch).mean())}
        self.logger.images(self.step, batch, recon)
        return metrics

    def fit(self, stop_at: int | None = None) -> dict:
        """Train until ``cfg.steps`` (or ``stop_at``, or the time budget); returns the last metrics."""
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        loader = iter(self._loader(self.step, end)) if self.step < end else iter(())
        started = time.time()
        budget = cfg.max_minutes * 60 if cfg.max_minutes else None
        bar = None
        if self.progress:
            from tqdm import tqdm

            if budget is not None:  # a time budget: the bar counts seconds, the postfix steps
                bar = tqdm(total=round(budget), desc="train", unit="s", dynamic_ncols=True,
                           bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
            else:
                bar = tqdm(total=end, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        last: dict = {}
        window: dict[str, list[float]] = {}
        frames_seen, t_log = 0, time.time()
        if self.step == 0 and self.acc.is_main_process:
            last.update(self.validate())
            self.logger.scalars(0, last)
        while self.step < end:
            micro = [next(loader) for _ in range(cfg.optim.grad_accum)]
            self.model.train()
            logs = self.train_step(micro)
            self.step += 1
            frames_seen += sum(m.shape[0] * m.shape[2] for m in micro) * self.acc.num_processes
            if bar is not None:
                if budget is not None:
                    bar.n = min(budget, time.time() - started)
                    bar.set_postfix(step=self.step, loss=f"{logs.get('loss/total', float('nan')):.4f}", refresh=False)
                    bar.refresh()
                else:
                    bar.update(1)
                    if "loss/total" in logs:
                        bar.set_postfix(loss=f"{logs['loss/total']:.4f}", refresh=False)
            for k, v in logs.items():
                window.setdefault(k, []).append(v)
            if self.step % cfg.log_every == 0 or self.step == end:
                dt = max(time.time() - t_log, 1e-9)
                logs = {k: sum(v) / len(v) for k, v in window.items()}  # means over the log interval
                window = {}
                logs["perf/frames_per_s"] = frames_seen / dt
                logs["perf/steps_per_s"] = cfg.log_every / dt
                logs["train/skipped_steps"] = float(self.skipped_steps)
                skipped_files = getattr(self.train_data, "skipped", None)
                if skipped_files is not None:
                    logs["data/skipped_files"] = float(len(skipped_files))
                frames_seen, t_log = 0, time.time()
                self.logger.scalars(self.step, logs)
            last.update(logs)
            if self.step % cfg.val_every == 0 and self.acc.is_main_process:
                val = self.validate()
                self.logger.scalars(self.step, val)
                last.update(val)
            out_of_time = budget is not None and time.time() - started > budget
            if self.step % cfg.checkpoint_every == 0 or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                self.logger.info(f"time budget of {cfg.max_minutes} min spent at step {self.step}")
                break
        if bar is not None:
            bar.close()
        if self.step >= cfg.steps or stop_at is None:
            if self.step % cfg.checkpoint_every != 0:
                self.save_checkpoint()
            if self.acc.is_main_process:
                final = self.validate()
                self.logger.scalars(self.step, final)
                last.update(final)
                self.export()
        self.acc.wait_for_everyone()
        self.logger.close()
        return last

    def export(self) -> Path:
        """Write the final tokenizer (EMA weights by default) with ``save_pretrained``."""
        model = self.ema.model if self.cfg.export_ema else self.unwrapped
        path = model.save_pretrained(self.out / "model", overwrite=True)
        self.logger.info(f"exported the {'EMA ' if self.cfg.export_ema else ''}tokenizer to {path}")
        return path


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
