"""Second stage: packing with separators, PackedTokenDataset, collate_tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from magtok.data.parquet import PartWriter, TokenRow, ensure_tokenizer_file
from magtok.pipeline import PackedTokenDataset, collate_tokens, pack_sequences


def test_pack_sequences_with_separators():
    seqs = [np.arange(5), np.arange(10, 13), np.arange(20, 27)]
    out = list(pack_sequences(seqs, seq_len=6, sep_token=99))
    stream = [0, 1, 2, 3, 4, 99, 10, 11, 12, 99, 20, 21, 22, 23, 24, 25, 26, 99]
    assert [o["input_ids"].tolist() for o in out] == [stream[0:6], stream[6:12], stream[12:18]]
    assert out[1]["segment_ids"].tolist() == [0, 0, 0, 0, 1, 1]
    assert all(o["input_ids"].dtype == torch.int64 for o in out)
    tail = list(pack_sequences([np.arange(4)], seq_len=6, sep_token=7, drop_last=False))
    assert tail[0]["input_ids"].tolist() == [0, 1, 2, 3, 7, 7] and tail[0]["segment_ids"].tolist()[-1] == -1
    assert list(pack_sequences([np.arange(4)], seq_len=6, sep_token=7)) == []
    with pytest.raises(ValueError, match="seq_len"):
        list(pack_sequences([], 0, 1))


def test_packed_dataset_batches(tmp_path):
    ensure_tokenizer_file(tmp_path, "tok", {}, 256, "0123456789abcdef")
    with PartWriter(tmp_path, row_group_rows=2) as w:
        for i in range(8):
            w.add_source([TokenRow(f"v{i}", f"v{i}", np.full((1, 2, 3), i))])
    ds = PackedTokenDataset(tmp_path, seq_len=7)
    assert ds.sep_token == 256 and ds.vocab_size == 257
    pieces = [p["input_ids"].tolist() for p in ds]
    flat = sum(pieces, [])
    assert flat == sum(([i] * 6 + [256] for i in range(8)), [])        # every clip, in order, 7 tokens each
    loader = DataLoader(PackedTokenDataset(tmp_path, seq_len=7, shuffle=True, seed=1), batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == 8 and batches[0]["input_ids"].shape[1] == 7
    assert sorted(int(r[0]) for b in batches for r in b["input_ids"]) == list(range(8))


def test_collate_tokens_pads():
    b = collate_tokens([{"codes": torch.tensor([1, 2, 3]), "id": "a"}, {"codes": torch.tensor([4]), "id": "b"}],
                       pad_token=-1)
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, -1, -1]]
    assert b["attention_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert b["lengths"].tolist() == [3, 1] and b["ids"] == ["a", "b"]
    with pytest.raises(ValueError, match="empty"):
        collate_tokens([])
