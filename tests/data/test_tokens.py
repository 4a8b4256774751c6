import json
import os
import time
import zlib

import numpy as np
import pytest
import torch

from magtok.data import (TokenFileError, TokenMeta, bits_for, encode_tokens, load_tokens, pack_bits,
                         save_tokens, tokenizer_fingerprint, unpack_bits)
from magtok.data.tokens import config_sidecar_name


def realistic_config():
    """A tokenizer config of 40 keys, like a real TokenizerConfig as JSON."""
    cfg = {
        "name": "magvit2-17x128-lfq18", "in_channels": 3, "base_channels": 128,
        "channel_multipliers": [1, 2, 2, 4], "num_res_blocks": 2, "temporal_downsample": [False, True, True],
        "spatial_downsample": [True, True, True], "z_channels": 18, "norm": "group", "num_groups": 32,
        "activation": "swish", "causal": True, "padding_mode": "replicate", "attention_layers": [],
        "attention_heads": 8, "use_gateloop": False, "dropout": 0.0,
        "quantizer": {"kind": "lfq", "dim": 18, "codebook_size": 262144, "entropy_weight": 0.1,
                      "commitment_weight": 0.25, "diversity_gamma": 1.0, "inv_temperature": 100.0},
        "decoder_channel_multipliers": [4, 2, 2, 1], "decoder_num_res_blocks": 3,
        "adaptive_group_norm": True, "frames": 17, "image_size": [128, 128], "r_t": 4, "r_s": 8,
        "pre_quant_norm": True, "blur_downsample": True, "init_scale": 0.02, "fp32_quantizer": True,
    }
    for i in range(40 - len(cfg)):
        cfg[f"option_{i}"] = i * 0.5
    assert len(cfg) == 40
    return cfg


def meta(**kw):
    base = dict(tokenizer_id="3f9c2a71d04be815", config=realistic_config(), source_frames=250,
                fps=25.0, height=272, width=640, start=117, resize=(128, 301), crop=(0, 86, 128, 128))
    base.update(kw)
    return base


@pytest.mark.parametrize("k", [2, 2**10, 2**18, 2**20, 1000])
def test_round_trip_codebook_sizes(tmp_path, k):
    rng = np.random.default_rng(k)
    codes = rng.integers(0, k, size=(5, 16, 16))
    codes.flat[:2] = [0, k - 1]                        # both ends of the range
    path = save_tokens(tmp_path / "clip.tokens", torch.from_numpy(codes), k, meta())
    tf = load_tokens(path)
    assert tf.codes.dtype == torch.int64 and tf.codes.shape == (5, 16, 16)
    np.testing.assert_array_equal(tf.codes.numpy(), codes)
    h = tf.header
    assert h["codebook_size"] == k and h["bits"] == bits_for(k) and h["grid"] == [5, 16, 16]
    assert h["num_codebooks"] == 1
    assert os.path.getsize(path) > (codes.size * bits_for(k) + 7) // 8


def test_header_round_trip_and_config_sidecar(tmp_path):
    m = meta(fps=30000 / 1001, clip_fps=10.0, extra={"caption": "bikes", "split": "train"})
    codes = np.random.default_rng(0).integers(0, 1000, size=(2, 5, 4, 6))    # 2 codebooks
    path = save_tokens(tmp_path / "a.tokens", codes, 1000, m)
    h = load_tokens(path).header
    assert h["shape"] == [2, 5, 4, 6] and h["grid"] == [5, 4, 6] and h["num_codebooks"] == 2
    assert h["source"] == {"frames": 250, "fps": 30000 / 1001, "height": 272, "width": 640}
    assert h["clip"] == {"start": 117, "fps": 10.0, "resize": [128, 301], "crop": [0, 86, 128, 128]}
    assert h["extra"] == {"caption": "bikes", "split": "train"}
    fp = tokenizer_fingerprint(m["tokenizer_id"], m["config"])
    assert h["tokenizer_fingerprint"] == fp and len(fp) == 16
    assert h["tokenizer_id"] == m["tokenizer_id"] and h["config"] == m["config"]
    # the config lives once per folder, in the sidecar, not in each token file
    save_tokens(tmp_path / "b.tokens", codes, 1000, m)
    assert sorted(os.listdir(tmp_path)) == ["a.tokens", "b.tokens", config_sidecar_name(fp)]
    os.unlink(tmp_path / config_sidecar_name(fp))
    h2 = load_tokens(path).header
    assert h2["tokenizer_fingerprint"] == fp and h2["config"] is None and h2["tokenizer_id"] is None
    assert tokenizer_fingerprint(m["tokenizer_id"], dict(m["config"], r_t=2)) != fp


