"""Data-set tokenization side by side: the old `tokenize-dataset` (commit c02f6c2, binary shards)
vs the local engine vs the Ray engine, on the same 200 clips cut from the sample videos; shard bytes
per token; and the Parquet index's open time / memory at 1M synthetic rows.

    python benchmarks/bench_pipeline.py [--clips 200] [--index-rows 1000000] [--skip-ray] [--baseline-ref c02f6c2]

The old code runs from a read-only `git archive` of --baseline-ref (the last commit before magtok.pipeline,
when cli/tokenize.py held the whole pipeline in 1,029 lines).

Every run is a fresh subprocess under `nice -n 15` with OMP_NUM_THREADS=1 (the machine is shared with
a training run); wall time includes start-up (imports, model load, Ray start); each command also runs on a
quarter of the clips, which gives the rate after start-up. Peak memory is the
largest sum of RSS over the run's whole process tree (Ray workers included), sampled every 100 ms.
Results: benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"
READ_ARGS = ["--size", "64", "64", "--max-frames", "17", "-q"]


def make_clips(folder: Path, n: int) -> None:
    """n clips of 17 frames from the sample videos (offsets every 5 frames; bigbuckbunny halved to 640x360)."""
    import av
    import numpy as np

    from magtok.data import probe_video, read_video, sample_videos
    src = sample_videos()
    names = ["bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted"]
    plan = [(nm, s) for nm in names for s in range(0, probe_video(src[nm]).num_frames - 17, 5)]
    plan = [plan[i * len(plan) // n] for i in range(n)]
    folder.mkdir(parents=True)
    for i, (nm, s) in enumerate(plan):
        frames, fps = read_video(src[nm], start=s, num_frames=17)
        if frames.shape[1] > 400:
            frames = np.ascontiguousarray(frames[:, ::2, ::2])
        with av.open(str(folder / f"{i:03d}-{nm}-{s}.mp4"), "w") as out:
            st = out.add_stream("libx264", rate=round(fps))
            st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for f in frames:
                for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(p)
            for p in st.encode():
                out.mux(p)


def run_measured(cmd: list[str], env: dict, cwd: Path) -> dict:
    import psutil
    t0 = time.perf_counter()
    p = subprocess.Popen(["nice", "-n", "15", *cmd], env=env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    peak = 0
    proc = psutil.Process(p.pid)
    while p.poll() is None:
        try:
            procs = [proc] + proc.children(recursive=True)
            rss = 0
            for q in procs:
                try:
                    rss += q.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = p.communicate()
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak / 2**20, "returncode": p.returncode,
            "stderr_tail": err[-600:]}


def folder_bytes(folder: Path, patterns) -> int:
    return sum(p.stat().st_size for pat in patterns for p in folder.glob(pat))


def bench_index(rows: int, work: Path) -> dict:
    """Write `rows` synthetic rows (codes 1x2x2; the index does not depend on the codes' size), then open
    the folder in a fresh process and measure the open time and the memory it adds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from magtok.data.parquet import _rows_table, ensure_tokenizer_file, token_schema
    folder = work / "index1m"
    ensure_tokenizer_file(folder, "synthetic", {}, 256, "0123456789abcdef")
    schema = token_schema()
    per_part = 100_000
    rng = np.random.default_rng(0)
    for k in range(0, rows, per_part):
        n = min(per_part, rows - k)
        recs = [{"id": f"clip{k + i:08d}", "source": f"videos/clip{k + i:08d}.mp4", "window": 0, "frame_start": 0,
                 "frame_end": 17, "frames": 17, "fps": 25.0, "clip_fps": 25.0, "source_frames": 17, "height": 128,
                 "width": 128, "resize": None, "crop": None, "codes": rng.integers(0, 256, 4).astype(np.int32),
                 "code_shape": [1, 2, 2], "tokenizer": "0123456789abcdef", "extra": None} for i in range(n)]
        pq.write_table(_rows_table(recs, schema), folder / f"part-s00000-of-00001-bench-{k // per_part:05d}.parquet",
                       row_group_size=256, compression="zstd")
    code = (
        "import time, os, pickle, json\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024\n"
        "import magtok.data.parquet as P, pyarrow, numpy\n"
        "P.ParquetTokenReader  # imports done\n"
        f"r0 = rss(); t = time.perf_counter(); r = P.ParquetTokenReader({str(folder)!r}); dt = time.perf_counter() - t\n"
        "r1 = rss(); t = time.perf_counter(); row = r[len(r) // 2]; first = time.perf_counter() - t\n"
        "print(json.dumps(dict(rows=len(r), open_s=dt, rss_added_mib=r1 - r0, first_row_s=first, "
        "row_groups=r.index.num_row_groups, pickled_bytes=len(pickle.dumps(r)))))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(["nice", "-n", "15", sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["bytes_on_disk"] = folder_bytes(folder, ["part-*.parquet"])
    return res


def table(res: dict) -> str:
    """BENCHMARKS.md's tables for a results dict (benchmarks/results/pipeline.json)."""
    runs = res["runs"]
    old = next(iter(runs.values()))
    lines = ["| command | wall time (s) | clips/s | vs old | clips/s after start-up | vs old | start-up (s, est.) | "
             "peak memory (MiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['clips_per_s']:.2f} | "
                     f"{r['clips_per_s'] / old['clips_per_s']:.2f}x | {r['clips_per_s_after_startup']:.2f} | "
                     f"{r['clips_per_s_after_startup'] / old['clips_per_s_after_startup']:.2f}x | "
                     f"{r['startup_s_estimate']:.1f} | {r['peak_rss_mib']:.0f} |")
    ray = next((r for n, r in runs.items() if n.startswith("Ray")), None)
    locals_ = [(n, r) for n, r in runs.items() if n.startswith("local engine")]
    if ray and locals_:
        lines.append("")
        for name, local in locals_:
            lines.append(f"Ray vs {name}: {ray['seconds'] / local['seconds'] - 1:+.0%} wall time end to end, "
                         f"{local['clips_per_s_after_startup'] / ray['clips_per_s_after_startup'] - 1:+.0%} time "
                         f"per clip after start-up.  ")
    lines += ["", "| shard format | bytes | bytes per token |", "|---|---:|---:|"]
    for name, r in res["shard_sizes"].items():
        lines.append(f"| {name} | {r['bytes']:,} | {r['bytes_per_token']:.3f} |")
    ix = res.get("index")
    if ix:
        lines += ["", "| Parquet index, fresh process | value |", "|---|---:|",
                  f"| rows | {ix['rows']:,} ({ix['row_groups']:,} row groups) |",
                  f"| open time | {ix['open_s']:.3f} s |", f"| resident memory added by the open | {ix['rss_added_mib']:.1f} MiB |",
                  f"| first random row | {ix['first_row_s']:.3f} s |",
                  f"| pickled reader (per DataLoader worker) | {ix['pickled_bytes'] / 1024:.0f} KiB |",
                  f"| bytes on disk | {ix['bytes_on_disk'] / 2**20:.1f} MiB |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--index-rows", type=int, default=1_000_000)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--baseline-ref", default="c02f6c2",
                    help="git commit of the old tokenize-dataset (default: the last one before magtok.pipeline)")
    ap.add_argument("--table", action="store_true", help="only print the tables of the last results")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(RESULTS.read_text())))
        return
    sys.path.insert(0, str(REPO))
    import torch

    from magtok import VideoTokenizer, get_config
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    clips = work / "clips"
    if not clips.exists():
        make_clips(clips, a.clips)
    model = work / "model"
    if not model.exists():
        torch.manual_seed(0)
        VideoTokenizer(get_config("demo")).save_pretrained(model)
    old_tree = work / f"old-{a.baseline_ref}"
    if not old_tree.exists():                      # the old code: a read-only export of --baseline-ref
        old_tree.mkdir()
        tar = subprocess.run(["git", "archive", a.baseline_ref, "magtok"], cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as t:
            t.extractall(old_tree)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = sys.executable
    runs = {}
    # (name, PYTHONPATH, arguments after INPUT, output folder name)
    cases = [(f"old tokenize-dataset ({a.baseline_ref}, binary shards)", old_tree, [], "out-today"),
             ("local engine (2 decode workers)", REPO,
              ["--engine", "local", "--batch-size", "8", "--decode-workers", "2"], "out-local"),
             ("local engine (1 decode worker)", REPO,
              ["--engine", "local", "--batch-size", "8", "--decode-workers", "1"], "out-local1")]
    if not a.skip_ray:
        cases.append(("Ray engine (local Ray, 2 CPUs)", REPO,
                      ["--engine", "ray", "--ray-cpus", "2", "--batch-size", "8"], "out-ray"))
    # a quarter of the clips too: (clips - subset) / (time - time_subset) is the rate without the fixed
    # start-up cost (imports, model load, Ray start), which a long data-set job pays once
    subset = work / "clips-subset"
    n_sub = max(1, a.clips // 4)
    if not subset.exists():
        subset.mkdir()
        for f in sorted(clips.iterdir())[:n_sub]:
            os.link(f, subset / f.name)
    for name, tree, extra, out_name in cases:
        e = dict(env, PYTHONPATH=str(tree))
        r = {}
        for inp, out, key in ((subset, work / f"{out_name}-subset", "subset"), (clips, work / out_name, "full")):
            cmd = [py, "-m", "magtok.cli.main", "tokenize-dataset", str(inp), "--model", str(model), "--out",
                   str(out), *extra, *READ_ARGS]
            # `python -m` puts the working folder first on sys.path: run each code from its own tree
            r[key] = run_measured(cmd, e, tree)
        full, sub = r["full"], r["subset"]
        row = {"seconds": full["seconds"], "clips_per_s": a.clips / full["seconds"],
               "peak_rss_mib": full["peak_rss_mib"], "returncode": full["returncode"],
               "subset_clips": n_sub, "subset_seconds": sub["seconds"],
               "clips_per_s_after_startup": (a.clips - n_sub) / max(1e-9, full["seconds"] - sub["seconds"]),
               "startup_s_estimate": sub["seconds"] - n_sub * (full["seconds"] - sub["seconds"]) / (a.clips - n_sub),
               "stderr_tail": full["stderr_tail"]}
        runs[name] = row
        print(f"{name}: {row['seconds']:.1f} s, {row['clips_per_s']:.2f} clips/s end to end, "
              f"{row['clips_per_s_after_startup']:.2f} clips/s after start-up (~{row['startup_s_estimate']:.1f} s), "
              f"peak {row['peak_rss_mib']:.0f} MiB, exit {row['returncode']}/{sub['returncode']}", flush=True)
    if not list((work / "out-today").glob("shard-*.bin")):
        raise SystemExit(f"the old run did not write binary shards: it did not run the code of {a.baseline_ref}")
    tokens = a.clips * 5 * 8 * 8          # 17x64x64 -> 5x8x8 codes per clip (demo preset)
    sizes = {"old (binary MTOK, 12 bits packed)": folder_bytes(work / "out-today", ["shard-*.bin", "index-*.jsonl"]),
             "Parquet (int32 list, zstd)": folder_bytes(work / "out-local", ["part-*.parquet"])}
    size_rows = {k: {"bytes": v, "bytes_per_token": v / tokens} for k, v in sizes.items()}
    index = bench_index(a.index_rows, work) if a.index_rows else None
    res = {"clips": a.clips, "settings": " ".join(READ_ARGS), "model": "demo preset (random weights)",
           "baseline_ref": a.baseline_ref, "runs": runs, "shard_sizes": size_rows, "index": index,
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "date": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1))
    print(table(res))


if __name__ == "__main__":
    main()
