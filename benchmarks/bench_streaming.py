"""Streaming vs whole-clip encoding: peak memory and time as the video grows (issue 4).

    python benchmarks/bench_streaming.py                   # demo preset, 17..1025 frames, 128 and 256 px
    python benchmarks/bench_streaming.py --heavy           # + magvit2-17x128-lfq18 at 128 px, 17 / 65 frames
    python benchmarks/bench_streaming.py --quick           # 17 and 65 frames at 128 px, no report

streaming: ``with tok.streaming():``, frame 0 alone first, then chunks of ``--chunk-latents`` N
latent frames (N r_t frames), each generated on the fly, so the clip never exists in memory as a
whole; the codes are concatenated (they are small). Every length (17 = 1 + 16 frames included)
runs the same chunk size, so the peaks compare across lengths. whole: the clip is materialised
(in the setup) and encoded in one ``tok.encode`` call. Both under ``torch.no_grad()``, eval mode.

Input: a smooth synthetic video (moving sinusoid gratings, values in [-0.9, 0.9]) that is a pure
function of (frame, y, x), so both paths see identical frames and their codes are compared.

Memory (per measurement, in a fresh child process, ``_measure.measure``): ``peak`` is the
process's resident-memory high-water mark above the interpreter with torch and magtok imported
(so: model weights + input + activations + temporaries); ``work`` is the peak of the timed call
above the process after its setup (the setup builds the model, and for the whole-clip path the
clip). Children run under an address-space limit (RLIMIT_AS); an allocation past it is reported
as OOM.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from _measure import format_mib, format_time, machine_info, machine_info_markdown, markdown_table, measure  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
FRAMES = (17, 65, 257, 1025)
SIZES = (128, 256)
THREADS = 2


# ============================================================================ in the child
def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_hwm() -> float:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")       # reset VmHWM (and ru_maxrss) to the current RSS
    except OSError:
        pass
    return _rss_mib()


def synthetic_frames(t0: int, n: int, size: int):
    """Frames t0 .. t0+n-1 of the synthetic clip -> (1, 3, n, size, size) float32 in [-0.9, 0.9]."""
    import torch

    t = torch.arange(t0, t0 + n, dtype=torch.float32).view(1, n, 1, 1)
    y = torch.linspace(0, 1, size).view(1, 1, size, 1)
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    c = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1)
    v = 0.55 * torch.sin(2 * math.pi * (3 * x + 2 * y) + 0.15 * t + 2.1 * c)
    v = v + 0.35 * torch.sin(2 * math.pi * (5 * y - 1.5 * x) * (1 + 0.2 * c) - 0.08 * t)
    return v.unsqueeze(0)       # (1, 3, n, H, W)


def _codes_digest(codes) -> str:
    return hashlib.sha256(codes.cpu().numpy().tobytes()).hexdigest()[:16]


def make_case(preset: str, mode: str, frames: int, size: int, chunk_latents: int = 4):
    """Factory (child): build the model (and for ``whole`` the clip); return the timed encode."""
    import torch

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    from magtok import VideoTokenizer, get_config

    tok = VideoTokenizer(get_config(preset)).eval()
    r_t = tok.time_compression
    if (frames - 1) % r_t:
        raise ValueError(f"{frames} frames is not 1 + k * {r_t}")
    info = {"params": sum(p.numel() for p in tok.parameters()), "r_t": r_t, "r_s": tok.space_compression}
    if mode == "whole":
        x = torch.empty(1, 3, frames, size, size)
        for s in range(0, frames, 64):
            n = min(64, frames - s)
            x[:, :, s:s + n] = synthetic_frames(s, n, size)

        def call():
            with torch.no_grad():
                return tok.encode(x)
    elif mode == "streaming":
        # frame 0 alone (it is the first latent frame), then chunks of chunk_latents * r_t frames: every
        # clip length, 17 frames included, runs the same chunk size, so peaks compare across lengths
        first, step = 1, chunk_latents * r_t

        def call():
            parts = []
            with torch.no_grad(), tok.streaming():
                s = 0
                while s < frames:
                    n = min(first if s == 0 else step, frames - s)
                    parts.append(tok.encode(synthetic_frames(s, n, size)))
                    s += n
            return torch.cat(parts, dim=1)
    else:
        raise ValueError(f"mode must be 'whole' or 'streaming', not {mode!r}")

    setup_hwm = _hwm_mib()
    base = _reset_hwm()

    def run():
        codes = call()
        hwm = _hwm_mib()
        return {**info, "codes_shape": list(codes.shape), "codes_sha": _codes_digest(codes),
                "setup_hwm_mib": setup_hwm, "after_setup_mib": base, "call_hwm_mib": hwm,
                "work_mib": hwm - base, "peak_hwm_mib": max(setup_hwm, hwm)}

    return run


# ============================================================================ in the parent
def _mem_available_gib() -> float:
    from _common import mem_available_gib

    avail = mem_available_gib()
    return 16.0 if math.isinf(avail) else avail


def _one(preset, mode, frames, size, chunk_latents, mem_gb, timeout, repeats_small, env=None) -> dict:
    reps, warm = (repeats_small, 1) if frames <= 65 else (1, 0)
    spec = f"{Path(__file__).resolve()}:make_case"
    t0 = time.perf_counter()
    r = measure(spec, dict(preset=preset, mode=mode, frames=frames, size=size, chunk_latents=chunk_latents),
                factory=True, repeats=reps, warmup=warm, mem_limit_gb=mem_gb, timeout_s=timeout, threads=THREADS,
                env=env or None)
    res = r.get("result") if isinstance(r.get("result"), dict) else {}
    if r.get("ok") and res:
        r["peak_mib"] = res["peak_hwm_mib"] - r["rss_baseline_mib"]
        r["work_mib"] = res["work_mib"]
    state = "ok" if r.get("ok") else ("OOM" if r.get("oom") else r.get("status"))
    tag = " " + " ".join(f"{k}={v}" for k, v in env.items()) if env else ""
    print(f"  {preset} {mode:9s} {frames:5d} x {size}{tag}: {state:7s} "
          f"time {format_time(r.get('median_s'))}  peak {format_mib(r.get('peak_mib'))}  "
          f"({time.perf_counter() - t0:.0f} s wall)", flush=True)
    return r


def _cell_err(r: dict) -> str:
    if r.get("oom"):
        return f"OOM (>{r.get('mem_limit_gb', '?')} GiB)"
    if r.get("status") == "timeout":
        return "timeout"
    return (r.get("error_type") or r.get("status") or "error")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--chunk-latents", type=int, default=4, help="latent frames per streaming chunk (default 4)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs (after 1 warmup) for <= 65 frames; "
                                                           "longer clips: 1 run, no warmup")
    ap.add_argument("--heavy", action="store_true", help="also magvit2-17x128-lfq18 at 128 px, 17 and 65 frames")
    ap.add_argument("--mem-gb", type=float, default=None,
                    help="address-space limit per child (default: min(12, available - 4) GiB)")
    ap.add_argument("--timeout", type=float, default=2400.0)
    ap.add_argument("--quick", action="store_true", help="17 and 65 frames at 128 px, no report")
    ap.add_argument("--modes", nargs="+", default=["streaming", "whole"], choices=["streaming", "whole"])
    ap.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE",
                    help="environment of the children, e.g. MALLOC_MMAP_THRESHOLD_=65536 (glibc allocator knobs)")
    ap.add_argument("--merge", action="store_true",
                    help="add these results to results/streaming.json instead of replacing it")
    ap.add_argument("--report-only", action="store_true", help="rewrite results/streaming.md from the JSON")
    args = ap.parse_args(argv)
    if args.report_only:
        out = json.loads((RESULTS_DIR / "streaming.json").read_text())
        md = report(out)
        (RESULTS_DIR / "streaming.md").write_text(md)
        print(md)
        return out
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.quick:
        args.frames, args.sizes, args.repeats = [17, 65], [128], 1
    mem_gb = args.mem_gb or max(4.0, min(12.0, math.floor(_mem_available_gib() - 4)))
    started = _dt.datetime.now(_dt.timezone.utc)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    cases = [(args.preset, size, frames) for size in args.sizes for frames in args.frames]
    if args.heavy:
        cases += [("magvit2-17x128-lfq18", 128, f) for f in (17, 65)]
    results = []
    print(f"bench_streaming: {len(cases)} inputs x {len(args.modes)} modes, RLIMIT_AS {mem_gb:g} GiB per child",
          flush=True)
    for preset, size, frames in cases:
        for mode in args.modes:
            r = _one(preset, mode, frames, size, args.chunk_latents, mem_gb, args.timeout, args.repeats, env)
            results.append(dict(preset=preset, size=size, frames=frames, mode=mode, env=env, result=r))
    wall = time.perf_counter() - t_start
    command = "python benchmarks/bench_streaming.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    out = dict(command=command.strip(), started=started.isoformat(), wall_s=wall, machine=info,
               load_average_at_start=load0, load_average_at_end=os.getloadavg(), mem_limit_gb=mem_gb,
               chunk_latents=args.chunk_latents, results=results)
    print(f"bench_streaming done in {wall / 60:.1f} min", flush=True)
    if args.quick:
        return out
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.merge and (RESULTS_DIR / "streaming.json").exists():
        old = json.loads((RESULTS_DIR / "streaming.json").read_text())
        keys = {_key(x) for x in results}
        old["results"] = [x for x in old["results"] if _key(x) not in keys] + results
        old.setdefault("extra_runs", []).append({k: out[k] for k in ("command", "started", "wall_s",
                                                                     "load_average_at_start", "load_average_at_end")})
        out = old
    tmp = RESULTS_DIR / "streaming.json.tmp"
    tmp.write_text(json.dumps(out, indent=1, default=repr))
    os.replace(tmp, RESULTS_DIR / "streaming.json")
    md = report(out)
    (RESULTS_DIR / "streaming.md").write_text(md)
    print(md)
    return out


def _key(x: dict) -> tuple:
    return (x["preset"], x["size"], x["frames"], x["mode"], json.dumps(x.get("env") or {}, sort_keys=True))


def report(out: dict) -> str:
    by = {(x["preset"], x["size"], x["frames"], x["mode"]): x["result"] for x in out["results"] if not x.get("env")}
    rows, verdicts = [], []
    keys = sorted({(p, s) for p, s, _, _ in by}, key=lambda k: (k[0] != "demo", k[0], k[1]))
    for preset, size in keys:
        frames = sorted({f for p, s, f, _ in by if (p, s) == (preset, size)})
        base = by.get((preset, size, frames[0], "streaming"), {})
        for f in frames:
            st, wh = by.get((preset, size, f, "streaming"), {}), by.get((preset, size, f, "whole"), {})
            res_s = st.get("result") if isinstance(st.get("result"), dict) else {}
            res_w = wh.get("result") if isinstance(wh.get("result"), dict) else {}
            same = "-"
            if res_s.get("codes_sha") and res_w.get("codes_sha"):
                same = "yes" if res_s["codes_sha"] == res_w["codes_sha"] else "**no**"
            ratio = (f"{st['peak_mib'] / base['peak_mib']:.2f}x" if st.get("peak_mib") and base.get("peak_mib")
                     else "-")
            rows.append({
                "model": f"`{preset}`", "input": f"{f} x {size} x {size}",
                "codes": "x".join(map(str, res_s.get("codes_shape", [])[1:])) or "-",
                "s_time": format_time(st.get("median_s")) if st.get("ok") else _cell_err(st),
                "s_peak": format_mib(st.get("peak_mib")) if st.get("ok") else "-",
                "s_ratio": ratio,
                "w_time": format_time(wh.get("median_s")) if wh.get("ok") else _cell_err(wh),
                "w_peak": format_mib(wh.get("peak_mib")) if wh.get("ok") else "-",
                "w_work": format_mib(wh.get("work_mib")) if wh.get("ok") else "-",
                "same": same,
            })
            if f == frames[-1] and base.get("peak_mib") and st.get("peak_mib"):
                r = st["peak_mib"] / base["peak_mib"]
                verdicts.append(f"`{preset}` at {size}x{size}: streaming peak at {f} frames is {r:.2f}x the peak at "
                                f"{frames[0]} frames ({format_mib(st['peak_mib'])} vs {format_mib(base['peak_mib'])}): "
                                + ("within" if r <= 1.25 else "**not** within") + " the 1.25x target.")
    table = markdown_table(rows, [
        ("model", "model"), ("input", "frames x H x W"), ("codes", "codes"),
        ("s_time", "streaming time"), ("s_peak", "streaming peak"), ("s_ratio", "peak vs shortest"),
        ("w_time", "whole-clip time"), ("w_peak", "whole-clip peak"), ("w_work", "whole-clip work"),
        ("same", "same codes"),
    ])
    alloc = _allocator_section(out, by)
    extra_cmds = "".join(f"\nThen: `{x['command']}` ({x['wall_s'] / 60:.1f} min, load average at start "
                         f"{', '.join(f'{v:.1f}' for v in x['load_average_at_start'])})  "
                         for x in out.get("extra_runs", []))
    info = out["machine"]
    la0 = ", ".join(f"{x:.1f}" for x in out["load_average_at_start"])
    la1 = ", ".join(f"{x:.1f}" for x in out["load_average_at_end"])
    return f"""## Streaming (issue 4)

