"""The Ray Data engine of ``tokenize_dataset``: the same stages as the local engine, on a Ray cluster.

    inputs: the manifest read by ``ray.data.read_parquet`` (given a manifest; only this run's rows are
            kept), else the planned work items (``ray.data.from_items``); split into blocks
      -> map: decode (read, resize, cut into windows; a CPU task per block of inputs)
      -> map_batches: an actor pool of tokenizers (one per GPU, or per CPU slot), which encode the
         windows of ``batch_size`` inputs at a time and pass the (small) token rows on
      -> map_batches: write tasks, each taking up to ``rows_per_part`` inputs and writing their rows
         as Parquet parts of at most ``rows_per_part`` rows (atomically, a source never split)
      -> the driver collects one small summary per input (and the parts each write task wrote) and
         writes the failures

Ray is started here when none is running (``ray_address=None``: a local Ray with ``ray_cpus`` CPUs,
stopped at the end), or joined (``ray_address="auto"`` or ``"ray://host:10001"``). The output folder
must be reachable by every worker (a shared file system or an object store URL), and so must the
inputs, the manifest and the model folder.
"""

from __future__ import annotations

import json
import math
import os
import pickle

from magtok.data.parquet import PartWriter

__all__ = ["run_ray"]


_INFO_KEYS = ("frames", "fps", "height", "width", "declared_frames")
_KEEP_CACHE: dict = {}


def _keep_set(keep):
    """The ids to tokenize (an ObjectRef, fetched once per worker process)."""
    import ray
    if not isinstance(keep, ray.ObjectRef):
        return keep
    key = keep.hex()
    if key not in _KEEP_CACHE:
        _KEEP_CACHE.clear()
        _KEEP_CACHE[key] = ray.get(keep)
    return _KEEP_CACHE[key]


def _manifest_rows(batch, keep) -> dict:
    """Manifest rows (a pyarrow batch) -> work rows of this run (id, path, kind, info), the rest dropped.
    Same defaults as ``read_manifest``: id = path, kind from the file name."""
    from magtok.pipeline.manifest import _kind
    keep = _keep_set(keep)
    out = {"id": [], "path": [], "kind": [], "info": []}
    for r in batch.to_pylist():
        path = r["path"]
        rid = r.get("id") or path
        if rid not in keep or r.get("error"):
            continue
        kind = r.get("kind") or _kind(path) or "video"
        info = ""
        if kind == "video" and r.get("frames") is not None:
            info = json.dumps({k: r.get(k) for k in _INFO_KEYS})
        out["id"].append(rid)
        out["path"].append(path)
        out["kind"].append(kind)
        out["info"].append(info)
    return out


def _read_manifest_ds(manifest, keep_ref, num_blocks: int):
    import ray.data

    from magtok.data.parquet import _is_local, url_to_fs
    fs, p = url_to_fs(manifest)
    if _is_local(fs):
        ds = ray.data.read_parquet(os.path.abspath(p))
    else:
        from pyarrow.fs import FSSpecHandler, PyFileSystem
        ds = ray.data.read_parquet(p, filesystem=PyFileSystem(FSSpecHandler(fs)))
    ds = ds.map_batches(_manifest_rows, batch_format="pyarrow", fn_kwargs={"keep": keep_ref}, num_cpus=0.25)
    return ds.repartition(num_blocks)       # a manifest is one file: spread its rows over the decode tasks


def _decode_row(row: dict, args: tuple) -> dict:
    from magtok.pipeline.dataset import WorkItem, prepare_item
    item = WorkItem(row["id"], row["path"], row["kind"], json.loads(row["info"]) if row["info"] else None)
    try:
        prep = prepare_item(item, *args)
        return {"id": item.id, "path": item.path, "kind": item.kind, "payload": prep.to_bytes(), "error": ""}
    except Exception as e:
        from magtok.pipeline.dataset import _reason
        return {"id": item.id, "path": item.path, "kind": item.kind, "payload": b"", "error": _reason(e)}


class _Tokenizer:
    """A Ray actor: holds one tokenizer and encodes batches of decoded inputs into token rows."""

    def __init__(self, model_path: str, device: str, read, compute, batch_size: int):
        import torch
        from magtok.pipeline.model import load_model
        torch.set_flush_denormal(True)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(model_path, device)
        self.read, self.compute, self.batch_size = read, compute, batch_size

    def __call__(self, batch: dict) -> dict:
        from magtok.pipeline.dataset import PreparedItem, WorkItem, encode_prepared
        prepared = []
        for rid, path, kind, payload, err in zip(batch["id"], batch["path"], batch["kind"], batch["payload"],
                                                 batch["error"]):
            if err:
                prepared.append((WorkItem(str(rid), str(path), str(kind)), ValueError(str(err))))
            else:
                prepared.append(PreparedItem.from_bytes(bytes(payload)))
        out = {"id": [], "rows": [], "error": []}
        for item, item_rows, reason in encode_prepared(self.model, prepared, self.read, self.compute,
                                                       self.batch_size):
            out["id"].append(item.id)
            out["rows"].append(pickle.dumps(item_rows, protocol=5) if reason is None else b"")
            out["error"].append(reason or "")
        return out


def _write_parts(batch: dict, out: str, shard_id: int, num_shards: int, rows_per_part: int, row_group_rows: int,
                 metadata: dict) -> dict:
    """Write the token rows of a batch of inputs as parts of at most ``rows_per_part`` rows (each
    source's rows in one part, committed atomically before they are reported done)."""
    writer = PartWriter(out, shard_id, num_shards, rows_per_part=rows_per_part, row_group_rows=row_group_rows,
                        metadata=metadata)
    counts = []
    for rows, err in zip(batch["rows"], batch["error"]):
        if err:
            counts.append(0)
            continue
        rows = pickle.loads(bytes(rows))
        writer.add_source(rows)
        counts.append(len(rows))
    writer.close()
    parts = [""] * len(counts)      # the parts this task wrote, reported once (on its first row)
    if parts:
        parts[0] = json.dumps(list(writer.parts))
    return {"id": list(batch["id"]), "rows": counts, "error": list(batch["error"]), "parts": parts}


