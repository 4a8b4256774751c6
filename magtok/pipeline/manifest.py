"""A manifest: one row per input file, probed once, in parallel, so no later job walks or probes
the whole data set again.

    table = build_manifest("videos/", workers=8)            # or a list of paths / URLs, or a .txt list
    write_manifest(table, "manifest.parquet")
    rows = read_manifest("manifest.parquet")                # list of dicts

Columns: ``id`` (path relative to the scanned folder, or the path / URL as listed), ``path`` (what
to open: a local path or an fsspec URL), ``kind`` ("video" / "image"), ``frames``, ``fps``,
``height``, ``width``, ``declared_frames`` (what the container says; more than ``frames`` means the
file is cut short or its header overcounts: such a file is usable, with the ``frames`` that decode),
``bytes``, ``error`` (null, or why the file cannot be read).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

__all__ = ["MANIFEST_COLUMNS", "ManifestError", "list_inputs", "probe_input", "build_manifest",
           "write_manifest", "read_manifest", "is_manifest"]

MANIFEST_COLUMNS = ("id", "path", "kind", "frames", "fps", "height", "width", "declared_frames", "bytes", "error")


class ManifestError(ValueError):
    pass


def _kind(name: str) -> str | None:
    from magtok.data import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    ext = os.path.splitext(name)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None


def is_manifest(path) -> bool:
    return str(path).lower().endswith(".parquet")


def _scan_url_folder(url: str) -> list[tuple[str, str, str]]:
    """(id, url, kind) of the media files under an fsspec folder URL, sorted, hidden names left out."""
    from magtok.data.parquet import url_to_fs
    fs, root = url_to_fs(url)
    if not fs.isdir(root):
        raise FileNotFoundError(f"data folder {url} does not exist")
    proto = url.split("://", 1)[0]
    out = []
    for p in sorted(fs.find(root)):
        rel = p[len(root.rstrip("/")) + 1:]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        kind = _kind(p)
        if kind:
            out.append((rel, f"{proto}://{p}" if "://" not in p else p, kind))
    if not out:
        raise ValueError(f"no media files found under {url}")
    return out


def list_inputs(inputs) -> list[tuple[str, str, str]]:
    """(id, path, kind) for a folder (local or URL: scanned recursively), a .txt file listing paths or
    URLs (one a line, ``#`` comments), or a list of paths / URLs."""
    from pathlib import Path

    from magtok.data import scan_media
    from magtok.pipeline.reading import is_url
    if isinstance(inputs, (str, os.PathLike)):
        s = str(inputs)
        if is_url(s) or s.startswith("file://"):
            return _scan_url_folder(s)
        p = Path(s)
        if p.is_dir():
            return [(Path(os.path.relpath(path, p)).as_posix(), path, kind) for path, kind in scan_media(p)]
        if p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines()]
            inputs = [ln for ln in lines if ln and not ln.startswith("#")]
            if not inputs:
                raise ManifestError(f"{p} lists no files (one path or URL a line)")
        elif not p.exists():
            raise FileNotFoundError(f"{p} does not exist (give a folder, a .txt list of paths, or files)")
        else:
            inputs = [s]
    out = []
    for s in inputs:
        s = str(s)
        out.append((s, s, _kind(s) or "video"))
    return out


def probe_input(item: tuple[str, str, str], mode: str = "packets") -> dict:
    """Probe one (id, path, kind): a manifest row, with ``error`` set instead of raising."""
    from magtok.data import probe_video, read_image
    from magtok.pipeline.reading import local_input
    rid, path, kind = item
    row = dict(id=rid, path=str(path), kind=kind, frames=None, fps=None, height=None, width=None,
               declared_frames=None, bytes=None, error=None)
    try:
        with local_input(path) as local:
            row["bytes"] = os.path.getsize(local) if os.path.exists(local) else None
            if kind == "image":
                h, w = read_image(local).shape[:2]
                row.update(frames=1, fps=0.0, height=h, width=w, declared_frames=1)
            else:
                info = probe_video(local, mode=mode)
                row.update(frames=info.num_frames, fps=info.fps, height=info.height, width=info.width,
                           declared_frames=info.declared_frames)
                # a container that promises more frames than decode (cut short, or a header that
                # overcounts) is usable: ``frames`` are the frames that decode, ``declared_frames`` the promise
    except ValueError as e:         # VideoReadError: unreadable, missing, no frames
        row["error"] = str(e)
    except Exception as e:          # anything else about one file must not stop the manifest
        row["error"] = f"cannot read {path}: {type(e).__name__}: {e}"
    return row


def build_manifest(inputs, workers: int = 4, mode: str = "packets", progress=None):
    """Probe every input in parallel (``workers`` threads; FFmpeg releases the GIL) -> pyarrow Table."""
    import pyarrow as pa
    items = list_inputs(inputs)
    if workers < 1:
        raise ManifestError(f"workers={workers}: must be >= 1")
    rows = []
    with ThreadPoolExecutor(workers) as pool:
        for row in pool.map(lambda it: probe_input(it, mode), items):
            rows.append(row)
            if progress is not None:
                progress(1)
    schema = pa.schema([("id", pa.string()), ("path", pa.string()), ("kind", pa.string()), ("frames", pa.int64()),
                        ("fps", pa.float64()), ("height", pa.int32()), ("width", pa.int32()),
                        ("declared_frames", pa.int64()), ("bytes", pa.int64()), ("error", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def write_manifest(table, path, overwrite: bool = False):
    """Write the manifest atomically (refuses to replace an existing one unless ``overwrite``)."""
    import pyarrow.parquet as pq

    from magtok.data.parquet import _atomic_put, url_to_fs
    fs, p = url_to_fs(path)
    if fs.exists(p) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    if parent and not fs.isdir(parent):
        raise ManifestError(f"cannot write {path}: the folder {parent} does not exist")
    _atomic_put(fs, p, lambda f: pq.write_table(table, f))
    return path


def read_manifest(path) -> list[dict]:
    """Rows of a manifest (checks the columns; a one-line error names what is missing)."""
    import pyarrow.parquet as pq

    from magtok.data.parquet import url_to_fs
    fs, p = url_to_fs(path)
    if not fs.exists(p):
        raise FileNotFoundError(f"manifest {path} does not exist (write one with `magtok manifest`)")
    try:
        with fs.open(p, "rb") as f:
            table = pq.read_table(f)
    except Exception as e:
        raise ManifestError(f"{path} is not a readable Parquet manifest ({type(e).__name__}: {e})") from None
    if "path" not in table.column_names:
        raise ManifestError(f"{path} has no 'path' column (columns: {', '.join(table.column_names)}); "
                            f"write it with `magtok manifest`")
    rows = table.to_pylist()
    for r in rows:
        r.setdefault("id", r["path"])
        r["id"] = r.get("id") or r["path"]
        r.setdefault("kind", _kind(r["path"]) or "video")
        r["kind"] = r.get("kind") or _kind(r["path"]) or "video"
    return rows


def iter_rows(table) -> Iterable[dict]:
    return table.to_pylist()
