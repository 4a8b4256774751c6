import pytest
import torch
import torch.nn.functional as F

from magtok.configs import QuantizerConfig
from magtok.quantizers import QUANTIZER_BUILDERS, LFQ, VQ, FSQ, build_quantizer
from magtok.quantizers.lfq import (bit_group_codebook_entropy, exact_codebook_entropy, group_sizes)

KINDS = {
    "lfq": QuantizerConfig(kind="lfq", codebook_size=2**6),
    "lfq-spherical": QuantizerConfig(kind="lfq", codebook_size=2**6, spherical=True),
    "lfq-exact-2cb": QuantizerConfig(kind="lfq", codebook_size=2**5, num_codebooks=2, codebook_entropy="exact"),
    "fsq": QuantizerConfig(kind="fsq", levels=(8, 5, 5, 5)),
    "fsq-2cb": QuantizerConfig(kind="fsq", levels=(4, 3), num_codebooks=2),
    "vq": QuantizerConfig(kind="vq", codebook_size=64, codebook_dim=4),
    "vq-learned": QuantizerConfig(kind="vq", codebook_size=64, codebook_dim=4, ema=False),
}


def test_every_registered_kind_is_covered():
    assert {c.kind for c in KINDS.values()} | {"identity"} == set(QUANTIZER_BUILDERS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_contract(name, tmp_path):
    cfg = KINDS[name]
    q = build_quantizer(16, cfg)
    z = torch.randn(2, 16, 3, 4, 5, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == z.shape
    want = (2, 3, 4, 5) if cfg.num_codebooks == 1 else (2, 3, 4, 5, cfg.num_codebooks)
    assert out.codes.shape == want and out.codes.dtype == torch.long
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < q.codebook_size
    assert q.codebook_size == cfg.effective_codebook_size
    assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    assert {"utilization", "perplexity"} <= set(out.metrics)
    assert 0 < float(out.metrics["utilization"]) <= 1
    # straight-through: gradients reach the input
    (out.quantized.square().sum() + out.aux_loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # codes -> quantized latents, in eval mode exactly what forward returned
    q.eval()
    with torch.no_grad():
        out = q(z)
        assert torch.allclose(q.decode_codes(out.codes), out.quantized, atol=1e-5)
        assert torch.equal(q.codes_from(z), out.codes)
    # save / load
    torch.save(q.state_dict(), tmp_path / "q.pt")
    q2 = build_quantizer(16, cfg)
    q2.load_state_dict(torch.load(tmp_path / "q.pt"))
    q2.eval()
    with torch.no_grad():
        assert torch.equal(q2.codes_from(z), out.codes)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_bad_codes(name):
    q = build_quantizer(16, KINDS[name])
    nc = KINDS[name].num_codebooks
    shape = (1, 2, 2, 2) if nc == 1 else (1, 2, 2, 2, nc)
    with pytest.raises(ValueError, match="out of range"):
        q.decode_codes(torch.full(shape, q.codebook_size))
    with pytest.raises(ValueError, match="out of range"):
        q.decode_codes(torch.full(shape, -1))
    with pytest.raises(ValueError, match="shape"):
        q.decode_codes(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        q.decode_codes(torch.zeros(shape))


def test_quantizer_runs_fp32_under_autocast():
    q = build_quantizer(16, KINDS["lfq"])
    z = torch.randn(1, 16, 1, 2, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert out.aux_loss.dtype == torch.float32


def test_unknown_kind():
    with pytest.raises(ValueError, match="known kinds"):
        build_quantizer(4, QuantizerConfig(kind="rvq"))


def test_lfq_codebook_size_must_be_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        LFQ(8, 1000)


# ------------------------------------------------------------------ LFQ entropy math


def brute_force_lfq_entropies(x, inv_temperature):
    """The original formulation: softmax over all 2^d codes of 2*tau*<x, c> (tokens x 2^d)."""
    d = x.shape[-1]
    codes = torch.arange(2**d)
    bits = ((codes[:, None] >> torch.arange(d - 1, -1, -1)) & 1).float()
    codebook = bits * 2 - 1
    prob = (2 * inv_temperature * x @ codebook.t()).softmax(-1)
    per_sample = -(prob * prob.clamp_min(1e-30).log()).sum(-1).mean()
    avg = prob.mean(0)
    codebook_entropy = -(avg * avg.clamp_min(1e-30).log()).sum()
    return per_sample, codebook_entropy


def test_lfq_entropies_equal_the_full_softmax_formulation():
    torch.manual_seed(1)
    d, tau = 7, 1.5
    q = LFQ(d, 2**d, inv_temperature=tau, soft_clamp_input_value=None, entropy_group_bits=10)
    x = torch.randn(64, d)
    out = q(x.t().reshape(1, d, 1, 8, 8))
    per_sample, cb = brute_force_lfq_entropies(x, tau)
    assert torch.allclose(out.metrics["per_sample_entropy"], per_sample, atol=1e-5)
    assert torch.allclose(out.metrics["codebook_entropy"], cb, atol=1e-5)


def test_exact_codebook_entropy_value_and_gradient_match_autograd():
    torch.manual_seed(2)
    logits = torch.randn(50, 1, 9, dtype=torch.float64) * 2
    a = logits.clone().requires_grad_(True)
    h = exact_codebook_entropy(a, chunk=37)  # chunks that do not divide 2^9
    h.sum().backward()
    b = logits.clone().requires_grad_(True)
    bits = ((torch.arange(2**9)[:, None] >> torch.arange(8, -1, -1)) & 1).double()
    logp = F.logsigmoid(b[:, 0]) @ bits.t() + F.logsigmoid(-b[:, 0]) @ (1 - bits).t()
    avg = logp.exp().mean(0)
    ref = -(avg * avg.log()).sum()
    ref.backward()
    assert torch.allclose(h[0], ref, atol=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_bit_groups_are_exact_for_one_group_and_an_upper_bound_otherwise():
    torch.manual_seed(3)
    logits = torch.randn(200, 1, 8) * 3
    exact = exact_codebook_entropy(logits)
    assert torch.allclose(bit_group_codebook_entropy(logits, 8), exact, atol=1e-4)
    grouped = bit_group_codebook_entropy(logits, 3)
    assert group_sizes(8, 3) == [3, 3, 2]
    assert (grouped >= exact - 1e-4).all()
    # correlated bits: the grouped estimate over-counts, the exact one does not
    corr = torch.randn(200, 1, 1).repeat(1, 1, 8) * 5
    assert bit_group_codebook_entropy(corr, 4) > exact_codebook_entropy(corr) + 0.5


def test_lfq_code_bit_order_is_msb_first():
    q = LFQ(4, 16, soft_clamp_input_value=None)
    z = torch.tensor([1.0, -1.0, -1.0, 1.0]).view(1, 4, 1, 1, 1)  # bits 1 0 0 1
    assert int(q.codes_from(z)) == 0b1001


def test_lfq_entropy_memory_does_not_grow_with_codebook_size():
    """At 2^18 codes the bit-group loss touches only O(N * 2^9) numbers (no N x 2^18 tensor)."""
    q = LFQ(18, 2**18)
    z = torch.randn(1, 18, 1, 32, 32, requires_grad=True)
    out = q(z)
    out.aux_loss.backward()
    assert torch.isfinite(z.grad).all() and float(out.metrics["codebook_entropy"]) > 0


def test_fsq_codes_are_mixed_radix():
    q = FSQ(3, levels=(3, 5, 4))
    assert q.codebook_size == 60
    codes = torch.arange(60).view(1, 3, 4, 5)
    levels = q.decode_codes(codes)  # (1, 3, 3, 4, 5): normalised level values per channel
    half = torch.tensor([1.0, 2.0, 2.0]).view(1, 3, 1, 1, 1)
    digits = (levels * half + half).round().long()
    assert torch.equal((digits * torch.tensor([1, 3, 15]).view(1, 3, 1, 1, 1)).sum(1), codes)
    level = q.decode_codes(torch.tensor([[[[1 + 3 * 2 + 15 * 3]]]]))  # digits (1, 2, 3)
    assert torch.allclose(level.flatten(), torch.tensor([0.0, 0.0, 0.5]))


def test_vq_picks_the_nearest_entry_and_restarts_dead_codes():
    q = VQ(4, codebook_size=8, codebook_dim=4, dead_code_threshold=0.5)
    q.eval()
    z = q.embed[3].view(1, 4, 1, 1, 1) + 1e-3
    assert int(q.codes_from(z)) == 3
    q.train()
    before = q.embed.clone()
    data = torch.randn(1, 4, 1, 8, 8) * 0.01 + 5.0  # far from every entry: one code takes all
    for _ in range(80):
        q(data)
    assert not torch.allclose(q.embed, before)
    # dead entries were re-seeded from the data, so now most entries sit near the data
    assert (q.embed - 5.0).abs().max(dim=1).values.lt(1.0).sum() >= 4
