"""Token files: the codes of one video, bit-packed, with what is needed to use them.

File format "MTOK", version 1
============================

All fixed-width integers are little-endian; ``varint`` is an unsigned LEB128 integer (7 bits per
byte, low bits first, high bit = "more bytes follow"), so small numbers take one byte.

    offset  size  field
    0       4     magic b"MTOK"
    4       1     format version (1); readers refuse versions they do not know
    5       1     flags: bit 0 resize present, bit 1 crop present, bit 2 extra present,
                  bit 3 clip rate differs from the source rate (others 0)
    6       var   varint L: length in bytes of the header body that follows
    .       L     header body, in this order:
                    varint K         codebook size (>= 2); bits per token b = ceil(log2 K)
                    varint ndim      3: codes (T', H', W'); 4: (N, T', H', W') with N codebooks
                    ndim varints     the codes' shape
                    8 bytes          tokenizer fingerprint (see below)
                    varint x 5       source: frames, fps numerator, fps denominator, height, width
                    varint           clip: first source frame
                    varint x 2       [flag bit 3] clip fps numerator, denominator (else = source)
                    varint x 2       [flag bit 0] size after resizing: height, width
                    varint x 4       [flag bit 1] crop after resizing: top, left, height, width
                    varint n, n B    [flag bit 2] "extra": raw-deflate (zlib wbits=-15) UTF-8 JSON object
    .       P     payload: the codes in C order, b bits each, P = ceil(count * b / 8) bytes.
                  Bit order is little-endian: bit j of code i (j = 0 the least significant) is
                  stream bit i * b + j, and stream bit s is bit (s % 8) of byte s // 8 (LSB first).
                  Unused high bits of the last byte are 0.
    end-4   4     CRC32 (zlib.crc32, uint32 LE) of every byte before it

    A frame rate is stored as an exact fraction (25 -> 25/1, 29.97... -> 30000/1001); an image has
    fps 0/1. The tokenized clip is frames ``start, start + step, ...`` of the source at the clip
    rate, resized to ``resize`` then cropped to ``crop`` (both absent when not applied).

Why the tokenizer config is not inside (the size target)
    A 17x128x128 clip tokenized at 18 bits is 5x16x16 codes = 2880 bytes; a tokenizer config of ~40
    keys is ~1 KB as JSON and ~500 bytes compressed, which alone would add ~17 %. The file therefore
    holds an 8-byte fingerprint, the first 8 bytes of SHA-256 over the canonical JSON of
    ``{"tokenizer_id": ..., "config": ...}`` (``tokenizer_fingerprint``). The full tokenizer id and
    config are written once per folder, next to the token files, as
    ``magtok-tokenizer-<fingerprint>.json`` (content addressed: many token files of one tokenizer
    share one, and two tokenizers never collide); ``load_tokens`` reads it back when present and
    checks it against the fingerprint. A token file alone still says which tokenizer made it: compare
    ``header["tokenizer_fingerprint"]`` with ``tokenizer_fingerprint(id, config)`` of a model.
    With this binary header the example file (source 250 frames of 272x640, resized to 128x301 and
    cropped to 128x128) is 2880 + 45 bytes at 25 fps (1.56 %), 2880 + 48 at 30000/1001 fps (1.67 %);
    tests/data/test_tokens.py asserts <= 2 %.

Errors: a missing, truncated or corrupt file, a bad magic, an unknown version, a CRC mismatch or
codes out of range raise ``TokenFileError`` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from magtok._io import atomic_write

__all__ = ["TokenFileError", "TokenMeta", "TokenFile", "save_tokens", "load_tokens", "encode_tokens",
           "decode_tokens", "pack_bits", "unpack_bits", "bits_for", "tokenizer_fingerprint",
           "config_sidecar_name", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"MTOK"
FORMAT_VERSION = 1
_F_RESIZE, _F_CROP, _F_EXTRA, _F_CLIP_FPS = 1, 2, 4, 8
_CHUNK = 1 << 20   # tokens per packing chunk (a multiple of 8, so chunks start on byte boundaries)


class TokenFileError(ValueError):
    """A token file (or shard record) that cannot be read or written as asked."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"token file {self.path}: {problem}")


