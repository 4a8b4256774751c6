"""tokenize_dataset / `magtok tokenize-dataset`: Parquet rows equal single-file tokenizing, windows,
batching across inputs, sharding, failures as data, resuming, kill -9, fsspec outputs, bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from magtok.pipeline import (ComputeOptions, DatasetOptions, ReadOptions, load_model, tokenize_dataset,
                             tokenize_file)

from .conftest import GOOD_IDS, rows_of

REPO = Path(__file__).resolve().parents[2]
READ = ReadOptions(size=(16, 16), max_frames=9)
ARGS = ("--size", "16", "16", "--max-frames", "9", "-q")


@pytest.fixture(scope="module")
def local_out(videos, tiny_model, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("local") / "shards"
    rep = tokenize_dataset(videos, out, tiny_model, READ,
                           options=DatasetOptions(batch_size=4, decode_workers=2, rows_per_part=3))
    return out, rep


def test_rows_equal_tokenizing_each_file(local_out, videos, tiny_model):
    out, rep = local_out
    rows = rows_of(out)
    assert sorted(rows) == GOOD_IDS and rep.added == 7 and rep.rows == 7
    assert list(rep.failed) == ["broken.mp4"] and not rep.ok
    assert len(list(out.glob("part-*.parquet"))) == 3                    # 3 + 3 + 1 rows, a source never split
    model = load_model(tiny_model)
    for rid in ("bikes-0.mp4", "sub/carphone_pristine-1.mp4", "coffee.png"):
        want = tokenize_file(videos / rid, model, READ)
        r = rows[rid]
        assert r["code_shape"] == list(want.codes.shape)
        assert np.array_equal(np.array(r["codes"]).reshape(r["code_shape"]), want.codes.numpy())
        assert r["source"] == rid and r["window"] == 0 and r["tokenizer"] == model.file_id
        assert r["frames"] == want.frames and r["frame_start"] == 0 and r["frame_end"] == want.frames
        assert r["crop"] == (list(want.meta["crop"]) if want.meta["crop"] else None)
    assert rows["sub/bikes-1.mp4"]["frames"] == 9 and rows["bikes-0.mp4"]["frames"] == 9
    assert rows["bikes-0.mp4"]["fps"] == 25.0 and rows["bikes-0.mp4"]["height"] == 48


def test_standard_parquet_readable_without_magtok(local_out):
    import pyarrow.dataset as pads
    out, _ = local_out
    t = pads.dataset(str(out), format="parquet", exclude_invalid_files=False,
                     ignore_prefixes=[".", "_", "failures-", "tokenizer"]).to_table()
    assert t.num_rows == 7
    assert {"id", "source", "codes", "code_shape", "frame_start", "frame_end", "fps", "tokenizer"} <= set(t.column_names)
    assert str(t.schema.field("codes").type.value_type) == "int32"


def test_failures_are_recorded_and_retried_only_when_asked(local_out, videos, tiny_model, tmp_path, cli):
    import pyarrow.parquet as pq
    out, _ = local_out
    fails = [r for p in out.glob("failures-*.parquet") for r in pq.read_table(p).to_pylist()]
    assert [f["source"] for f in fails] == ["broken.mp4"] and "not a readable video" in fails[0]["reason"]
    # resume: nothing is redone, the failure is skipped and still makes the exit code non-zero
    rep = tokenize_dataset(videos, out, tiny_model, READ)
    assert rep.added == 0 and rep.skipped == 7 and list(rep.skipped_failed) == ["broken.mp4"] and not rep.ok
    # once repaired, --retry-failed tokenizes it and the folder has no open failure any more
    fixed = tmp_path / "videos"
    import shutil
    shutil.copytree(videos, fixed)
    shutil.copy(fixed / "bikes-0.mp4", fixed / "broken.mp4")
    work = tmp_path / "out"
    shutil.copytree(out, work)
    code, _, err = cli("tokenize-dataset", fixed, "--model", tiny_model, "--out", work, *ARGS)
    assert code == 1 and "pass --retry-failed" in err
    code, _, err = cli("tokenize-dataset", fixed, "--model", tiny_model, "--out", work, "--retry-failed", *ARGS)
    assert code == 0, err
    assert "1 inputs tokenized (1 rows), 7 already present, 0 failed" in err
    assert "broken.mp4" in rows_of(work)
    code, out_, _ = cli("info", work)
    assert "failures:        0" in out_


def test_windows_and_batching_across_inputs(videos, tiny_model, tmp_path):
    """13-frame clips cut into 5-frame windows: 3 windows (5, 5, 3); 9-frame ones 2 (5, 4 -> padded);
    ids <id>#w<k>; the codes
    of a window equal tokenizing those frames alone."""
    out = tmp_path / "win"
    read = ReadOptions(size=(16, 16))
    rep = tokenize_dataset(videos, out, tiny_model, read, options=DatasetOptions(window_frames=5, batch_size=5))
    rows = rows_of(out)
    assert {r for r in rows if r.startswith("bikes-0.mp4")} == {"bikes-0.mp4#w0", "bikes-0.mp4#w1", "bikes-0.mp4#w2"}
    w1 = rows["bikes-0.mp4#w1"]
    assert (w1["frame_start"], w1["frame_end"], w1["frames"], w1["window"]) == (5, 10, 5, 1)
    w2 = rows["bikes-0.mp4#w2"]
    assert w2["frames"] == 3 and "frames_policy" not in json.loads(w2["extra"])        # 3 = 1 + r_t: as is
    short = rows["sub/bikes-1.mp4#w1"]                                                  # 9 frames: 5 + 4
    assert short["frames"] == 4 and json.loads(short["extra"])["frames_policy"] == "pad"
    assert short["code_shape"][0] == 3                                                  # padded to 5 frames
    want = tokenize_file(videos / "bikes-0.mp4", tiny_model, ReadOptions(size=(16, 16), start=5, max_frames=5))
    assert np.array_equal(np.array(w1["codes"]).reshape(w1["code_shape"]), want.codes.numpy())
    assert rep.rows == len(rows) == 6 * 3 - 3 + 1          # 9-frame clips give 2 windows; the photo 1


def test_batching_and_workers_do_not_change_codes(videos, tiny_model, tmp_path, local_out):
    out = tmp_path / "b1"
    tokenize_dataset(videos, out, tiny_model, READ, options=DatasetOptions(batch_size=1, decode_workers=1))
    a, b = rows_of(out), rows_of(local_out[0])
    assert {k: v["codes"] for k, v in a.items()} == {k: v["codes"] for k, v in b.items()}


def test_long_inputs_are_streamed_with_the_same_codes(videos, tiny_model, tmp_path, local_out):
    out = tmp_path / "streamed"
    tokenize_dataset(videos, out, tiny_model, READ, compute=ComputeOptions(chunk_latents=1),
                     options=DatasetOptions(max_prefetch_mb=0))           # everything "too large": streamed
    a, b = rows_of(out), rows_of(local_out[0])
    assert {k: v["codes"] for k, v in a.items()} == {k: v["codes"] for k, v in b.items()}


def test_shards_split_the_inputs(videos, tiny_model, tmp_path, local_out, cli):
    out = tmp_path / "sharded"
    seen = []
    for i in range(3):
        code, _, err = cli("tokenize-dataset", videos, "--model", tiny_model, "--out", out,
                           "--shard-id", i, "--num-shards", 3, *ARGS)
        seen.append(code)
        assert f"in shard {i} of 3" in err
    assert sorted(seen) == [0, 0, 1]                   # the shard holding broken.mp4 exits 1
    assert {k: v["codes"] for k, v in rows_of(out).items()} == {k: v["codes"] for k, v in rows_of(local_out[0]).items()}


def test_fsspec_memory_output_and_input(videos, tiny_model, local_out):
    import fsspec
    from magtok.data.parquet import ParquetTokenReader
    fs = fsspec.filesystem("memory")
    for p in ("bikes-0.mp4", "coffee.png"):
        fs.pipe(f"/in/{p}", (videos / p).read_bytes())
    rep = tokenize_dataset("memory://in", "memory://tok", tiny_model, READ)
    assert rep.added == 2 and rep.ok
    r = ParquetTokenReader("memory://tok")
    got = {row["id"]: row["codes"].reshape(-1).tolist() for row in r.iter_rows()}
    want = rows_of(local_out[0])
    assert got == {k: want[k]["codes"] for k in ("bikes-0.mp4", "coffee.png")}
    assert not [p for p in fs.find("/tok") if "/.tmp" in p]


_KILLED_RUN = r"""
import sys, time
import magtok.data.parquet as P
from magtok.pipeline import DatasetOptions, ReadOptions, tokenize_dataset
real = P._rows_table
def slow(records, schema):          # the second part is killed while being written
    t = real(records, schema)
    if P._n_calls[0] == 1:
        print("WRITING", flush=True)
        time.sleep(60)
    P._n_calls[0] += 1
    return t
