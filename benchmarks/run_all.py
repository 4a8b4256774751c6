"""Run every benchmark and update BENCHMARKS.md (what `make bench` runs).

    python benchmarks/run_all.py                 # bench_lfq, bench_presets, bench_peer (~50 min on 2 cores)
    python benchmarks/run_all.py --quick         # smoke run of each (~3 min), BENCHMARKS.md untouched
    python benchmarks/run_all.py --only lfq peer

The benchmarks run one after the other (never in parallel: they time CPU work and the LFQ peer runs
touch up to ~20 GiB). Each script keeps its own flags; run it directly to change sizes or repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHES = ("lfq", "presets", "peer")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    ap.add_argument("--quick", action="store_true", help="smoke runs; BENCHMARKS.md is not written")
    args = ap.parse_args(argv)
    extra = ["--quick"] if args.quick else []
    failed = []
    t0 = time.perf_counter()
    for name in args.only:
        print(f"\n=== bench_{name} {' '.join(extra)}", flush=True)
        t = time.perf_counter()
        try:
            module = __import__(f"bench_{name}")
            module.main(extra)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== bench_{name}: {(time.perf_counter() - t) / 60:.1f} min", flush=True)
    print(f"\nall done in {(time.perf_counter() - t0) / 60:.1f} min" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
