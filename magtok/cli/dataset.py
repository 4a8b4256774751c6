"""``magtok manifest`` and ``magtok tokenize-dataset``: thin wrappers of ``magtok.pipeline``.

    magtok manifest VIDEOS -o manifest.parquet [--workers N] [--probe header|packets|decode] [--overwrite]
    magtok tokenize-dataset (FOLDER|MANIFEST|LIST.txt) --out OUT --model M [reading options]
                    [--engine local|ray] [--window-frames N] [--batch-size N] [--decode-workers N]
                    [--shard-id I --num-shards N] [--retry-failed] [--limit N]
                    [--ray-address auto] [--ray-cpus N] [--ray-actors N]

Exit codes of tokenize-dataset: 0 when every input of this shard is tokenized, 1 when some failed
(listed in OUT/failures-*.parquet and on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import os
import sys

from magtok.cli.common import (MODEL_HELP, CommandError, add_compute, add_reading, compute_options, flag_names,
                               guarded, progress_bar, read_options)


def cmd_manifest(args) -> int:
    from magtok.pipeline.manifest import build_manifest, list_inputs, write_manifest
    from magtok.data.parquet import url_to_fs
    fs, p = url_to_fs(args.output)
    if fs.exists(p) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    inputs = args.videos[0] if len(args.videos) == 1 else args.videos
    n = len(list_inputs(inputs))
    with progress_bar(n, "manifest", args.quiet, unit="file") as bar:
        table = build_manifest(inputs, workers=args.workers, mode=args.probe, progress=bar.update)
    write_manifest(table, args.output, overwrite=args.overwrite)
    errors = [e for e in table.column("error").to_pylist() if e]
    short = sum(1 for f, d in zip(table.column("frames").to_pylist(), table.column("declared_frames").to_pylist())
                if f is not None and d and d > f)
    print(f"{args.output}: {table.num_rows} files, {table.num_rows - len(errors)} readable, {len(errors)} with "
          f"errors (the 'error' column)", file=sys.stderr)
    if short:
        print(f"{args.output}: {short} readable file(s) decode fewer frames than their container declares (cut "
              f"short or a wrong header); 'frames' has the frames that decode, 'declared_frames' the promise",
              file=sys.stderr)
    return 0


def _shard(args) -> tuple[int, int]:
    """--shard-id/--num-shards, else RANK/WORLD_SIZE (torchrun / accelerate launch), else 0/1."""
    if args.shard_id is not None or args.num_shards is not None:
        if args.shard_id is None or args.num_shards is None:
            raise CommandError("give --shard-id and --num-shards together (e.g. --shard-id "
                               "$SLURM_ARRAY_TASK_ID --num-shards $SLURM_ARRAY_TASK_COUNT)")
        return args.shard_id, args.num_shards
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise CommandError("RANK / WORLD_SIZE must be integers") from None


def _wait_for_other_ranks(num_shards: int) -> None:
    """Under torchrun, a rank that exits non-zero makes the launcher kill the ranks still working, so a
    rank whose inputs failed would cut the others short (and lose their summaries). Every rank therefore
    meets the others here, over gloo, before it exits; torchrun itself kills the job if a rank crashes, so
    the long timeout cannot leave a rank waiting for a dead one."""
    if num_shards < 2 or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return
    from datetime import timedelta
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        return
    dist.init_process_group("gloo", timeout=timedelta(days=7))
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def cmd_tokenize_dataset(args) -> int:
    from magtok.pipeline import DatasetOptions, load_model, tokenize_dataset
    from magtok.pipeline.reading import is_url
    from pathlib import Path
    shard_id, num_shards = _shard(args)
    opts = DatasetOptions(engine=args.engine, window_frames=args.window_frames, batch_size=args.batch_size,
                          decode_workers=args.decode_workers, rows_per_part=args.rows_per_part,
                          shard_id=shard_id, num_shards=num_shards, retry_failed=args.retry_failed,
                          limit=args.limit, ray_address=args.ray_address, ray_cpus=args.ray_cpus,
                          ray_actors=args.ray_actors)
    read, compute = read_options(args), compute_options(args)
    out = args.out
    if not is_url(out):
        o = Path(out.removeprefix("file://"))
        if o.exists() and not o.is_dir():
            raise CommandError(f"--out {out} is a file; give a folder")
        if not o.exists() and not o.parent.is_dir():
            raise CommandError(f"cannot create the shard folder {o}: its parent {o.parent} does not exist")
    model = load_model(args.model, compute.device)
    prefix = f"[shard {shard_id}/{num_shards}] " if num_shards > 1 else ""
    bar = None

    def start(report):
        nonlocal bar
        bar = progress_bar(report.inputs - report.skipped - len(report.skipped_failed) - len(report.failed),
                           f"{prefix}tokenize-dataset".strip(), args.quiet, unit="input",
                           position=shard_id if num_shards > 1 else None)

    try:
        report = tokenize_dataset(args.data, out, model, read, compute, opts,
                                  progress=lambda n: bar.update(n), on_start=start)
    finally:
        if bar is not None:
            bar.close()
    print(prefix + flag_names(report.summary()), file=sys.stderr)
    for what, failed in (("failed", report.failed), ("failed earlier", report.skipped_failed)):
        if failed:
            print(f"{prefix}{len(failed)} input(s) {what} (recorded in {out}/failures-*.parquet):", file=sys.stderr)
            for src, reason in sorted(failed.items())[:50]:
                print(f"{prefix}  {src}: {flag_names(reason)}", file=sys.stderr)
    if args.shard_id is None:                   # shards from RANK / WORLD_SIZE: a launcher runs all of them
        _wait_for_other_ranks(num_shards)
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("manifest", help="probe videos in parallel -> manifest.parquet",
                              description="Probe a folder (recursive), a .txt list of paths/URLs, or files, in "
                                          "parallel, and write one Parquet row per file: id, path, kind, frames, "
                                          "fps, height, width, declared_frames, bytes, error.")
    p.add_argument("videos", nargs="+", metavar="VIDEOS", help="a folder or URL, a .txt list, or files")
    p.add_argument("-o", "--output", required=True, metavar="MANIFEST", help="output .parquet (path or URL)")
    p.add_argument("--workers", type=int, default=4, help="probing threads (default 4)")
    p.add_argument("--probe", choices=("header", "packets", "decode"), default="packets",
                   help="frame counting: container header, packet count (default), or full decode")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_manifest))

    p = subparsers.add_parser("tokenize-dataset", help="a folder or manifest of videos -> Parquet token shards",
                              description="Tokenize every input of DATA (a folder, a manifest .parquet, or a .txt "
                                          "list) into Parquet parts in OUT, one row per clip or window. Resumable: "
                                          "inputs already in OUT are skipped; inputs that failed are recorded in "
                                          "OUT/failures-*.parquet and retried only with --retry-failed. Exit code 1 "
                                          "when any input failed.")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--out", required=True, metavar="OUT", help="shard folder (path or fsspec URL; created)")
    add_reading(p)
    add_compute(p)
    g = p.add_argument_group("data set")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: decode workers + batched encoding in this process (default); ray: Ray Data")
    g.add_argument("--window-frames", type=int, metavar="N", help="cut each input into windows of N frames "
                   "(one row each); default: one row per input")
    g.add_argument("--batch-size", type=int, default=8, help="windows encoded together (default 8)")
    g.add_argument("--decode-workers", type=int, default=None,
                   help="decoding threads of the local engine (default: half the CPU cores, 1 to 4)")
    g.add_argument("--rows-per-part", type=int, default=4096, help="rows per Parquet part (default 4096)")
    g.add_argument("--shard-id", type=int, help="this job's shard (Slurm: $SLURM_ARRAY_TASK_ID); default $RANK")
    g.add_argument("--num-shards", type=int, help="number of shards (Slurm: $SLURM_ARRAY_TASK_COUNT); "
                   "default $WORLD_SIZE")
    g.add_argument("--retry-failed", action="store_true", help="retry inputs that failed in an earlier run")
    g.add_argument("--limit", type=int, metavar="N", help="stop after N new inputs (this shard)")
    g.add_argument("--ray-address", metavar="ADDR", help="join a running Ray cluster ('auto'); default: start "
                   "a local Ray")
    g.add_argument("--ray-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all)")
    g.add_argument("--ray-actors", type=int, metavar="N", help="tokenizer actors (default: one per GPU, else 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_tokenize_dataset))
