"""Load weights of a ``magvit2_pytorch.VideoTokenizer`` (magvit2-pytorch 0.5.1) into magtok.

    from magtok.models.peer import from_magvit2_pytorch
    tok = from_magvit2_pytorch(peer.state_dict(), dict(image_size=128, layers=..., codebook_size=2**18))

The peer need not be installed: only its state dict and the keyword arguments it was built with
are read. Differences kept on purpose (magtok does not copy the peer's bugs):

* Temporal downsampling pads time by 1 on the left (the peer pads by 2, so its first latent frame
  sees no input frame and its last frames reach no latent). Parity holds against the peer with
  that padding patched to (1, 0) (``magtok.testing.peer.patch_peer_time_padding``).
* ``pad_mode="replicate"`` applies to every causal conv in magtok; the peer applies it only to
  the input and output convs. Parity holds for the default ``pad_mode="constant"``.
* Conditioned attention layers: the peer feeds the expanded condition (dim_cond * expansion) into
  norms built for dim_cond and fails; magtok sizes them for the expanded condition. Only
  ``cond_residual`` weights are mapped among the conditioned layers.
* The peer builds a LayerNorm before the quantizer but never applies it: ``encode`` zips its
  L+1 encoder layers with an L-long list, dropping the last one. magtok applies the norm
  (``prequant_norm="layernorm"``); parity holds against the peer's latents passed through its own
  norm module (``peer.encoder_layers[-1]``).
* The discriminator and VGG held inside the peer's tokenizer are not part of a magtok tokenizer.
"""

from __future__ import annotations

from typing import Callable

import torch

from magtok.configs import QuantizerConfig, TokenizerConfig, normalize_layers
from magtok.models.blocks import parse_entry
from magtok.models.tokenizer import VideoTokenizer

# peer VideoTokenizer.__init__ defaults that matter for the architecture
PEER_DEFAULTS = dict(
    layers=("residual", "residual", "residual"), residual_conv_kernel_size=3, num_codebooks=1,
    codebook_size=None, channels=3, init_dim=64, max_dim=None, dim_cond=None,
    dim_cond_expansion_factor=4.0, input_conv_kernel_size=(7, 7, 7), output_conv_kernel_size=(3, 3, 3),
    pad_mode="constant", lfq_entropy_loss_weight=0.1, lfq_commitment_loss_weight=1.0,
    lfq_diversity_gamma=2.5, lfq_spherical=False, lfq_soft_clamp_input_value=10.0, use_fsq=False,
    fsq_levels=None, attn_dim_head=32, attn_heads=8, linear_attn_dim_head=8, linear_attn_heads=16,
    separate_first_frame_encoding=False,
)


