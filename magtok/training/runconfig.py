"""Checks of a TrainConfig before a run starts, and what a resume may change.

``check_train_config(cfg)`` turns values of the wrong shape (``data: 5``, ``optim.betas=5``) into
one-line :class:`~magtok.errors.ConfigError` messages that name the key, what was given and what is
accepted; a few unambiguous shorthands get a safe default (``data.size=16`` means 16 x 16).

``resume_changes(checkpoint_config, cfg)`` compares the config a checkpoint was written with to the
config of the run that resumes it. Changes that only steer the rest of the run (learning rates,
step count, loss weights, logging, ...) are safe: the trainer applies them and records them.
Changes that would make the checkpoint's state meaningless (the preset or its architecture, the
clip geometry, the discriminator) are refused with the fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from magtok.configs import DataConfig, LossConfig, OptimConfig, TrainConfig
from magtok.errors import ConfigError, ResumeError

_SECTIONS = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig}
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _section_error(name: str, klass, value) -> ConfigError:
    keys = ", ".join(f.name for f in dataclasses.fields(klass))
    first = dataclasses.fields(klass)[0].name
    return ConfigError(f"config key {name!r} must be a section (a mapping of keys such as {keys}), got {value!r}; "
                       f"e.g. `{name}: {{{first}: ...}}` in YAML or `{name}.{first}=...` on the command line")


def check_sections(data: dict) -> dict:
    """Before ``TrainConfig.from_dict``: the sections of a raw config dict must be mappings."""
    for name, klass in _SECTIONS.items():
        if name in data and not isinstance(data[name], dict):
            raise _section_error(name, klass, data[name])
    if "model_overrides" in data and not isinstance(data["model_overrides"], dict):
        raise ConfigError(f"config key 'model_overrides' must be a mapping of TokenizerConfig fields, "
                          f"got {data['model_overrides']!r}")
    return data


def check_train_config(cfg: TrainConfig) -> TrainConfig:
    """Validate ``cfg`` in place (and return it); raise ConfigError naming the key and the fix."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"expected a TrainConfig, got {type(cfg).__name__}")
    for name, klass in _SECTIONS.items():
        value = getattr(cfg, name)
        if not isinstance(value, klass):
            raise _section_error(name, klass, value)
    if not isinstance(cfg.model_overrides, dict):
        raise ConfigError(f"config key 'model_overrides' must be a mapping of TokenizerConfig fields, "
                          f"got {cfg.model_overrides!r}")
    o, d, lc = cfg.optim, cfg.data, cfg.loss
    betas = o.betas
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(_is_number(b) for b in betas) \
            or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.99]; got {betas!r} "
                          "(on the command line: optim.betas=[0.9,0.99])")
    o.betas = (float(betas[0]), float(betas[1]))
    size = d.size
    if size is not None:
        if _is_number(size) and int(size) == size:
            d.size = (int(size), int(size))  # a square: 16 means 16 x 16
        elif isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_number(s) and int(s) == s for s in size):
            d.size = (int(size[0]), int(size[1]))
        else:
            raise ConfigError(f"data.size must be an integer or [height, width], e.g. [128, 128]; got {size!r}")
        if min(d.size) < 1:
            raise ConfigError(f"data.size must be positive; got {list(d.size)}")
    for key, value, minimum in (("steps", cfg.steps, 1), ("batch_size", cfg.batch_size, 1),
                                ("optim.grad_accum", o.grad_accum, 1), ("log_every", cfg.log_every, 1),
                                ("val_every", cfg.val_every, 1), ("checkpoint_every", cfg.checkpoint_every, 1),
                                ("max_nonfinite_steps", cfg.max_nonfinite_steps, 1),
                                ("keep_checkpoints", cfg.keep_checkpoints, 0), ("data.val_clips", d.val_clips, 0),
                                ("data.num_workers", d.num_workers, 0), ("seed", cfg.seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}; got {value!r}")
    for key, value in (("optim.lr", o.lr), ("optim.disc_lr", o.disc_lr)):
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"{key} must be a positive number, e.g. 1e-4; got {value!r}")
    if cfg.max_minutes is not None and (not _is_number(cfg.max_minutes) or cfg.max_minutes <= 0):
        raise ConfigError(f"max_minutes must be a positive number of minutes (or null for no limit); "
                          f"got {cfg.max_minutes!r}")
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from.strip()):
        raise ConfigError(f"init_from must be a bundled tokenizer name (e.g. magtok-small) or a model folder; "
                          f"got {cfg.init_from!r}")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision {cfg.mixed_precision!r}: use 'auto', 'no', 'bf16' or 'fp16'")
    if lc.recon not in ("l1", "mse"):
        raise ConfigError(f"loss.recon {lc.recon!r}: use 'l1' or 'mse'")
    if d.frames is not None and (not isinstance(d.frames, int) or d.frames < 1):
        raise ConfigError(f"data.frames must be a positive integer (or null for the preset's); got {d.frames!r}")
    return cfg


