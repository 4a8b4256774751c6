"""``magtok info MODEL | TOKENS | SHARDS/ [--json]``: describe a model folder (or bundled name), a token
file, or a token shard folder (Parquet or binary)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from magtok.cli.common import CommandError, guarded
from magtok.pipeline.model import load_model, token_file_ids as _token_file_ids


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _info_model(path: Path) -> dict:
    m = load_model(path)
    tok, cfg = m.tok, m.tok.config
    h, w = cfg.image_size
    q = cfg.quantizer
    layers = [x if isinstance(x, str) else "(" + ", ".join(str(v) for v in x) + ")" for x in cfg.layers]
    return {
        "kind": "model", "path": str(path), "name": cfg.name, "fingerprint": m.id, "file_fingerprint": m.file_id,
        "layers": layers, "quantizer": q.kind, "codebook_size": tok.codebook_size,
        "num_codebooks": tok.quantizer.num_codebooks, "bits_per_token": tok.bits_per_token,
        "r_t": tok.time_compression, "r_s": tok.space_compression,
        "nominal": {"frames": cfg.frames, "height": h, "width": w,
                    "latent_shape": list(tok.latent_shape(cfg.frames, h, w)),
                    "compression_ratio": tok.compression_ratio},
        "parameters": sum(p.numel() for p in tok.parameters()),
        "parameters_encoder": sum(p.numel() for p in tok.encoder.parameters()),
        "parameters_decoder": sum(p.numel() for p in tok.decoder.parameters()),
    }


def _info_tokens(path: Path) -> dict:
    from magtok.data import load_tokens
    tf = load_tokens(path)
    hd = tf.header
    shown, fp = _token_file_ids(hd)
    count = math.prod(hd["shape"])
    extra = hd.get("extra") or {}
    return {
        "kind": "tokens", "path": str(path), "tokenizer": shown, "file_fingerprint": fp,
        "codebook_size": hd["codebook_size"], "bits_per_token": hd["bits"] * hd["num_codebooks"],
        "grid": hd["grid"], "num_codebooks": hd["num_codebooks"], "tokens": count,
        "source": hd["source"], "clip": hd["clip"], "frames": extra.get("frames"),
        "frames_policy": extra.get("frames_policy"), "tile": extra.get("tile"), "model": extra.get("model"),
        "file_bytes": path.stat().st_size, "payload_bytes": (count * hd["bits"] + 7) // 8,
        "format_version": hd["format_version"],
    }


def _info_shards(path: Path) -> dict:
    from magtok.data import ShardReader
    r = ShardReader(path, verify=False)
    tokens = sum(math.prod(r.meta(v)["shape"]) for v in r.ids())
    files = [p for p in path.iterdir() if p.name.startswith("shard-")]
    return {
        "kind": "shards", "path": str(path), "videos": len(r), "tokens": tokens,
        "tokenizer": r.tokenizer.get("tokenizer_id"), "file_fingerprint": r.tokenizer.get("fingerprint"),
        "codebook_size": r.codebook_size, "shard_files": len(files),
        "bytes": sum(p.stat().st_size for p in files), "duplicates": r.duplicates,
    }


def _print_info(d: dict) -> None:
    if d["kind"] == "model":
        n = d["nominal"]
        print(f"model {d['path']}")
        print(f"  name:            {d['name']}")
        print(f"  fingerprint:     {d['fingerprint']}  (token-file fingerprint {d['file_fingerprint']})")
        print(f"  layers:          {', '.join(d['layers'])}")
        books = f" x {d['num_codebooks']} codebooks" if d["num_codebooks"] > 1 else ""
        print(f"  quantizer:       {d['quantizer']}, codebook size {d['codebook_size']}{books}, "
              f"{d['bits_per_token']:g} bits per token")
        print(f"  compression:     r_t={d['r_t']} (time), r_s={d['r_s']} (space)")
        print(f"  nominal size:    {n['frames']}x{n['height']}x{n['width']} -> codes "
              f"{'x'.join(map(str, n['latent_shape']))}, compression ratio {n['compression_ratio']:.1f}x "
              f"(uint8 RGB bits / code bits)")
        print(f"  parameters:      {d['parameters']:,} (encoder {d['parameters_encoder']:,}, "
              f"decoder {d['parameters_decoder']:,})")
    elif d["kind"] == "tokens":
        s, c = d["source"], d["clip"]
        print(f"token file {d['path']}")
        print(f"  tokenizer:       {d['tokenizer']}  (file fingerprint {d['file_fingerprint']})")
        if d.get("model"):
            print(f"  made with:       {d['model']}")
        print(f"  codes:           {'x'.join(map(str, d['grid']))}"
              + (f" x {d['num_codebooks']} codebooks" if d["num_codebooks"] > 1 else "")
              + f" = {d['tokens']:,} tokens, codebook size {d['codebook_size']}, {d['bits_per_token']} bits per token")
        print(f"  source:          {s['frames']} frames at {s['fps']:g} fps, {s['height']}x{s['width']}")
        clip = f"from frame {c['start']}, {d['frames'] if d['frames'] is not None else '?'} frames at {c['fps']:g} fps"
        if d.get("frames_policy"):
            clip += f" (frames policy {d['frames_policy']})"
        print(f"  clip:            {clip}")
        print(f"  resize / crop:   {c['resize'] or 'none'} / {c['crop'] or 'none'}"
              + (f"; tiles {d['tile'][0]} px, overlap {d['tile'][1]} px" if d.get("tile") else ""))
        print(f"  size:            {d['file_bytes']:,} bytes ({d['payload_bytes']:,} packed payload, "
              f"{d['file_bytes'] - d['payload_bytes']:,} header + CRC)")
    else:
        print(f"shard folder {d['path']}")
        print(f"  tokenizer:       {d['tokenizer']}  (file fingerprint {d['file_fingerprint']})")
        print(f"  videos:          {d['videos']:,}")
        print(f"  tokens:          {d['tokens']:,} (codebook size {d['codebook_size']})")
        print(f"  shards:          {d['shard_files']} files, {_human(d['bytes'])}"
              + (f"; {d['duplicates']} duplicate records ignored" if d["duplicates"] else ""))


def _info_parquet(path: Path) -> dict:
    import pyarrow.parquet as pq

    from magtok.data.parquet import (ParquetTokenReader, list_failure_files, list_parts, read_done_sources,
                                     read_failures)
    r = ParquetTokenReader(path)
    tokens = 0
    for part in list_parts(path):
        shapes = pq.read_table(part, columns=["code_shape"]).column("code_shape").to_pylist()
        tokens += sum(math.prod(s) for s in shapes)
    parts = list_parts(path) + list_failure_files(path)
    failures = read_failures(path, exclude=read_done_sources(path))
    return {"kind": "parquet-shards", "path": str(path), "rows": len(r), "sources": len(read_done_sources(path)),
            "tokens": tokens, "tokenizer": r.tokenizer.get("tokenizer_id"),
            "file_fingerprint": r.tokenizer.get("fingerprint"), "codebook_size": r.codebook_size,
            "parts": len(list_parts(path)), "row_groups": r.index.num_row_groups,
            "bytes": sum(Path(p).stat().st_size for p in parts), "failures": len(failures)}


def _print_parquet(d: dict) -> None:
    print(f"Parquet token folder {d['path']}")
    print(f"  tokenizer:       {d['tokenizer']}  (file fingerprint {d['file_fingerprint']})")
    print(f"  rows:            {d['rows']:,} from {d['sources']:,} inputs")
    print(f"  tokens:          {d['tokens']:,} (codebook size {d['codebook_size']})")
    print(f"  parts:           {d['parts']} files, {d['row_groups']} row groups, {_human(d['bytes'])}")
    print(f"  failures:        {d['failures']}" + (" (see failures-*.parquet; --retry-failed retries them)"
                                                   if d["failures"] else ""))


def cmd_info(args) -> int:
    from magtok.data.parquet import is_parquet_folder
    from magtok.data.shards import TOKENIZER_FILE
    path = Path(args.path)
    if not path.exists():
        try:                                   # a bundled model name
            from magtok.pipeline.model import resolve_model
            path = resolve_model(args.path)
        except ValueError:
            raise FileNotFoundError(f"{path} does not exist") from None
    if path.is_dir():
        if (path / "config.json").exists():
            d = _info_model(path)
        elif is_parquet_folder(path):
            d = _info_parquet(path)
        elif (path / TOKENIZER_FILE).exists():
            d = _info_shards(path)
        else:
            raise CommandError(f"{path} is neither a model folder (config.json) nor a token shard folder "
                               f"({TOKENIZER_FILE})")
    else:
        d = _info_tokens(path)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    elif d["kind"] == "parquet-shards":
        _print_parquet(d)
    else:
        _print_info(d)
    return 0




def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a model folder, a token file or a shard folder")
    p.add_argument("path", metavar="MODEL_OR_TOKENS")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=guarded(cmd_info))
