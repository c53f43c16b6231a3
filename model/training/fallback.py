"""``commentflow train-fallback``: a text model's fallback head for languages it was not trained on.

::

    commentflow train-fallback --model models/text-multilingual --data mix:-hutto_amazon

The text head leans on MiniLM, which reads English word pieces; for a language outside the
model's training data it guesses (Chinese, left out of training: 0.51 polarity). The fallback is
a linear probe on the USE-m3 block of the text features alone (:mod:`model.nn.linear_probe`):

1. **fit** on the rows of ``DATA:train`` in ``--train-languages`` (English by default; a row's
   language is its source's, or the detector's for a file), read as the model reads them (its
   normaliser; their USE-m3 features come from the feature cache, the vectors the head trained
   on), for each candidate ``lam`` (:data:`LAMS`);
2. **choose** ``lam`` on a language the probe never saw: the ``--proxy-language`` rows of
   ``DATA:val`` labelled negative or positive (Chinese by default), polarity accuracy (positive
   against negative logit); the English validation macro-F1 is reported beside it;
3. **calibrate** on those same rows: the temperature that minimises their NLL, so the fallback's
   scores are scaled for a language it does not know (served rows keep it; the calibration of
   the other routes leaves it alone);
4. **serve** for USE-m3's languages the model does not declare (``config.json`` ``languages``):
   written into the model directory (:mod:`model.format.fallback_head`).

Validation only: no test row is read. Training on English alone is what makes step 2 honest:
the proxy language is as foreign to the probe as Spanish or Japanese will be.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data.sources import SOURCES
from model.data.specs import load_spec
from model.data.text import DEFAULT_SEED, Example
from model.data.text_features import model_features
from model.encoders.experts import TextExpertsConfig
from model.encoders.multilingual import USEM3_LANGUAGES, MultilingualEncoderConfig
from model.evaluation.calibration import fit_temperature
from model.evaluation.metrics import classification_metrics
from model.format.fallback_head import write_fallback_head
from model.format.text import read_text_dir
from model.nn.linear_probe import LinearProbe, fit_linear_probe
from model.serving.language import LanguageDetector, languages_from_config
from model.serving.normalise import text_normaliser

__all__ = ["LAMS", "train_fallback"]

#: Candidate L2 strengths of the probe (chosen on the proxy language's validation rows).
LAMS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
_POLAR = ("negative", "positive")


def _usem3(text: Any) -> MultilingualEncoderConfig:
    if isinstance(text, MultilingualEncoderConfig):
        return text
    if isinstance(text, TextExpertsConfig):
        for expert in text.experts:
            if isinstance(expert, MultilingualEncoderConfig):
                return expert
    raise SystemExit("train-fallback: the model's text features have no USE-m3 block")


def _languages(rows: Sequence[Example], detector: LanguageDetector) -> list[str]:
    """Each row's language: its source's, or (a file's rows) the detector's."""
    return [
        SOURCES[r.source].language if r.source in SOURCES else detector.detect(r.raw or r.text).code
        for r in rows
    ]


def train_fallback(
    model_dir: str | Path,
    data: str,
    *,
    train_languages: Sequence[str] = ("en",),
    proxy_language: str = "zh",
    lams: Sequence[float] = LAMS,
    cache_dir: str | Path = ".cache/features",
    split_seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Fit, choose ``lam`` and the temperature on validation, write into ``model_dir``; return
    the report."""
    if proxy_language in train_languages:
        raise SystemExit(f"--proxy-language {proxy_language} must not be a training language")
    d = read_text_dir(model_dir)
    labels = list(d.head.config.labels)
    if not set(_POLAR) <= set(labels):
        raise SystemExit(f"train-fallback needs 'negative' and 'positive' labels: {labels}")
    use = _usem3(d.encoder)
    normalise = text_normaliser(getattr(d.encoder, "clean", "v1"))
    detector = LanguageDetector()
    train, _ = load_spec(f"{data}:train", seed=split_seed)
    val, _ = load_spec(f"{data}:val", seed=split_seed)
    train_lang, val_lang = _languages(train, detector), _languages(val, detector)
    fit_rows = [r for r, lang in zip(train, train_lang, strict=True) if lang in train_languages]
    proxy = [
        r
        for r, lang in zip(val, val_lang, strict=True)
        if lang == proxy_language and r.label in _POLAR
    ]
    home = [r for r, lang in zip(val, val_lang, strict=True) if lang in train_languages]
    if not fit_rows or not proxy:
        raise SystemExit(
            f"{data}: no {'/'.join(train_languages)} rows in train or no negative/positive "
            f"{proxy_language} rows in val"
        )
    print(
        f"fallback head: {len(fit_rows)} train rows ({'/'.join(train_languages)}), "
        f"{len(proxy)} {proxy_language} validation rows (a language it never sees), "
        f"{len(home)} validation rows in its own languages"
    )

    def features(rows: Sequence[Example]) -> torch.Tensor:
        texts = [normalise(r.raw or r.text) for r in rows]
        x, _ = model_features(texts, use, Path(cache_dir), progress=True)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    index = {lab: i for i, lab in enumerate(labels)}
    x_fit, x_proxy, x_home = features(fit_rows), features(proxy), features(home)
    y_fit = torch.tensor([index[r.label] for r in fit_rows])
    y_proxy = np.array([index[r.label] for r in proxy])
    y_home = np.array([index[r.label] for r in home])
    pos, neg = index["positive"], index["negative"]

    table: dict[float, dict[str, float]] = {}
    probes: dict[float, LinearProbe] = {}
    for lam in sorted(lams):
        probe = fit_linear_probe(x_fit, y_fit, len(labels), lam=lam, log=print)
        with torch.no_grad():
            zp, zh = probe(x_proxy).numpy(), probe(x_home).numpy()
        polar = float(((zp[:, pos] > zp[:, neg]) == (y_proxy == pos)).mean())
        macro = classification_metrics(y_home, zh.argmax(1), labels)["macro_f1"] if len(home) else 0
        table[float(lam)] = {
            "proxy_polarity_accuracy": round(polar, 4),
            "macro_f1": round(macro, 4),  # the training languages' validation rows
        }
        probes[float(lam)] = probe
        print(
            f"  lam {lam:<7g} {proxy_language} polarity {polar:.4f}, "
            f"own-language macro-F1 {macro:.4f}"
        )
    best = max(table, key=lambda lam: (table[lam]["proxy_polarity_accuracy"], lam))
    probe = probes[best]
    with torch.no_grad():
        z = probe(x_proxy).double().numpy()
    temperature = round(fit_temperature(z, y_proxy), 6)
    serves = sorted(set(USEM3_LANGUAGES) - set(languages_from_config(d.config)))
    report = {
        "trained_languages": sorted(train_languages),
        "fitted_on": f"{data}:train",
        "n_train": len(fit_rows),
        "chosen_on": f"{data}:val ({proxy_language}, negative/positive)",
        "n_val": len(proxy),
        "lam": best,
        "validation": {f"{k:g}": v for k, v in table.items()},
    }
    path = write_fallback_head(
        model_dir,
        probe,
        text=d.encoder,
        labels=labels,
        languages=serves,
        temperature=temperature,
        **report,
    )
    print(f"wrote {path} (lam {best:g}, temperature {temperature:.3f}); serves {', '.join(serves)}")
    return {"temperature": temperature, "languages": serves, **report}