# ----------------------------------------------------------------------------- resume


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def _has_discriminator(flat: dict) -> bool:
    return flat.get("loss.discriminator", "none") != "none" and float(flat.get("loss.adversarial_weight", 0) or 0) > 0


def _tokenizer_dict(cfg_dict: dict) -> dict | None:
    try:
        return TrainConfig.from_dict(cfg_dict).tokenizer_config().to_dict()
    except Exception:
        return None


# keys whose change is applied to already-restored state (optimizer hyperparameters, schedules)
OPTIM_KEYS = ("steps", "optim.lr", "optim.disc_lr", "optim.betas", "optim.weight_decay", "optim.warmup_steps",
              "optim.min_lr_ratio", "loss.adversarial_start_step")
IGNORED_KEYS = ("output_dir", "init_from")   # a resumed run restores its checkpoint, not init_from


def resume_changes(old: dict, cfg: TrainConfig, old_tokenizer: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (checkpoint value, new value)}`` of the safe changes; ResumeError for unsafe ones.

    ``old_tokenizer``: the resolved TokenizerConfig the checkpoint recorded (newer checkpoints); without
    it the checkpoint's preset name is resolved with today's presets."""
    new = cfg.to_dict()
    fo, fn = _flatten(old), _flatten(new)
    fix = (f"keep it as in the checkpoint, or start over with --overwrite (deletes {cfg.output_dir}'s "
           "checkpoints), or set another output_dir")
    # the model: compare the resolved tokenizer configs, not the spelling
    t_new = cfg.tokenizer_config().to_dict()
    t_old = _norm(old_tokenizer) if old_tokenizer is not None else _tokenizer_dict(old)
    t_new = _norm(t_new)
    if t_old is None or t_old != t_new:
        was = f"model={old.get('model')!r}" + (f" with model_overrides={old.get('model_overrides')}"
                                               if old.get("model_overrides") else "")
        now = f"model={cfg.model!r}" + (f" with model_overrides={cfg.model_overrides}" if cfg.model_overrides else "")
        raise ResumeError(f"cannot resume {cfg.output_dir}: its checkpoint was trained with {was}, this config asks "
                          f"for {now} (another architecture); {fix}")
    # the clip geometry the run was trained on (None means the preset's value)
    for key, default in (("data.frames", t_new["frames"]), ("data.size", t_new["image_size"])):
        a = _norm(fo.get(key)) if fo.get(key) is not None else _norm(default)
        b = _norm(fn.get(key)) if fn.get(key) is not None else _norm(default)
        if a != b:
            raise ResumeError(f"cannot resume {cfg.output_dir}: {key} was {a} in the checkpoint and is {b} now "
                              f"(another clip geometry); {fix}")
    had, has = _has_discriminator(fo), _has_discriminator(fn)
    if has and (not had or fo.get("loss.discriminator") != fn.get("loss.discriminator")
                or fo.get("loss.discriminator_dim") != fn.get("loss.discriminator_dim")):
        was = f"{fo.get('loss.discriminator')!r} (dim {fo.get('loss.discriminator_dim')})" if had else "none"
        raise ResumeError(f"cannot resume {cfg.output_dir}: the checkpoint's discriminator is {was}, this config asks "
                          f"for {fn.get('loss.discriminator')!r} (dim {fn.get('loss.discriminator_dim')}); {fix}")
    changes = {}
    for key in sorted(set(fo) | set(fn)):
        if key in IGNORED_KEYS or key in ("model", "model_overrides", "data.frames", "data.size"):
            continue
        a, b = _norm(fo.get(key)), _norm(fn.get(key))
        if a != b:
            changes[key] = (a, b)
    return changes


def format_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
