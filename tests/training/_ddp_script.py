"""Run by the 2-process tests (torch.distributed.run, gloo): a few steps, then each rank writes the
hashes of its parameters and EMA (and the step it stopped at) so the test can compare ranks.

Modes (argv[2]): "gan" / "nogan": 4 steps; "skew": rank 0 starts training 1.5 s after rank 1, with a
time budget of a few seconds and many steps (the ranks must still stop at the same step); "accum": 2
micro-batches per step (DDP's no_sync on the first), with the discriminator on; "vq": the
tiny-vq preset with every code dead at every step (dead-code replacement on every step)."""

import hashlib
import json
import os
import sys
import time
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


import faulthandler  # noqa: E402

if os.environ.get("MAGTOK_DEBUG_HANG"):
    faulthandler.dump_traceback_later(int(os.environ["MAGTOK_DEBUG_HANG"]), exit=True)
out = Path(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "gan"
clip = real_clip(frames=9)
if mode == "skew":
    cfg = tiny_config(out / "run", steps=100_000, gan=False, max_minutes=0.05)  # 3 s
    cfg.checkpoint_every = cfg.val_every = 100_000
elif mode == "vq":
    cfg = tiny_config(out / "run", steps=3, gan=False, model="tiny-vq",
                      model_overrides={"quantizer": {"dead_code_threshold": 1e9}})
elif mode == "accum":
    cfg = tiny_config(out / "run", steps=2, gan=True)
    cfg.optim.grad_accum, cfg.loss.adversarial_start_step = 2, 0
else:
    cfg = tiny_config(out / "run", steps=4, gan=mode == "gan")
if mode in ("folder", "empty"):  # datasets from a folder: only rank 0 may probe the files
    import torch.distributed as dist  # noqa: E402

    import magtok.data.dataset as ds  # noqa: E402

    probes = []
    real_probe = ds.probe_video
    ds.probe_video = lambda *a, **k: (probes.append(a[0]), real_probe(*a, **k))[1]
    cfg = tiny_config(out / "run", steps=2, gan=False)
    cfg.data.train_dir = str(out / "data") if mode == "folder" else str(out / "empty")
    cfg.data.size = (16, 16)
    try:
        trainer = Trainer(cfg, progress=False)
    except ValueError as e:
        rank = int(os.environ["RANK"])
        (out / f"rank{rank}.json").write_text(json.dumps({"error": str(e), "probes": len(probes),
                                                          "group_closed": not dist.is_initialized()}))
        sys.exit(0)
    trainer.fit()
    rank = trainer.acc.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({
        "probes": len(probes), "items": len(trainer.train_data), "step": trainer.step,
        "skipped": sorted(Path(p).name for p in trainer.train_data.skipped), "model": digest(trainer.unwrapped)}))
    sys.exit(0)
trainer = Trainer(cfg, ClipDataset(clip, n=8), ClipDataset(clip, n=3), progress=False)
rank = trainer.acc.process_index
if mode == "skew" and rank == 0:
    time.sleep(1.5)
init = digest(trainer.ema.model)
metrics = trainer.fit()
quantizer = trainer.unwrapped.quantizer
(out / f"rank{rank}.json").write_text(json.dumps({
    "world": trainer.acc.num_processes, "step": trainer.step, "model": digest(trainer.unwrapped),
    "ema": digest(trainer.ema.model), "ema_init": init, "val_psnr": metrics.get("val/psnr"),
    "codebook": digest(quantizer) if mode == "vq" else None,
    "disc": digest(trainer.adv.discriminator_module) if trainer.adv else None}))
