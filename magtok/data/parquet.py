"""Token shards as standard Parquet files, and the compact index magtok's readers stream them with.

Folder layout (local path or fsspec URL: ``file://``, ``memory://``, ``s3://`` ...)

    tokenizer.json                         {"format": "magtok-parquet-1", "fingerprint", "tokenizer_id",
                                            "config", "codebook_size"}
    part-s00000-of-00001-<run>-00000.parquet   one row per clip or window (schema below)
    failures-s00000-of-00001-<run>-00000.parquet   inputs that failed: source, id, stage, reason, time
    .tmp-...                               a part being written (hidden; readers never list it)

Columns of a part (``SCHEMA``; pyarrow, pandas, DuckDB, Spark and ``datasets`` read them as is)

    id            string      "<source id>" or "<source id>#w<k>" for window k of a source
    source        string      the input path or URL as given (a folder input: relative to the folder)
    window        int32       window number in the source (0 for a whole clip)
    frame_start   int64       first source frame read
    frame_end     int64       one past the last source frame read
    frames        int32       frames read (a padded clip encodes more; see extra.frames_policy)
    fps           float64     source frame rate (0 for an image)
    clip_fps      float64     rate of the tokenized frames
    source_frames int64       frames in the source
    height, width int32       source size
    resize        list<int32> (H, W) after resizing, null when not resized
    crop          list<int32> (top, left, H, W) after resizing, null when not cropped
    codes         list<int32> the codes, flattened in C order of ``code_shape``
    code_shape    list<int32> (T', H', W') or (N, T', H', W') with N codebooks
    tokenizer     string      the 16-hex token-file fingerprint (``tokenizer_fingerprint``)
    extra         string      JSON object (frames_policy, tile, ...), or null

Crash safety
    A part is written to a hidden temporary name and renamed when its footer is written, so a part
    under its final name is always complete; a kill -9 loses the rows still in memory, never a part.
    Rows of one source are always in the same part, so a source is either done or not.

The index (``ParquetTokenIndex``)
    Opening reads only the footers of the parts: per row group its file and first row, as two numpy
    arrays (a few bytes per row group, not per row). 1M rows open in well under a second and a few
    MB; the index pickles small into DataLoader workers, which open the files again themselves.
    Ids are read (one column) only when looked up by id.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

__all__ = ["PARQUET_FORMAT", "TOKENIZER_FILE", "ParquetTokenIndex", "ParquetTokenReader", "PartWriter",
           "TokenRow", "is_parquet_folder", "list_parts", "list_failure_files", "read_failures", "url_to_fs",
           "token_schema", "failure_schema", "ensure_tokenizer_file", "read_done_sources", "join"]

PARQUET_FORMAT = "magtok-parquet-1"
TOKENIZER_FILE = "tokenizer.json"
_PART_RE = re.compile(r"^part-.*\.parquet$")
_FAIL_RE = re.compile(r"^failures-.*\.parquet$")


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("Parquet token shards need pyarrow: pip install pyarrow") from None
    return pa, pq


# ------------------------------------------------------------------------------ file systems
def url_to_fs(url):
    """(fsspec filesystem, path inside it) for a local path or a URL (``file://``, ``memory://`` ...)."""
    import fsspec
    return fsspec.core.url_to_fs(str(url))


def join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _basename(p: str) -> str:
    return p.rstrip("/").rsplit("/", 1)[-1]


def _ls(fs, root: str) -> list[str]:
    try:
        return sorted(fs.ls(root, detail=False))
    except FileNotFoundError:
        return []


def list_parts(folder) -> list[str]:
    """Complete parts of a folder, sorted by name (paths inside its filesystem)."""
    fs, root = url_to_fs(folder)
    return [p for p in _ls(fs, root) if _PART_RE.match(_basename(p))]


def list_failure_files(folder) -> list[str]:
    fs, root = url_to_fs(folder)
    return [p for p in _ls(fs, root) if _FAIL_RE.match(_basename(p))]


def is_parquet_folder(folder) -> bool:
    """True when ``folder`` holds a Parquet token shard folder (tokenizer.json of the Parquet format)."""
    try:
        fs, root = url_to_fs(folder)
        with fs.open(join(root, TOKENIZER_FILE), "rb") as f:
            return json.loads(f.read()).get("format") == PARQUET_FORMAT
    except (OSError, ValueError):
        return False


def _atomic_put(fs, path: str, write) -> None:
    """``write(file)`` into a hidden temporary name beside ``path``, then rename it to ``path``."""
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = (folder + "/" if folder else "") + f".tmp-{uuid.uuid4().hex[:8]}-{name}"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        if _is_local(fs):
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)            # atomic on POSIX
        else:
            fs.mv(tmp, path)
    finally:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:
            pass


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# ------------------------------------------------------------------------------ schema
def token_schema(metadata: dict | None = None):
    pa, _ = _pa()
    i32 = pa.int32()
    fields = [
        pa.field("id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False),
        pa.field("window", i32), pa.field("frame_start", pa.int64()), pa.field("frame_end", pa.int64()),
        pa.field("frames", i32), pa.field("fps", pa.float64()), pa.field("clip_fps", pa.float64()),
        pa.field("source_frames", pa.int64()), pa.field("height", i32), pa.field("width", i32),
        pa.field("resize", pa.list_(i32)), pa.field("crop", pa.list_(i32)),
        pa.field("codes", pa.list_(i32), nullable=False), pa.field("code_shape", pa.list_(i32), nullable=False),
        pa.field("tokenizer", pa.string()), pa.field("extra", pa.string()),
    ]
    md = {k.encode(): (v if isinstance(v, str) else json.dumps(v)).encode() for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=md or None)


def failure_schema():
    pa, _ = _pa()
    return pa.schema([pa.field("source", pa.string(), nullable=False), pa.field("id", pa.string()),
                      pa.field("stage", pa.string()), pa.field("reason", pa.string()),
                      pa.field("time", pa.float64())])


@dataclass
class TokenRow:
    """One row of a token shard (see the module docstring for the columns)."""

    id: str
    source: str
    codes: np.ndarray                # integer codes in their grid shape
    window: int = 0
    frame_start: int = 0
    frame_end: int = 0
    frames: int = 0
    fps: float = 0.0
    clip_fps: float = 0.0
    source_frames: int = 0
    height: int = 0
    width: int = 0
    resize: tuple | None = None
    crop: tuple | None = None
    tokenizer: str | None = None
    extra: dict | None = None

    def as_record(self) -> dict:
        c = np.asarray(self.codes)
        return {"id": self.id, "source": self.source, "window": int(self.window),
                "frame_start": int(self.frame_start), "frame_end": int(self.frame_end), "frames": int(self.frames),
                "fps": float(self.fps), "clip_fps": float(self.clip_fps), "source_frames": int(self.source_frames),
                "height": int(self.height), "width": int(self.width),
                "resize": list(map(int, self.resize)) if self.resize is not None else None,
                "crop": list(map(int, self.crop)) if self.crop is not None else None,
                "codes": c.astype(np.int32, copy=False).reshape(-1), "code_shape": list(c.shape),
                "tokenizer": self.tokenizer, "extra": json.dumps(self.extra, sort_keys=True) if self.extra else None}


def _rows_table(records: list[dict], schema):
    pa, _ = _pa()
    cols = {}
    for f in schema:
        if f.name == "codes":
            lens = np.fromiter((len(r["codes"]) for r in records), np.int64, len(records))
            offsets = np.zeros(len(records) + 1, np.int32 if lens.sum() < 2**31 else np.int64)
            np.cumsum(lens, out=offsets[1:])
            values = np.concatenate([r["codes"] for r in records]) if records else np.zeros(0, np.int32)
            typ = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
            arr = typ.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32, copy=False)))
            cols[f.name] = arr.cast(f.type) if arr.type != f.type else arr
        else:
            cols[f.name] = pa.array([r[f.name] for r in records], type=f.type)
    return pa.Table.from_pydict(cols, schema=schema)


