"""The trainer: one code path for one CPU, one GPU, or many processes (``accelerate launch``).

A step reads as a few named calls::

    out = model(video)                                  # TokenizerOutput
    nll = recon_loss(out.recon, video) + perceptual(out.recon, video)
    g_adv = adv.generator_loss(out.recon, step, rec_loss=nll, last_layer=decoder_last_weight)
    backward(nll + quantizer_weight * out.aux_loss + g_adv); clip; opt.step(); sched.step()
    ema.update(model)
    adv.discriminator_step(adv.discriminator_loss(video, out.recon.detach(), step))

Pitfalls of other ports this avoids: the EMA exists on every rank; validation is split across the
ranks (each scores its share of the fixed validation clips with the EMA weights, the sums are
reduced); each optimizer and each scheduler steps exactly once per step (schedulers are not handed
to Accelerate, which would step them once per process); the discriminator sees the reconstructions
of the generator step, not a fresh batch; frozen nets never accumulate gradients.

Ranks always agree. Every decision that ends or skips work is made once for all processes: a
non-finite loss or gradient on any rank skips the step on every rank (and too many in a row stop the
run, everywhere); after each step one small all-reduce combines the time budget (any rank past it)
and signals (SIGINT/SIGTERM received by any rank), so all ranks checkpoint and stop at the same step.
LFQ/VQ run collectives inside the training forward, so a rank that stopped alone would hang the others.

Signals: the first SIGINT (Ctrl-C) or SIGTERM asks the run to stop: the current step finishes, a
checkpoint is written, and :class:`TrainingInterrupted` (a KeyboardInterrupt) is raised; a second
Ctrl-C exits at once (a SIGTERM after the first signal, as launchers send when Ctrl-C reaches them, is
only noted, so the checkpoint still finishes).

Checkpoints use Accelerate's ``save_state`` / ``load_state`` (see :mod:`magtok.training.checkpoints`);
checkpoints of the earlier single-file format still resume. Resuming states what differs from the
checkpoint's config, applies the safe changes and records them (``resume_history.jsonl``), and refuses
the unsafe ones (:mod:`magtok.training.runconfig`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from magtok.configs import TokenizerConfig, TrainConfig
from magtok.errors import ConfigError, ExistsError, MissingError, UserError
from magtok.models import VideoTokenizer
from magtok.training.checkpoints import (PREFIX, TMP_PREFIX, checkpoint_step, is_legacy, list_checkpoints,
                                         load_legacy_checkpoint, prune, read_checkpoint_config, read_meta,
                                         set_rng_state, write_meta)
from magtok.training.ema import EMA
from magtok.training.logging import RunLogger, flat_hparams
from magtok.training.runconfig import OPTIM_KEYS, check_train_config, format_changes, resume_changes
from magtok.training.sampling import SeededItems, StepBatchSampler
from magtok.training.schedules import warmup_cosine


class NonFiniteLossError(UserError, RuntimeError):
    """Too many steps in a row had a non-finite loss or gradient (the message says what to try)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :meth:`Trainer.fit` after a SIGINT/SIGTERM: the checkpoint of ``step`` was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, output_dir: Path):
        self.signum, self.step, self.checkpoint, self.output_dir = signum, step, checkpoint, output_dir
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
        super().__init__(f"{name}: stopped at step {step}; checkpoint {checkpoint}; continue with --resume "
                         f"(output_dir={output_dir})")


def _collate(items: list[dict]) -> torch.Tensor:
    return torch.stack([it["video"] for it in items])


class _Counters:
    """The trainer's own counters, saved with Accelerate's state (``register_for_checkpointing``)."""

    def __init__(self, trainer: "Trainer"):
        self.t = trainer

    def state_dict(self) -> dict:
        return {"step": self.t.step, "nonfinite_in_a_row": self.t.nonfinite_in_a_row,
                "skipped_steps": self.t.skipped_steps, "seed": self.t.cfg.seed}

    def load_state_dict(self, state: dict) -> None:
        self.t.step = int(state["step"])
        self.t.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))
        self.t.skipped_steps = int(state.get("skipped_steps", 0))


class _AdversarialExtra:
    """What of the adversarial loss Accelerate does not already save with the prepared discriminator
    and its optimizer: the discriminator's LR scheduler and the LeCam EMAs."""

    def __init__(self, adv):
        self.adv = adv

    def state_dict(self) -> dict:
        full = self.adv.state_dict()
        return {k: v for k, v in full.items() if k not in ("discriminator", "optimizer")}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scheduler") is not None and self.adv.scheduler is not None:
            self.adv.scheduler.load_state_dict(state["scheduler"])
        for name in ("lecam_ema_real", "lecam_ema_fake", "lecam_ema_initialized"):
            getattr(self.adv, name).copy_(state[name])


