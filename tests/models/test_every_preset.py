"""Contract test over every registered preset: build, forward, backward, save / load (in eval mode)."""

import pytest
import torch

from magtok import VideoTokenizer, get_config, list_configs
from magtok.models.tokenizer import TokenizerOutput


@pytest.mark.parametrize("name", list_configs())
def test_preset_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    cfg = get_config(name)
    tok = VideoTokenizer(cfg)
    t, h, w = cfg.frames, *cfg.image_size
    lt, lh, lw = tok.latent_shape(t, h, w)
    r_t = (t - 1) // (lt - 1) if lt > 1 else 1
    r_s = h // lh
    # the smallest input that exercises time and space compression: 1 + r_t frames, 2 latents a side
    video = torch.rand(1, 3, 1 + r_t, 2 * r_s, 2 * r_s) * 2 - 1
    out = tok(video)
    assert isinstance(out, TokenizerOutput)
    assert out.recon.shape == video.shape
    assert out.codes.shape == (1, 2, 2, 2) and out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < tok.codebook_size
    loss = (out.recon - video).abs().mean() + out.aux_loss
    loss.backward()
    grads = [p.grad for p in tok.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads[:1] + grads[-1:])
    assert tok.encoder.parameters().__next__().grad.abs().sum() > 0  # gradient reaches the first layer
    tok.save_pretrained(tmp_path / name)
    loaded = VideoTokenizer.from_pretrained(tmp_path / name)
    assert not loaded.training and loaded.config.to_dict() == cfg.to_dict()
    assert loaded.fingerprint() == tok.fingerprint()
    tok.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), tok.encode(video))
        assert torch.allclose(loaded.decode(tok.encode(video)), tok.decode(tok.encode(video)))
