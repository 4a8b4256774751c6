"""magtok side by side with magvit2-pytorch 0.5.1 (the peer): same layer specs, same weights.

    python benchmarks/bench_peer.py            # the full run (`make bench-peer`, ~20 min on 2 cores)
    python benchmarks/bench_peer.py --quick    # smoke run (~3 min): small sizes, 1 run each, no report
    python benchmarks/bench_peer.py --specs conv attn --ops encode decode --repeats 5

For every layer spec the peer tokenizer is built once with a fixed seed (no VGG, no GAN), its time
padding patched to the intended causal grouping (``patch_peer_time_padding(peer, 1)``), and its
state dict saved; the magtok tokenizer is built from that state dict with
``magtok.models.peer.from_magvit2_pytorch``. So both compute the same function with the same weights
(the parity tests hold latents to 1e-4); each encode run also returns its codes, and the report says
which share of the codes agree between the two.

Measured, batch 1, for each implementation in its own child process (2 threads, denormals flushed):

* encode: video (1, 3, T, H, W) -> codes, ``torch.no_grad``, eval mode. The peer: ``encode`` ->
  its pre-quantizer LayerNorm (``encoder_layers[-1]``, which its own ``encode`` forgets to apply; it is
  applied here so that both compute the same thing) -> ``quantizers(z).indices``.
* decode: codes -> video (``decode`` / ``decode_from_code_indices``), ``torch.no_grad``, eval mode.
* train: one optimisation step on reconstruction + quantizer aux loss: forward in train mode (the LFQ
  entropy loss included), MSE(recon, video) + aux loss, backward, AdamW step. The peer: its
  ``forward(video, return_loss=True)`` with ``perceptual_loss_weight=0, use_gan=False`` (its cheapest
  path to recon + aux loss; the same MSE + aux sum).
* train_full (one spec): a step with perceptual and adversarial losses, each library's default recipe
  (see the report for what each one runs).
* encode as the clip grows (17, 33, 65 frames at 128x128).

The results go to BENCHMARKS.md (section "Side by side with magvit2-pytorch") and
benchmarks/results/peer.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (cell_mem, cell_time, child_setup, format_time, header_lines, machine_info,  # noqa: E402
                     load_average, mem_available_gib, ratio, run, save_json, tracked, utcnow,
                     write_machine_section, write_section)

DEMO_LAYERS = (
    "residual", ("compress_space", 64), "residual", ("compress_space", 128), ("compress_time", 128),
    "residual", ("compress_space", 128), ("compress_time", 128), "residual",
)  # == get_config("demo").layers (checked at start-up)
MAGVIT2_LAYERS = (
    ("consecutive_residual", 2), ("compress_space", 256), ("consecutive_residual", 2), ("compress_space", 256),
    ("compress_time", 256), ("consecutive_residual", 2), ("compress_space", 512), ("compress_time", 512),
    ("consecutive_residual", 2),
)  # == get_config("magvit2-17x128-lfq18").layers

SPECS: dict[str, dict] = {
    "conv": dict(
        desc="conv-only MagViT2-style: the `demo` preset's layers (widths 32-64-128, r_s 8, r_t 4), 2^12 LFQ codes",
        kwargs=dict(layers=DEMO_LAYERS, init_dim=32, max_dim=128, input_conv_kernel_size=(3, 3, 3),
                    output_conv_kernel_size=(3, 3, 3), codebook_size=2**12),
    ),
    "attn": dict(
        desc="with attention: the demo widths plus attend_space + linear_attend_space at 32x32, attend_time + "
             "gateloop_time at 16x16 (8 heads x 32 / 16 heads x 8), 2^12 LFQ codes",
        kwargs=dict(layers=("residual", ("compress_space", 64), "residual", ("compress_space", 128),
                            ("compress_time", 128), "attend_space", "linear_attend_space", ("compress_space", 128),
                            ("compress_time", 128), "attend_time", "gateloop_time", "residual"),
                    init_dim=32, max_dim=128, input_conv_kernel_size=(3, 3, 3), output_conv_kernel_size=(3, 3, 3),
                    codebook_size=2**12),
    ),
    "magvit2-17x128-lfq18": dict(
        desc="the `magvit2-17x128-lfq18` preset's layers (widths 128-256-256-512, 52M parameters), 2^18 LFQ codes",
        kwargs=dict(layers=MAGVIT2_LAYERS, init_dim=128, max_dim=512, input_conv_kernel_size=(3, 3, 3),
                    output_conv_kernel_size=(3, 3, 3), codebook_size=2**18),
        heavy=True,
    ),
}
OPS = ("encode", "decode", "train", "train_full")
# magtok's fast inference path (``tokenizer.for_inference()``): compiled float32 (the same function) and
# compiled bfloat16 (approximate, reported separately); encode / decode only
FAST_IMPLS = {"magtok-compiled": "float32", "magtok-bf16": "bfloat16"}
# eager float32 with the Winograd 3x3x3 convolutions (``for_inference(winograd=True)``); encode / decode only
WINOGRAD_IMPL = "magtok-winograd"
IMPLS = ("magtok", *FAST_IMPLS, WINOGRAD_IMPL, "peer")
OP_TITLES = {
    "encode": "encode",
    "decode": "decode",
    "train": "train step (recon + aux)",
    "train_full": "train step (+ perceptual + adversarial)",
}
VIDEO_SEED, CODES_SEED, WEIGHT_SEED = 1234, 4321, 0


def peer_kwargs(spec: str, size: int) -> dict:
    return dict(image_size=size, **SPECS[spec]["kwargs"])


# --------------------------------------------------------------------------- child side


def _video(frames: int, size: int):
    import torch

    g = torch.Generator().manual_seed(VIDEO_SEED)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1  # (B, C, T, H, W) in [-1, 1]


def _codes(frames: int, size: int, codebook_size: int, r_t: int = 4, r_s: int = 8):
    import torch

    g = torch.Generator().manual_seed(CODES_SEED)
    return torch.randint(0, codebook_size, (1, 1 + (frames - 1) // r_t, size // r_s, size // r_s), generator=g)


def torchvision_vgg16_arch():
    """The module magvit2-pytorch builds as its perceptual network, ``torchvision.models.vgg16`` with
    ``classifier[:-2]`` (conv trunk, 7x7 average pool, 25088 -> 4096 -> 4096), without torchvision:
    random weights (the peer would download ImageNet weights, which cannot happen offline; weights do
    not change the cost) and ``requires_grad`` left on, as the peer leaves it."""
    from torch import nn

    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(1),
                         nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096),
                         nn.ReLU(True))


def _build_peer(spec: str, size: int, weights: str, full: bool = False):
    import torch

    from magtok.testing.peer import build_peer_tokenizer, patch_peer_time_padding

    kw = peer_kwargs(spec, size)
    if full:
        peer = build_peer_tokenizer(**kw, perceptual_loss_weight=0.1, vgg=torchvision_vgg16_arch(), use_gan=True)
    else:
        peer = build_peer_tokenizer(**kw)
    patch_peer_time_padding(peer, left=1)
    sd = torch.load(weights, mmap=True, weights_only=True)
    if full:  # the discriminator differs (the saved one is the minimal no-GAN stand-in)
        sd = {k: v for k, v in sd.items() if not k.startswith("discr.")}
        missing, unexpected = peer.load_state_dict(sd, strict=False)
        assert not unexpected and all(k.startswith("discr.") for k in missing), (missing, unexpected)
    else:
        peer.load_state_dict(sd)
    del sd
    return peer


def _build_magtok(spec: str, size: int, weights: str):
    import torch

    from magtok.models.peer import from_magvit2_pytorch

    sd = torch.load(weights, mmap=True, weights_only=True)
    tok = from_magvit2_pytorch(sd, peer_kwargs(spec, size))
    del sd
    return tok


def make_case(impl: str, spec: str, op: str, frames: int, size: int, weights: str):
    """Factory run in the child: build the model and inputs, return the timed step."""
    child_setup(seed=WEIGHT_SEED)
    import torch
    import torch.nn.functional as F

    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; known: {IMPLS}")
    if (impl in FAST_IMPLS or impl == WINOGRAD_IMPL) and op not in ("encode", "decode"):
        raise ValueError(f"{impl} is an inference path: encode / decode only")
    full = op == "train_full"
    model = _build_peer(spec, size, weights, full) if impl == "peer" else _build_magtok(spec, size, weights)
    compiled = {}
    if impl in FAST_IMPLS:
        # the first call compiles (not timed as a run; its wall time is reported as compile_s)
        fast = model.for_inference(compile=True, dtype=FAST_IMPLS[impl])
        first_input = _video(frames, size) if op == "encode" else _codes(frames, size, SPECS[spec]["kwargs"]["codebook_size"])
        t0 = time.perf_counter()
        with torch.no_grad():
            (fast.encode if op == "encode" else fast.decode)(first_input)
        compiled["compile_s"] = time.perf_counter() - t0
        if fast.compile_error:
            raise RuntimeError(f"torch.compile failed, the run would be eager: {fast.compile_error}")
    if impl == WINOGRAD_IMPL:
        fast = model.for_inference(winograd=True)  # builds the C++ kernel on first use (cached on disk)
        if not fast.winograd:
            raise RuntimeError("the Winograd kernel could not be built; the run would use the direct convolution")

    if op == "encode":
        model.eval()
        x = _video(frames, size)

        @torch.no_grad()
        def step():
            if impl == "peer":
                z = model.encoder_layers[-1](model.encode(x))  # + the pre-quant LayerNorm it forgets
                codes = model.quantizers(z).indices
            else:
                codes = (fast if impl in FAST_IMPLS or impl == WINOGRAD_IMPL else model).encode(x)
            return {"codes": codes.flatten().tolist(), "codes_shape": list(codes.shape), **compiled}

        return tracked(step)

    if op == "decode":
        model.eval()
        codes = _codes(frames, size, SPECS[spec]["kwargs"]["codebook_size"])

        @torch.no_grad()
        def step():
            if impl == "peer":
                video = model.decode_from_code_indices(codes)
            else:
                video = (fast if impl in FAST_IMPLS or impl == WINOGRAD_IMPL else model).decode(codes)
            return {"shape": list(video.shape), "sum": float(video.double().sum()),
                    "abs_sum": float(video.double().abs().sum()), **compiled}

        return tracked(step)

    x = _video(frames, size)
    model.train()
    params = list(model.parameters())  # the peer's parameters() is the tokenizer's only (no discr/VGG)
    opt = torch.optim.AdamW(params, lr=1e-4)

    if op == "train":
        def step():
            if impl == "peer":
                loss, _ = model(x, return_loss=True)  # MSE recon + aux (no VGG, no GAN)
            else:
                out = model(x)
                loss = F.mse_loss(out.recon, x) + out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": float(loss)}

        return tracked(step)

    if op == "train_full":
        if impl == "peer":
            # magvit2-pytorch's trainer step: generator pass (MSE + aux + 0.1 * VGG feature MSE on one random
            # frame + adaptive-weighted hinge generator loss on one random frame), clip 1.0, AdamW step; then a
            # discriminator pass that runs the whole tokenizer forward again (return_discr_loss=True, gradient
            # penalty on), discriminator AdamW step.
            d_opt = torch.optim.AdamW(model.discr.parameters(), lr=1e-4)

            def step():
                opt.zero_grad(set_to_none=True)
                loss, _ = model(x, return_loss=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                d_opt.zero_grad(set_to_none=True)
                d_loss, _ = model(x, return_discr_loss=True, apply_gradient_penalty=True)
                d_loss.backward()
                d_opt.step()
                return {"loss": float(loss), "d_loss": float(d_loss)}

            return tracked(step)

        # magtok: the trainer's default recipe (magtok.training.trainer.Trainer.train_step, LossConfig defaults):
        # L1 + 0.1 * LPIPS(VGG16) on 2 random frames per clip + aux loss + adaptive-weighted hinge generator loss
        # of a 2D frame discriminator (dim 32) on every frame; clip 1.0, AdamW step; discriminator step on the same
        # (detached) reconstructions.
        from magtok.losses.adversarial import AdversarialLoss
        from magtok.losses.discriminators import build_discriminator
        from magtok.losses.perceptual import build_perceptual_loss

        perceptual = build_perceptual_loss("lpips", frames_per_clip=2)
        adv = AdversarialLoss(build_discriminator("frame", dim=32), loss="hinge", weight=0.1, adaptive=True,
                              start_step=0, grad_clip=1.0, lr=1e-4)
        last_layer = model.decoder.conv_out.conv.weight

        def step():
            out = model(x)
            nll = F.l1_loss(out.recon, x) + 0.1 * perceptual(out.recon, x)
            g_adv, _ = adv.generator_loss(out.recon, 0, rec_loss=nll, last_layer=last_layer)
            loss = nll + out.aux_loss + g_adv
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            d_loss, _ = adv.discriminator_loss(x, out.recon.detach(), 0)
            adv.discriminator_step(d_loss, 0)
            return {"loss": float(loss), "d_loss": float(d_loss)}

        return tracked(step)

    raise ValueError(f"unknown op {op!r}; known: {OPS}")


# --------------------------------------------------------------------------- parent side


def prepare_weights(spec: str, size: int, folder: Path) -> Path:
    """Build the peer once (seeded), patch it, save its state dict; returns the file."""
    import warnings

    import torch

    from magtok.testing.peer import build_peer_tokenizer, patch_peer_time_padding

    warnings.filterwarnings("ignore")
    path = folder / f"{spec}-{size}.pt"
    if not path.exists():
        torch.manual_seed(WEIGHT_SEED)
        peer = build_peer_tokenizer(**peer_kwargs(spec, size))
        patch_peer_time_padding(peer, left=1)
        torch.save(peer.state_dict(), path)
        del peer
    return path


def _settings(spec: str, op: str, frames: int, args) -> dict:
    heavy = SPECS[spec].get("heavy", False)
    if op == "train_full":
        reps, warm = args.full_repeats, 0
        timeout = args.heavy_timeout if heavy else args.timeout
    elif op == "train":
        reps, warm = (args.heavy_train_repeats, 0) if heavy else (args.train_repeats, 1)
        timeout = args.heavy_timeout if heavy else args.timeout
    else:
        reps, warm = (args.heavy_repeats, 1) if heavy else (args.repeats, 1)
        timeout = args.heavy_timeout if heavy else args.timeout
    if frames > 17:
        reps = max(1, min(reps, args.scale_repeats))
    if args.quick:
        reps, warm = 1, 0
    return dict(repeats=reps, warmup=warm, timeout_s=timeout)


def _merge(runs: list[dict]) -> dict:
    """Pool the rounds of one implementation: all timed runs, the largest work memory."""
    if len(runs) == 1:
        return runs[0]
    bad = [r for r in runs if not r.get("ok")]
    if bad:
        return {**bad[0], "rounds": runs}
    times = [t for r in runs for t in r["times_s"]]
    cpu = [r["cpu_median_s"] for r in runs if r.get("cpu_median_s") is not None]
    out = {**runs[-1], "times_s": times, "median_s": statistics.median(times), "min_s": min(times),
           "max_s": max(times), "work_mib": max(r.get("work_mib") or 0 for r in runs),
           "peak_rss_mib": max(r.get("peak_rss_mib") or 0 for r in runs),
           "cpu_median_s": statistics.median(cpu) if cpu else None, "rounds": runs}
    return out


def compare(spec: str, op: str, frames: int, size: int, weights: Path, args) -> dict:
    """Time magtok and the peer; with ``rounds`` > 1 the order alternates (m p, p m, ...) and the timed
    runs of all rounds are pooled, so a change of machine load hits both alike."""
    st = _settings(spec, op, frames, args)
    heavy = SPECS[spec].get("heavy", False)
    rounds = 1 if (heavy or args.quick or frames != args.frames or op == "train_full") else max(1, args.rounds)
    out = {"spec": spec, "op": op, "frames": frames, "size": size, "rounds": rounds, **st}
    target = f"{Path(__file__).resolve()}:make_case"
    impls = ["magtok", "peer"]
    if op in ("encode", "decode") and not args.no_compiled:
        impls.insert(1, "magtok-compiled")
        if args.bf16 and frames == args.frames:
            impls.insert(2, "magtok-bf16")
    if op in ("encode", "decode") and not args.no_winograd:
        impls.insert(len(impls) - 1, WINOGRAD_IMPL)
    runs: dict[str, list] = {i: [] for i in impls}
    for k in range(rounds):
        for impl in (impls if k % 2 == 0 else impls[::-1]):
            if runs[impl] and not runs[impl][-1].get("ok"):
                continue  # failed once: do not repeat a failure (OOM, timeout)
            mem_limit = args.peer_mem_gb if (impl == "peer" and heavy and op.startswith("train")) else args.mem_gb
            # the address-space limit includes ~2 GiB of mapped libraries that are never resident
            need_free = mem_limit - 1.0 if mem_limit > args.mem_gb else None
            kw = dict(impl=impl, spec=spec, op=op, frames=frames, size=size, weights=str(weights))
            runs[impl].append(run(target, kw, mem_limit_gb=mem_limit, need_free_gb=need_free,
                                  label=f"{impl:15s} {spec} {op} {frames}f" + (f" r{k + 1}" if rounds > 1 else ""),
                                  **st))
    for impl in impls:
        out[impl] = _merge(runs[impl])
    p = out["peer"]
    for impl in impls[:-1]:
        m = out[impl]
        if not (m.get("ok") and p.get("ok")):
            continue
        suffix = "" if impl == "magtok" else f"_{impl}"
        if op == "encode":
            cm, cp = m["result"].get("codes"), p["result"].get("codes")
            same = sum(a == b for a, b in zip(cm, cp)) / max(1, len(cm))
            out["codes_agree" + suffix] = same if len(cm) == len(cp) else 0.0
            print(f"    {impl} codes agree with the peer's: {out['codes_agree' + suffix]:.4%}", flush=True)
        if op == "decode":
            a, b = m["result"], p["result"]
            out["decode_rel_diff" + suffix] = abs(a["sum"] - b["sum"]) / max(1e-9, b["abs_sum"])
    for impl in impls:
        for r in [*runs[impl], out[impl]]:
            if isinstance(r.get("result"), dict):
                r["result"].pop("codes", None)
    return out


def _fmt_row(c: dict) -> dict:
    m, p = c["magtok"], c["peer"]
    row = {
        "spec": c["spec"], "what": OP_TITLES[c["op"]], "frames": f"{c['frames']}x{c['size']}x{c['size']}",
        "m_t": cell_time(m), "m_m": cell_mem(m), "p_t": cell_time(p), "p_m": cell_mem(p),
        "runs": f"{c['warmup']}+{c['repeats']}",
    }
    ok = m.get("ok") and p.get("ok")
    row["rt"] = ratio(p.get("median_s"), m.get("median_s")) if ok else "-"
    row["rm"] = ratio(p.get("work_mib"), m.get("work_mib")) if ok else "-"
    row["rc"] = ratio(p.get("cpu_median_s"), m.get("cpu_median_s")) if ok else "-"
    row["runs"] = f"{c['rounds']}x({c['warmup']}+{c['repeats']})" if c.get("rounds", 1) > 1 else row["runs"]
    fc = c.get("magtok-compiled")
    if fc is None:
        row["c_t"] = row["rt_c"] = row["c_m"] = row["compile"] = "-"
    else:
        row["c_t"], row["c_m"] = cell_time(fc), cell_mem(fc)
        row["rt_c"] = ratio(p.get("median_s"), fc.get("median_s")) if fc.get("ok") and p.get("ok") else "-"
        row["compile"] = format_time((fc.get("result") or {}).get("compile_s")) if fc.get("ok") else "-"
    wc = c.get(WINOGRAD_IMPL)
    if wc is None:
        row["w_t"] = row["rt_w"] = row["w_m"] = "-"
    else:
        row["w_t"], row["w_m"] = cell_time(wc), cell_mem(wc)
        row["rt_w"] = ratio(p.get("median_s"), wc.get("median_s")) if wc.get("ok") and p.get("ok") else "-"
    checks = []
    for key, label in (("", ""), ("_magtok-compiled", "compiled "), (f"_{WINOGRAD_IMPL}", "winograd ")):
        if "codes_agree" + key in c:
            checks.append(f"{label}codes agree {c['codes_agree' + key]:.2%}")
        elif "decode_rel_diff" + key in c:
            checks.append(f"{label}output sums differ {c['decode_rel_diff' + key]:.1e} (rel.)")
    row["check"] = "; ".join(checks)
    return row


def _fmt_bf16_row(c: dict) -> dict | None:
    b, p = c.get("magtok-bf16"), c["peer"]
    if b is None:
        return None
    row = {"spec": c["spec"], "what": OP_TITLES[c["op"]], "frames": f"{c['frames']}x{c['size']}x{c['size']}",
           "b_t": cell_time(b), "b_m": cell_mem(b), "p_t": cell_time(p),
           "rt": ratio(p.get("median_s"), b.get("median_s")) if b.get("ok") and p.get("ok") else "-",
           "compile": format_time((b.get("result") or {}).get("compile_s")) if b.get("ok") else "-"}
    if "codes_agree_magtok-bf16" in c:
        row["check"] = f"codes agree {c['codes_agree_magtok-bf16']:.2%}"
    elif "decode_rel_diff_magtok-bf16" in c:
        row["check"] = f"output sums differ {c['decode_rel_diff_magtok-bf16']:.1e} (rel.)"
    else:
        row["check"] = ""
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--full-specs", nargs="+", default=["conv"], choices=list(SPECS),
                    help="specs that get the perceptual + adversarial step (train_full)")
    ap.add_argument("--size", type=int, default=128, help="frame height = width")
    ap.add_argument("--frames", type=int, default=17, help="clip length of the main table")
    ap.add_argument("--scale-frames", type=int, nargs="*", default=[33, 65],
                    help="extra clip lengths for encode (frame scaling)")
    ap.add_argument("--scale-specs", nargs="*", default=["conv", "attn"], choices=list(SPECS),
                    help="specs that get the frame scaling (the magvit2 spec at 65 frames takes ~3 min per run)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of encode / decode per child (after 1 warmup)")
    ap.add_argument("--train-repeats", type=int, default=1, help="timed training steps per child (after 1 warmup)")
    ap.add_argument("--full-repeats", type=int, default=1,
                    help="timed steps with perceptual + adversarial losses (no warmup, one child per implementation)")
    ap.add_argument("--scale-repeats", type=int, default=2, help="at most this many timed runs per child beyond 17 frames")
    ap.add_argument("--rounds", type=int, default=2,
                    help="child processes per implementation and measurement, in alternating order (light specs)")
    ap.add_argument("--heavy-repeats", type=int, default=1, help="encode / decode runs of the magvit2 spec (after 1 warmup)")
    ap.add_argument("--heavy-train-repeats", type=int, default=1,
                    help="train runs of the magvit2 spec (no warmup: one step takes minutes)")
    ap.add_argument("--mem-gb", type=float, default=12.0, help="address-space limit per child")
    ap.add_argument("--peer-mem-gb", type=float, default=20.0, help="limit of the peer's magvit2-spec training child")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per child")
    ap.add_argument("--heavy-timeout", type=float, default=600.0, help="seconds per child, magvit2 spec")
    ap.add_argument("--replace", action="store_true",
                    help="let a partial run (a subset of --specs / --ops) replace the saved results instead of "
                         "merging into them")
    ap.add_argument("--no-winograd", action="store_true",
                    help="skip magtok's Winograd path (tokenizer.for_inference(winograd=True)) in encode / decode")
    ap.add_argument("--no-compiled", action="store_true",
                    help="skip magtok's compiled inference path (tokenizer.for_inference()) in encode / decode")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the compiled bfloat16 path (main clip length only; reported separately)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: conv + attn at 9x64x64 (+ 17 frames for scaling), 1 run each, no report")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md / results json")
    ap.add_argument("--merge", action="store_true",
                    help="merge this run's cases into benchmarks/results/peer.json (replacing the same spec/op/frames) "
                         "instead of replacing the whole report, e.g. to redo one case that was skipped")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the BENCHMARKS.md section from benchmarks/results/peer.json without measuring")
    args = ap.parse_args(argv)
    if args.report_only:
        import json

        from _common import RESULTS_DIR

        result = json.loads((RESULTS_DIR / "peer.json").read_text())
        write_section("Side by side with magvit2-pytorch", report(result))
        print("BENCHMARKS.md section rewritten from benchmarks/results/peer.json")
        return result
    if args.quick:
        args.specs = [s for s in args.specs if not SPECS[s].get("heavy")]
        args.size, args.frames, args.scale_frames = 64, 9, [17]
        args.timeout = min(args.timeout, 120)

    from magtok.configs import get_config

    assert get_config("demo").layers == DEMO_LAYERS
    assert get_config("magvit2-17x128-lfq18").layers == MAGVIT2_LAYERS

    started, t0, load0 = utcnow(), time.perf_counter(), load_average()
    print(f"bench_peer: specs {args.specs}, ops {args.ops}, {args.frames}x{args.size}x{args.size}; "
          f"{mem_available_gib():.1f} GiB available", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="magtok-bench-peer-"))
    cases, scaling = [], []
    try:
        for spec in args.specs:
            weights = prepare_weights(spec, args.size, tmp)
            print(f"[{spec}] {SPECS[spec]['desc']}", flush=True)
            for op in args.ops:
                if op == "train_full" and spec not in args.full_specs:
                    continue
                cases.append(compare(spec, op, args.frames, args.size, weights, args))
            if spec in args.scale_specs and "encode" in args.ops:
                base = next((c for c in cases if c["spec"] == spec and c["op"] == "encode"), None)
                if base:
                    scaling.append(base)
                for frames in args.scale_frames:
                    scaling.append(compare(spec, "encode", frames, args.size, weights, args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0

    # target: encode and decode >= 1.5x faster than the peer
    targets = _targets(cases)
    for t in targets:
        print(f"target {t['spec']} {t['op']}: peer / magtok = {t['speedup']:.2f}x eager, "
              f"{_fmt_x(t.get('speedup_compiled'))} compiled, {_fmt_x(t.get('speedup_winograd'))} winograd "
              f"(>= 1.5x: {'met' if t['met'] else 'NOT met'})", flush=True)

    command = "python benchmarks/bench_peer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(command=command.strip(), started=started.isoformat(), wall_s=wall, machine=machine_info(),
                  load_start=load0, load_end=load_average(), specs={s: {"desc": SPECS[s]["desc"], "peer_kwargs": peer_kwargs(s, args.size)} for s in args.specs},
                  args=vars(args), cases=cases, scaling=scaling, targets=targets)
    print(f"bench_peer done in {wall / 60:.1f} min", flush=True)
    if args.no_write or args.quick:
        return result
    from _common import RESULTS_DIR

    partial = set(args.specs) != set(SPECS) or set(args.ops) != set(OPS)
    if args.merge or (partial and not args.replace and (RESULTS_DIR / "peer.json").exists()):
        # a partial run never throws away the saved results of the rest (--replace to start afresh)
        result = merge_into_saved(result)
    save_json("peer", result)
    write_machine_section(result["machine"])
    write_section("Side by side with magvit2-pytorch", report(result, args))
    print("BENCHMARKS.md and benchmarks/results/peer.json updated", flush=True)
    return result


def merge_into_saved(new: dict) -> dict:
    """The saved results with this run's cases put in place of the ones they redo."""
    import json

    from _common import RESULTS_DIR

    path = RESULTS_DIR / "peer.json"
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    key = lambda c: (c["spec"], c["op"], c["frames"], c["size"])  # noqa: E731
    for group in ("cases", "scaling"):
        # a redone main-table case also replaces its copy that heads the scaling table
        fresh = {key(c): c for c in (new[group] + (new["cases"] if group == "scaling" else []))}
        merged = [fresh.pop(key(c), c) for c in old.get(group, [])]
        old[group] = merged + list(fresh.values())
    old.setdefault("updates", []).append(dict(command=new["command"], started=new["started"], wall_s=new["wall_s"],
                                              load_start=new.get("load_start"), load_end=new.get("load_end"),
                                              cases=[f"{c['spec']} {c['op']} {c['frames']}f" for c in new["cases"]]))
    old["specs"].update(new["specs"])
    old["targets"] = _targets(old["cases"])
    return old


