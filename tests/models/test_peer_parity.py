"""Faithfulness: magtok reproduces magvit2-pytorch 0.5.1 given the same layer spec and weights.

Two documented peer bugs are corrected on the peer side before comparing (magtok does not copy
them; see magtok/models/peer.py): its temporal downsampling pads (2, 0) -> patched to (1, 0), and
its encode never applies the LayerNorm it builds before the quantizer -> applied here.
"""

import warnings

import pytest
import torch

from magtok.models.blocks import BLOCK_BUILDERS
from magtok.models.peer import from_magvit2_pytorch
from magtok.testing.peer import peer_available

pytestmark = [pytest.mark.peer, pytest.mark.skipif(not peer_available(), reason="peer not installed: run `make peer`")]

COMMON = dict(image_size=32, init_dim=16, attn_heads=2, attn_dim_head=8, linear_attn_heads=2,
              linear_attn_dim_head=4)
SPECS = {
    "conv-lfq": dict(layers=("residual", "compress_space", ("consecutive_residual", 2), "compress_time",
                             "attend_space", "compress_time", "residual"),
                     codebook_size=2**10, input_conv_kernel_size=(5, 5, 5)),
    "time-fsq-first-frame": dict(layers=("compress_space", "attend_time", "linear_attend_space", "compress_time",
                                         "gateloop_time"),
                                 use_fsq=True, fsq_levels=[8, 5, 5, 5], separate_first_frame_encoding=True),
    "all-lfq-2codebooks": dict(layers=("residual", "compress_time", "compress_space", "gateloop_time",
                                       "attend_time", "attend_space", "linear_attend_space", "compress_space"),
                               codebook_size=2**5, num_codebooks=2, max_dim=24),
}


def test_specs_cover_every_unconditioned_layer_type():
    used = {e if isinstance(e, str) else e[0] for s in SPECS.values() for e in s["layers"]}
    assert used == {n for n in BLOCK_BUILDERS if not n.startswith("cond_")}


def build_pair(name):
    from magtok.testing.peer import import_peer, patch_peer_time_padding

    warnings.filterwarnings("ignore")
    m = import_peer()
    kwargs = {**COMMON, **SPECS[name]}
    torch.manual_seed(0)
    peer = m.VideoTokenizer(**kwargs, perceptual_loss_weight=0.0, use_gan=False, flash_attn=False).eval()
    with torch.no_grad():  # random weights everywhere (some layers start at zero or one)
        for p in peer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    patch_peer_time_padding(peer, left=1)
    ours = from_magvit2_pytorch(peer.state_dict(), kwargs).eval()
    return peer, ours


@pytest.mark.parametrize("name", sorted(SPECS))
def test_latents_codes_and_decoding_match_the_peer(name):
    peer, ours = build_pair(name)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z_peer = peer.encoder_layers[-1](peer.encode(x))
        z_ours = ours.encode_latents(x)
        assert z_ours.shape == z_peer.shape
        assert (z_ours - z_peer).abs().max() < 1e-4
        codes_peer = peer.quantizers(z_peer)[1]
        codes_ours = ours.encode(x)
        assert codes_ours.shape == codes_peer.shape
        same = (codes_ours == codes_peer).float().mean()
        assert same >= 0.999, f"only {same:.4%} identical codes"
        video_peer = peer.decode_from_code_indices(codes_ours)
        video_ours = ours.decode(codes_ours)
        assert video_ours.shape == video_peer.shape == x.shape
        assert (video_ours - video_peer).abs().max() < 1e-4


def test_unpatched_peer_padding_is_a_different_grouping():
    """Without the patch the peer's latents differ: the test above would fail, as it should."""
    from magtok.testing.peer import patch_peer_time_padding

    peer, ours = build_pair("conv-lfq")
    patch_peer_time_padding(peer, left=2)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        diff = (peer.encoder_layers[-1](peer.encode(x)) - ours.encode_latents(x)).abs().max()
    assert diff > 1e-2
