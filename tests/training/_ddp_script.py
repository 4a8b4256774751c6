"""Run by `accelerate launch --cpu --num_processes 2`: a few steps, then each rank writes the
hashes of its parameters and EMA so the test can compare ranks."""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.training._common import ClipDataset, real_clip, tiny_config  # noqa: E402

from magtok.training import Trainer  # noqa: E402


def digest(module):
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


import faulthandler
if os.environ.get("MAGTOK_DEBUG_HANG"):
    faulthandler.dump_traceback_later(int(os.environ["MAGTOK_DEBUG_HANG"]), exit=True)
out = Path(sys.argv[1])
clip = real_clip(frames=9)
GAN = len(sys.argv) < 3 or sys.argv[2] == "gan"
trainer = Trainer(tiny_config(out / "run", steps=4, gan=GAN), ClipDataset(clip, n=8), ClipDataset(clip, n=1),
                  progress=False)
init = digest(trainer.ema.model)
trainer.fit()
rank = trainer.acc.process_index
(out / f"rank{rank}.json").write_text(json.dumps({
    "world": trainer.acc.num_processes, "model": digest(trainer.unwrapped), "ema": digest(trainer.ema.model),
    "ema_init": init, "disc": digest(trainer.adv.discriminator_module) if trainer.adv else None}))
