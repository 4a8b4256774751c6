import json
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from magtok.data import (ShardReader, ShardWriter, TokenFileError, TokenSequenceDataset, load_tokens)

K = 2**18
CFG = {"name": "test", "r_t": 4, "r_s": 8, "quantizer": {"kind": "lfq", "dim": 18}}


def codes_for(i, shape=(5, 4, 4)):
    return np.random.default_rng(i).integers(0, K, size=shape)


def meta_for(i):
    return dict(source_frames=100 + i, fps=25.0, height=64, width=96, start=i, extra={"i": i})


def write(dir, ids, rank=0, **kw):
    with ShardWriter(dir, K, "tok-A", CFG, rank=rank, **kw) as w:
        for i in ids:
            w.add(f"vid{i:03d}", codes_for(i), meta_for(i))
    return w


def test_round_trip_several_shards_memory_mapped(tmp_path):
    write(tmp_path, range(12), max_shard_bytes=300)                 # a record is ~200 bytes
    shards = sorted(p for p in os.listdir(tmp_path) if p.endswith(".bin"))
    assert len(shards) >= 6 and shards[0] == "shard-r000-00000.bin"
    r = ShardReader(tmp_path)
    assert len(r) == 12 and r.ids() == [f"vid{i:03d}" for i in range(12)]
    for i in range(12):
        np.testing.assert_array_equal(r[f"vid{i:03d}"].numpy(), codes_for(i))
        m = r.meta(f"vid{i:03d}")
        assert m["source_frames"] == 100 + i and m["start"] == i and m["shape"] == [5, 4, 4]
        assert m["extra"] == {"i": i}
    assert r._maps and all(isinstance(m, np.memmap) for m in r._maps.values())
    tf = r.get("vid003")
    assert tf.header["config"] == CFG and tf.header["tokenizer_id"] == "tok-A"
    assert tf.header["source"]["frames"] == 103
    # a record is a complete token file: cut one out and load it on its own
    entry = json.loads((tmp_path / "index-r000.jsonl").read_text().splitlines()[3])
    raw = (tmp_path / entry["shard"]).read_bytes()[entry["offset"]:entry["offset"] + entry["length"]]
    (tmp_path / "one.tokens").write_bytes(raw)
    np.testing.assert_array_equal(load_tokens(tmp_path / "one.tokens").codes.numpy(), codes_for(3))
    with pytest.raises(KeyError, match="nope"):
        r["nope"]


def test_resume_after_crash_skips_done_ids_and_never_duplicates(tmp_path):
    write(tmp_path, range(5))
    # simulate a crash in the middle of the 6th record: half a record, half an index line
    shard = tmp_path / "shard-r000-00000.bin"
    index = tmp_path / "index-r000.jsonl"
    good_size = shard.stat().st_size
    with open(shard, "ab") as f:
        f.write(b"MTOK\x01\x00" + b"\x07" * 50)
    with open(index, "ab") as f:
        f.write(b'{"id": "vid005", "shard": "shard-r0')
    assert len(ShardReader(tmp_path)) == 5                         # the reader ignores both tails

    w = ShardWriter(tmp_path, K, "tok-A", CFG)
    assert shard.stat().st_size == good_size                       # the half record is gone
    assert all(w.has(f"vid{i:03d}") for i in range(5)) and not w.has("vid005")
    added = [w.add(f"vid{i:03d}", codes_for(i), meta_for(i)) for i in range(8)]
    w.close()
    assert added == [False] * 5 + [True] * 3
    r = ShardReader(tmp_path)
    assert r.ids() == [f"vid{i:03d}" for i in range(8)] and r.duplicates == 0
    for i in range(8):
        np.testing.assert_array_equal(r[f"vid{i:03d}"].numpy(), codes_for(i))
    lines = index.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line) for line in lines)


def _rank_job(dir, rank, ids):
    write(dir, ids, rank=rank, max_shard_bytes=1000)


