"""Can one temperature be calibrated on a familiar source and on a new one? (validation only)

    .venv/bin/commentflow train --data mix:-rt_snippets-hutto_movies $RECIPE --out runs/no-movies
    .venv/bin/commentflow train --data mix:-hutto_amazon-hutto_nyt $RECIPE --out runs/no-nyt
    .venv/bin/python tools/unseen_calibration.py --model models/text-multilingual \
        --calibrate-on mix:-hutto_amazon:val \
        --unseen runs/no-movies=mix:rt_snippets+hutto_movies:val \
        --unseen runs/no-nyt=mix:hutto_nyt:val \
        --out docs/eval/text-multilingual/unseen-calibration.json

The served temperature of the text route is fitted on the validation rows of the sources the
model trained on. Every independent test set is a source it never saw, so this tool asks what
the scores of a *new* source want, with stand-ins: the same recipe trained without a source (the
movie reviews; the NYT sentences), scored on its validation rows (``--unseen MODEL=SPEC``). Only
text-route rows are used (the head; the character expert's and the fallback's rows have their
own temperatures), as raw head logits (the members' mean, before any temperature), with each
row's ensemble spread (the mean L1 distance of the members' softmax to their mean: the head is
an ensemble of ``--members`` MLPs, and they disagree more on what they never saw).

It reports the ECE of every group under: the in-domain temperature (as served), ``T = 1``, the
temperature that minimises the mean of the groups' NLLs
(:func:`~model.evaluation.calibration.fit_shared_temperature`; with one stand-in, what
``commentflow evaluate --calibrate-unseen`` fits, which pools several into one group), each new
source's own, and a per-row temperature ``T0 * (1 + alpha * spread)`` fitted the same way (grid
search), also fitted on random halves of every group and scored on the other halves and, with
two or more new sources, fitted without each one and scored on it (the honest test: the next new
source is none of these). ``$RECIPE`` is the head's recipe (``ML_TRAIN`` in the Makefile without
its ``--data``). A picture of ECE against ``T`` for every group is saved beside the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data.specs import load_spec
from model.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_shared_temperature,
    fit_temperature,
    nll,
)
from model.format.calibration import ROUTE_TEXT
from model.serving import load_classifier

T0_GRID = np.round(np.arange(0.30, 1.5001, 0.02), 2)
DEFAULT_UNSEEN = "runs/no-movies=mix:rt_snippets+hutto_movies:val"
ALPHA_GRID = np.round(np.arange(0.0, 40.001, 0.5), 1)


def head_rows(model: str, spec: str) -> dict[str, np.ndarray]:
    """The text-route rows of ``spec`` as ``model``'s head scores them: raw logits (the
    members' mean), each row's ensemble spread, and the label ids."""
    clf: Any = load_classifier(model, device="cpu")
    rows, _ = load_spec(spec)
    texts = [r.text for r in rows]
    feats, _ = clf.head_features(texts, progress=True)
    with torch.inference_mode():
        members = clf.head.member_logits(feats).float().cpu().numpy()  # (M, N, C)
    p = np.exp(members - members.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    spread = np.abs(p - p.mean(0)).sum(-1).mean(0)  # (N,)
    keep = clf.routes_of_texts(texts) == ROUTE_TEXT
    y = np.array([list(clf.labels).index(r.label) for r in rows], dtype=np.int64)
    return {"z": members.mean(0)[keep], "spread": spread[keep], "y": y[keep]}


def _ece(g: dict[str, np.ndarray], t: float | np.ndarray) -> float:
    return round(expected_calibration_error(apply_temperature(g["z"], t), g["y"]), 4)


def fit_spread(groups: list[dict[str, np.ndarray]]) -> tuple[float, float]:
    """``(T0, alpha)`` on the grids minimising the mean NLL of the groups under
    ``T = T0 * (1 + alpha * spread)``."""
    best = (np.inf, 1.0, 0.0)
    for t0 in T0_GRID:
        for alpha in ALPHA_GRID:
            f = sum(nll(g["z"], g["y"], t0 * (1 + alpha * g["spread"])) for g in groups)
            best = min(best, (f / len(groups), float(t0), float(alpha)))
    return best[1], best[2]


def _half(g: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in g.items()}


def _name(spec: str) -> str:
    """``mix:rt_snippets+hutto_movies:val`` -> ``unseen rt_snippets+hutto_movies``."""
    parts = spec.split(":")
    return "unseen " + (parts[1] if parts[0] == "mix" and len(parts) > 1 else spec)


def _spread_t(g: dict[str, np.ndarray], t0: float, alpha: float) -> np.ndarray:
    return t0 * (1 + alpha * g["spread"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/text-multilingual")
    ap.add_argument("--calibrate-on", default="mix:-hutto_amazon:val")
    ap.add_argument(
        "--unseen",
        action="append",
        default=None,
        metavar="MODEL=SPEC",
        help="a model trained without a source, and that source's validation rows (repeatable; "
        f"default {DEFAULT_UNSEEN})",
    )
    ap.add_argument("--halves", type=int, default=10, help="random half splits to score")
    ap.add_argument("--out", default="docs/eval/text-multilingual/unseen-calibration.json")
    args = ap.parse_args()
    pairs = [u.partition("=")[::2] for u in args.unseen or [DEFAULT_UNSEEN]]
    groups = {"familiar": head_rows(args.model, args.calibrate_on)}
    for model, spec in pairs:
        groups[_name(spec)] = head_rows(model, spec)
    fam = groups["familiar"]
    every = list(groups.values())
    t_in = fit_temperature(fam["z"], fam["y"])
    t_shared = fit_shared_temperature([(g["z"], g["y"]) for g in every])
    t0, alpha = fit_spread(every)
    options = {
        f"in-domain T {t_in:.3f} (as served)": t_in,
        "T = 1": 1.0,
        f"shared T {t_shared:.3f}": t_shared,
    }
    for k, g in list(groups.items())[1:]:
        own = fit_temperature(g["z"], g["y"])
        options[f"{k}'s own T {own:.3f}"] = own
    table = {name: {k: _ece(g, t) for k, g in groups.items()} for name, t in options.items()}
    table[f"spread T0 {t0:.2f} alpha {alpha:.1f}"] = {
        k: _ece(g, _spread_t(g, t0, alpha)) for k, g in groups.items()
    }
    rng = np.random.default_rng(0)
    scored = []
    for _ in range(args.halves):  # fit on half of every group, score the other halves
        splits = {k: rng.permutation(len(g["y"])) for k, g in groups.items()}
        a, b = fit_spread([_half(g, splits[k][: len(g["y"]) // 2]) for k, g in groups.items()])
        row = {"t0": a, "alpha": b}
        for k, g in groups.items():
            h = _half(g, splits[k][len(g["y"]) // 2 :])
            row[k] = _ece(h, _spread_t(h, a, b))
        scored.append(row)
        print("half: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    report: dict[str, Any] = {
        "model": args.model,
        "groups": {"familiar": {"model": args.model, "spec": args.calibrate_on}}
        | {_name(s): {"model": m, "spec": s} for m, s in pairs},
        "n": {k: len(g["y"]) for k, g in groups.items()},
        "spread_mean": {k: round(float(g["spread"].mean()), 4) for k, g in groups.items()},
        "accuracy": {
            k: round(float((g["z"].argmax(1) == g["y"]).mean()), 4) for k, g in groups.items()
        },
        "ece": table,
        "spread_fit_on_halves": {
            "halves": args.halves,
            **{k: round(float(np.mean([r[k] for r in scored])), 4) for k in scored[0]},
        },
    }
    if len(pairs) > 1:  # each new source scored by a fit that never saw it
        report["spread_fit_without_the_source"] = {}
        for k in list(groups)[1:]:
            a, b = fit_spread([g for n, g in groups.items() if n != k])
            report["spread_fit_without_the_source"][k] = {
                "t0": a,
                "alpha": b,
                "ece": _ece(groups[k], _spread_t(groups[k], a, b)),
                "ece_shared_t_without_it": _ece(
                    groups[k],
                    fit_shared_temperature([(g["z"], g["y"]) for n, g in groups.items() if n != k]),
                ),
                "ece_as_served": _ece(groups[k], t_in),
            }
    width = max(len(n) for n in table) + 2
    print(f"{'temperature':<{width}}" + "".join(f"{k:>34}" for k in groups))
    for name, row in table.items():
        print(f"{name:<{width}}" + "".join(f"{row[k]:>34.4f}" for k in groups))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("spread_fit")}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _plot(groups, options, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(groups: dict[str, dict[str, np.ndarray]], marks: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.geomspace(0.5, max(2.0, 1.15 * max(marks.values())), 90)
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for name, g in groups.items():
        ax.plot(ts, [_ece(g, t) for t in ts], label=f"{name} (n={len(g['y'])})")
    for name, t in marks.items():
        ax.axvline(t, color="grey", lw=0.8, ls=":")
        ax.text(t, ax.get_ylim()[1] * 0.97, name.split(" (")[0], rotation=90, fontsize=7,
                va="top", ha="right")  # fmt: skip
    ax.axhline(0.05, color="red", lw=0.8, ls="--", label="target 0.05")
    ax.set_xscale("log")
    ax.set(xlabel="temperature T (text route, log scale)", ylabel="ECE (15 bins)",
           title="One temperature: familiar sources vs a source never trained on")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
