"""Tokenize a whole data set into Parquet token shards (``magtok.data.parquet``).

    from magtok.pipeline import DatasetOptions, ReadOptions, tokenize_dataset
    report = tokenize_dataset("videos/", "shards/", "runs/demo/model",
                              read=ReadOptions(size=(128, 128), max_frames=17),
                              options=DatasetOptions(engine="local", batch_size=8))
    report.added, report.failed, report.ok

Inputs: a folder (local or fsspec URL), a manifest (``magtok manifest``: nothing is walked or probed
again), a ``.txt`` list of paths / URLs, or a list. Sharding for job arrays: input i belongs to shard
``crc32(id) % num_shards``, so every process knows its share without coordinating.

Engines (same rows either way)
    ``local``: decode workers (threads; default half the cores, 1 to 4) read, resize and cut inputs
    while the main thread encodes; windows of the same shape are batched across inputs
    (``batch_size``). Inputs too large to
    prefetch whole (``max_prefetch_mb``) are streamed chunk by chunk as ``magtok tokenize`` does.
    ``ray``: the same stages on Ray Data (``magtok.pipeline.ray_engine``).

Windows: ``window_frames=N`` cuts each input into consecutive windows of N frames (one row each, id
``<id>#w<k>``); without it an input is one row (its first ``max_frames`` frames, or all of them).

Failures are data: every input that cannot be tokenized is written to ``failures-*.parquet`` (source,
stage, reason). A resumed run skips inputs already in complete parts, and inputs that failed before
unless ``retry_failed``. ``report.ok`` is False when any input of this shard is not tokenized.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import sys
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from magtok.data.parquet import PartWriter, TokenRow
from magtok.pipeline.model import Model, load_model
from magtok.pipeline.reading import (ComputeOptions, Counter, ReadOptions, local_input, model_chunks, open_source,
                                     prepare_frames, raw_chunks)

__all__ = ["DatasetOptions", "DatasetReport", "WorkItem", "PreparedItem", "tokenize_dataset", "plan_work",
           "prepare_item", "encode_prepared", "shard_of"]

ENGINES = ("local", "ray")


def default_decode_workers(cpus: int | None = None) -> int:
    """Half the CPU cores, 1 to 4: the encoding thread needs the rest. On 2 cores one decode thread
    tokenized 5% more clips per second than two (BENCHMARKS.md, "Data-set tokenization")."""
    cpus = cpus or os.cpu_count() or 2
    return max(1, min(4, cpus // 2))


@dataclass
class DatasetOptions:
    """How a data set is tokenized (see the module docstring)."""

    engine: str = "local"
    window_frames: int | None = None
    batch_size: int = 8
    decode_workers: int | None = None    # decoding threads of the local engine (default_decode_workers())
    prefetch: int | None = None          # inputs decoded ahead (default 2 * decode_workers + batch_size)
    max_prefetch_mb: float = 256.0
    rows_per_part: int = 4096
    row_group_rows: int = 256
    shard_id: int = 0
    num_shards: int = 1
    retry_failed: bool = False
    limit: int | None = None
    ray_address: str | None = None       # None: a local Ray started here; "auto": an existing cluster
    ray_cpus: int | None = None          # CPUs of a local Ray (default: all)
    ray_actors: int | None = None        # tokenizer actors (default: one per GPU, else 1)

    def __post_init__(self):
        if self.decode_workers is None:
            self.decode_workers = default_decode_workers()
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}: must be one of {', '.join(ENGINES)}")
        if self.num_shards < 1 or not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id={self.shard_id} num_shards={self.num_shards}: the shard id must be "
                             f"at least 0 and below the number of shards")
        for name in ("batch_size", "decode_workers", "rows_per_part", "row_group_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.window_frames is not None and self.window_frames < 1:
            raise ValueError(f"window_frames={self.window_frames}: must be >= 1")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit={self.limit}: must be >= 0")


@dataclass
class WorkItem:
    """One input: ``id`` (relative path or as listed), ``path`` (local path or URL), manifest probe."""

    id: str
    path: str
    kind: str = "video"
    info: dict | None = None


@dataclass
class DatasetReport:
    out: str
    shard_id: int
    num_shards: int
    inputs: int = 0                      # inputs of this shard
    added: int = 0                       # inputs tokenized now
    rows: int = 0                        # rows written now
    skipped: int = 0                     # already done
    failed: dict = field(default_factory=dict)          # source -> reason (this run)
    skipped_failed: dict = field(default_factory=dict)  # source -> reason (earlier runs, not retried)
    seconds: float = 0.0
    parts: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped_failed

    def summary(self) -> str:
        s = (f"{self.out}: {self.added} inputs tokenized ({self.rows} rows), {self.skipped} already present, "
             f"{len(self.failed)} failed")
        if self.skipped_failed:
            s += f", {len(self.skipped_failed)} failed earlier and skipped (pass retry_failed=True to retry)"
        s += f" ({self.inputs} inputs in shard {self.shard_id} of {self.num_shards}; {self.seconds:.1f} s)"
        return s


def shard_of(item_id: str, num_shards: int) -> int:
    return zlib.crc32(item_id.encode()) % num_shards


# ---------------------------------------------------------------------------- planning
def plan_work(data) -> tuple[list[WorkItem], dict[str, str]]:
    """Work items of an input (folder, manifest, .txt list, list) and the manifest's probe errors."""
    from magtok.pipeline.manifest import is_manifest, list_inputs, read_manifest
    if isinstance(data, (str, Path)) and is_manifest(data):
        items, errors = [], {}
        for r in read_manifest(data):
            if r.get("error"):
                errors[r["id"]] = r["error"]
                continue
            info = None
            if r.get("frames") is not None and r.get("kind") == "video":
                info = {k: r.get(k) for k in ("frames", "fps", "height", "width", "declared_frames")}
            items.append(WorkItem(r["id"], r["path"], r["kind"], info))
        return items, errors
    return [WorkItem(i, p, k) for i, p, k in list_inputs(data)], {}


