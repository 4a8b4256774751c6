"""``magtok train --config configs/NAME.yaml [key=value ...]``"""

from __future__ import annotations

import argparse
from pathlib import Path


def load_train_config(path: str | None, overrides: list[str]):
    """A TrainConfig from a YAML file plus ``key.sub=value`` overrides; unknown keys are errors."""
    import yaml

    from magtok.configs import TrainConfig, apply_overrides

    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist (recipes live in configs/, e.g. configs/demo.yaml)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{p} must hold a mapping of config keys")
    return TrainConfig.from_dict(apply_overrides(data, overrides), path=str(path or "config"))


def run(args: argparse.Namespace) -> int:
    from magtok.cli.runtime import choose_threads
    from magtok.training import Trainer

    choose_threads(args.threads)
    cfg = load_train_config(args.config, args.overrides)
    resume = True if args.resume else (False if args.overwrite else "auto")
    trainer = Trainer(cfg, resume=resume, overwrite=args.overwrite)
    metrics = trainer.fit()
    if trainer.acc.is_main_process:
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val/")}
        print(f"done at step {trainer.step}: {shown}; model: {Path(cfg.output_dir) / 'model'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer from a YAML recipe",
                       description="Train a tokenizer. Works on one CPU/GPU or under `accelerate launch`.")
    p.add_argument("--config", required=False, help="YAML recipe mapping onto magtok.configs.TrainConfig")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 steps=2000")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir (required to exist)")
    p.add_argument("--overwrite", action="store_true", help="start over even if output_dir holds checkpoints")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: the cores that the load average says are free)")
    p.set_defaults(func=run)
