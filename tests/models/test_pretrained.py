"""The bundled tokenizer magtok-small: loadable by name, offline, with the guarantees of any model."""

import shutil

import pytest
import torch

from magtok import VideoTokenizer
from magtok.models.pretrained import PRETRAINED_ROOT, list_pretrained, pretrained_dir, resolve_pretrained


def test_magtok_small_is_bundled_and_loads_by_name():
    assert "magtok-small" in list_pretrained()
    d = pretrained_dir("magtok-small")
    assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    assert (d / "model.safetensors").stat().st_size < 20 * 2**20          # a few MB, in the package
    tok = VideoTokenizer.from_pretrained("magtok-small")
    assert not tok.training                                               # eval mode
    assert (tok.time_compression, tok.space_compression) == (4, 4)
    assert tok.fingerprint() == VideoTokenizer.from_pretrained(d).fingerprint()


@pytest.fixture(scope="module")
def small():
    return VideoTokenizer.from_pretrained("magtok-small")


def _video(t=17, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, (t + 3) // 4, h // 8, w // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(t, h, w), mode="trilinear", align_corners=False)


def test_magtok_small_streaming_equals_whole_clip(small):
    x = _video(t=25)                                                      # any 1 + 4k frames, any multiple of 4
    with torch.no_grad():
        whole = small.encode(x)
        chunked = small.encode_chunked(x, 2)
        assert torch.equal(whole, chunked)
        assert torch.allclose(small.decode(whole), small.decode_chunked(whole, 2), atol=1e-5)


def test_magtok_small_for_inference_agrees(small):
    x = _video(seed=1)
    with torch.no_grad():
        ref = small.encode(x)
        fast = small.for_inference(winograd=True)
        codes = fast.encode(x)
        assert (codes == ref).float().mean() >= 0.999
        assert torch.allclose(fast.decode(ref), small.decode(ref), atol=1e-4)


def test_magtok_small_reconstructs_a_real_clip(small):
    """A recognisable reconstruction: far above chance on a held-out clip (the card has the numbers)."""
    from magtok.data import read_video, resize_and_crop, sample_videos, to_tensor
    from magtok.metrics import psnr

    u8, _ = read_video(sample_videos()["bikes"], 100, 17)
    x, _ = resize_and_crop(to_tensor(u8), (64, 64), None)
    with torch.no_grad():
        recon = small.decode(small.encode(x[None])).clamp(-1, 1)
    assert float(psnr(x[None], recon).mean()) > 20.0


def test_resolve_names_folders_and_errors(tmp_path, monkeypatch):
    assert resolve_pretrained(tmp_path) == tmp_path                      # a folder is used as is
    assert resolve_pretrained("magtok-small") == PRETRAINED_ROOT / "magtok-small"
    with pytest.raises(FileNotFoundError, match="neither a folder nor a bundled.*magtok-small"):
        resolve_pretrained("magtok-huge")
    with pytest.raises(ValueError, match="not a bundled tokenizer"):
        pretrained_dir("nope")
    # a name bundled elsewhere (another install's folder) resolves the same way
    other = tmp_path / "pre"
    shutil.copytree(PRETRAINED_ROOT / "magtok-small", other / "copy")
    import magtok.models.pretrained as pre
    monkeypatch.setattr(pre, "PRETRAINED_ROOT", other)
    assert pre.list_pretrained() == ["copy"]
    assert VideoTokenizer.from_pretrained("copy").fingerprint() == VideoTokenizer.from_pretrained(
        PRETRAINED_ROOT / "magtok-small").fingerprint()


def test_the_model_card_describes_the_shipped_weights():
    """The card (root copy and packaged copy, identical) names the shipped fingerprint, and its headline
    numbers are those of the committed `magtok eval` JSON of these weights."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    card = (root / "MODEL_CARD.md").read_text()
    assert (pretrained_dir("magtok-small") / "MODEL_CARD.md").read_text() == card
    fp = VideoTokenizer.from_pretrained("magtok-small").fingerprint()
    assert f"| fingerprint | `{fp}`" in card
    res = json.loads((root / "benchmarks/results/magtok-small/eval/results.json").read_text())
    assert res["settings"]["fingerprint"] == fp
    for key in ("psnr", "ssim", "lpips"):
        assert f"| {res['aggregates'][key]['mean']:.4f} |" in card, key