def _fmt_x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _targets(cases: list) -> list:
    """peer time / magtok time for encode and decode, eager and compiled (float32 both: the same function);
    the target counts the faster float32 path."""
    out = []
    for c in cases:
        if c["op"] in ("encode", "decode") and c["magtok"].get("ok") and c["peer"].get("ok"):
            speedup = c["peer"]["median_s"] / c["magtok"]["median_s"]
            fc = c.get("magtok-compiled") or {}
            compiled = c["peer"]["median_s"] / fc["median_s"] if fc.get("ok") else None
            wc = c.get(WINOGRAD_IMPL) or {}
            wino = c["peer"]["median_s"] / wc["median_s"] if wc.get("ok") else None
            best = max(speedup, compiled or 0.0, wino or 0.0)
            out.append(dict(spec=c["spec"], op=c["op"], speedup=speedup, speedup_compiled=compiled,
                            speedup_winograd=wino, best=best, met=best >= 1.5))
    return out


def report(result: dict, args=None) -> str:
    from _measure import markdown_table

    started = __import__("datetime").datetime.fromisoformat(result["started"])
    cols = [("spec", "spec"), ("what", "measurement"), ("frames", "input"), ("m_t", "magtok time"),
            ("c_t", "magtok compiled time"), ("w_t", "magtok winograd time"), ("p_t", "peer time"),
            ("rt", "time peer / magtok"), ("rt_c", "time peer / magtok compiled"),
            ("rt_w", "time peer / magtok winograd"), ("rc", "CPU time peer / magtok"), ("m_m", "magtok work memory"),
            ("c_m", "compiled work memory"), ("w_m", "winograd work memory"), ("p_m", "peer work memory"), ("rm", "memory peer / magtok"),
            ("compile", "compile (first call)"), ("runs", "warmup+runs"), ("check", "same result?")]
    main_table = markdown_table([_fmt_row(c) for c in result["cases"]], cols)
    bf16_rows = [r for r in (_fmt_bf16_row(c) for c in result["cases"]) if r]
    bf16_table = markdown_table(bf16_rows, [
        ("spec", "spec"), ("what", "measurement"), ("frames", "input"), ("b_t", "magtok compiled bfloat16"),
        ("p_t", "peer float32"), ("rt", "time peer / bfloat16"), ("b_m", "work memory"),
        ("compile", "compile (first call)"), ("check", "vs the peer's float32 result")]) if bf16_rows else "(not run)"
    scale_rows = []
    for c in result["scaling"]:
        r = _fmt_row(c)
        scale_rows.append(r)
    scale_table = markdown_table(scale_rows, [("spec", "spec"), ("frames", "input"), ("m_t", "magtok encode"),
                                              ("c_t", "magtok compiled"), ("w_t", "magtok winograd"),
                                              ("p_t", "peer encode"), ("rt", "time peer / magtok"),
                                              ("rt_c", "time peer / compiled"), ("rt_w", "time peer / winograd"),
                                              ("m_m", "magtok work memory"), ("p_m", "peer work memory"),
                                              ("rc", "CPU time peer / magtok"), ("rm", "memory peer / magtok"),
                                              ("runs", "warmup+runs"), ("check", "same result?")]) \
        if scale_rows else "(not run)"
    spec_lines = "\n".join(f"- `{s}`: {SPECS[s]['desc']}; layers `{SPECS[s]['kwargs']['layers']}`"
                           for s in result["specs"])
    t_lines = "\n".join(
        f"- `{t['spec']}` {t['op']}: peer / magtok = {t['speedup']:.2f}x eager, {_fmt_x(t.get('speedup_compiled'))} "
        f"compiled, {_fmt_x(t.get('speedup_winograd'))} winograd -> {'met' if t['met'] else '**not met**'}"
        for t in result["targets"]) or "- not measured in this run"
    updates = "".join(
        f"  \nUpdated with `{u['command']}` (started {u['started'][:16].replace('T', ' ')} UTC, {u['wall_s'] / 60:.1f} min, "
        f"load average at start {u.get('load_start')}): {', '.join(u['cases'])}" for u in result.get("updates", []))
    return f"""{header_lines(result['command'], started, result['wall_s'], result['machine'], result.get('load_start'), result.get('load_end'))}{updates}

Both implementations get the same layer spec and the same weights: the peer (magvit2-pytorch 0.5.1) is built
once with a fixed seed, no VGG and no GAN (`magtok.testing.peer.build_peer_tokenizer`), its temporal padding
patched to the intended causal grouping (`patch_peer_time_padding(peer, 1)`), and the magtok tokenizer is built
from its state dict with `magtok.models.peer.from_magvit2_pytorch`. Batch 1, float32, random video in [-1, 1].

{spec_lines}

What runs:

- **encode**: video -> codes under `torch.no_grad()`, eval mode. magtok's encoder (eager and compiled) reuses
  its cached activations of the r_t - 1 zero pad frames (computed once per frame size, in the warmup run;
  see README "Inference speed"), so its full-resolution layers process 17 frames where the peer's process 20.
  The peer: `encode` -> its pre-quantizer
  LayerNorm (`encoder_layers[-1]`, which its `encode` never applies; applied here so both compute the same
  function) -> `quantizers(z).indices`. "codes agree" compares the two code tensors element by element.
- **decode**: seeded random codes -> video under `torch.no_grad()` (`decode` / `decode_from_code_indices`).
- **magtok compiled**: the same encode / decode through `tokenizer.for_inference()` (float32, the default):
  `torch.compile` (Inductor) with frozen weights. Same convolutions, same arithmetic; it keeps activations in
  oneDNN's blocked layouts between convolutions (eager PyTorch reorders every conv's input and output),
  pre-packs the weights and fuses the element-wise work (ELU, squeeze-excite, residual adds, padding,
  up/downsampling rearranges). Its first call with a shape compiles; that time is the "compile" column and
  is not in the timed runs. Each child compiles afresh (Inductor's on-disk cache may shorten later compiles).
- **magtok winograd**: the same encode / decode through `tokenizer.for_inference(winograd=True)`: eager
  float32 with the 3x3x3 causal convolutions on frames of at least 16x16 computed by
  Winograd F(4x4, 3x3) (`magtok.kernels.winograd`: 36 instead of 144 products per 4x4 output tile, C++
  transforms + MKL matrix products). Exact in exact arithmetic; its float32 rounding differs from the direct
  kernel's (about 1e-5 of a layer's output magnitude), hence its own "codes agree" check. Its work memory
  includes the transformed weights it caches per convolution (36 numbers per 3x3 kernel instead of 9: 4x the
  weight, ~0.2 GiB for the encoder of the 52M-parameter spec, as much for its decoder) and a ring of the last
  three transformed frames per convolution call.
- **train step (recon + aux)**: train mode, forward (LFQ entropy + commitment loss included), MSE(recon, video)
  + aux loss, backward, AdamW step. The peer: `forward(video, return_loss=True)` with
  `perceptual_loss_weight=0, use_gan=False`, its cheapest path to the same MSE + aux sum (its LFQ computes the
  entropy over all 2^d codes, magtok's over bit groups).
- **train step (+ perceptual + adversarial)**, each library's default recipe, so *not* the same computation:
  - magtok (what `Trainer.train_step` runs with the `LossConfig` defaults once the adversarial part is on, i.e.
    after `adversarial_start_step`): L1 + 0.1 x LPIPS-VGG16 on 2 random frames per clip + aux +
    adaptive-weighted hinge loss of a 2D frame discriminator (dim 32) on every frame, grad clip 1.0, AdamW;
    then the discriminator step on the same, detached reconstructions (no second tokenizer pass).
  - peer (`VideoTokenizerTrainer.train_step`): `forward(return_loss=True)` = MSE + aux + 0.1 x VGG16 feature
    MSE on one random frame + adaptive-weighted hinge loss of its default image discriminator (dim = latent
    width, up to 512) on one random frame, grad clip 1.0, AdamW; then `forward(return_discr_loss=True)`, which
    **runs the whole tokenizer forward again** (with autograd on, LFQ entropy included), gradient penalty on
    (its trainer applies it every 4th step), discriminator AdamW.
  - The peer's VGG16 needs torchvision's ImageNet weights, a download: offline it cannot run its perceptual
    loss at all. Here it gets a module of torchvision's VGG16 architecture (`classifier[:-2]`, 25088 -> 4096 ->
    4096) with random weights through its `vgg=` argument (weights do not change the cost); as in the peer,
    its parameters keep `requires_grad=True`, so every generator step also computes VGG weight gradients.
- Time: median of all timed runs. Column warmup+runs: `2x(1+2)` = two child processes per implementation, in
  alternating order (magtok, peer, peer, magtok), each with 1 warmup and 2 timed runs, pooled (a change of
  machine load then hits both alike); `0+1` = a single cold run in one child per implementation (the steps
  with perceptual + adversarial losses and the magvit2 spec's training step, which take minutes here). CPU time: median user + system CPU seconds of the step (all threads),
  less sensitive than wall-clock time to other jobs on the machine. Work memory: peak RSS of the step above the
  process's state before it (model, inputs; for training the AdamW state and gradients are part of the work
  memory). Failures (OOM under the child's address-space limit, timeouts, exceptions) are reported in place
  of the time.

{main_table}

Encode as the clip grows (128x128):

{scale_table}

Target "encode and decode at least 1.5x faster than the peer" (peer time / magtok time, float32 both; the
target counts the faster magtok path):

{t_lines}

The compiled **bfloat16** path, `tokenizer.for_inference(dtype="bfloat16")` (bfloat16 convolutions under
autocast: AMX on this Xeon), is not the same function and does not count for the target: it is here because
it is what to use for tokenizing a large data set when a small share of flipped codes is acceptable. The
check column compares with the peer's float32 result (codes flip where a latent is near an LFQ sign
boundary; random weights put many latents there, trained ones fewer):

{bf16_table}

Reading the numbers: in eager encode and decode both implementations run the same oneDNN convolutions (in
a CPU profile of either, 60-70% of the time on the small `conv` spec and about 80-85% on the 52M-parameter
spec is convolution with identical shapes, at 250-330 GFLOP/s, close to this machine's float32 peak), so
eager times agree within the noise. The compiled path removes most of the rest (layout reorders around each
convolution, element-wise passes); what it cannot remove is the convolutions' own arithmetic, so the gain is
largest where convolutions are a smaller share (the small specs) and smallest on the 52M-parameter spec,
whose 1.4 TFLOP per encode bound it from below at about 4.3 s here. The Winograd path lowers that bound
itself: F(4x4, 3x3) needs a quarter of the multiplications, and with the transforms in C++ (one pass over a
frame in, one out, vectorised over tile columns) and the products as MKL matrix products with K = 3 x C_in,
the 128- and 256-channel layers at 32-128 px run 1.9-2.5x faster than oneDNN's direct kernel
(`benchmarks/bench_kernels.py`). It is the
fastest float32 path on the large spec and on `conv` decode; on the small specs the compiled path's fusion
matters more. (Earlier prototypes of Winograd along time, in plain PyTorch ops, ran at 0.4-0.6x: their
extra memory passes cost more than they saved.)
Decode gains less than encode: in a profile of the compiled `conv` decode, 57% of the time is convolution
(the 32 -> 3 channel output conv at full resolution runs at ~60 GFLOP/s, the 32-channel ones at ~300) and
42% is fused element-wise kernels at full resolution (SiLU + depth-to-space, ELU, squeeze-excite, the causal
time padding), memory-bound work that 2 cores' bandwidth bounds.
magtok is faster and leaner where the implementations differ: attention layers (PyTorch's
`scaled_dot_product_attention` instead of an explicit attention matrix: 2-3x less memory), the LFQ entropy loss
in training (bit groups instead of tokens x 2^d probability matrices: see the 2^18-code spec's training step and
the LFQ section) and the adversarial recipe (the peer runs the tokenizer forward twice per step).

Raw results: `benchmarks/results/peer.json`."""


if __name__ == "__main__":
    main()
