"""Tiny random-initialised models for tests: real code paths, no real weights, fast to load.

:func:`make_tiny_model_dir` writes a format-v1 directory; :mod:`model.testing.multimodal` writes
format-v2 ones and registers the ``fake`` encoder source (deterministic fakes of the image
encoder, OCR and ASR) with :mod:`model.encoders.registry`. Production code never imports this
package.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from model.encoders.experts import TextConfig, TextExpertsConfig
from model.encoders.multilingual import MultilingualEncoderConfig
from model.encoders.text import DEFAULT_PACKAGE, TextEncoderConfig, no_hf_progress_bars
from model.format.text import save_model_dir
from model.nn.heads import HeadConfig, MLPHead

__all__ = ["TINY_BERT", "make_tiny_model_dir"]

#: Shape of the tiny encoder (the vocabulary is MiniLM's, so tokenisation is the real one).
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def make_tiny_model_dir(path: str | Path, seed: int = 0, *, usem3: bool = False) -> Path:
    """Write a complete format-v1 model directory with a tiny BERT encoder and a random head;
    ``usem3``: the real USE-m3 (its package's weights, 512-d) as a second expert beside it.

    ``load_classifier(path)`` works on the result; outputs are meaningless but deterministic for
    a given ``seed``. Safe to call repeatedly on the same path (files are overwritten).
    """
    import importlib

    from transformers import BertConfig, BertModel

    out = Path(path)
    pkg_dir = Path(importlib.import_module(DEFAULT_PACKAGE).get_model_path())
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, pad_token_id=0, **TINY_BERT)
    bert = BertModel(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        with no_hf_progress_bars():
            bert.save_pretrained(str(src), safe_serialization=True)
        for name in _TOKENIZER_FILES:
            if (pkg_dir / name).is_file():
                (src / name).write_bytes((pkg_dir / name).read_bytes())
        enc_cfg: TextConfig = TextEncoderConfig(
            source="path",
            package=None,
            path="text_encoder",
            max_length=64,
            pooling="mean",
            dim=TINY_BERT["hidden_size"],
        )
        if usem3:
            enc_cfg = TextExpertsConfig((enc_cfg, MultilingualEncoderConfig()))
        head = MLPHead(HeadConfig(in_dim=enc_cfg.out_dim, hidden_dim=16, dropout=0.0)).eval()
        save_model_dir(
            out,
            name="tiny-test",
            version=f"0.0.0+seed{seed}",
            encoder=enc_cfg,
            heads={"sentiment": head},
            encoder_src=src,
            metrics={"note": "random weights, for tests only"},
            model_card="# tiny-test\n\nRandom weights for tests. Predictions mean nothing.\n",
        )
    return out
