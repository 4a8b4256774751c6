"""``magtok train --config configs/NAME.yaml [key=value ...]``"""

from __future__ import annotations

import argparse
from pathlib import Path


def load_train_config(path: str | None, overrides: list[str]):
    """A checked TrainConfig from a YAML file plus ``key.sub=value`` overrides; unknown keys and values of
    the wrong shape are errors that name the key (:class:`magtok.errors.ConfigError`)."""
    import yaml

    from magtok.configs import TrainConfig, apply_overrides
    from magtok.errors import ConfigError, MissingError
    from magtok.training.runconfig import check_sections, check_train_config

    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise MissingError(f"config file {p} does not exist (recipes live in configs/, e.g. configs/demo.yaml)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping of config keys (e.g. `model: demo`), not a "
                              f"{type(data).__name__}")
    try:
        cfg = TrainConfig.from_dict(check_sections(apply_overrides(data, overrides)), path=str(path or "config"))
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    return check_train_config(cfg)


def run(args: argparse.Namespace) -> int:
    from magtok.cli.runtime import choose_threads
    from magtok.training import Trainer, TrainingInterrupted

    cfg = load_train_config(args.config, args.overrides)
    choose_threads(args.threads)
    resume = True if args.resume else (False if args.overwrite else "auto")
    trainer = Trainer(cfg, resume=resume, overwrite=args.overwrite, log_with=args.log_with)
    try:
        metrics = trainer.fit()
    except TrainingInterrupted:
        raise  # main() prints where the checkpoint is and exits with 128 + the signal number
    if trainer.acc.is_main_process:
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val/")}
        model = trainer.exported or Path(cfg.output_dir) / "model"
        print(f"done at step {trainer.step}: {shown}; model: {model}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer from a YAML recipe",
                       description="Train a tokenizer. Works on one CPU/GPU or under `accelerate launch`. "
                       "Ctrl-C (or SIGTERM) saves a checkpoint and stops; a second Ctrl-C exits at once.")
    p.add_argument("--config", required=False, help="YAML recipe mapping onto magtok.configs.TrainConfig")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 steps=2000")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir (required to exist); changed settings are listed, "
                   "safe ones applied, unsafe ones (preset, clip size) refused")
    g.add_argument("--overwrite", action="store_true",
                   help="start over even if output_dir holds checkpoints (deletes them) and replace model/")
    p.add_argument("--log-with", default="tensorboard",
                   help="experiment trackers: tensorboard (default), wandb, mlflow, ... comma-separated, or none")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: the cores that the load average says are free)")
    p.set_defaults(func=run)