# ---------------------------------------------------------------------------- decoding
@dataclass
class PreparedItem:
    """An input read and cut into encoder-ready windows (or marked to be streamed by the encoder)."""

    item: WorkItem
    rows: list[dict]                 # per window: TokenRow fields except codes
    windows: list[torch.Tensor]      # per window: (3, t, H, W) in [-1, 1]
    stream: bool = False

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        pickle.dump((self.item, self.rows, [w.numpy() for w in self.windows], self.stream), buf, protocol=5)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "PreparedItem":
        item, rows, windows, stream = pickle.loads(data)
        return cls(item, rows, [torch.from_numpy(w) for w in windows], stream)


def _info(item: WorkItem):
    if item.info is None:
        return None
    from magtok.data import VideoInfo
    i = item.info
    fps = float(i["fps"] or 0.0)
    return VideoInfo(item.path, int(i["frames"]), fps, int(i["height"]), int(i["width"]),
                     int(i["frames"]) / fps if fps else 0.0, int(i.get("declared_frames") or 0))


def _row_fields(item: WorkItem, src, window: int, first: int, count: int, extra: dict) -> dict:
    fs, fe = src.source_range(first, count) if count else (src.start, src.start)
    if src.declared_frames:                      # the container promised more frames than decode
        extra = {**(extra or {}), "declared_frames": src.declared_frames}
    return dict(id=item.id if window < 0 else f"{item.id}#w{window}", source=item.id, window=max(window, 0),
                frame_start=fs, frame_end=fe, frames=count, fps=src.fps, clip_fps=src.clip_fps,
                source_frames=src.frames_total, height=src.height, width=src.width, resize=src.geometry.resize,
                crop=src.geometry.crop, extra=extra or None)