def test_two_ranks_write_concurrently_then_one_reader(tmp_path):
    ctx = mp.get_context("fork")
    jobs = [ctx.Process(target=_rank_job, args=(str(tmp_path), r, range(r, 40, 2))) for r in (0, 1)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
        assert j.exitcode == 0
    files = os.listdir(tmp_path)
    assert "index-r000.jsonl" in files and "index-r001.jsonl" in files
    assert any(f.startswith("shard-r001-") for f in files)
    r = ShardReader(tmp_path)
    assert sorted(r.ids()) == [f"vid{i:03d}" for i in range(40)] and r.duplicates == 0
    for i in range(40):
        np.testing.assert_array_equal(r[f"vid{i:03d}"].numpy(), codes_for(i))
    # a resumed rank sees the other rank's ids too
    w = ShardWriter(tmp_path, K, "tok-A", CFG, rank=0)
    assert w.has("vid001") and w.has("vid002") and len(w) == 40
    w.close()


def test_folder_holds_one_tokenizer(tmp_path):
    write(tmp_path, range(2))
    with pytest.raises(ValueError, match="tok-A.*use another folder"):
        ShardWriter(tmp_path, K, "tok-B", CFG)
    with pytest.raises(ValueError, match="codebook"):
        ShardWriter(tmp_path, 1024, "tok-A", CFG)
    w = ShardWriter(tmp_path, K, "tok-A", CFG, rank=3)
    with pytest.raises(RuntimeError, match="rank 3 is already being written"):
        ShardWriter(tmp_path, K, "tok-A", CFG, rank=3)
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.add("new", codes_for(0), meta_for(0))
    ShardWriter(tmp_path, K, "tok-A", CFG, rank=3).close()          # the lock went with close()
    with pytest.raises(FileNotFoundError, match="not a token shard folder"):
        ShardReader(tmp_path / "elsewhere")


def test_corrupt_record_is_reported(tmp_path):
    write(tmp_path, range(3))
    shard = tmp_path / "shard-r000-00000.bin"
    data = bytearray(shard.read_bytes())
    entry = json.loads((tmp_path / "index-r000.jsonl").read_text().splitlines()[1])
    data[entry["offset"] + entry["length"] - 8] ^= 1
    shard.write_bytes(bytes(data))
    r = ShardReader(tmp_path)
    np.testing.assert_array_equal(r["vid000"].numpy(), codes_for(0))
    with pytest.raises(TokenFileError, match=r"vid001.*CRC mismatch"):
        r["vid001"]


def test_token_sequence_dataset(tmp_path):
    with ShardWriter(tmp_path, K, "tok-A", CFG) as w:
        for i in range(6):
            w.add(f"v{i}", codes_for(i), meta_for(i))
        w.add("multi", codes_for(9, (2, 3, 4, 4)), meta_for(9))
    ds = TokenSequenceDataset(tmp_path)
    s = ds[0]
    assert s["id"] == "v0" and s["codes"].shape == (80,) and s["codes"].dtype == torch.int64
    assert torch.equal(s["codes"], torch.from_numpy(codes_for(0)).reshape(-1))
    multi = ds[6]["codes"]
    ref = torch.from_numpy(codes_for(9, (2, 3, 4, 4)))
    assert multi.shape == (96,) and torch.equal(multi[:2], ref[:, 0, 0, 0])   # codebooks interleaved
    grid = TokenSequenceDataset(tmp_path, flatten=False)
    assert grid[1]["codes"].shape == (5, 4, 4)
    assert ds.reader._maps                                   # mapped in this process...
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.reader._maps == {}                          # ...mapped again, not copied, elsewhere
    assert torch.equal(clone[0]["codes"], s["codes"])
    loader = DataLoader(ds, batch_size=3, num_workers=2,
                        collate_fn=lambda b: b)
    got = {s["id"]: s["codes"] for batch in loader for s in batch}
    assert sorted(got) == sorted(ds.reader.ids())
    assert torch.equal(got["v5"], torch.from_numpy(codes_for(5)).reshape(-1))