# ------------------------------------------------------------------------------ writing
def ensure_tokenizer_file(folder, tokenizer_id: str, config: dict, codebook_size: int, fingerprint: str) -> None:
    """Create ``folder/tokenizer.json`` or check that the folder holds this tokenizer (ValueError if not)."""
    fs, root = url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    path = join(root, TOKENIZER_FILE)
    doc = {"format": PARQUET_FORMAT, "fingerprint": fingerprint, "tokenizer_id": tokenizer_id,
           "config": config, "codebook_size": int(codebook_size)}
    if not fs.exists(path):
        _atomic_put(fs, path, lambda f: f.write(json.dumps(doc, indent=1, sort_keys=True).encode()))
    with fs.open(path, "rb") as f:
        have = json.loads(f.read())
    if have.get("format") != PARQUET_FORMAT:
        raise ValueError(f"{folder} holds token shards of format {have.get('format')!r}, not Parquet shards "
                         f"({PARQUET_FORMAT}): write into another folder")
    if have.get("fingerprint") != fingerprint or have.get("codebook_size") != int(codebook_size):
        raise ValueError(f"{folder} holds tokens of tokenizer {have.get('tokenizer_id')!r} (fingerprint "
                         f"{have.get('fingerprint')}); this model is {tokenizer_id!r} (fingerprint {fingerprint}): "
                         f"use another folder")