# ------------------------------------------------------------------------------ bit packing
def bits_for(codebook_size: int) -> int:
    """Bits per token for a codebook of ``codebook_size`` entries: ceil(log2 K), at least 1."""
    if int(codebook_size) != codebook_size or codebook_size < 2:
        raise ValueError(f"codebook_size must be an integer >= 2, not {codebook_size}")
    return max(1, (int(codebook_size) - 1).bit_length())


def _word(bits: int):
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, not {bits}")
    return (np.dtype("<u4"), 32) if bits <= 32 else (np.dtype("<u8"), 64)


def pack_bits(codes, bits: int) -> np.ndarray:
    """Pack non-negative integers < 2**bits into a uint8 array, little-endian bit order (see above).

    Vectorised with numpy in chunks of 2**20 tokens (about 64 MB of scratch at most).
    """
    dt, w = _word(bits)
    a = np.asarray(codes).reshape(-1)
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or int(a.max()) >> bits):
        raise ValueError(f"codes must be integers in [0, 2**{bits}); got dtype {a.dtype}, "
                         f"range [{a.min()}, {a.max()}]")
    n = a.size
    out = np.empty((n * bits + 7) // 8, np.uint8)
    for s in range(0, n, _CHUNK):
        words = a[s:s + _CHUNK].astype(dt)
        bitmat = np.unpackbits(words.view(np.uint8).reshape(-1, w // 8), axis=1, bitorder="little")
        packed = np.packbits(bitmat[:, :bits].reshape(-1), bitorder="little")
        out[s * bits // 8: s * bits // 8 + packed.size] = packed
    return out


def unpack_bits(buf, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: the first ``count`` codes of ``buf`` -> int64 array."""
    dt, w = _word(bits)
    b = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
    need = (count * bits + 7) // 8
    if b.size < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, got {b.size}")
    out = np.empty(count, np.int64)
    for s in range(0, count, _CHUNK):
        m = min(_CHUNK, count - s)
        start = s * bits // 8
        bitmat = np.unpackbits(b[start:start + (m * bits + 7) // 8], count=m * bits,
                               bitorder="little").reshape(m, bits)
        full = np.zeros((m, w), np.uint8)
        full[:, :bits] = bitmat
        out[s:s + m] = np.packbits(full, axis=1, bitorder="little").view(dt).reshape(m)
    return out


# ------------------------------------------------------------------------------ varints
def _put(out: bytearray, *values: int) -> None:
    for v in values:
        v = int(v)
        if v < 0:
            raise ValueError(f"header values must be >= 0, got {v}")
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break


class _Reader:
    def __init__(self, data, pos: int, end: int, path):
        self.data, self.pos, self.end, self.path = data, pos, end, path

    def varint(self) -> int:
        v = shift = 0
        while True:
            if self.pos >= self.end:
                raise TokenFileError(self.path, "header ends inside a number (truncated or corrupt)")
            byte = int(self.data[self.pos])
            self.pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return v
            if shift > 70:
                raise TokenFileError(self.path, "corrupt header (number too long)")

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise TokenFileError(self.path, "header ends early (truncated or corrupt)")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out


def _fraction(x: float) -> Fraction:
    if x is None or not math.isfinite(x) or x < 0:
        raise ValueError(f"a frame rate must be a finite number >= 0, not {x}")
    return Fraction(x).limit_denominator(1_000_000)


# ------------------------------------------------------------------------------ metadata
def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tokenizer_fingerprint(tokenizer_id: str, config: dict) -> str:
    """16 hex characters: SHA-256 of the canonical JSON of {tokenizer_id, config}, first 8 bytes."""
    return hashlib.sha256(_canonical({"tokenizer_id": tokenizer_id, "config": config})).hexdigest()[:16]


def config_sidecar_name(fingerprint: str) -> str:
    return f"magtok-tokenizer-{fingerprint}.json"


@dataclass
class TokenMeta:
    """What a token file records besides the codes.

    tokenizer_id: identity of the tokenizer (e.g. a hash of its weights, given by the caller);
    config: its config dict (JSON-serialisable); source_*: the source video (fps 0 for an image);
    start: first source frame of the clip; clip_fps: rate of the tokenized frames (default: fps);
    resize: (H, W) after resizing; crop: (top, left, H, W) of the crop after resizing; extra: any
    JSON-serialisable dict.
    """

    tokenizer_id: str
    config: dict
    source_frames: int
    fps: float
    height: int
    width: int
    start: int = 0
    clip_fps: float | None = None
    resize: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.resize is not None and len(self.resize) != 2:
            raise ValueError(f"resize must be (H, W), not {self.resize}")
        if self.crop is not None and len(self.crop) != 4:
            raise ValueError(f"crop must be (top, left, H, W), not {self.crop}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a dict, not {type(self.extra).__name__}")

    @classmethod
    def coerce(cls, meta) -> "TokenMeta":
        if isinstance(meta, cls):
            return meta
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be a TokenMeta or a dict, not {type(meta).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(meta) - known
        if unknown:
            raise ValueError(f"unknown meta keys {sorted(unknown)}; known: {sorted(known)} "
                             f"(put anything else into 'extra')")
        return cls(**meta)

    @property
    def fingerprint(self) -> str:
        return tokenizer_fingerprint(self.tokenizer_id, self.config)

    def source_dict(self) -> dict:
        """Everything but the tokenizer (for shard indexes)."""
        d = asdict(self)
        d.pop("tokenizer_id"), d.pop("config")
        return d


@dataclass
class TokenFile:
    """``codes``: int64 (T', H', W') or (N, T', H', W'); ``header``: see ``decode_tokens``."""

    codes: torch.Tensor
    header: dict
    path: str | None = None


def _check_codes(codes, codebook_size: int, path) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    a = np.asarray(codes)
    if not np.issubdtype(a.dtype, np.integer):
        raise TokenFileError(path, f"codes must be integers, got {a.dtype}")
    if a.ndim not in (3, 4):
        raise TokenFileError(path, f"codes must be (T', H', W') or (N, T', H', W'), got shape {a.shape}")
    if a.size == 0:
        raise TokenFileError(path, f"codes are empty (shape {a.shape})")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= codebook_size:
        raise TokenFileError(path, f"codes out of range [0, {codebook_size}): min {lo}, max {hi}")
    return a


def encode_tokens(codes, codebook_size: int, meta, path="<memory>") -> bytes:
    """The bytes of a token file (see the module docstring) for ``codes`` and ``meta``."""
    meta = TokenMeta.coerce(meta)
    bits = bits_for(codebook_size)
    a = _check_codes(codes, codebook_size, path)
    src_fps, clip_fps = _fraction(meta.fps), _fraction(meta.fps if meta.clip_fps is None else meta.clip_fps)
    flags = 0
    body = bytearray()
    _put(body, codebook_size, a.ndim, *a.shape)
    body += bytes.fromhex(meta.fingerprint)
    _put(body, meta.source_frames, src_fps.numerator, src_fps.denominator, meta.height, meta.width)
    _put(body, meta.start)
    if clip_fps != src_fps:
        flags |= _F_CLIP_FPS
        _put(body, clip_fps.numerator, clip_fps.denominator)
    if meta.resize is not None:
        flags |= _F_RESIZE
        _put(body, *meta.resize)
    if meta.crop is not None:
        flags |= _F_CROP
        _put(body, *meta.crop)
    if meta.extra:
        flags |= _F_EXTRA
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        blob = comp.compress(_canonical(meta.extra)) + comp.flush()
        _put(body, len(blob))
        body += blob
    out = bytearray(MAGIC)
    out += bytes((FORMAT_VERSION, flags))
    _put(out, len(body))
    out += body
    out += pack_bits(a, bits).tobytes()
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def _parse_header(data, path) -> tuple[dict, int]:
    """Parse the header of a record starting at data[0] -> (header dict, payload offset)."""
    if len(data) < 7:
        raise TokenFileError(path, f"truncated: {len(data)} bytes is shorter than any token file")
    if bytes(data[:4]) != MAGIC:
        raise TokenFileError(path, f"not a magtok token file (magic {bytes(data[:4])!r}, expected {MAGIC!r})")
    version, flags = int(data[4]), int(data[5])
    if version != FORMAT_VERSION:
        raise TokenFileError(path, f"format version {version} is not supported (this magtok reads {FORMAT_VERSION})")
    r = _Reader(data, 6, len(data), path)
    body_len = r.varint()
    r.end = r.pos + body_len
    if r.end > len(data):
        raise TokenFileError(path, "truncated inside the header")
    k = r.varint()
    ndim = r.varint()
    if k < 2 or ndim not in (3, 4):
        raise TokenFileError(path, f"corrupt header (codebook size {k}, {ndim} dimensions)")
    shape = tuple(r.varint() for _ in range(ndim))
    fp = r.take(8).hex()
    frames, sn, sd, h, w = (r.varint() for _ in range(5))
    start = r.varint()
    cn, cd = (r.varint(), r.varint()) if flags & _F_CLIP_FPS else (sn, sd)
    if sd == 0 or cd == 0:
        raise TokenFileError(path, "corrupt header (zero frame-rate denominator)")
    resize = tuple(r.varint() for _ in range(2)) if flags & _F_RESIZE else None
    crop = tuple(r.varint() for _ in range(4)) if flags & _F_CROP else None
    extra = {}
    if flags & _F_EXTRA:
        blob = r.take(r.varint())
        try:
            extra = json.loads(zlib.decompress(blob, -15))
        except Exception as e:
            raise TokenFileError(path, f"corrupt 'extra' block ({e})") from None
    if r.pos != r.end:
        raise TokenFileError(path, "corrupt header (length does not match its fields)")
    header = {
        "format_version": version,
        "codebook_size": k,
        "bits": bits_for(k),
        "shape": list(shape),
        "grid": list(shape[-3:]),
        "num_codebooks": shape[0] if ndim == 4 else 1,
        "tokenizer_fingerprint": fp,
        "tokenizer_id": None,
        "config": None,
        "source": {"frames": frames, "fps": sn / sd, "height": h, "width": w},
        "clip": {"start": start, "fps": cn / cd, "resize": list(resize) if resize else None,
                 "crop": list(crop) if crop else None},
        "extra": extra,
    }
    return header, r.end


def record_length(header: dict, payload_offset: int) -> int:
    """Total bytes of a record (header + payload + CRC)."""
    return payload_offset + (math.prod(header["shape"]) * header["bits"] + 7) // 8 + 4


def decode_tokens(data, path="<memory>", verify: bool = True) -> tuple[np.ndarray, dict]:
    """Parse one token record (bytes, memoryview or uint8 array) -> (int64 codes, header dict).

    ``data`` must hold exactly one record. ``verify`` checks the CRC32 (fast: about 1 GB/s).
    """
    header, off = _parse_header(data, path)
    total = record_length(header, off)
    if len(data) != total:
        # a cut file, extra bytes, or a damaged size field in the header: the CRC of the whole file
        # (valid if only the header's sizes were damaged) cannot tell them apart, but says it is corrupt
        crc_note = ""
        if verify and len(data) >= 8:
            whole_ok = zlib.crc32(memoryview(data)[:len(data) - 4]) == int.from_bytes(bytes(data[-4:]), "little")
            crc_note = "" if whole_ok else "; the CRC over the file does not match either"
        if len(data) < total:
            raise TokenFileError(path, f"truncated (or its header is corrupt): {len(data)} bytes, the header "
                                       f"announces {total}{crc_note}")
        raise TokenFileError(path, f"{len(data) - total} unexpected bytes after the record (or its header is "
                                   f"corrupt){crc_note}")
    if verify:
        stored = int.from_bytes(bytes(data[total - 4:total]), "little")
        if zlib.crc32(memoryview(data)[:total - 4]) != stored:
            raise TokenFileError(path, "CRC mismatch: the file is corrupt")
    count = math.prod(header["shape"])
    payload = data[off:total - 4]
    if not isinstance(payload, np.ndarray):
        payload = np.frombuffer(payload, np.uint8)
    codes = unpack_bits(payload, header["bits"], count).reshape(header["shape"])
    if codes.size and int(codes.max()) >= header["codebook_size"]:
        raise TokenFileError(path, f"codes out of range [0, {header['codebook_size']}) (corrupt)")
    return codes, header


# ------------------------------------------------------------------------------ files
def _atomic_write(path: Path, data: bytes, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_sidecar(folder, tokenizer_id: str, config: dict, codebook_size: int | None = None) -> Path:
    """Write ``magtok-tokenizer-<fingerprint>.json`` into ``folder`` once (kept if present)."""
    fp = tokenizer_fingerprint(tokenizer_id, config)
    path = Path(folder) / config_sidecar_name(fp)
    if not path.exists():
        doc = {"fingerprint": fp, "tokenizer_id": tokenizer_id, "config": config,
               "codebook_size": codebook_size}
        try:
            _atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode(), overwrite=True)
        except FileExistsError:
            pass
    return path


def read_sidecar(folder, fingerprint: str) -> dict | None:
    """The sidecar for ``fingerprint`` in ``folder`` if present and consistent, else None."""
    path = Path(folder) / config_sidecar_name(fingerprint)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if tokenizer_fingerprint(doc.get("tokenizer_id"), doc.get("config")) != fingerprint:
        return None
    return doc


def save_tokens(path, codes, codebook_size: int, meta, overwrite: bool = False,
                write_config: bool = True) -> Path:
    """Write a token file atomically (temporary file + ``os.replace``); see the module docstring.

    ``codes``: integer (T', H', W') or (N, T', H', W') tensor/array in [0, codebook_size).
    ``meta``: a ``TokenMeta`` or a dict of its fields. Refuses to replace an existing file unless
    ``overwrite`` (FileExistsError). ``write_config`` also writes the tokenizer sidecar
    ``magtok-tokenizer-<fingerprint>.json`` beside it (once per folder and tokenizer).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    meta = TokenMeta.coerce(meta)
    data = encode_tokens(codes, codebook_size, meta, path)
    if write_config:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sidecar(path.parent, meta.tokenizer_id, meta.config, codebook_size)
    _atomic_write(path, data, overwrite)
    return path


def load_tokens(path, verify: bool = True) -> TokenFile:
    """Read a token file -> ``TokenFile(codes int64 tensor, header dict)``.

    The header has ``tokenizer_id`` and ``config`` filled from the sidecar beside the file when one
    with the same fingerprint exists (else None). Raises ``TokenFileError`` for any damage.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TokenFileError(path, "no such file") from None
    except OSError as e:
        raise TokenFileError(path, f"cannot be read ({e})") from None
    codes, header = decode_tokens(data, path, verify=verify)
    doc = read_sidecar(path.parent, header["tokenizer_fingerprint"])
    if doc is not None:
        header["tokenizer_id"], header["config"] = doc["tokenizer_id"], doc["config"]
    return TokenFile(torch.from_numpy(codes), header, str(path))