Command: `{out['command']}` ({out['wall_s'] / 60:.1f} min wall clock, started {out['started'][:16].replace('T', ' ')} UTC)  
Machine: {machine_info_markdown(info)}  
Load average at start / end (shared machine): {la0} / {la1}  {extra_cmds}
Every child process: `torch.set_num_threads({THREADS})`, `torch.set_flush_denormal(True)`, RLIMIT_AS {out['mem_limit_gb']:g} GiB.

Encoding a synthetic smooth video (batch 1, float32, random initialisation, eval mode, `torch.no_grad()`).
**streaming**: `with tok.streaming():`, frame 0 alone first (the first latent frame), then chunks of
{out['chunk_latents']} latent frames ({out['chunk_latents'] * 4} frames at r_t = 4), each chunk generated on the fly so the clip
never exists as a whole; every length, 17 frames included, runs the same chunk size. **whole-clip**: the clip materialised, one `tok.encode` call. **peak**: the
child's resident-memory high-water mark above the interpreter with torch and magtok imported (weights, input,
activations, temporaries); **whole-clip work**: the encode call's peak above the process after its setup
(input and weights excluded). Times: median of 2 runs after 1 warmup for <= 65 frames, a single run for longer
clips (stream time includes generating the frames, a negligible share). "same codes": the streaming codes equal
the whole-clip codes bit for bit (SHA-256 of the code tensor).