class PartWriter:
    """Buffer token rows and failures; ``commit()`` writes them as one part (and one failures file).

    Rows are added a source at a time (``add_source``) so that a source never spans two parts. A part
    is written when ``rows_per_part`` rows are buffered (at the end of a source) and at ``close``.
    Names: ``part-s<shard>-of-<n>-<run>-<k>.parquet`` with a fresh ``run`` per writer, so a resumed or
    concurrent writer never replaces another's part.
    """

    def __init__(self, folder, shard_id: int = 0, num_shards: int = 1, rows_per_part: int = 4096,
                 row_group_rows: int = 256, metadata: dict | None = None, run: str | None = None):
        self.folder = str(folder)
        self.fs, self.root = url_to_fs(folder)
        self.fs.makedirs(self.root, exist_ok=True)
        self.tag = f"s{shard_id:05d}-of-{num_shards:05d}-{run or uuid.uuid4().hex[:8]}"
        self.rows_per_part, self.row_group_rows = int(rows_per_part), int(row_group_rows)
        self.schema = token_schema(metadata)
        self._rows: list[dict] = []
        self._fails: list[dict] = []
        self._n = 0
        self.parts: list[str] = []
        self.rows_written = self.failures_written = 0
        self._lock = threading.Lock()

    def add_source(self, rows: Iterable[TokenRow]) -> None:
        recs = [r.as_record() if isinstance(r, TokenRow) else r for r in rows]
        with self._lock:
            self._rows.extend(recs)
            full = len(self._rows) >= self.rows_per_part
        if full:
            self.commit()

    def add_failure(self, source: str, reason: str, stage: str = "tokenize", id: str | None = None,
                    time: float | None = None) -> None:
        import time as _time
        with self._lock:
            self._fails.append({"source": source, "id": id, "stage": stage, "reason": reason,
                                "time": _time.time() if time is None else time})

    def commit(self) -> None:
        _, pq = _pa()
        with self._lock:
            rows, fails = self._rows, self._fails
            self._rows, self._fails = [], []
            n = self._n
            self._n += 1
        if rows:
            table = _rows_table(rows, self.schema)
            path = join(self.root, f"part-{self.tag}-{n:05d}.parquet")
            _atomic_put(self.fs, path, lambda f: pq.write_table(
                table, f, row_group_size=self.row_group_rows, compression="zstd",
                use_dictionary=[c for c in self.schema.names if c not in ("codes", "id")]))
            self.parts.append(path)
            self.rows_written += len(rows)
        if fails:
            pa, _ = _pa()
            table = pa.Table.from_pylist(fails, schema=failure_schema())
            path = join(self.root, f"failures-{self.tag}-{n:05d}.parquet")
            _atomic_put(self.fs, path, lambda f: pq.write_table(table, f))
            self.failures_written += len(fails)

    def close(self) -> None:
        self.commit()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # on an exception the rows of complete sources are still committed; nothing partial is
        if exc_type is None or issubclass(exc_type, Exception):
            self.commit()