def prepare_item(item: WorkItem, r_s: int, r_t: int, read: ReadOptions, compute: ComputeOptions,
                 window_frames: int | None, max_prefetch_mb: float) -> PreparedItem:
    """Read one input into windows (runs in a decode worker). Raises ValueError for a bad input."""
    with local_input(item.path) as local:
        src = open_source(local, r_s, read, info=_info(item), name=item.id)
        oh, ow = src.geometry.out
        if window_frames is None:
            if src.frames * oh * ow * 12 / 2**20 > max_prefetch_mb:
                return PreparedItem(item, [], [], stream=True)      # too large: the encoder streams it
            counter = Counter()
            raw = np.concatenate(list(raw_chunks(src, src.frames, src.frames)))   # all frames, checked
            chunk = prepare_frames(raw, src.geometry, r_t, True, True, read.frames_policy, counter)
            extra = {"frames": counter.frames_in}
            if counter.frames_enc != counter.frames_in:
                extra["frames_policy"] = read.frames_policy
            return PreparedItem(item, [_row_fields(item, src, -1, 0, counter.frames_in, extra)], [chunk.video[0]])
        rows, windows = [], []
        first = 0
        for k, raw in enumerate(raw_chunks(src, window_frames, window_frames)):
            counter = Counter()
            chunk = prepare_frames(raw, src.geometry, r_t, True, True, read.frames_policy, counter)
            if chunk is not None:
                extra = {"frames": counter.frames_in}
                if counter.frames_enc != counter.frames_in:
                    extra["frames_policy"] = read.frames_policy
                rows.append(_row_fields(item, src, k, first, counter.frames_in, extra))
                windows.append(chunk.video[0])
            first += len(raw)
        if not windows:
            raise ValueError(f"{item.id}: no window of {window_frames} frames fits the tokenizer "
                             f"(frames policy {read.frames_policy})")
        return PreparedItem(item, rows, windows)


# ---------------------------------------------------------------------------- encoding
def _stream_rows(model: Model, prep: PreparedItem, read: ReadOptions, compute: ComputeOptions) -> list[TokenRow]:
    from magtok.pipeline.api import encode_source
    item = prep.item
    with local_input(item.path) as local:
        src = open_source(local, model.tok.space_compression, read, info=_info(item), name=item.id)
        res = encode_source(model, src, read, compute)
    extra = {k: v for k, v in res.meta["extra"].items() if k not in ("tokenizer", "model")}
    f = _row_fields(item, src, -1, 0, res.frames, extra)
    return [TokenRow(codes=res.codes.numpy(), tokenizer=model.file_id, **f)]


class _Batcher:
    """Windows grouped by shape; a full group is encoded as one batch."""

    def __init__(self, model: Model, compute: ComputeOptions, batch_size: int):
        self.model, self.compute, self.batch_size = model, compute, batch_size
        self.tile = compute.tiles(model.tok.space_compression)
        self.groups: dict[tuple, list] = {}

    def add(self, key, k: int, window: torch.Tensor) -> list | None:
        g = self.groups.setdefault(tuple(window.shape), [])
        g.append((key, k, window))
        if len(g) >= self.batch_size:
            return self.groups.pop(tuple(window.shape))
        return None

    def drain(self) -> list[list]:
        out = list(self.groups.values())
        self.groups = {}
        return out

    @torch.no_grad()
    def encode(self, group: list) -> list[tuple]:
        """-> (key, k, codes in file layout as numpy, or an exception)."""
        from magtok.pipeline.api import _encode, algorithm, to_file_layout
        tok = self.model.tok
        try:
            with algorithm(self.compute):
                codes = _encode(tok, torch.stack([w for _, _, w in group]).to(tok.device), self.tile).cpu()
            return [(key, k, to_file_layout(c).numpy()) for (key, k, _), c in zip(group, codes)]
        except Exception as e:
            if len(group) == 1:
                return [(group[0][0], group[0][1], e)]
            return [r for one in group for r in self.encode([one])]      # find the one that fails