{table}

{chr(10).join('- ' + v for v in verdicts)}
{alloc}
Raw results: `benchmarks/results/streaming.json`.
"""


def _allocator_section(out: dict, default: dict) -> str:
    """Streaming peaks with the children's environment changed (glibc allocator knobs), next to the default."""
    tagged = [x for x in out["results"] if x.get("env") and x["mode"] == "streaming"]
    if not tagged:
        return ""
    envs = sorted({json.dumps(x["env"], sort_keys=True) for x in tagged})
    parts = []
    for e in envs:
        label = " ".join(f"`{k}={v}`" for k, v in json.loads(e).items())
        by = {(x["preset"], x["size"], x["frames"]): x["result"] for x in tagged
              if json.dumps(x["env"], sort_keys=True) == e}
        rows, verdicts = [], []
        for preset, size in sorted({(p, s_) for p, s_, _ in by}):
            frames = sorted(f for p, s_, f in by if (p, s_) == (preset, size))
            b_env, b_def = by[(preset, size, frames[0])], default.get((preset, size, frames[0], "streaming"), {})
            for f in frames:
                r_env, r_def = by[(preset, size, f)], default.get((preset, size, f, "streaming"), {})
                rows.append({
                    "model": f"`{preset}`", "input": f"{f} x {size} x {size}",
                    "d_time": format_time(r_def.get("median_s")) if r_def.get("ok") else "-",
                    "d_peak": format_mib(r_def.get("peak_mib")) if r_def.get("ok") else "-",
                    "d_ratio": (f"{r_def['peak_mib'] / b_def['peak_mib']:.2f}x"
                                if r_def.get("peak_mib") and b_def.get("peak_mib") else "-"),
                    "e_time": format_time(r_env.get("median_s")) if r_env.get("ok") else _cell_err(r_env),
                    "e_peak": format_mib(r_env.get("peak_mib")) if r_env.get("ok") else "-",
                    "e_ratio": (f"{r_env['peak_mib'] / b_env['peak_mib']:.2f}x"
                                if r_env.get("peak_mib") and b_env.get("peak_mib") else "-"),
                })
            last = by[(preset, size, frames[-1])]
            if last.get("peak_mib") and b_env.get("peak_mib"):
                r = last["peak_mib"] / b_env["peak_mib"]
                verdicts.append(f"with {label}, `{preset}` at {size}x{size}: {frames[-1]} frames peak at {r:.2f}x the "
                                f"{frames[0]}-frame peak: " + ("within" if r <= 1.25 else "**not** within")
                                + " the 1.25x target.")
        table = markdown_table(rows, [
            ("model", "model"), ("input", "frames x H x W"),
            ("d_time", "streaming time (default)"), ("d_peak", "peak (default)"), ("d_ratio", "vs shortest"),
            ("e_time", "streaming time (knob)"), ("e_peak", "peak (knob)"), ("e_ratio", "vs shortest"),
        ])
        parts.append(f"""
Allocator: the same streaming runs with {label} in the children's environment (a fixed glibc mmap
threshold: large tensors are returned to the system when freed, paid for with page faults). Until the
fix of 2026-11-23 the streaming state of every causal conv was a *view* of the last frames of its padded
chunk, which kept the whole chunk alive until the next one; glibc's heap then fragmented around those
blocks and the peak crept up with the length (1.30x at 1025 frames at 128x128 with the default
allocator, 1.09x with this knob). The state is now a copy of those frames, and the default allocator
stays flat by itself. The CLI's streaming commands still set the threshold in-process
(`magtok.cli.main.limit_heap_fragmentation`); it no longer matters much.

{table}

{chr(10).join('- ' + v for v in verdicts)}
""")
    return "".join(parts)


if __name__ == "__main__":
    main()