# ------------------------------------------------------------------------------ resume and failures
def read_done_sources(folder, wanted: set[str] | None = None) -> set[str]:
    """Sources with rows in the complete parts of ``folder`` (only those in ``wanted`` when given:
    memory stays bounded by this process's share of a large folder)."""
    _, pq = _pa()
    fs, _ = url_to_fs(folder)
    done: set[str] = set()
    for p in list_parts(folder):
        with fs.open(p, "rb") as f:
            col = pq.read_table(f, columns=["source"]).column("source").unique().to_pylist()
        done.update(col if wanted is None else (s for s in col if s in wanted))
    return done


def read_failures(folder, exclude: set[str] | None = None) -> dict[str, dict]:
    """Recorded failures: source -> the latest failure record, leaving out sources in ``exclude``
    (e.g. sources that succeeded on a retry)."""
    _, pq = _pa()
    fs, _ = url_to_fs(folder)
    out: dict[str, dict] = {}
    for p in list_failure_files(folder):
        with fs.open(p, "rb") as f:
            for rec in pq.read_table(f).to_pylist():
                old = out.get(rec["source"])
                if old is None or (rec["time"] or 0) >= (old["time"] or 0):
                    out[rec["source"]] = rec
    if exclude:
        out = {k: v for k, v in out.items() if k not in exclude}
    return out