def encode_prepared(model: Model, prepared, read: ReadOptions, compute: ComputeOptions, batch_size: int):
    """Encode prepared inputs, batching windows of the same shape across inputs.

    ``prepared``: iterable of PreparedItem or (WorkItem, exception). Yields (WorkItem, rows, None) for a
    tokenized input and (WorkItem, None, reason) for a failed one, each input once, all its rows
    together."""
    batcher = _Batcher(model, compute, batch_size)
    open_items: dict[int, list] = {}     # key -> [prep, codes per window, remaining, error]

    def finish(results):
        for key, k, codes in results:
            st = open_items[key]
            if isinstance(codes, BaseException):
                st[3] = st[3] or f"encode: {type(codes).__name__}: {codes}"
            else:
                st[1][k] = codes
            st[2] -= 1
            if st[2] == 0:
                del open_items[key]
                prep = st[0]
                if st[3]:
                    yield prep.item, None, st[3]
                else:
                    yield prep.item, [TokenRow(codes=c, tokenizer=model.file_id, **f)
                                      for f, c in zip(prep.rows, st[1])], None

    for key, prep in enumerate(prepared):
        if not isinstance(prep, PreparedItem):
            item, err = prep
            yield item, None, _reason(err)
            continue
        if prep.stream:
            try:
                yield prep.item, _stream_rows(model, prep, read, compute), None
            except Exception as e:
                yield prep.item, None, _reason(e)
            continue
        open_items[key] = [prep, [None] * len(prep.windows), len(prep.windows), None]
        for k, w in enumerate(prep.windows):
            full = batcher.add(key, k, w)
            if full is not None:
                yield from finish(batcher.encode(full))
    for group in batcher.drain():
        yield from finish(batcher.encode(group))


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------- the local engine
def _prepared_stream(items: list[WorkItem], model: Model, read: ReadOptions, compute: ComputeOptions,
                     opts: DatasetOptions):
    """PreparedItem (or (item, error)) for every item, in order, decoded ahead by worker threads."""
    tok = model.tok
    args = (tok.space_compression, tok.time_compression, read, compute, opts.window_frames, opts.max_prefetch_mb)
    ahead = opts.prefetch or 2 * opts.decode_workers + opts.batch_size
    with ThreadPoolExecutor(opts.decode_workers, thread_name_prefix="magtok-decode") as pool:
        pending: deque = deque()
        it = iter(items)

        def submit():
            item = next(it, None)
            if item is not None:
                pending.append((item, pool.submit(prepare_item, item, *args)))

        for _ in range(ahead):
            submit()
        try:
            while pending:
                item, fut = pending.popleft()
                submit()
                try:
                    yield fut.result()
                except Exception as e:      # one input's problem, recorded; the run goes on
                    yield item, e
        finally:
            for _, fut in pending:
                fut.cancel()


def run_local(items: list[WorkItem], model: Model, read: ReadOptions, compute: ComputeOptions,
              opts: DatasetOptions, writer: PartWriter, report: DatasetReport, progress=None) -> None:
    for item, rows, reason in encode_prepared(model, _prepared_stream(items, model, read, compute, opts),
                                              read, compute, opts.batch_size):
        if reason is not None:
            writer.add_failure(item.id, reason, stage="tokenize")
            report.failed[item.id] = reason
        else:
            writer.add_source(rows)
            report.added += 1
            report.rows += len(rows)
        if progress is not None:
            progress(1)


# ---------------------------------------------------------------------------- the entry point
def _check_reachable_by_ray(what: str, path) -> None:
    """Ray's workers are other processes (other machines on a cluster): fsspec's memory:// file system
    lives inside one process, so they would read nothing and write where the driver never looks."""
    if str(path).startswith("memory://"):
        raise ValueError(f"{what}={str(path)!r}: engine='ray' cannot use memory:// (each Ray worker process "
                         f"has its own in-memory file system); use a local or shared folder or an object store "
                         f"URL, or engine='local'")