def run_ray(items, model, read, compute, opts, writer: PartWriter, report, progress=None, manifest=None) -> None:
    """Tokenize ``items`` (WorkItems) on Ray Data. ``manifest``: the manifest they were planned from;
    its rows are then read by the workers with ``ray.data.read_parquet`` (only the ids of ``items``)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError("engine='ray' needs Ray Data: pip install 'ray[data]'") from None
    if not items:
        return
    started = False
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if opts.ray_address:
            ray.init(address=opts.ray_address, **kwargs)
        else:
            ray.init(num_cpus=opts.ray_cpus, **kwargs)
        started = True
    try:
        _run_dataset(items, model, read, compute, opts, writer, report, progress, manifest)
    finally:
        if started:
            _stop_ray()


def _run_dataset(items, model, read, compute, opts, writer: PartWriter, report, progress, manifest) -> None:
    """Build the Ray Data pipeline and collect its summaries. A function of its own so that the
    dataset (and every object reference it holds) is released when it returns, before Ray stops."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and compute.device in ("auto", "cuda") or str(compute.device).startswith("cuda")
    actors = opts.ray_actors or (gpus if use_gpu else 1)
    tok = model.tok
    args = (tok.space_compression, tok.time_compression, read, compute, opts.window_frames, opts.max_prefetch_mb)
    metadata = {"magtok": {"tokenizer_id": model.id, "fingerprint": model.file_id,
                           "codebook_size": tok.codebook_size}}
    # enough blocks that decode tasks run in parallel, small enough that one block's decoded windows fit
    num_blocks = min(len(items), max(4 * actors, math.ceil(len(items) / 256)))
    if manifest is not None:
        ds = _read_manifest_ds(manifest, ray.put({it.id for it in items}), num_blocks)
    else:
        rows = [{"id": it.id, "path": it.path, "kind": it.kind, "info": json.dumps(it.info) if it.info else ""}
                for it in items]
        ds = ray.data.from_items(rows, override_num_blocks=num_blocks)
    ds = ds.map(_decode_row, fn_kwargs={"args": args}, num_cpus=1)
    ds = ds.map_batches(
        _Tokenizer, batch_size=opts.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1,
        fn_constructor_kwargs=dict(model_path=str(model.path), device="auto" if use_gpu else "cpu", read=read,
                                   compute=compute, batch_size=opts.batch_size))
    # parts per write task, not per actor batch: a write task takes up to rows_per_part inputs
    ds = ds.map_batches(
        _write_parts, batch_size=opts.rows_per_part, num_cpus=0.25,
        fn_kwargs=dict(out=writer.folder, shard_id=opts.shard_id, num_shards=opts.num_shards,
                       rows_per_part=opts.rows_per_part, row_group_rows=opts.row_group_rows, metadata=metadata))
    for r in ds.iter_rows():
        if r["parts"]:
            report.parts.extend(json.loads(r["parts"]))
        if r["error"]:
            writer.add_failure(r["id"], r["error"], stage="tokenize")
            report.failed[r["id"]] = r["error"]
        else:
            report.added += 1
            report.rows += int(r["rows"])
        if progress is not None:
            progress(1)


def _stop_ray() -> None:
    """``ray.shutdown()`` of the Ray that magtok started, without the process dying on the way.

    Ray ends the whole process ("The core worker has already been shutdown ... The process will exit")
    when any Python thread drops the last reference to a Ray object while ``ray.shutdown()`` is tearing
    the core worker down (it releases the GIL meanwhile); in CI that killed a test worker. Who can do
    that: Ray Data's threads that outlive the iteration (block prefetcher, ``iter_rows`` workers), and
    any thread whose allocation starts a garbage collection that frees Ray Data's leftover reference
    cycles. So: wait for Ray Data's threads, collect the garbage while Ray is still up, and keep the
    collector off until the shutdown has finished (objects freed after it are harmless: Ray then
    ignores them)."""
    import gc

    import ray
    _join_ray_data_threads()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        ray.shutdown()
    finally:
        if enabled:
            gc.enable()


def _join_ray_data_threads(timeout: float = 60.0) -> None:
    """Wait for Ray Data's background threads before ``ray.shutdown()``: the executor's scheduling
    thread (joined by Ray for only 2 s), the block prefetcher and the ``iter_rows`` workers, which hold
    object references and drop them when they end. On a loaded machine they outlive the iteration, and
    a thread that frees a Ray object during the shutdown makes Ray end the whole process ("The core
    worker has already been shutdown ... The process will exit"): in CI that killed a test worker.
    A thread is Ray Data's when its function comes from ``ray.data`` (names change between releases);
    the usage-metrics poller, which lives as long as the process and holds no objects, is not waited
    for."""
    import threading
    import time
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t is not threading.current_thread() and _is_ray_data_thread(t):
            t.join(max(0.0, deadline - time.monotonic()))


def _is_ray_data_thread(t) -> bool:
    """The thread's function (``Thread(target=...)``) or its class (the executor subclasses Thread)
    comes from ``ray.data``."""
    module = getattr(getattr(t, "_target", None), "__module__", None) or type(t).__module__ or ""
    return module.startswith("ray.data") and not module.startswith("ray.data._internal.usage")
