"""Token shards: the codes of many videos in a few large files, for second-stage training.

Folder layout (one tokenizer per folder)

    tokenizer.json           {"fingerprint", "tokenizer_id", "config", "codebook_size", "format"}
    shard-r000-00000.bin     records of rank 0, back to back; each record is exactly a token file
    shard-r000-00001.bin     (magtok.data.tokens, "MTOK" v1: header, bit-packed codes, CRC32), so
    index-r000.jsonl         one JSON line per record:
                             {"id", "shard", "offset", "length", "shape", "meta"}
    shard-r001-00000.bin     rank 1 writes its own files and index: processes never share a file
    index-r001.jsonl

Crash safety and resuming
    ``ShardWriter.add`` appends the record to the shard and flushes it, then appends its index line
    and flushes that: a record is listed only once it is fully written, so an interrupted writer
    loses at most the record in flight (``fsync=True`` also survives power loss, slower). A writer
    reopened on the folder reads every rank's index: ``has(video_id)`` is True for everything done
    before, and ``add`` of such an id returns False without writing, so a resumed job never
    duplicates. The reopened writer drops the unlisted tail of its last shard (a half-written
    record) and a half-written last index line, then appends. A lock file per rank
    (``.lock-r000``, flock) stops a second live writer of the same rank.

Reading
    ``ShardReader`` merges the indexes of all ranks (sorted by file name, then line order),
    memory-maps the shard files (``np.memmap``, opened lazily per process, so a reader pickled into
    DataLoader workers maps the files again instead of copying them), and checks each record's CRC
    when it is read. An id listed twice (possible only when two jobs wrote the same ids into one
    folder) keeps its first record; ``reader.duplicates`` counts the others.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:      # Windows: no lock, ranks must still be distinct
    fcntl = None

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from magtok.data.tokens import (TokenFile, TokenMeta, _atomic_write, decode_tokens,
                                encode_tokens, tokenizer_fingerprint)

__all__ = ["ShardWriter", "ShardReader", "TokenSequenceDataset", "TOKENIZER_FILE"]

TOKENIZER_FILE = "tokenizer.json"
_INDEX_RE = re.compile(r"^index-r(\d+)\.jsonl$")
_SHARD_RE = re.compile(r"^shard-r(\d+)-(\d+)\.bin$")


def _shard_name(rank: int, n: int) -> str:
    return f"shard-r{rank:03d}-{n:05d}.bin"


def _index_name(rank: int) -> str:
    return f"index-r{rank:03d}.jsonl"


def _read_index(path: Path) -> tuple[list[dict], int]:
    """Complete lines of an index file -> (entries, byte length of the complete part)."""
    data = path.read_bytes()
    entries, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break                          # a line still being written (or cut by a crash)
        try:
            entry = json.loads(line)
        except ValueError:
            break
        entries.append(entry)
        good += len(line)
    return entries, good


class ShardWriter:
    """Append videos' codes to token shards in ``dir`` (see the module docstring).

        with ShardWriter("tokens/", tok.codebook_size, tok_id, cfg_dict, rank=rank) as w:
            for vid, path in my_videos:
                if w.has(vid):
                    continue
                w.add(vid, codes, dict(source_frames=n, fps=fps, height=h, width=w_))

    Args:
        dir: the folder (created). A folder holds one tokenizer: opening it with another
            (tokenizer_id, config, codebook_size) raises ValueError.
        rank: this process's number; processes with different ranks may write the same folder at
            the same time (they must be given disjoint ids).
        max_shard_bytes: a new shard file starts when the next record would exceed this.
        fsync: fsync each record and index line (survives power loss; slower).
    """

    def __init__(self, dir, codebook_size: int, tokenizer_id: str, config: dict,
                 max_shard_bytes: int = 256 << 20, rank: int = 0, fsync: bool = False):
        if int(rank) != rank or rank < 0:
            raise ValueError(f"rank must be an integer >= 0, not {rank}")
        self.dir = Path(dir)
        self.codebook_size, self.tokenizer_id, self.config = int(codebook_size), tokenizer_id, config
        self.rank, self.max_shard_bytes, self.fsync = int(rank), int(max_shard_bytes), fsync
        self.fingerprint = tokenizer_fingerprint(tokenizer_id, config)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_tokenizer()
        self._lock = open(self.dir / f".lock-r{self.rank:03d}", "a+b")
        if fcntl is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RuntimeError(f"{self.dir}: rank {self.rank} is already being written by another "
                                   f"writer; give each process its own rank") from None

        self._done: set[str] = set()
        for path in sorted(self.dir.iterdir()):
            m = _INDEX_RE.match(path.name)
            if m and int(m.group(1)) != self.rank:
                self._done.update(e["id"] for e in _read_index(path)[0])
        self._recover()
        self._shard_f = None
        self._index_f = None
        self.written = 0   # records added by this writer

    # --------------------------------------------------------------------- opening
    def _check_tokenizer(self) -> None:
        path = self.dir / TOKENIZER_FILE
        doc = {"format": "magtok-shards-1", "fingerprint": self.fingerprint,
               "tokenizer_id": self.tokenizer_id, "config": self.config,
               "codebook_size": self.codebook_size}
        if not path.exists():
            _atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode(), overwrite=True)
        have = json.loads(path.read_text())
        if have.get("fingerprint") != self.fingerprint or have.get("codebook_size") != self.codebook_size:
            raise ValueError(
                f"{self.dir} holds tokens of tokenizer {have.get('tokenizer_id')!r} (fingerprint "
                f"{have.get('fingerprint')}, codebook {have.get('codebook_size')}); this writer has "
                f"{self.tokenizer_id!r} (fingerprint {self.fingerprint}, codebook {self.codebook_size}): "
                f"use another folder")

    def _recover(self) -> None:
        """Read this rank's index, cut half-written tails, pick the shard to append to."""
        index = self.dir / _index_name(self.rank)
        entries: list[dict] = []
        if index.exists():
            entries, good = _read_index(index)
            if good < index.stat().st_size:
                with open(index, "r+b") as f:
                    f.truncate(good)
        ends: dict[str, int] = {}
        kept = []
        for e in entries:
            shard = self.dir / e["shard"]
            end = e["offset"] + e["length"]
            if not shard.exists() or shard.stat().st_size < end:
                warnings.warn(f"{index}: record {e['id']!r} is listed but not fully in {shard}; dropped")
                continue
            kept.append(e)
            ends[e["shard"]] = max(ends.get(e["shard"], 0), end)
        if len(kept) != len(entries):
            _atomic_write(index, b"".join(json.dumps(e).encode() + b"\n" for e in kept), overwrite=True)
        self._done.update(e["id"] for e in kept)
        mine = sorted(int(m.group(2)) for p in self.dir.iterdir()
                      if (m := _SHARD_RE.match(p.name)) and int(m.group(1)) == self.rank)
        self._shard_no = mine[-1] if mine else 0
        name = _shard_name(self.rank, self._shard_no)
        self._shard_size = ends.get(name, 0)
        shard = self.dir / name
        if shard.exists() and shard.stat().st_size > self._shard_size:
            with open(shard, "r+b") as f:   # drop the record that was in flight
                f.truncate(self._shard_size)

    # --------------------------------------------------------------------- writing
    def has(self, video_id: str) -> bool:
        """True when ``video_id`` is already in the folder (any rank, as of opening, or added here)."""
        return video_id in self._done

    def __len__(self) -> int:
        return len(self._done)

    def _meta(self, meta) -> TokenMeta:
        meta = dict(meta.__dict__) if isinstance(meta, TokenMeta) else dict(meta)
        for key, mine in (("tokenizer_id", self.tokenizer_id), ("config", self.config)):
            if key in meta and meta[key] != mine:
                raise ValueError(f"meta[{key!r}] differs from this writer's {key}")
            meta[key] = mine
        return TokenMeta.coerce(meta)

    def add(self, video_id: str, codes, meta) -> bool:
        """Append one video's codes. ``meta``: TokenMeta fields (tokenizer ones may be left out).

        Returns False (and writes nothing) when ``video_id`` is already present.
        """
        if not isinstance(video_id, str) or not video_id:
            raise ValueError(f"video_id must be a non-empty string, not {video_id!r}")
        if self.has(video_id):
            return False
        if self._lock is None:
            raise ValueError(f"the writer of {self.dir} is closed")
        meta = self._meta(meta)
        record = encode_tokens(codes, self.codebook_size, meta, path=f"{self.dir} [{video_id}]")
        if self._shard_size and self._shard_size + len(record) > self.max_shard_bytes:
            self._close_shard()
            self._shard_no += 1
            self._shard_size = 0
        if self._shard_f is None:
            self._shard_f = open(self.dir / _shard_name(self.rank, self._shard_no), "ab")
        if self._index_f is None:
            self._index_f = open(self.dir / _index_name(self.rank), "ab")
        offset = self._shard_size
        self._shard_f.write(record)
        self._flush(self._shard_f)
        shape = list(np.shape(codes))
        line = {"id": video_id, "shard": _shard_name(self.rank, self._shard_no), "offset": offset,
                "length": len(record), "shape": shape, "meta": meta.source_dict()}
        self._index_f.write(json.dumps(line).encode() + b"\n")
        self._flush(self._index_f)
        self._shard_size += len(record)
        self._done.add(video_id)
        self.written += 1
        return True

    def _flush(self, f) -> None:
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def _close_shard(self) -> None:
        if self._shard_f is not None:
            self._shard_f.close()
            self._shard_f = None

    def close(self) -> None:
        self._close_shard()
        if self._index_f is not None:
            self._index_f.close()
            self._index_f = None
        if self._lock is not None:
            self._lock.close()      # releases the rank's lock
            self._lock = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardReader:
    """Read a shard folder: ``len``, ``ids()``, ``reader[video_id] -> int64 codes``, ``meta(id)``.

    ``verify`` checks each record's CRC32 on read. Records whose bytes are not all on disk yet (a
    writer in flight) are left out.
    """

    def __init__(self, dir, verify: bool = True):
        self.dir = Path(dir)
        self.verify = verify
        tok = self.dir / TOKENIZER_FILE
        if not tok.exists():
            raise FileNotFoundError(f"{self.dir} is not a token shard folder (no {TOKENIZER_FILE})")
        self.tokenizer = json.loads(tok.read_text())
        self.codebook_size = int(self.tokenizer["codebook_size"])
        sizes: dict[str, int] = {}
        self._entries: dict[str, dict] = {}
        self.duplicates = 0
        for path in sorted(self.dir.iterdir()):
            if not _INDEX_RE.match(path.name):
                continue
            for e in _read_index(path)[0]:
                if e["shard"] not in sizes:
                    shard = self.dir / e["shard"]
                    sizes[e["shard"]] = shard.stat().st_size if shard.exists() else -1
                if e["offset"] + e["length"] > sizes[e["shard"]]:
                    continue
                if e["id"] in self._entries:
                    self.duplicates += 1
                    continue
                self._entries[e["id"]] = e
        self._ids = list(self._entries)
        self._maps: dict[str, np.memmap] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}          # never pickle mapped memory; map again in the new process
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, video_id) -> bool:
        return video_id in self._entries

    def ids(self) -> list[str]:
        return list(self._ids)

    def _entry(self, video_id: str) -> dict:
        try:
            return self._entries[video_id]
        except KeyError:
            raise KeyError(f"{video_id!r} is not in {self.dir} ({len(self)} videos)") from None

    def _map(self, shard: str) -> np.memmap:
        m = self._maps.get(shard)
        if m is None:
            m = self._maps[shard] = np.memmap(self.dir / shard, dtype=np.uint8, mode="r")
        return m

    def get(self, video_id: str) -> TokenFile:
        """Codes and full header of one video."""
        e = self._entry(video_id)
        record = self._map(e["shard"])[e["offset"]:e["offset"] + e["length"]]
        codes, header = decode_tokens(record, f"{self.dir / e['shard']} [{video_id}]", verify=self.verify)
        header["tokenizer_id"] = self.tokenizer.get("tokenizer_id")
        header["config"] = self.tokenizer.get("config")
        return TokenFile(torch.from_numpy(codes), header, str(self.dir / e["shard"]))

    def __getitem__(self, video_id: str) -> torch.Tensor:
        return self.get(video_id).codes

    def meta(self, video_id: str) -> dict:
        """The index entry's source metadata plus ``shape``."""
        e = self._entry(video_id)
        return dict(e["meta"], shape=list(e["shape"]))


