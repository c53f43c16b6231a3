"""A frozen encoder's forward pass as one TorchScript graph (on a CPU), for speed and the GIL.

In eager mode every torch op of a forward pass returns to Python and takes the GIL back: about a
hundred times per MiniLM call. A worker runs the model on two inference lanes next to its event
loop, so each return waits for the GIL; with small batches (a stream at a moderate rate) the
lanes spent a third of their time waiting (``commentflow bench``: 1,400 voluntary context
switches per second per lane). A traced graph runs in C++ and holds the GIL once per call:
measured here, two lanes at batch 24 next to a busy Python thread classify 361 texts/s traced
against 55 eager, and alone the graph is also faster (MiniLM in bfloat16 on one thread: 247 vs
175 texts/s at batch 1, 570 vs 498 at batch 64), with identical outputs.

The graph is traced once, at load, on an example with padding: the encoders' attention masks
then stay in the graph (a trace on unpadded input could drop them). It is traced under the
encoder's precision (:mod:`model.precision`), so the bfloat16 casts are part of the graph and it
is called without autocast (calling it under autocast made it slower than eager).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from model.precision import autocast

__all__ = ["trace_forward"]


def trace_forward(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    *,
    device: str,
    precision: str,
) -> Callable[..., torch.Tensor]:
    """``module``'s forward, traced on ``example`` (a batch whose rows need padding) under
    ``precision``; call it without autocast, under ``torch.inference_mode()``, with inputs of
    the same kinds as ``example``'s (any batch size and length)."""
    with warnings.catch_warnings(), torch.inference_mode(), autocast(device, precision):
        warnings.simplefilter("ignore")  # TracerWarning: the branches it notes are fixed here
        return torch.jit.trace(module.eval(), example, check_trace=False, strict=False)