def _check_trackers(log_with) -> list[str]:
    """Tracker names for Accelerate (``"tensorboard"``, ``"wandb,mlflow"``, ``"none"``); a clear error
    when one is asked for but not installed."""
    if log_with is None:
        return []
    names = [n.strip().lower() for n in (log_with.split(",") if isinstance(log_with, str) else log_with)]
    names = [n for n in names if n and n != "none"]
    import importlib.util

    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    known = sorted(LOGGER_TYPE_TO_CLASS)
    for n in names:
        if n not in known:
            raise UserError(f"log_with {n!r}: unknown tracker; use one of {', '.join(known)} or 'none'")
        modules = ("tensorboard", "tensorboardX") if n == "tensorboard" else (n,)
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise UserError(f"log_with {n!r}: the package is not installed; `pip install {n.replace('_', '-')}` "
                            "or use log_with=tensorboard")
    return names


def _load_init_weights(model: VideoTokenizer, name_or_path: str) -> Path:
    """Copy the weights of a saved tokenizer (bundled name or folder) into ``model``; ConfigError when the
    folder is not a model or its architecture differs from ``model``'s."""
    from safetensors.torch import load_file

    from magtok.models.pretrained import resolve_pretrained
    from magtok.models.tokenizer import CONFIG_NAME, WEIGHTS_NAME

    try:
        folder = resolve_pretrained(name_or_path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"init_from: {e}") from None
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise ConfigError(f"init_from: {folder} is not a magtok model folder (it needs {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME}, written by save_pretrained or `magtok train`)")
    try:
        saved = TokenizerConfig.from_dict(json.loads(cfg_path.read_text())["config"]).to_dict()
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"init_from: cannot read {cfg_path} ({e})") from None
    wanted = model.config.to_dict()
    diff = sorted(k for k in set(saved) | set(wanted) if json.dumps(saved.get(k)) != json.dumps(wanted.get(k)))
    if diff:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in diff[:4])
        raise ConfigError(f"init_from: {name_or_path} has another architecture than this run's model ({shown}); "
                          f"set model/model_overrides to match it, or drop init_from")
    model.load_state_dict(load_file(str(w_path)))
    return folder


