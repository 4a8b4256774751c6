"""Parquet token parts: writer, compact index, reader, TokenSequenceDataset, memory:// folders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from magtok.data import TokenSequenceDataset
from magtok.data.parquet import (ParquetTokenIndex, ParquetTokenReader, PartWriter, TokenRow,
                                 ensure_tokenizer_file, list_parts, read_done_sources, read_failures)


def _codes(i, shape=(3, 4, 4)):
    return np.random.default_rng(i).integers(0, 256, size=shape)


def _fill(folder, n, rows_per_part=10, row_group_rows=4, multi=False):
    ensure_tokenizer_file(folder, "tok-A", {"x": 1}, 256, "0123456789abcdef")
    with PartWriter(folder, rows_per_part=rows_per_part, row_group_rows=row_group_rows) as w:
        for i in range(n):
            shape = (2, 3, 4, 4) if multi and i % 2 else (3, 4, 4)
            w.add_source([TokenRow(f"v{i:04d}", f"src{i}", _codes(i, shape), frames=5, fps=25.0, extra={"i": i})])
    return w


@pytest.mark.parametrize("folder", ["local", "memory://parts-test"])
def test_round_trip_and_index(tmp_path, folder):
    folder = str(tmp_path / "p") if folder == "local" else folder
    w = _fill(folder, 25)
    assert len(w.parts) == 3 and w.rows_written == 25                 # 10 + 10 + 5
    r = ParquetTokenReader(folder)
    assert len(r) == 25 and r.index.num_row_groups == 3 + 3 + 2
    for i in (0, 3, 4, 9, 10, 24, -1):
        row = r[i]
        j = i % 25
        assert row["id"] == f"v{j:04d}" and row["extra"] == {"i": j}
        assert np.array_equal(row["codes"], _codes(j)) and row["codes"].dtype == np.int64
    assert r.get("v0007")["source"] == "src7" and "v0007" in r and "nope" not in r
    with pytest.raises(KeyError, match="nope"):
        r.get("nope")
    with pytest.raises(IndexError, match="25 rows"):
        r[25]
    assert [x["id"] for x in r.iter_rows()] == [f"v{i:04d}" for i in range(25)]
    assert read_done_sources(folder) == {f"src{i}" for i in range(25)}
    assert read_done_sources(folder, wanted={"src1", "zzz"}) == {"src1"}


def test_index_is_small_and_pickles_small(tmp_path):
    _fill(tmp_path, 200, rows_per_part=100, row_group_rows=10)
    r = ParquetTokenReader(tmp_path)
    r[5]
    blob = pickle.dumps(r)
    assert len(blob) < 4000                                            # no per-row objects, no open files
    clone = pickle.loads(blob)
    assert clone._files == {} and np.array_equal(clone[150]["codes"], _codes(150))
    idx = ParquetTokenIndex(tmp_path)
    assert idx.rg_start.nbytes + idx.rg_file.nbytes < 400 and len(idx) == 200


def test_temporary_files_are_never_read(tmp_path):
    _fill(tmp_path, 5)
    (tmp_path / ".tmp-1234-part-s00000-of-00001-x-00009.parquet").write_bytes(b"PAR1 half written")
    assert len(list_parts(tmp_path)) == 1 and len(ParquetTokenReader(tmp_path)) == 5


def test_failures_latest_wins_and_done_sources_are_excluded(tmp_path):
    ensure_tokenizer_file(tmp_path, "tok-A", {}, 256, "0123456789abcdef")
    with PartWriter(tmp_path) as w:
        w.add_failure("a", "old reason", time=1.0)
        w.add_failure("b", "broken", time=1.0)
    with PartWriter(tmp_path) as w:
        w.add_failure("a", "new reason", time=2.0)
    f = read_failures(tmp_path)
    assert f["a"]["reason"] == "new reason" and set(f) == {"a", "b"}
    assert set(read_failures(tmp_path, exclude={"b"})) == {"a"}


def test_a_folder_holds_one_tokenizer(tmp_path):
    ensure_tokenizer_file(tmp_path, "tok-A", {}, 256, "0123456789abcdef")
    with pytest.raises(ValueError, match="tok-A.*use another folder"):
        ensure_tokenizer_file(tmp_path, "tok-B", {}, 256, "fedcba9876543210")
    with pytest.raises(FileNotFoundError, match="not a Parquet token folder"):
        ParquetTokenReader(tmp_path / "elsewhere")


def test_token_sequence_dataset_reads_parquet_folders(tmp_path):
    _fill(tmp_path, 12, rows_per_part=5, multi=True)
    ds = TokenSequenceDataset(tmp_path)
    assert len(ds) == 12
    s = ds[0]
    assert s["id"] == "v0000" and s["codes"].shape == (48,) and s["codes"].dtype == torch.int64
    assert torch.equal(s["codes"], torch.from_numpy(_codes(0)).reshape(-1))
    multi = ds[1]["codes"]
    ref = torch.from_numpy(_codes(1, (2, 3, 4, 4)))
    assert multi.shape == (96,) and torch.equal(multi[:2], ref[:, 0, 0, 0])     # codebooks interleaved
    assert TokenSequenceDataset(tmp_path, flatten=False)[1]["codes"].shape == (2, 3, 4, 4)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: b)
    got = {x["id"]: x["codes"] for batch in loader for x in batch}
    assert len(got) == 12 and torch.equal(got["v0011"], ds[11]["codes"])
