"""LFQ auxiliary loss (entropy + commitment), forward + backward, magtok vs vector-quantize-pytorch.

    python benchmarks/bench_lfq.py               # 2^10 .. 2^20 codes, writes BENCHMARKS.md "LFQ entropy loss"
    python benchmarks/bench_lfq.py --quick       # smoke run: small sizes, 1 repeat, no BENCHMARKS.md
    python benchmarks/bench_lfq.py --bits 10 18 --no-peer

Input: z of shape (8, d, 1, 32, 32) = 8192 tokens of d = log2(codebook size) channels, requires_grad.
Timed: the quantizer's forward in train mode and ``aux_loss.backward()``.

* magtok ``LFQ(codebook_entropy="bit_groups")`` (default: exact per-sample entropy, codebook entropy
  summed over bit groups of <= 10 bits), and ``"exact"`` (exact joint codebook entropy over all 2^d
  codes in chunks of 4096 codes with a recomputing backward);
* the peer: ``vector_quantize_pytorch.LFQ`` 1.32.0 as magvit2-pytorch 0.5.1 builds it (entropy weight
  0.1, commitment weight 1.0, diversity gamma 2.5, soft clamp 10), which forms the tokens x 2^d
  distance and probability matrices.

Both get the peer tokenizer's loss weights (the weights do not change the cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (cell_mem, cell_time, child_setup, format_time, header_lines, load_average, machine_info,  # noqa: E402
                     ratio, run, save_json, tracked, utcnow, write_machine_section, write_section)

LOSS_KWARGS = dict(entropy_loss_weight=0.1, commitment_loss_weight=1.0, diversity_gamma=2.5)


# --------------------------------------------------------------------------- child side


def make_lfq_step(impl: str, bits: int, mode: str = "bit_groups", batch: int = 8, side: int = 32):
    """Factory: build the quantizer and z; return forward + aux_loss.backward()."""
    child_setup()
    import torch

    z = torch.randn(batch, bits, 1, side, side)  # (B, d, T, H, W): batch * side^2 tokens
    if impl == "magtok":
        from magtok.quantizers.lfq import LFQ

        q = LFQ(bits, 2**bits, codebook_entropy=mode, **LOSS_KWARGS).train()

        def step():
            x = z.detach().requires_grad_()
            out = q(x)
            out.aux_loss.backward()
            return {"aux_loss": float(out.aux_loss), "grad_norm": float(x.grad.norm())}
    elif impl == "peer":
        from magtok.testing.peer import import_peer

        import_peer()
        from vector_quantize_pytorch import LFQ as PeerLFQ

        q = PeerLFQ(dim=bits, codebook_size=2**bits, num_codebooks=1, soft_clamp_input_value=10.0,
                    spherical=False, **LOSS_KWARGS).train()

        def step():
            x = z.detach().requires_grad_()
            out = q(x)
            out.entropy_aux_loss.backward()
            return {"aux_loss": float(out.entropy_aux_loss), "grad_norm": float(x.grad.norm())}
    else:
        raise ValueError(f"unknown impl {impl!r}")
    return tracked(step)


# --------------------------------------------------------------------------- parent side


def peer_needs_gib(bits: int, tokens: int) -> float:
    """Rough resident memory the peer touches: ~6 tokens x 2^d float32 matrices."""
    return 6 * tokens * 2**bits * 4 / 1024**3


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, nargs="+", default=[10, 14, 16, 18, 20], help="log2 codebook sizes")
    ap.add_argument("--repeats", type=int, default=9, help="timed runs of magtok bit_groups (after 1 warmup)")
    ap.add_argument("--exact-repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int, default=3)
    ap.add_argument("--exact-single-from", type=int, default=18,
                    help="from this many bits on, exact mode gets 1 run without warmup (it takes minutes)")
    ap.add_argument("--exact-timeout", type=float, default=900.0, help="timeout of those single exact runs")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-exact", action="store_true")
    ap.add_argument("--peer-mem-gb", type=float, default=20.0, help="address-space limit of a peer child")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per child")
    ap.add_argument("--quick", action="store_true", help="2^10 and 2^14, 1 repeat, no BENCHMARKS.md update")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md / results json")
    ap.add_argument("--merge", action="store_true",
                    help="merge this run's measurements into benchmarks/results/lfq.json (per size and implementation)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from benchmarks/results/lfq.json")
    args = ap.parse_args(argv)
    if args.report_only:
        import json

        from _common import RESULTS_DIR

        result = json.loads((RESULTS_DIR / "lfq.json").read_text())
        write_section("LFQ entropy loss", render(result))
        print("BENCHMARKS.md section rewritten from benchmarks/results/lfq.json")
        return result
    if args.quick:
        args.bits = [b for b in args.bits if b <= 14] or [10]
        args.repeats = args.exact_repeats = args.peer_repeats = 1
        args.timeout = min(args.timeout, 120)
    started, t0, load0 = utcnow(), time.perf_counter(), load_average()
    tokens = 8 * 32 * 32
    spec = f"{Path(__file__).resolve()}:make_lfq_step"
    raw = []
    for bits in args.bits:
        print(f"LFQ 2^{bits} codes, {tokens} tokens", flush=True)
        r_bg = run(spec, dict(impl="magtok", bits=bits, mode="bit_groups"), repeats=args.repeats, warmup=1,
                   mem_limit_gb=8, timeout_s=args.timeout, label="magtok bit_groups")
        r_ex = None
        if not args.no_exact:
            big = bits >= args.exact_single_from  # one run, no warmup, longer timeout: O(N 2^d d)
            r_ex = run(spec, dict(impl="magtok", bits=bits, mode="exact"), repeats=1 if big else args.exact_repeats,
                       warmup=0 if big else 1, mem_limit_gb=8,
                       timeout_s=max(args.timeout, args.exact_timeout) if big else args.timeout, label="magtok exact")
        r_peer = None
        if not args.no_peer:
            need = peer_needs_gib(bits, tokens)
            one_matrix = tokens * 2**bits * 4 / 1024**3
            # a child whose first tokens x 2^d matrix is over its limit fails on that allocation without
            # touching memory; otherwise it may touch up to its limit: then require that much free memory
            # (the address-space limit includes ~1-2 GiB of mapped but never resident libraries)
            need_free = None if (need <= 2 or one_matrix >= args.peer_mem_gb) else min(need, args.peer_mem_gb) - 1.0
            r_peer = run(spec, dict(impl="peer", bits=bits), repeats=args.peer_repeats, warmup=1,
                         mem_limit_gb=args.peer_mem_gb, timeout_s=args.timeout, need_free_gb=need_free,
                         label="peer (vector-quantize-pytorch)")
        raw.append(dict(bits=bits, magtok_bit_groups=r_bg, magtok_exact=r_ex, peer=r_peer))

    wall = time.perf_counter() - t0
    command = "python benchmarks/bench_lfq.py " + " ".join(argv if argv is not None else sys.argv[1:])
    settings = dict(repeats=args.repeats, exact_repeats=args.exact_repeats, peer_repeats=args.peer_repeats,
                    exact_single_from=args.exact_single_from, exact_timeout=args.exact_timeout,
                    peer_mem_gb=args.peer_mem_gb, timeout=args.timeout)
    result = dict(command=command.strip(), started=started.isoformat(), wall_s=wall, tokens=tokens,
                  load_start=load0, load_end=load_average(), loss_kwargs=LOSS_KWARGS, machine=machine_info(),
                  settings=settings, rows=raw)
    result["target"] = _target(raw)
    t = result["target"]
    if t:
        print(f"target magtok 2^18 vs 2^10: time {t['time_ratio']:.2f}x, memory {t['mem_ratio']:.2f}x (<= 1.5x each): "
              f"{'MET' if t['ok'] else 'NOT MET'}", flush=True)
    if args.no_write or args.quick:
        print(f"done in {wall / 60:.1f} min (not written: --quick/--no-write)")
        return result
    if args.merge:
        result = _merge_saved(result)
    save_json("lfq", result)
    write_machine_section(result["machine"])
    write_section("LFQ entropy loss", render(result))
    print(f"done in {wall / 60:.1f} min; BENCHMARKS.md and benchmarks/results/lfq.json updated")
    return result


def _target(raw: list) -> dict | None:
    """magtok (default mode) at 2^18 costs <= 1.5x the time and memory of 2^10."""
    by_bits = {d["bits"]: d.get("magtok_bit_groups") or {} for d in raw}
    a, b = by_bits.get(10, {}), by_bits.get(18, {})
    if not (a.get("ok") and b.get("ok")):
        return None
    tr = b["median_s"] / a["median_s"]
    mr = b["work_mib"] / a["work_mib"] if a.get("work_mib") else None
    return dict(time_ratio=tr, mem_ratio=mr, ok=tr <= 1.5 and (mr is not None and mr <= 1.5))


def _merge_saved(new: dict) -> dict:
    """The saved results with this run's measurements (per codebook size and implementation) put in."""
    import json

    from _common import RESULTS_DIR

    path = RESULTS_DIR / "lfq.json"
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    rows = {d["bits"]: d for d in old["rows"]}
    done = []
    for d in new["rows"]:
        slot = rows.setdefault(d["bits"], {"bits": d["bits"]})
        for key in ("magtok_bit_groups", "magtok_exact", "peer"):
            if d.get(key) is not None:
                slot[key] = d[key]
                done.append(f"2^{d['bits']} {key}")
    old["rows"] = [rows[b] for b in sorted(rows)]
    old["target"] = _target(old["rows"])
    old.setdefault("updates", []).append(dict(command=new["command"], started=new["started"], wall_s=new["wall_s"],
                                              load_start=new.get("load_start"), settings=new["settings"],
                                              measured=done))
    return old


