"""Identity quantizer: no quantization, so the autoencoder can be trained and tested alone."""

from __future__ import annotations

import torch

from magtok.quantizers.base import Quantizer, QuantizerOutput


class IdentityQuantizer(Quantizer):
    codebook_size = 1

    def forward(self, z: torch.Tensor, compute_loss: bool = True) -> QuantizerOutput:
        b, _, t, h, w = z.shape
        codes = torch.zeros(b, t, h, w, dtype=torch.long, device=z.device)
        return QuantizerOutput(z, codes, z.new_zeros(()), {})

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise ValueError("the identity quantizer has no codes to decode; decode latents with "
                         "VideoTokenizer.decode_latents(z) instead")
