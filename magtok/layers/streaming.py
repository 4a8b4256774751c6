"""Opt-in streaming state for causal modules.

A :class:`StreamingModule` keeps a ``dict`` of state only between :func:`start_streaming` and
:func:`stop_streaming` (the tokenizer's ``with tok.streaming():``). Outside that window
``self._stream is None`` and ``forward`` is a pure function of its input.
"""

from __future__ import annotations

import torch
from torch import nn


class StreamingModule(nn.Module):
    """Base class of modules that carry context from one chunk to the next while streaming."""

    _stream: dict | None = None

    @property
    def streaming(self) -> bool:
        return self._stream is not None


def start_streaming(root: nn.Module) -> None:
    for m in root.modules():
        if isinstance(m, StreamingModule):
            if m._stream is not None:
                raise RuntimeError("streaming is already active on this model; streaming contexts do not nest")
            m._stream = {}


def stop_streaming(root: nn.Module) -> None:
    for m in root.modules():
        if isinstance(m, StreamingModule):
            m._stream = None


def causal_time_pad(module: StreamingModule, x: torch.Tensor, pad: int, mode: str = "constant",
                    key: str = "ctx") -> torch.Tensor:
    """Prepend ``pad`` frames of left context along time (dim 2) of ``x`` (B, C, T, ...).

    First chunk (or no streaming): zeros (``mode="constant"``) or copies of the first frame
    (``mode="replicate"``). Later chunks while streaming: the last ``pad`` frames of the previous
    chunk's padded input, so chunked processing equals whole-clip processing::

        whole:   [p p | f0 f1 f2 f3 f4 f5]
        chunked: [p p | f0 f1 f2] [f1 f2 | f3 f4 f5]   (context carried in module._stream)
    """
    if pad == 0:
        return x
    state = module._stream
    if state is not None and key in state:
        left = state[key]
    elif mode == "replicate":
        left = x[:, :, :1].expand(-1, -1, pad, *x.shape[3:])
    else:
        left = x.new_zeros(x.shape[0], x.shape[1], pad, *x.shape[3:])
    x = torch.cat((left, x), dim=2)
    if state is not None:
        # a copy, not a view: a view would keep the whole padded chunk alive until the next chunk
        state[key] = x[:, :, x.shape[2] - pad:].clone()
    return x
