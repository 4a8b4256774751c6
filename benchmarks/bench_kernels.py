"""Convolution kernels, layer by layer: the Winograd 3x3x3 causal conv and the 1x1x1 matrix-product
conv against the direct oneDNN convolutions they replace (float32, no_grad, batch 1).

    python benchmarks/bench_kernels.py            # ~2 min on 2 cores; writes BENCHMARKS.md "Convolution kernels"
    python benchmarks/bench_kernels.py --quick    # smaller inputs, 1 run each, nothing written

Shapes are those of the `magvit2-17x128-lfq18` preset's decoder (20 frames at full resolution) and of its
smaller-resolution stages. Each time is the minimum of ``--repeats`` runs after one warmup, in this process
(the Winograd kernel is built or loaded before timing). "max error" is max |kernel - direct| / max |direct|.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import THREADS, header_lines, load_average, save_json, utcnow, write_section

# (C_in, C_out, frames, H) of 3x3x3 causal convs; the decoder of the MagViT2 preset at 17 frames
CONV3_SHAPES = [(128, 128, 20, 128), (256, 256, 20, 64), (256, 256, 10, 32), (512, 512, 5, 16), (512, 512, 5, 8),
                (3, 128, 20, 128), (128, 3, 20, 128), (32, 32, 20, 128), (32, 3, 20, 128)]
# (C_in, C_out, frames, H) of 1x1x1 convs: residual projections, up-sampling, squeeze-excite logits
CONV1_SHAPES = [(128, 128, 20, 128), (256, 256, 20, 64), (256, 512, 20, 64), (128, 1, 20, 128)]


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from magtok.kernels import winograd
    from magtok.layers.conv import pointwise_conv3d

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    repeats = 1 if args.quick else args.repeats
    scale = 4 if args.quick else 1
    started, load0, t0 = utcnow(), load_average(), time.perf_counter()
    if not winograd.available():
        raise SystemExit("the Winograd kernel could not be built (see the warning above)")
    rows3, rows1 = [], []
    with torch.no_grad():
        for ci, co, t, h in CONV3_SHAPES:
            h = max(8, h // scale)
            x = torch.randn(1, ci, t + 2, h, h)  # already padded in time, as CausalConv3d passes it
            w = torch.randn(co, ci, 3, 3, 3) / (27 * ci) ** 0.5
            b = torch.randn(co)
            u = winograd.transform_weight(w)
            direct = lambda: F.conv3d(x, w, b, padding=(0, 1, 1))  # noqa: E731
            wino = lambda: winograd.causal_conv3d(x, u, b, False)  # noqa: E731
            ref = direct()
            err = float((wino() - ref).abs().max() / ref.abs().max())
            td, tw = _time(direct, repeats), _time(wino, repeats)
            gflop = 2 * 27 * ci * co * t * h * h / 1e9
            rows3.append(dict(shape=f"{ci} -> {co}, {t} x {h} x {h}", direct_s=td, winograd_s=tw,
                              speedup=td / tw, direct_gflops=gflop / td, max_rel_error=err,
                              applies=((h + 3) // 4) ** 2 >= winograd.MIN_TILES))
            print(f"conv3 {rows3[-1]['shape']}: direct {td * 1e3:.0f} ms, winograd {tw * 1e3:.0f} ms "
                  f"({td / tw:.2f}x), error {err:.1e}", flush=True)
        for ci, co, t, h in CONV1_SHAPES:
            h = max(16, h // scale)
            x = torch.randn(1, ci, t, h, h)
            w = torch.randn(co, ci, 1, 1, 1) / ci ** 0.5
            b = torch.randn(co)
            direct = lambda: F.conv3d(x, w, b)  # noqa: E731
            mm = lambda: pointwise_conv3d(x, w, b)  # noqa: E731
            ref = direct()
            err = float((mm() - ref).abs().max() / ref.abs().max())
            td, tm = _time(direct, repeats), _time(mm, repeats)
            rows1.append(dict(shape=f"{ci} -> {co}, {t} x {h} x {h}", direct_s=td, matmul_s=tm,
                              speedup=td / tm, max_rel_error=err))
            print(f"conv1 {rows1[-1]['shape']}: conv3d {td * 1e3:.0f} ms, matmul {tm * 1e3:.0f} ms "
                  f"({td / tm:.2f}x), error {err:.1e}", flush=True)
    wall = time.perf_counter() - t0
    command = "python benchmarks/bench_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(command=command.strip(), started=started.isoformat(), wall_s=wall, load_start=load0,
                  conv3=rows3, conv1=rows1)
    if args.quick:
        return result
    save_json("kernels", result)
    lines3 = "\n".join(
        f"| {r['shape']} | {r['direct_s'] * 1e3:.0f} ms ({r['direct_gflops']:.0f} GFLOP/s) | "
        f"{r['winograd_s'] * 1e3:.0f} ms | {r['speedup']:.2f}x | {r['max_rel_error']:.1e} | "
        f"{'yes' if r['applies'] else 'no (direct)'} |" for r in rows3)
    lines1 = "\n".join(
        f"| {r['shape']} | {r['direct_s'] * 1e3:.0f} ms | {r['matmul_s'] * 1e3:.0f} ms | {r['speedup']:.2f}x | "
        f"{r['max_rel_error']:.1e} |" for r in rows1)
    body = f"""{header_lines(result['command'], started, wall, load_start=load0)}

In one process, float32, `torch.no_grad()`, batch 1; minimum of {repeats} runs after a warmup. Max error:
max |kernel - direct| / max |direct|, random weights scaled to unit output variance.

3x3x3 causal convolution (input already padded in time; spatial padding 1): oneDNN's direct kernel
(`F.conv3d`) against `magtok.kernels.winograd` (F(4x4, 3x3)). "used" says whether
`conv_algorithm("winograd")` sends the shape to the Winograd kernel (at least {winograd.MIN_TILES} 4x4 tiles
per frame, any channel count).

| C_in -> C_out, frames x H x W | direct | Winograd | speed-up | max error | used |
|---|---|---|---|---|---|
{lines3}

1x1x1 convolution: `F.conv3d` against `magtok.layers.conv.pointwise_conv3d` (one matrix product on the
(C, T*H*W) view; what the eager layers use by default):

| C_in -> C_out, frames x H x W | `F.conv3d` | matrix product | speed-up | max error |
|---|---|---|---|---|
{lines1}

Raw results: `benchmarks/results/kernels.json`."""
    write_section("Convolution kernels", body)
    print("BENCHMARKS.md and benchmarks/results/kernels.json updated", flush=True)
    return result


if __name__ == "__main__":
    main()
