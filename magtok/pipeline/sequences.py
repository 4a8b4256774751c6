"""Second stage: token shards -> fixed-length training batches for an autoregressive model.

    from torch.utils.data import DataLoader
    from magtok.pipeline import PackedTokenDataset, collate_tokens

    ds = PackedTokenDataset("shards/", seq_len=2048)        # separator token = codebook_size
    loader = DataLoader(ds, batch_size=8, num_workers=2)    # {"input_ids": (8, 2048), "segment_ids": ...}

    ds = TokenSequenceDataset("shards/")                    # one clip per item, variable length
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_tokens)

Packing: each clip's codes (flattened "t h w", codebooks interleaved) followed by a separator are
concatenated into one stream that is cut into ``seq_len`` pieces; ``segment_ids`` numbers the clips
inside a piece (separators belong to the clip they end), so an attention mask can keep clips apart.
The vocabulary is ``codebook_size + 1`` with the default separator.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["pack_sequences", "PackedTokenDataset", "collate_tokens", "flatten_codes"]


def flatten_codes(codes) -> np.ndarray:
    """(T', H', W') -> raster order; (N, T', H', W') -> "t h w n" (a position's N codes adjacent)."""
    a = np.asarray(codes)
    if a.ndim == 4:
        a = np.moveaxis(a, 0, -1)
    return a.reshape(-1)


def pack_sequences(sequences: Iterable, seq_len: int, sep_token: int | None, drop_last: bool = True
                   ) -> Iterator[dict]:
    """Pack 1-D token sequences, each followed by ``sep_token`` (None: no separator), into pieces of
    exactly ``seq_len`` tokens -> {"input_ids": int64 (seq_len,), "segment_ids": int64 (seq_len,)}.
    The last piece is dropped unless ``drop_last=False`` (then it is padded with ``sep_token`` and
    segment -1)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, not {seq_len}")
    buf_ids: list[np.ndarray] = []
    buf_seg: list[np.ndarray] = []
    have = 0
    seg = 0
    for s in sequences:
        s = np.asarray(s, dtype=np.int64).reshape(-1)
        if sep_token is not None:
            s = np.concatenate([s, np.array([sep_token], np.int64)])
        buf_ids.append(s)
        buf_seg.append(np.full(len(s), seg, np.int64))
        seg += 1
        have += len(s)
        while have >= seq_len:
            ids, segs = np.concatenate(buf_ids), np.concatenate(buf_seg)
            piece_seg = segs[:seq_len] - segs[0]
            yield {"input_ids": torch.from_numpy(ids[:seq_len].copy()),
                   "segment_ids": torch.from_numpy(piece_seg.copy())}
            buf_ids, buf_seg = [ids[seq_len:]], [segs[seq_len:]]
            have -= seq_len
    if have and not drop_last:
        ids, segs = np.concatenate(buf_ids), np.concatenate(buf_seg)
        pad = seq_len - have
        fill = sep_token if sep_token is not None else 0
        yield {"input_ids": torch.from_numpy(np.concatenate([ids, np.full(pad, fill, np.int64)])),
               "segment_ids": torch.from_numpy(np.concatenate([segs - segs[0], np.full(pad, -1, np.int64)]))}


class PackedTokenDataset(IterableDataset):
    """Packed fixed-length pieces from a Parquet token folder (see the module docstring).

    Row groups are split across DataLoader workers (and across ``rank`` / ``world_size`` for
    distributed training); ``shuffle`` shuffles the row-group order with ``seed + epoch``
    (``set_epoch``)."""

    def __init__(self, folder, seq_len: int, sep_token: int | None = -1, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        from magtok.data.parquet import ParquetTokenReader
        self.reader = ParquetTokenReader(folder)
        self.seq_len = int(seq_len)
        self.sep_token = self.reader.codebook_size if sep_token == -1 else sep_token
        self.vocab_size = self.reader.codebook_size + (1 if self.sep_token == self.reader.codebook_size else 0)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, not {seq_len}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self) -> list[int]:
        order = np.arange(self.reader.index.num_row_groups)
        if self.shuffle:
            np.random.default_rng((self.seed, self.epoch)).shuffle(order)
        info = get_worker_info()
        n_workers, wid = (info.num_workers, info.id) if info else (1, 0)
        k, n = self.rank * n_workers + wid, self.world_size * n_workers
        return order[k::n].tolist()

    def __iter__(self):
        seqs = (flatten_codes(r["codes"]) for r in self.reader.iter_rows(self._groups(), columns=["codes", "code_shape"]))
        return pack_sequences(seqs, self.seq_len, self.sep_token, self.drop_last)


def collate_tokens(batch: list[dict], pad_token: int = 0) -> dict:
    """Collate variable-length items ({"codes": 1-D tensor, "id": str}) -> {"input_ids": (B, L) padded
    with ``pad_token``, "attention_mask": (B, L) bool, "lengths": (B,), "ids": list}."""
    if not batch:
        raise ValueError("collate_tokens got an empty batch")
    seqs = [torch.as_tensor(b["codes"]).reshape(-1) for b in batch]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_token, dtype=torch.int64)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = True
    return {"input_ids": ids, "attention_mask": mask, "lengths": lengths, "ids": [b.get("id") for b in batch]}