def config_from_peer_kwargs(**kwargs) -> TokenizerConfig:
    """The magtok config equivalent to ``magvit2_pytorch.VideoTokenizer(**kwargs)``."""
    known = set(PEER_DEFAULTS) | {"image_size", "attn_dropout", "flash_attn", "perceptual_loss_weight",
                                  "use_gan", "vgg", "vgg_weights", "discr_kwargs", "multiscale_discrs",
                                  "adversarial_loss_weight", "grad_penalty_loss_weight",
                                  "multiscale_adversarial_loss_weight", "quantizer_aux_loss_weight",
                                  "lfq_activation"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown magvit2-pytorch VideoTokenizer argument(s) {unknown}")
    a = {**PEER_DEFAULTS, **kwargs}
    if a["max_dim"] == float("inf"):
        a["max_dim"] = None
    if a["use_fsq"]:
        quantizer = QuantizerConfig(kind="fsq", levels=tuple(a["fsq_levels"]), num_codebooks=a["num_codebooks"])
    else:
        quantizer = QuantizerConfig(
            kind="lfq", codebook_size=a["codebook_size"], num_codebooks=a["num_codebooks"],
            entropy_loss_weight=a["lfq_entropy_loss_weight"],
            commitment_loss_weight=a["lfq_commitment_loss_weight"], diversity_gamma=a["lfq_diversity_gamma"],
            spherical=a["lfq_spherical"], soft_clamp_input_value=a["lfq_soft_clamp_input_value"])
    size = a.get("image_size", 128)
    return TokenizerConfig(
        name="from-magvit2-pytorch", channels=a["channels"], layers=normalize_layers(a["layers"]),
        init_dim=a["init_dim"], max_dim=a["max_dim"], input_conv_kernel_size=tuple(a["input_conv_kernel_size"]),
        output_conv_kernel_size=tuple(a["output_conv_kernel_size"]),
        residual_conv_kernel_size=a["residual_conv_kernel_size"], pad_mode=a["pad_mode"],
        attn_heads=a["attn_heads"], attn_dim_head=a["attn_dim_head"], num_memory_kv=4,
        linear_attn_heads=a["linear_attn_heads"], linear_attn_dim_head=a["linear_attn_dim_head"],
        dim_cond=a["dim_cond"], dim_cond_expansion_factor=a["dim_cond_expansion_factor"],
        separate_first_frame_encoding=a["separate_first_frame_encoding"], quantizer=quantizer,
        image_size=(size, size) if isinstance(size, int) else tuple(size))


# (peer suffix, magtok suffix) pairs per block type; "enc"/"dec" where the two sides differ
_RESIDUAL = [("fn.0.conv.", "conv.conv."), ("fn.2.", "proj."), ("fn.4.to_k.", "se.to_k."),
             ("fn.4.net.0.", "se.fc1."), ("fn.4.net.2.", "se.fc2.")]
_ATTN = [("mem_kv", "mem_kv"), ("norm.gamma", "norm.gamma"), ("to_qkv.0.", "to_qkv."),
         ("to_out.1.", "to_out.")]
_LINEAR = [("norm.gamma", "norm.gamma"), ("attn.to_q.0.", "to_q."), ("attn.to_kv.0.", "to_kv."),
           ("attn.to_out.0.", "to_out.")]
_FF = [("norm.gamma", "norm.gamma"), ("net.0.", "proj_in."), ("net.2.", "proj_out.")]


def _prefixed(pairs, peer_prefix: str, mine_prefix: str):
    return [(peer_prefix + p, mine_prefix + m) for p, m in pairs]


def _block_rules(name: str, params: tuple, side: str) -> list[tuple[str, str]]:
    if name == "residual":
        return _RESIDUAL
    if name == "consecutive_residual":
        return [r for j in range(params[0]) for r in _prefixed(_RESIDUAL, f"{j}.", f"blocks.{j}.")]
    if name in ("compress_space", "compress_time"):
        return [("conv.", "conv.")] if side == "enc" else [("net.0.", "conv.")]
    if name == "attend_space":
        return _prefixed(_ATTN, "0.fn.", "attn.") + _prefixed(_FF, "1.fn.", "ff.")
    if name == "attend_time":
        return _prefixed(_ATTN, "0.fn.fn.", "attn.fn.") + _prefixed(_FF, "1.fn.fn.", "ff.fn.")
    if name == "linear_attend_space":
        return _prefixed(_LINEAR, "0.fn.", "attn.") + _prefixed(_FF, "1.fn.", "ff.")
    if name == "gateloop_time":
        return [("fn.fn.norm.gamma", "norm.gamma"), ("fn.fn.to_qkva.0.", "to_qkva.")]
    if name == "cond_residual":
        return [("to_cond.", "to_cond."), ("conv.weights", "conv.weight"), ("conv_out.", "proj.")]
    raise ValueError(f"loading peer weights for layer type {name!r} is not supported "
                     "(see magtok.models.peer for the reason)")


def _rename(peer_key: str, rules: list[tuple[str, str]]) -> str | None:
    for p, m in rules:
        if peer_key.startswith(p):
            return m + peer_key[len(p):]
    return None


def peer_key_map(config: TokenizerConfig, peer_keys) -> dict[str, str]:
    """peer state-dict key -> magtok key for every weight of a peer tokenizer built like ``config``."""
    entries = [parse_entry(e) for e in config.layers]
    n = len(entries)
    top: list[tuple[str, Callable[[str], str | None]]] = [
        ("conv_in.", lambda k: "encoder.conv_in." + k),
        ("conv_out.", lambda k: "decoder.conv_out." + k),
        ("conv_in_first_frame.", lambda k: "encoder.conv_in_first_frame." + k),
        ("conv_out_first_frame.", lambda k: "decoder.conv_out_first_frame." + k),
        ("encoder_cond_in.", lambda k: "encoder.cond_in." + k),
        ("decoder_cond_in.", lambda k: "decoder.cond_in." + k),
        ("quantizers.project_in.", lambda k: "quantizer.project_in." + k),
        ("quantizers.project_out.", lambda k: "quantizer.project_out." + k),
        (f"encoder_layers.{n}.1.", lambda k: "encoder.norm_out.norm." + k),
    ]
    mapping = {}
    for key in peer_keys:
        if key.startswith(("discr.", "multiscale_discrs.", "vgg.")) or key == "quantizers.mask":
            continue
        target = None
        for prefix, fn in top:
            if key.startswith(prefix):
                target = fn(key[len(prefix):])
                break
        if target is None:
            for side, peer_root, mine_root in (("enc", "encoder_layers.", "encoder.blocks."),
                                                ("dec", "decoder_layers.", "decoder.blocks.")):
                if key.startswith(peer_root):
                    idx_str, rest = key[len(peer_root):].split(".", 1)
                    idx = int(idx_str)
                    spec_idx = idx if side == "enc" else n - 1 - idx
                    name, params = entries[spec_idx]
                    sub = _rename(rest, _block_rules(name, params, side))
                    target = None if sub is None else f"{mine_root}{idx}.{sub}"
        if target is None:
            raise ValueError(f"peer weight {key!r} has no counterpart in magtok for layers {config.layers}")
        mapping[key] = target
    return mapping


def from_magvit2_pytorch(state_dict: dict, peer_kwargs: dict) -> VideoTokenizer:
    """Build the magtok tokenizer equivalent to a magvit2-pytorch 0.5.1 tokenizer.

    ``state_dict``: the peer's ``state_dict()``; ``peer_kwargs``: the keyword arguments it was
    constructed with. Every tokenizer weight must be mapped and every magtok weight filled.
    """
    config = config_from_peer_kwargs(**peer_kwargs)
    model = VideoTokenizer(config)
    mapping = peer_key_map(config, state_dict.keys())
    ours = model.state_dict()
    converted = {}
    for peer_key, key in mapping.items():
        if key not in ours:
            raise ValueError(f"peer weight {peer_key!r} maps to {key!r}, which this magtok model lacks")
        value = state_dict[peer_key]
        if value.shape != ours[key].shape:
            raise ValueError(f"peer weight {peer_key!r} has shape {tuple(value.shape)}; magtok's {key!r} "
                             f"has {tuple(ours[key].shape)}: were the peer kwargs the ones it was built with?")
        converted[key] = value
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise ValueError(f"magtok weights not found in the peer state dict: {missing[:8]}")
    model.load_state_dict(converted)
    return model


def from_peer_module(peer_tokenizer, **peer_kwargs) -> VideoTokenizer:
    """Convenience: ``from_magvit2_pytorch(peer.state_dict(), peer_kwargs)``."""
    with torch.no_grad():
        return from_magvit2_pytorch(peer_tokenizer.state_dict(), peer_kwargs)