def test_size_target_17x128x128_clip(tmp_path):
    """5x16x16 codes at 18 bits = 2880 bytes; the whole file may be at most 2 % larger."""
    codes = torch.randint(0, 2**18, (5, 16, 16))
    path = save_tokens(tmp_path / "clip.tokens", codes, 2**18, meta(fps=30000 / 1001))
    packed = 5 * 16 * 16 * 18 // 8
    size = os.path.getsize(path)
    overhead = (size - packed) / packed
    print(f"token file {size} bytes, packed codes {packed}, overhead {size - packed} B = {overhead:.2%}")
    assert packed == 2880 and overhead <= 0.02
    # the same header with the config embedded as compressed JSON would miss the target by far
    embedded = len(zlib.compress(json.dumps(realistic_config()).encode(), 9))
    assert embedded / packed > 0.05


def test_pack_bits_order_and_speed():
    # little-endian bit order: code0=1 (bits 0..2 = 1,0,0), code1=2 (bits 3..5 = 0,1,0) -> 0b00010001
    assert pack_bits(np.array([1, 2]), 3).tolist() == [0b00010001]
    assert pack_bits(np.array([0x3FFFF]), 18).tolist() == [0xFF, 0xFF, 0x03]
    rng = np.random.default_rng(0)
    for bits in (1, 7, 8, 13, 18, 20, 31, 32, 40):
        c = rng.integers(0, 2**bits, size=1001, dtype=np.int64)
        buf = pack_bits(c, bits)
        assert buf.size == (1001 * bits + 7) // 8
        np.testing.assert_array_equal(unpack_bits(buf, bits, 1001), c)
    c = rng.integers(0, 2**18, size=2**18)
    t = time.perf_counter()
    buf = pack_bits(c, 18)
    out = unpack_bits(buf.tobytes(), 18, c.size)
    assert time.perf_counter() - t < 1.0
    np.testing.assert_array_equal(out, c)
    with pytest.raises(ValueError, match="range"):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError, match="range"):
        pack_bits(np.array([-1]), 3)


def _good(tmp_path):
    path = save_tokens(tmp_path / "x.tokens", torch.randint(0, 1024, (3, 4, 4)), 1024, meta())
    return path, path.read_bytes()


def test_truncated_and_corrupt_files(tmp_path):
    path, data = _good(tmp_path)
    for cut in (1, 4, 20, len(data) - 5, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(TokenFileError, match=r"x\.tokens.*truncated"):
            load_tokens(path)
    path.write_bytes(b"RIFF" + data[4:])
    with pytest.raises(TokenFileError, match="magic"):
        load_tokens(path)
    flipped = bytearray(data)
    flipped[-10] ^= 0x40                                  # one payload bit
    path.write_bytes(bytes(flipped))
    with pytest.raises(TokenFileError, match="CRC mismatch"):
        load_tokens(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(TokenFileError, match="unexpected bytes.*CRC over the file does not match"):
        load_tokens(path)
    shape_byte = bytearray(data)
    shape_byte[10] += 1  # the first shape entry (after magic, version, flags, body length, k (2 bytes), ndim)
    path.write_bytes(bytes(shape_byte))
    with pytest.raises(TokenFileError, match="header is corrupt.*CRC over the file does not match"):
        load_tokens(path)
    v2 = bytearray(data)
    v2[4] = 2
    path.write_bytes(bytes(v2))
    with pytest.raises(TokenFileError, match="version 2"):
        load_tokens(path)
    with pytest.raises(TokenFileError, match="no such file"):
        load_tokens(tmp_path / "missing.tokens")
    assert issubclass(TokenFileError, ValueError)


def test_out_of_range_codes(tmp_path):
    with pytest.raises(TokenFileError, match=r"out of range \[0, 1000\).*max 1000"):
        save_tokens(tmp_path / "a.tokens", torch.full((1, 2, 2), 1000), 1000, meta())
    with pytest.raises(TokenFileError, match="integers"):
        save_tokens(tmp_path / "a.tokens", torch.zeros(1, 2, 2), 1000, meta())
    assert not (tmp_path / "a.tokens").exists()
    # a file whose CRC is right but whose codes exceed its codebook (written by a buggy tool)
    data = bytearray(encode_tokens(np.full((1, 2, 2), 1023), 1024, meta()))
    assert data[7:9] == bytes([0x80, 0x08])                # varint 1024 right after the header length
    data[7:9] = bytes([0xE8, 0x07])                          # varint 1000
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    (tmp_path / "b.tokens").write_bytes(bytes(data))
    with pytest.raises(TokenFileError, match="out of range"):
        load_tokens(tmp_path / "b.tokens")


def test_atomic_save_refuses_overwrite(tmp_path):
    path, data = _good(tmp_path)
    with pytest.raises(FileExistsError, match=r"x\.tokens.*overwrite=True"):
        save_tokens(path, torch.zeros(1, 1, 1, dtype=torch.long), 1024, meta())
    assert path.read_bytes() == data
    save_tokens(path, torch.zeros(1, 1, 1, dtype=torch.long), 1024, meta(), overwrite=True)
    assert load_tokens(path).codes.shape == (1, 1, 1)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    with pytest.raises(ValueError, match="unknown meta keys.*'colour'"):
        save_tokens(tmp_path / "y.tokens", torch.zeros(1, 1, 1, dtype=torch.long), 1024,
                    dict(meta(), colour="red"))
    assert isinstance(TokenMeta.coerce(meta()), TokenMeta)