P._n_calls = [0]
P._rows_table = slow
tokenize_dataset(sys.argv[1], sys.argv[2], sys.argv[3], ReadOptions(size=(16, 16), max_frames=9),
                 options=DatasetOptions(rows_per_part=2, batch_size=2))
"""


def test_kill_9_leaves_no_part_a_reader_takes_for_complete(videos, tiny_model, tmp_path, local_out):
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(videos), str(out), str(tiny_model)], env=env,
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "WRITING", p.stderr.read()
        time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    from magtok.data.parquet import ParquetTokenReader
    assert len(list(out.glob("part-*.parquet"))) == 1 and len(ParquetTokenReader(out)) == 2
    rep = tokenize_dataset(videos, out, tiny_model, READ)                  # resume completes the folder
    assert rep.skipped == 2 and rep.added == 5
    assert {k: v["codes"] for k, v in rows_of(out).items()} == {k: v["codes"] for k, v in rows_of(local_out[0]).items()}


@pytest.mark.parametrize("argv,message", [
    (("--shard-id", "1"), "give --shard-id and --num-shards together"),
    (("--shard-id", "3", "--num-shards", "3"), "--shard-id 3 --num-shards 3: the shard id must be at least 0 and below"),
    (("--window-frames", "0"), "--window-frames 0: must be >= 1"),
    (("--batch-size", "0"), "--batch-size 0: must be >= 1"),
    (("--fps", "-1"), "--fps -1.0: the frame rate must be positive"),
    (("--tile", "15"), "multiples of r_s=2"),
])
def test_bad_arguments_give_one_line(videos, tiny_model, tmp_path, cli, argv, message):
    code, _, err = cli("tokenize-dataset", videos, "--model", tiny_model, "--out", tmp_path / "o", *argv, "-q")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("part-*"))


def test_bad_inputs_and_outputs(videos, tiny_model, tmp_path, cli, other_model_dir):
    code, _, err = cli("tokenize-dataset", tmp_path / "nope", "--model", tiny_model, "--out", tmp_path / "o", "-q")
    assert code == 2 and "does not exist" in err
    (tmp_path / "file").write_text("x")
    code, _, err = cli("tokenize-dataset", videos, "--model", tiny_model, "--out", tmp_path / "file", "-q")
    assert code == 2 and "is a file" in err
    code, _, err = cli("tokenize-dataset", videos, "--model", tmp_path / "nomodel", "--out", tmp_path / "o", "-q")
    assert code == 2 and "does not exist" in err
    # a folder of another tokenizer is refused
    out = tmp_path / "o2"
    assert cli("tokenize-dataset", videos, "--model", tiny_model, "--out", out, "--limit", "1", *ARGS)[0] == 0
    code, _, err = cli("tokenize-dataset", videos, "--model", other_model_dir, "--out", out, *ARGS)
    assert code == 2 and "use another folder" in err


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    from magtok import VideoTokenizer, get_config
    torch.manual_seed(1)
    return VideoTokenizer(get_config("tiny")).save_pretrained(tmp_path_factory.mktemp("other") / "m")


def test_ray_engine_refuses_memory_urls_before_starting_ray(videos, tiny_model, tmp_path, monkeypatch):
    """memory:// exists only inside one process: Ray's workers would write where the driver never
    looks. Refused up front (out, data, or an input listed in a list file), with the way out."""
    import sys

    import fsspec
    monkeypatch.setitem(sys.modules, "ray", None)                     # would fail if Ray were started
    fsspec.filesystem("memory").pipe("/ray-in/coffee.png", (videos / "coffee.png").read_bytes())
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{videos / 'coffee.png'}\nmemory:///ray-in/coffee.png\n")
    ray_opts = DatasetOptions(engine="ray")
    for data, out, what in ((videos, "memory://ray-out", "out="), ("memory://ray-in", tmp_path / "o1", "data="),
                            (listing, tmp_path / "o2", "input 'memory:///ray-in/coffee.png'")):
        with pytest.raises(ValueError) as e:
            tokenize_dataset(data, out, tiny_model, READ, options=ray_opts)
        assert what in str(e.value) and "engine='local'" in str(e.value), str(e.value)
    assert not (tmp_path / "o1").exists()


def test_ray_data_threads_are_joined_before_ray_shuts_down():
    """Ray Data threads that outlive the iteration (the scheduling thread, the block prefetcher, the
    iter_rows workers) hold object references; one freeing them during ray.shutdown() makes Ray end
    the process (it killed a CI test worker): run_ray waits for them, known by their function or class
    from ray.data, but not for the usage poller (it lives as long as the process) or other threads."""
    import threading
    import time

    from magtok.pipeline.ray_engine import _join_ray_data_threads

    def ray_data_fn(seconds, module):
        def run():
            time.sleep(seconds)
        run.__module__ = module
        return run
    class StreamingExecutor(threading.Thread):        # Ray Data's executor is a Thread subclass
        def run(self):
            time.sleep(0.5)
    StreamingExecutor.__module__ = "ray.data._internal.execution.streaming_executor"
    threads = [StreamingExecutor(name="StreamingExecutor-dataset_1_0", daemon=True)]
    threads += [threading.Thread(target=ray_data_fn(0.5, module), name=n, daemon=True) for n, module in
                (("ray-data-metadata-prefetch", "ray.data._internal.execution.metadata_fetcher"),
                 ("Prefetcher", "ray.data._internal.block_batching.util"),
                 ("iter_threaded", "ray.data._internal.block_batching.util"))]
    others = [threading.Thread(target=time.sleep, args=(3,), name="unrelated", daemon=True),
              threading.Thread(target=ray_data_fn(3, "ray.data._internal.usage.poller"),
                               name="data-usage-metrics-poller", daemon=True)]
    for t in (*threads, *others):
        t.start()
    t0 = time.monotonic()
    _join_ray_data_threads(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert all(t.is_alive() for t in others) and time.monotonic() - t0 < 2.5   # not waited for


def test_ray_is_stopped_with_its_garbage_collected_first_and_the_collector_off(monkeypatch):
    """Ray ends the process when a thread frees a Ray object while ray.shutdown() runs (another thread's
    allocation can start a garbage collection then): _stop_ray joins Ray Data's threads, collects
    the garbage first and keeps the collector off during the shutdown, then restores it."""
    import gc
    import sys
    import types
    import weakref

    from magtok.pipeline import ray_engine

    class Ref:                                       # stands for an ObjectRef held in a reference cycle
        pass
    seen = {}

    def shutdown():
        seen["collector on"] = gc.isenabled()
        seen["garbage left"] = probe() is not None
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(shutdown=shutdown))
    monkeypatch.setattr(ray_engine, "_join_ray_data_threads", lambda: seen.setdefault("joined", True))
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        seen.clear()
        cycle = [Ref()]
        cycle.append(cycle)
        probe = weakref.ref(cycle[0])
        del cycle
        try:
            ray_engine._stop_ray()
        finally:
            now = gc.isenabled()
            gc.enable()
        assert seen == {"joined": True, "collector on": False, "garbage left": False}
        assert now is enabled                       # the collector's state is restored either way
