#!/usr/bin/env python
"""Export the EMA tokenizer of a training checkpoint as a model folder (config.json + model.safetensors).

    python scripts/export_ema.py RUN/checkpoints/step_00005000 OUT_DIR [--overwrite]

For a run that is still training (its final `model/` is written only at the end) or to ship one
checkpoint: the checkpoint's config.json is the run's TrainConfig; the EMA weights are the tensors
that Accelerate saved for the EMA (the custom_checkpoint_<i>.pkl holding a tokenizer state dict).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from magtok import VideoTokenizer
from magtok.configs import TrainConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    ck = Path(a.checkpoint)
    cfg = TrainConfig.from_dict(json.loads((ck / "config.json").read_text()))
    tok = VideoTokenizer(cfg.tokenizer_config())
    want = set(tok.state_dict())
    for f in sorted(ck.glob("custom_checkpoint_*.pkl")):
        state = torch.load(f, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and set(state) == want:
            tok.load_state_dict(state)
            tok.save_pretrained(a.out, overwrite=a.overwrite)
            print(f"exported the EMA weights of {ck} (step {json.loads((ck / 'magtok_checkpoint.json').read_text())['step']}) to {a.out}")
            return 0
    print(f"error: no EMA state dict matching preset {cfg.model!r} in {ck}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
