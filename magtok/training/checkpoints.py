"""Training checkpoints: written atomically (temporary folder, then rename), the last K kept.

A checkpoint folder ``step_00001000/`` holds ``state.pt`` with the tokenizer, EMA, discriminator,
optimizers, schedulers, step, RNG states and data position, and ``config.json`` (the run's
TrainConfig). Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

PREFIX = "step_"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "state.pt").exists())


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict, config: dict, keep: int) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=d, prefix=".tmp-"))
    try:
        torch.save(state, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(d)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike) -> dict:
    p = Path(path)
    f = p / "state.pt" if p.is_dir() else p
    if not f.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return torch.load(f, map_location="cpu", weights_only=True)