class Trainer:
    """Train a VideoTokenizer as described by a :class:`TrainConfig`.

    ``train_data`` / ``val_data``: datasets of ``dict(video=(3, T, H, W) in [-1, 1])``; built from
    ``cfg.data`` folders when omitted. ``image_data``: optional one-frame samples mixed in every
    ``round(1 / cfg.data.image_batch_ratio)``-th step. ``resume``: "auto" (continue if the output
    folder holds checkpoints), True (must resume) or False (start fresh; refused if checkpoints
    exist unless ``overwrite``, which then deletes the old run's checkpoints and logs when training
    starts, and lets the export replace ``model/``). ``log_with``: Accelerate trackers
    ("tensorboard" default; "wandb", "mlflow", ... or "none"), used when the trainer builds its
    own Accelerator. ``handle_signals``: during :meth:`fit`, SIGINT/SIGTERM save a checkpoint and stop
    (main thread only); False leaves the process's signal handlers alone.
    """

    def __init__(self, cfg: TrainConfig, train_data: Dataset | None = None, val_data: Dataset | None = None,
                 image_data: Dataset | None = None, resume: bool | str = "auto", overwrite: bool = False,
                 accelerator=None, progress: bool = True, log_with: str | list | None = "tensorboard",
                 handle_signals: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        self.cfg = check_train_config(cfg)
        self.tcfg = cfg.tokenizer_config()
        self.out = Path(cfg.output_dir)
        self.overwrite = overwrite
        self.handle_signals = handle_signals
        existing = list_checkpoints(self.out / "checkpoints")
        if resume is True and not existing:
            raise MissingError(f"resume requested but {self.out / 'checkpoints'} holds no checkpoint; "
                               "drop --resume to start a new run")
        if existing and resume is False and not overwrite:
            raise ExistsError(f"{self.out} already holds checkpoints of a run; pass --resume to continue it "
                              "or --overwrite to start over")
        self.resume_from = existing[-1] if existing and resume is not False else None
        self._start_over = bool(existing) and resume is False and overwrite
        self.resume_changes: dict = {}
        if self.resume_from is not None:
            old = read_checkpoint_config(self.resume_from)
            if old is not None:
                # refuses unsafe changes before any work
                self.resume_changes = resume_changes(old, cfg, read_meta(self.resume_from).get("tokenizer"))

        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        trackers = _check_trackers(log_with) if accelerator is None else []
        self.acc = accelerator or Accelerator(
            mixed_precision=mp, cpu=not torch.cuda.is_available(), log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tb")))
        set_seed(cfg.seed)
        self.progress = progress and self.acc.is_main_process

        # data ----------------------------------------------------------------------------
        if train_data is None:
            train_data, val_data, image_data = self._build_datasets(val_data)
        self.train_data, self.val_data, self.image_data = train_data, val_data, image_data
        if len(train_data) == 0:
            raise UserError("the training set is empty: point data.train_dir at a folder of videos")

        # model, optimizers, losses ----------------------------------------------------------
        model = VideoTokenizer(self.tcfg)
        self.init_from: Path | None = None
        if cfg.init_from and self.resume_from is None:
            self.init_from = _load_init_weights(model, cfg.init_from)
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
        self.exported: Path | None = None
        self._signal: int | None = None
        self._last_saved: int | None = None
        # Accelerate saves and restores these with the models and optimizers (custom_checkpoint_<i>);
        # the adversarial extra comes last so a run without a discriminator keeps the same indices
        self.acc.register_for_checkpointing(_Counters(self), self.ema, self.sched)
        if self.adv is not None:
            self.acc.register_for_checkpointing(_AdversarialExtra(self.adv))
        self.logger = RunLogger(self.out, enabled=self.acc.is_main_process, accelerator=self.acc)
        self._trackers_started = False
        skipped = getattr(train_data, "skipped", None) or {}
        if skipped:
            self.logger.warning(f"skipped {len(skipped)} unusable training file(s): "
                                + "; ".join(f"{p}: {why}" for p, why in sorted(skipped.items())))
        if self.resume_from is not None:
            self._load(self.resume_from)
        elif self.init_from is not None:
            self.logger.info(f"initialised the model and its EMA from {self.init_from} (init_from={cfg.init_from!r})")

    # ------------------------------------------------------------------ builders
    def _build_datasets(self, val_data):
        """The datasets of ``cfg.data``. With several processes only the main process scans and probes
        the files; the others receive its datasets (and its error, if any, so that every rank fails the
        same way instead of waiting for one that stopped)."""
        from magtok.data import build_training_datasets

        if self.acc.num_processes == 1:
            return build_training_datasets(self.cfg, self.tcfg, val_data)
        import torch.distributed as dist

        box = [None]
        if self.acc.is_main_process:
            try:
                box[0] = ("ok", build_training_datasets(self.cfg, self.tcfg, val_data))
            except Exception as e:  # every rank raises it
                box[0] = ("error", e)
        device = self.acc.device if self.acc.device.type == "cuda" else None
        dist.broadcast_object_list(box, src=0, device=device)
        kind, value = box[0]
        if kind == "error":
            # every rank leaves together and closes the process group: a rank that exits while
            # another's gloo threads still run aborts ("terminate called without an active exception")
            dist.barrier()
            dist.destroy_process_group()
            raise value
        return value

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

    def _load(self, path: Path) -> None:
        if is_legacy(path):
            self._load_legacy(path)
        else:
            self.acc.load_state(str(path))
        if self.step != checkpoint_step(path):
            raise UserError(f"{path} holds step {self.step}, not the step its name says; the checkpoint folder "
                            "was renamed or mixed up: move it away and resume from another one")
        self._last_saved = self.step
        self._apply_changes()
        what = "a legacy (state.pt) checkpoint" if is_legacy(path) else "checkpoint"
        self.logger.info(f"resumed from {what} {path} at step {self.step}")

    def _load_legacy(self, path: Path) -> None:
        """Checkpoints written before Accelerate state (one ``state.pt``, rank 0's RNG only)."""
        state = load_legacy_checkpoint(path)
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

    def _apply_changes(self) -> None:
        """State and record what the resumed run changes from the checkpoint's config. Everything built
        from the config (EMA decay, loss weights, schedules' shapes, logging) already follows the new
        config; optimizer hyperparameters were restored from the checkpoint, so they are set here, and
        the learning rates of this step are recomputed from the (possibly new) schedules."""
        changes = self.resume_changes
        if not changes:
            return
        if any(k in changes for k in OPTIM_KEYS):
            o = self.cfg.optim
            for group in self.opt.param_groups:
                group["initial_lr"] = o.lr
                group["betas"] = tuple(o.betas)
                group["weight_decay"] = o.weight_decay
            _reset_lr(self.sched, o.lr)
            if self.adv is not None and self.adv.scheduler is not None:
                for group in self.adv.optimizer.param_groups:
                    group["initial_lr"] = o.disc_lr
                _reset_lr(self.adv.scheduler, o.disc_lr)
        self.logger.warning(f"resuming at step {self.step} with changes from the checkpoint's config: "
                            f"{format_changes(changes)}")
        if self.acc.is_main_process:
            with open(self.out / "resume_history.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "time": time.time(),
                                    "changes": {k: list(v) for k, v in changes.items()}}) + "\n")

    def _checkpoint_config(self) -> dict:
        return self.cfg.to_dict()

    def save_checkpoint(self) -> Path:
        """Every rank writes its part (Accelerate ``save_state``) into ``.tmp-step_N``; the main process
        then renames it to ``step_N`` and prunes to ``keep_checkpoints``. Called on all ranks together."""
        ckpts = self.out / "checkpoints"
        final = ckpts / f"{PREFIX}{self.step:08d}"
        tmp = ckpts / f"{TMP_PREFIX}{PREFIX}{self.step:08d}"
        if self.acc.is_main_process:
            ckpts.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            write_meta(tmp, self.step, self._checkpoint_config(), self.tcfg.to_dict())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            prune(ckpts, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        self._last_saved = self.step
        return final

    def _remove_earlier_run(self) -> None:
        """--overwrite: the earlier run's checkpoints and logs go (the export is replaced at the end)."""
        if self.acc.is_main_process:
            for name in ("checkpoints", "samples", "tb"):
                shutil.rmtree(self.out / name, ignore_errors=True)
            for name in ("metrics.jsonl", "train.log", "resume_history.jsonl", "train_config.json"):
                (self.out / name).unlink(missing_ok=True)
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            self.logger.info(f"--overwrite: removed the earlier run's checkpoints and logs in {self.out}")
        self.acc.wait_for_everyone()

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

    def val_indices(self) -> list[int]:
        """This rank's share of the validation clips (clip i goes to rank i mod world)."""
        if self.val_data is None:
            return []
        n = min(self.cfg.data.val_clips, len(self.val_data))
        return list(range(self.acc.process_index, n, self.acc.num_processes))

    def val_batch(self) -> torch.Tensor | None:
        idx = self.val_indices()
        return torch.stack([self.val_data[i]["video"] for i in idx]) if idx else None

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
            self.logger.warning(f"step {step}: non-finite loss or gradient, step skipped "
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
        """PSNR / SSIM of the EMA model on the validation clips, split across ranks (call on all ranks)."""
        from magtok.metrics import psnr, ssim

        idx = self.val_indices()
        if self.val_data is None or min(self.cfg.data.val_clips, len(self.val_data)) == 0:
            return {}
        model = self.ema.model
        clips, recons = [], []
        totals = torch.zeros(3, dtype=torch.float64)
        for i in idx:
            video = self.val_data[i]["video"][None]
            recon = model(video.to(self.acc.device)).recon.clamp(-1, 1).float().cpu()
            totals += torch.tensor([float(psnr(recon, video).mean()), float(ssim(recon, video).mean()), 1.0],
                                   dtype=torch.float64)
            clips.append(video)
            recons.append(recon)
        if self.acc.num_processes > 1:
            totals = self.acc.reduce(totals.to(self.acc.device), reduction="sum").cpu()
        if self.acc.is_main_process and clips:
            self.logger.images(self.step, torch.cat(clips), torch.cat(recons))
        n = max(float(totals[2]), 1.0)
        return {"val/psnr": float(totals[0]) / n, "val/ssim": float(totals[1]) / n}

    # ------------------------------------------------------------------ decisions all ranks share
    def _agree(self, out_of_time: bool) -> tuple[bool, int]:
        """(any rank out of time, the highest signal number any rank received or 0): one all-reduce."""
        flags = torch.tensor([1.0 if out_of_time else 0.0, float(self._signal or 0)], device=self.acc.device)
        if self.acc.num_processes > 1:
            import torch.distributed as dist

            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0] > 0), int(flags[1])

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: exit at once
                self._restore_signals()
                raise KeyboardInterrupt
            # a SIGTERM after the first signal: launchers (torchrun, accelerate launch) forward Ctrl-C to
            # their workers as SIGTERM; the stop is already under way, let the checkpoint finish
            self.logger.warning(f"{signal.Signals(signum).name} received: already stopping after this step")
            return
        self._signal = signum
        name = signal.Signals(signum).name
        self.logger.warning(f"{name} received: finishing step {self.step + 1}, saving a checkpoint, then stopping "
                            "(press Ctrl-C again to exit at once, without saving)")

    def _install_signals(self) -> None:
        self._old_handlers = {}
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[s] = signal.signal(s, self._on_signal)

    def _restore_signals(self) -> None:
        for s, h in getattr(self, "_old_handlers", {}).items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old_handlers = {}

    def _start_trackers(self) -> None:
        if self._trackers_started:
            return
        self._trackers_started = True
        if self.acc.log_with and not self.acc.trackers:
            self.acc.init_trackers(self.out.resolve().name or "magtok", config=flat_hparams(self.cfg.to_dict()))

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_at: int | None = None) -> dict:
        """Train until ``cfg.steps`` (or ``stop_at``, or the time budget); returns the last metrics.

        Raises :class:`TrainingInterrupted` after SIGINT/SIGTERM (a checkpoint of the last step is saved).
        """
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        if self._start_over:
            self._remove_earlier_run()
            self._start_over = False
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(cfg.to_dict(), indent=2)
            tmp = self.out / ".train_config.json.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / "train_config.json")
        self._start_trackers()
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
        self._install_signals()
        try:
            if self.step == 0:
                last.update(self.validate())
                self.logger.scalars(0, last)
            out_of_time, signum = False, 0
            while self.step < end:
                micro = [next(loader) for _ in range(cfg.optim.grad_accum)]
                self.model.train()
                logs = self.train_step(micro)
                self.step += 1
                frames_seen += sum(m.shape[0] * m.shape[2] for m in micro) * self.acc.num_processes
                if bar is not None:
                    if budget is not None:
                        bar.n = min(budget, time.time() - started)
                        bar.set_postfix(step=self.step, loss=f"{logs.get('loss/total', float('nan')):.4f}",
                                        refresh=False)
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
                # one decision for all ranks: the time budget and signals
                out_of_time, signum = self._agree(budget is not None and time.time() - started > budget)
                if self.step % cfg.val_every == 0 and not signum:
                    val = self.validate()
                    self.logger.scalars(self.step, val)
                    last.update(val)
                if self.step % cfg.checkpoint_every == 0 or out_of_time or signum:
                    self.save_checkpoint()
                if signum:
                    path = self.out / "checkpoints" / f"{PREFIX}{self.step:08d}"
                    self.logger.warning(f"{signal.Signals(signum).name}: stopped at step {self.step}, checkpoint "
                                        f"saved to {path}; continue with --resume")
                    raise TrainingInterrupted(signum, self.step, path, self.out)
                if out_of_time:
                    self.logger.info(f"time budget of {cfg.max_minutes} min spent at step {self.step}")
                    break
            if bar is not None:
                bar.close()
                bar = None
            if self.step >= cfg.steps or stop_at is None:
                if self._last_saved != self.step:
                    self.save_checkpoint()
                final = self.validate()
                self.logger.scalars(self.step, final)
                last.update(final)
                if self.acc.is_main_process:
                    self.exported = self.export()
            self.acc.wait_for_everyone()
        finally:
            self._restore_signals()
            if bar is not None:
                bar.close()
            self.logger.close()
        return last

    def export(self) -> Path:
        """Write the final tokenizer (EMA weights unless ``export_ema=False``) with ``save_pretrained``.

        ``model/`` is never replaced in place (token files point to it) unless the trainer was built
        with ``overwrite=True``: when it holds other weights, the export goes to ``model-step_N/``.
        """
        model = self.ema.model if self.cfg.export_ema else self.unwrapped
        what = "EMA " if self.cfg.export_ema else ""
        target = self.out / "model"
        if (target / "config.json").exists() and not self.overwrite:
            try:
                earlier = json.loads((target / "config.json").read_text()).get("fingerprint")
            except (json.JSONDecodeError, OSError):
                earlier = None
            if earlier == model.fingerprint():
                self.logger.info(f"the {what}tokenizer in {target} is already this one; left as it is")
                return target
            versioned = self.out / f"model-step_{self.step:08d}"
            self.logger.warning(f"{target} holds an earlier export (fingerprint {earlier}) that token files may "
                                f"point to, so it is left as it is; this export goes to {versioned} "
                                "(train with --overwrite to replace model/)")
            target = versioned
        path = model.save_pretrained(target, overwrite=True)
        self.logger.info(f"exported the {what}tokenizer to {path}")
        return path


def _reset_lr(sched, base_lr: float) -> None:
    """Give a LambdaLR schedule a new base learning rate and set this step's rate from it."""
    sched.base_lrs = [base_lr for _ in sched.base_lrs]
    lrs = [base * lmbda(sched.last_epoch) for base, lmbda in zip(sched.base_lrs, sched.lr_lambdas)]
    for group, lr in zip(sched.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