def _time_cell(r: dict | None, with_min: bool = False) -> str:
    if not r:
        return "not run"
    if with_min and r.get("ok") and r.get("min_s") is not None and len(r.get("times_s") or []) > 1:
        return f"{cell_time(r)} (min {format_time(r['min_s'])})"
    return cell_time(r)


def render(result: dict) -> str:
    """The BENCHMARKS.md section from a (possibly merged) result."""
    import datetime as dt

    from _measure import markdown_table

    rows = []
    for d in result["rows"]:
        r_bg, r_ex, r_peer = d.get("magtok_bit_groups"), d.get("magtok_exact"), d.get("peer")
        ok = bool(r_peer and r_peer.get("ok") and r_bg and r_bg.get("ok"))
        rows.append({
            "codes": f"2^{d['bits']}",
            "bg_t": _time_cell(r_bg, with_min=True), "bg_m": cell_mem(r_bg) if r_bg else "-",
            "ex_t": _time_cell(r_ex), "ex_m": cell_mem(r_ex) if r_ex else "-",
            "peer_t": _time_cell(r_peer), "peer_m": cell_mem(r_peer) if r_peer else "-",
            "rt": ratio(r_peer["median_s"], r_bg["median_s"]) if ok else "-",
            "rm": ratio(r_peer.get("work_mib"), r_bg.get("work_mib")) if ok else "-",
        })
    table = markdown_table(rows, [
        ("codes", "codebook"),
        ("bg_t", "magtok bit_groups: time"), ("bg_m", "work memory"),
        ("ex_t", "magtok exact: time"), ("ex_m", "work memory"),
        ("peer_t", "peer LFQ: time"), ("peer_m", "work memory"),
        ("rt", "time peer / magtok"), ("rm", "memory peer / magtok"),
    ])
    target = result.get("target")
    if target:
        check = (f"Target (magtok default at 2^18 costs <= 1.5x the time and memory of 2^10): time "
                 f"{target['time_ratio']:.2f}x, memory {target['mem_ratio']:.2f}x -> "
                 f"**{'met' if target['ok'] else 'NOT met'}**. (At 2^10 the default mode has one 10-bit group, "
                 f"8192 x 1024 probabilities; at 2^18 two 9-bit groups, 2 x 8192 x 512; at 2^20 two 10-bit groups.)")
    else:
        check = "Target 2^18 vs 2^10: not measured in this run."
    st = {**dict(repeats=5, exact_repeats=3, peer_repeats=3, exact_single_from=18, exact_timeout=900.0,
                 peer_mem_gb=20.0, timeout=300.0), **(result.get("settings") or {})}
    started = dt.datetime.fromisoformat(result["started"])
    updates = "".join(
        f"  \nUpdated with `{u['command']}` (started {u['started'][:16].replace('T', ' ')} UTC, "
        f"load average at start {u.get('load_start')}): {', '.join(u['measured'])}" for u in result.get("updates", []))
    tokens = result["tokens"]
    return f"""{header_lines(result['command'], started, result['wall_s'], result['machine'], result.get('load_start'),
                     result.get('load_end'))}{updates}

Forward (train mode) + `aux_loss.backward()` on z of shape (8, d, 1, 32, 32) = {tokens} tokens, d = log2(codebook
size), float32. magtok `LFQ` in its default `codebook_entropy="bit_groups"` mode (exact per-sample entropy;
codebook entropy summed over bit groups of <= 10 bits) and in `"exact"` mode (the joint codebook entropy over all
2^d codes, in chunks of 4096 codes, recomputed in the backward); the peer is `vector_quantize_pytorch.LFQ` as
magvit2-pytorch builds it (entropy weight 0.1, commitment 1.0, diversity gamma 2.5, soft clamp 10), which
materialises tokens x 2^d distance / probability matrices. Medians of {st['repeats']} (bit_groups; the fastest run
in brackets: at ~0.1 s a step this small is easily slowed by other jobs) / {st['exact_repeats']} (exact; from
2^{st['exact_single_from']} on a single run without warmup, timeout {st['exact_timeout']:g} s) / {st['peer_repeats']}
(peer) runs after one warmup; peer children run under a {st['peer_mem_gb']:g} GiB address-space limit (an
allocation past it fails inside the child: OOM), every child under a {st['timeout']:g} s timeout; "work memory" =
peak RSS of the step above the state before it.

{table}

{check}

Raw results: `benchmarks/results/lfq.json`."""


if __name__ == "__main__":
    main()