# ------------------------------------------------------------------------------ the index and reader
class ParquetTokenIndex:
    """Where every row of a Parquet token folder is: per row group, its file and first row.

    ``len(index)``; ``index.locate(i) -> (row group, row in group)``. Built from the parts'
    footers only. Picklable and small (no open files, no per-row Python objects).
    """

    def __init__(self, folder):
        _, pq = _pa()
        self.folder = str(folder)
        fs, _ = url_to_fs(folder)
        self.files = list_parts(folder)
        rg_file, rg_rows = [], []
        for k, p in enumerate(self.files):
            with fs.open(p, "rb") as f:
                md = pq.read_metadata(f)
            for g in range(md.num_row_groups):
                rg_file.append(k)
                rg_rows.append(md.row_group(g).num_rows)
        self.rg_file = np.asarray(rg_file, np.int32)                 # (G,)
        self.rg_index = np.zeros(len(rg_file), np.int32)             # (G,) row group number in its file
        for g in range(1, len(rg_file)):
            self.rg_index[g] = self.rg_index[g - 1] + 1 if rg_file[g] == rg_file[g - 1] else 0
        self.rg_start = np.zeros(len(rg_rows) + 1, np.int64)          # (G + 1,) first row of each group
        np.cumsum(np.asarray(rg_rows, np.int64), out=self.rg_start[1:])

    def __len__(self) -> int:
        return int(self.rg_start[-1])

    @property
    def num_row_groups(self) -> int:
        return len(self.rg_file)

    def locate(self, i: int) -> tuple[int, int]:
        """Row ``i`` -> (row group in index order, row inside the group)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} is out of range: {self.folder} has {n} rows")
        i %= n
        g = int(np.searchsorted(self.rg_start, i, side="right")) - 1
        return g, int(i - self.rg_start[g])


_COLUMNS = ("id", "source", "window", "frame_start", "frame_end", "frames", "fps", "clip_fps", "source_frames",
            "height", "width", "resize", "crop", "codes", "code_shape", "tokenizer", "extra")


class ParquetTokenReader:
    """Read a Parquet token folder row by row: ``len``, ``reader[i] -> dict``, ``get(id)``, ``iter_rows``.

    A row comes back as a dict of the columns with ``codes`` as an int64 numpy array in its
    ``code_shape``. Row groups are read whole and a few are cached, so sequential access (or
    ``iter_rows``) reads each group once.
    """

    def __init__(self, folder, cache_row_groups: int = 4):
        self.folder = str(folder)
        if not is_parquet_folder(folder):
            raise FileNotFoundError(f"{folder} is not a Parquet token folder (no {TOKENIZER_FILE} of format "
                                    f"{PARQUET_FORMAT}); write one with `magtok tokenize-dataset`")
        fs, root = url_to_fs(folder)
        with fs.open(join(root, TOKENIZER_FILE), "rb") as f:
            self.tokenizer = json.loads(f.read())
        self.codebook_size = int(self.tokenizer["codebook_size"])
        self.index = ParquetTokenIndex(folder)
        self.cache_row_groups = int(cache_row_groups)
        self._fs = None
        self._files: dict[int, object] = {}
        self._cache: OrderedDict = OrderedDict()
        self._ids: dict[str, int] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_fs=None, _files={}, _cache=OrderedDict())   # opened again in the new process
        return state

    def __len__(self) -> int:
        return len(self.index)

    def _file(self, k: int):
        _, pq = _pa()
        pf = self._files.get(k)
        if pf is None:
            if self._fs is None:
                self._fs = url_to_fs(self.folder)[0]
            path = self.index.files[k]
            pf = pq.ParquetFile(path if _is_local(self._fs) else self._fs.open(path, "rb"))
            self._files[k] = pf
        return pf

    def row_group(self, g: int, columns=None):
        """Row group ``g`` (in index order) as a pyarrow Table."""
        key = (g, tuple(columns) if columns else None)
        t = self._cache.get(key)
        if t is None:
            t = self._file(int(self.index.rg_file[g])).read_row_group(int(self.index.rg_index[g]),
                                                                       columns=list(columns) if columns else None)
            self._cache[key] = t
            while len(self._cache) > self.cache_row_groups:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return t

    @staticmethod
    def _rows_of(table) -> Iterator[dict]:
        codes = table.column("codes").combine_chunks() if "codes" in table.column_names else None
        if codes is not None:
            offsets = codes.offsets.to_numpy()
            values = codes.values.to_numpy(zero_copy_only=False)
        other = [c for c in table.column_names if c != "codes"]
        py = {c: table.column(c).to_pylist() for c in other}
        for i in range(table.num_rows):
            row = {c: py[c][i] for c in other}
            if codes is not None:
                flat = values[offsets[i]:offsets[i + 1]].astype(np.int64)
                shape = row.get("code_shape")
                row["codes"] = flat.reshape(shape) if shape else flat
            if row.get("extra"):
                row["extra"] = json.loads(row["extra"])
            yield row

    def __getitem__(self, i: int) -> dict:
        g, j = self.index.locate(int(i))
        t = self.row_group(g).slice(j, 1)
        return next(self._rows_of(t))

    def iter_rows(self, row_groups: Iterable[int] | None = None, columns=None) -> Iterator[dict]:
        """Rows in order, row group by row group (``row_groups``: a subset, e.g. one worker's share)."""
        for g in (range(self.index.num_row_groups) if row_groups is None else row_groups):
            yield from self._rows_of(self.row_group(g, columns))

    def ids(self) -> list[str]:
        return list(self._id_map())

    def _id_map(self) -> dict[str, int]:
        if self._ids is None:
            ids: dict[str, int] = {}
            n = 0
            for g in range(self.index.num_row_groups):
                col = self._file(int(self.index.rg_file[g])).read_row_group(
                    int(self.index.rg_index[g]), columns=["id"]).column("id").to_pylist()
                for k, v in enumerate(col):
                    ids.setdefault(v, n + k)
                n += len(col)
            self._ids = ids
        return self._ids

    def __contains__(self, row_id) -> bool:
        return row_id in self._id_map()

    def get(self, row_id: str) -> dict:
        try:
            return self[self._id_map()[row_id]]
        except KeyError:
            raise KeyError(f"{row_id!r} is not in {self.folder} ({len(self)} rows)") from None
