"""Training checkpoints: Accelerate's ``save_state`` / ``load_state``, made atomic, the last K kept.

A checkpoint folder ``checkpoints/step_00001000/`` holds what ``Accelerator.save_state`` writes: the
prepared models (``model.safetensors`` = tokenizer, ``model_1.safetensors`` = discriminator), their
optimizers, every rank's RNG states (``random_states_<rank>.pkl``: Python, NumPy, torch CPU and
CUDA), and the registered objects (EMA, LR schedulers, the adversarial loss's LeCam state, the
trainer's counters) as ``custom_checkpoint_<i>.pkl``. Beside them, ``config.json`` is the run's
TrainConfig and ``magtok_checkpoint.json`` marks the folder as complete (format, step).

Every rank writes into ``.tmp-step_N/`` first; the main process renames it to ``step_N/`` only
after all ranks finished, so a crash never leaves a half-written checkpoint under a final name.
Only the newest ``keep`` folders stay (Accelerate's ``total_limit``, applied to step-named folders).

Legacy format (magtok 0.1 before Accelerate state): ``step_N/state.pt``, one ``torch.save`` dict of
the rank-0 state, read with ``torch.load(weights_only=True)``. Runs started with it resume with
:func:`load_legacy_checkpoint`; new checkpoints of such a run use the new format.
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
TMP_PREFIX = ".tmp-"
META_NAME = "magtok_checkpoint.json"
LEGACY_NAME = "state.pt"
CONFIG_NAME = "config.json"
FORMAT = "magtok-checkpoint/2"


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


def is_legacy(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / LEGACY_NAME).exists() and not (p / META_NAME).exists()


def checkpoint_step(path: str | os.PathLike) -> int:
    return int(Path(path).name[len(PREFIX):])


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (either format) under ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit() \
                and ((p / META_NAME).exists() or (p / LEGACY_NAME).exists()):
            found.append(p)
    return sorted(found, key=checkpoint_step)


def read_checkpoint_config(path: str | os.PathLike) -> dict | None:
    """The TrainConfig dict a checkpoint was written with (None if the folder has none)."""
    f = Path(path) / CONFIG_NAME
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None


def prune(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0``: keep all); returns the deleted."""
    old = list_checkpoints(directory)[:-keep] if keep > 0 else []
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


def write_meta(folder: str | os.PathLike, step: int, config: dict, tokenizer: dict | None = None) -> None:
    """``config.json`` (the TrainConfig) and ``magtok_checkpoint.json`` (format, step and the resolved
    TokenizerConfig, so a later change to a preset's numbers cannot pass unnoticed on resume)."""
    folder = Path(folder)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    meta = {"format": FORMAT, "step": step, **({"tokenizer": tokenizer} if tokenizer is not None else {})}
    (folder / META_NAME).write_text(json.dumps(meta, indent=2))


def read_meta(path: str | os.PathLike) -> dict:
    f = Path(path) / META_NAME
    try:
        return json.loads(f.read_text()) if f.exists() else {}
    except json.JSONDecodeError:
        return {}


def save_legacy_checkpoint(directory: str | os.PathLike, step: int, state: dict, config: dict, keep: int) -> Path:
    """The legacy writer (one ``state.pt``), kept so tests can build checkpoints of older runs."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=d, prefix=TMP_PREFIX))
    try:
        torch.save(state, tmp / LEGACY_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune(d, keep)
    return final


def load_legacy_checkpoint(path: str | os.PathLike) -> dict:
    p = Path(path)
    f = p / LEGACY_NAME if p.is_dir() else p
    if not f.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return torch.load(f, map_location="cpu", weights_only=True)