def tokenize_dataset(data, out, model, read: ReadOptions | None = None, compute: ComputeOptions | None = None,
                     options: DatasetOptions | None = None, progress: Callable[[int], object] | None = None,
                     on_start: Callable[[DatasetReport], object] | None = None) -> DatasetReport:
    """Tokenize every input of this shard of ``data`` into Parquet parts in ``out`` (see the module
    docstring). ``model``: a ``Model``, a model folder or a bundled name. Returns a DatasetReport."""
    from magtok.data import tokenizer_fingerprint
    from magtok.data.parquet import ensure_tokenizer_file, read_done_sources, read_failures
    read, compute, opts = read or ReadOptions(), compute or ComputeOptions(), options or DatasetOptions()
    t0 = time.perf_counter()
    if opts.engine == "ray":
        _check_reachable_by_ray("out", out)
        if isinstance(data, (str, Path)):
            _check_reachable_by_ray("data", data)
    m = load_model(model, compute.device)
    compute.tiles(m.tok.space_compression)                       # bad tile options fail before any work
    items, probe_errors = plan_work(data)
    if opts.engine == "ray":                                           # inputs listed in a manifest / list
        in_memory = next((it for it in items if str(it.path).startswith("memory://")), None)
        if in_memory is not None:
            _check_reachable_by_ray(f"input {in_memory.id!r}", in_memory.path)
    items = [it for it in items if shard_of(it.id, opts.num_shards) == opts.shard_id]
    probe_errors = {k: v for k, v in probe_errors.items() if shard_of(k, opts.num_shards) == opts.shard_id}
    report = DatasetReport(str(out), opts.shard_id, opts.num_shards, inputs=len(items) + len(probe_errors))
    fp = tokenizer_fingerprint(m.id, m.config)
    ensure_tokenizer_file(out, m.id, m.config, m.tok.codebook_size, fp)
    mine = {it.id for it in items} | set(probe_errors)
    done = read_done_sources(out, wanted=mine)
    earlier = read_failures(out, exclude=done)
    todo = []
    for it in items:
        if it.id in done:
            report.skipped += 1
        elif it.id in earlier and not opts.retry_failed:
            report.skipped_failed[it.id] = earlier[it.id]["reason"]
        else:
            todo.append(it)
    if opts.limit is not None:
        todo = todo[:opts.limit]
    metadata = {"magtok": {"tokenizer_id": m.id, "fingerprint": fp, "codebook_size": m.tok.codebook_size}}
    writer = PartWriter(out, opts.shard_id, opts.num_shards, rows_per_part=opts.rows_per_part,
                        row_group_rows=opts.row_group_rows, metadata=metadata)
    for src, reason in probe_errors.items():
        if src in earlier and not opts.retry_failed:
            report.skipped_failed[src] = reason
            continue
        writer.add_failure(src, reason, stage="probe")
        report.failed[src] = reason
    if on_start is not None:
        on_start(report)
    try:
        if opts.engine == "local":
            run_local(todo, m, read, compute, opts, writer, report, progress)
        else:
            from magtok.pipeline.manifest import is_manifest
            from magtok.pipeline.ray_engine import run_ray
            manifest = str(data) if isinstance(data, (str, Path)) and is_manifest(data) else None
            run_ray(todo, m, read, compute, opts, writer, report, progress, manifest=manifest)
    finally:
        writer.close()
        report.parts = sorted(set(report.parts) | set(writer.parts))     # Ray: its write tasks' parts
        report.seconds = time.perf_counter() - t0
    return report


def _note(msg: str) -> None:   # pragma: no cover - used by scripts
    print(f"magtok: note: {msg}", file=sys.stderr)