class TokenSequenceDataset(Dataset):
    """A shard folder as a torch Dataset for second-stage models: ``{"codes", "id"}`` per video.

    ``flatten=True``: codes as a 1-D int64 tensor in raster order (t, h, w); with N codebooks the
    N codes of a position are adjacent ("t h w n"). ``flatten=False``: the grid as stored.

    Reads both shard formats: Parquet folders (``magtok tokenize-dataset``; one item per row, through
    the compact index of ``magtok.data.parquet``: nothing per row is held or pickled) and the binary
    MTOK shard folders of ``ShardWriter``.
    """

    def __init__(self, dir, flatten: bool = True, verify: bool = True):
        from magtok.data.parquet import ParquetTokenReader, is_parquet_folder
        self.flatten = flatten
        if is_parquet_folder(dir):
            self.reader = ParquetTokenReader(dir)
            self._ids = None
        else:
            self.reader = ShardReader(dir, verify=verify)
            self._ids = self.reader.ids()

    def __len__(self) -> int:
        return len(self.reader) if self._ids is None else len(self._ids)

    def __getitem__(self, i: int) -> dict:
        if self._ids is None:
            row = self.reader[i]
            vid, codes = row["id"], torch.from_numpy(row["codes"])
        else:
            vid = self._ids[i]
            codes = self.reader[vid]
        if self.flatten:
            if codes.dim() == 4:
                codes = rearrange(codes, "n t h w -> (t h w n)")
            else:
                codes = rearrange(codes, "t h w -> (t h w)")
        return {"codes": codes, "id": vid}
