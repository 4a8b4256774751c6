"""Exponential moving average of a model's parameters, kept on every rank."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = decay * ema + (1 - decay) * param`` after each optimizer step (buffers copied).

    Every process keeps its own EMA; because DDP keeps parameters identical across ranks, the
    EMAs are identical too (tests/training checks this).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, start_step: int = 0):
        self.decay, self.start_step = decay, start_step
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = 0.0 if step <= self.start_step else self.decay
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
