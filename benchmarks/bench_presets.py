"""Encode, decode and one training step of every named preset at its nominal size (batch 1).

    python benchmarks/bench_presets.py                       # tiny, demo, magvit2-17x128-lfq18 (~10 min)
    python benchmarks/bench_presets.py --presets tiny demo   # the small ones only
    python benchmarks/bench_presets.py --quick               # smoke run, no report

encode: video (1, 3, frames, H, W) -> codes under ``torch.no_grad()``, eval mode.
decode: the codes of that video -> video, ``torch.no_grad()``, eval mode.
train: one step in train mode: forward, L1(recon, video) + aux loss, backward, AdamW step.
Weights: each preset's own initialisation (seed 0); inputs: uniform noise in [-1, 1].
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (cell_mem, cell_time, child_setup, header_lines, load_average, machine_info, run, save_json,  # noqa: E402
                     tracked, utcnow, write_machine_section, write_section)

PRESETS = ("tiny", "demo", "magvit2-17x128-lfq18")
HEAVY = {"magvit2-17x128-lfq18"}
OPS = ("encode", "decode", "train")


def make_preset_case(name: str, op: str, batch: int = 1):
    """Factory (child): build the preset at its nominal size, return the timed step."""
    child_setup(seed=0)
    import torch
    import torch.nn.functional as F

    from magtok import VideoTokenizer, get_config

    cfg = get_config(name)
    tok = VideoTokenizer(cfg)
    h, w = cfg.image_size
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(batch, cfg.channels, cfg.frames, h, w, generator=g) * 2 - 1  # (B, C, T, H, W) in [-1, 1]
    n_params = sum(p.numel() for p in tok.parameters())
    info = {"params": n_params, "input": list(x.shape)}
    if op == "encode":
        tok.eval()

        @torch.no_grad()
        def step():
            codes = tok.encode(x)
            return {**info, "codes_shape": list(codes.shape)}

        return tracked(step)
    if op == "decode":
        tok.eval()
        with torch.no_grad():
            codes = tok.encode(x)

        @torch.no_grad()
        def step():
            video = tok.decode(codes)
            return {**info, "codes_shape": list(codes.shape), "output": list(video.shape)}

        return tracked(step)
    if op == "train":
        tok.train()
        opt = torch.optim.AdamW(tok.parameters(), lr=1e-4)

        def step():
            out = tok(x)
            loss = F.l1_loss(out.recon, x) + out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {**info, "loss": float(loss)}

        return tracked(step)
    raise ValueError(f"unknown op {op!r}; known: {OPS}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (after 1 warmup) of the small presets")
    ap.add_argument("--heavy-repeats", type=int, default=2, help="encode/decode runs of magvit2-17x128-lfq18")
    ap.add_argument("--heavy-train-repeats", type=int, default=1)
    ap.add_argument("--mem-gb", type=float, default=16.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="tiny + demo, 1 run, no report")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.presets = [p for p in args.presets if p not in HEAVY]
        args.repeats = 1
    started, t0, load0 = utcnow(), time.perf_counter(), load_average()
    spec = f"{Path(__file__).resolve()}:make_preset_case"
    results, rows = [], []
    for name in args.presets:
        print(f"preset {name}", flush=True)
        row = {"preset": f"`{name}`"}
        for op in args.ops:
            heavy = name in HEAVY
            reps = (args.heavy_train_repeats if op == "train" else args.heavy_repeats) if heavy else args.repeats
            r = run(spec, dict(name=name, op=op), repeats=reps, warmup=1, mem_limit_gb=args.mem_gb,
                    timeout_s=args.timeout, label=f"{name} {op}")
            results.append(dict(preset=name, op=op, **{"result": r}))
            row[f"{op}_t"], row[f"{op}_m"] = cell_time(r), cell_mem(r)
            res = r.get("result") if isinstance(r.get("result"), dict) else {}
            if res.get("params"):
                row["params"] = f"{res['params'] / 1e6:.2f} M"
                row["input"] = "x".join(str(v) for v in res["input"][1:])
            if res.get("codes_shape"):
                row["codes"] = "x".join(str(v) for v in res["codes_shape"][1:])
            row[f"{op}_runs"] = f"1+{reps}"
        rows.append(row)
    wall = time.perf_counter() - t0
    command = "python benchmarks/bench_presets.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(command=command.strip(), started=started.isoformat(), wall_s=wall, machine=machine_info(),
                  results=results)
    print(f"bench_presets done in {wall / 60:.1f} min", flush=True)
    if args.no_write or args.quick:
        return result
    save_json("presets", result)
    from _measure import markdown_table

    table = markdown_table(rows, [
        ("preset", "preset"), ("params", "parameters"), ("input", "input (C x T x H x W)"), ("codes", "codes"),
        ("encode_t", "encode"), ("encode_m", "encode work memory"),
        ("decode_t", "decode"), ("decode_m", "decode work memory"),
        ("train_t", "train step"), ("train_m", "train work memory"),
    ])
    runs = ", ".join(f"`{r['preset'].strip('`')}` {r.get('encode_runs', '-')}/{r.get('decode_runs', '-')}/"
                     f"{r.get('train_runs', '-')}" for r in rows)
    body = f"""{header_lines(command.strip(), started, wall, result['machine'], load0)}

Each preset at its nominal size (`config.frames` x `config.image_size`), batch 1, float32, its own random
initialisation, uniform-noise video in [-1, 1]. **encode**: video -> codes under `torch.no_grad()` (eval mode);
**decode**: codes -> video under `torch.no_grad()`; **train step**: forward in train mode (LFQ entropy +
commitment loss included), L1(recon, video) + aux loss, backward, AdamW step. Median of the timed runs after one
warmup (warmup+runs per encode/decode/train: {runs}). Work memory: peak RSS of the call above the process's
state before it (for the training step: activations, gradients and the AdamW state).

{table}

Raw results: `benchmarks/results/presets.json`."""
    write_machine_section(result["machine"])
    write_section("Presets", body)
    print("BENCHMARKS.md and benchmarks/results/presets.json updated", flush=True)
    return result


if __name__ == "__main__":
    main()
