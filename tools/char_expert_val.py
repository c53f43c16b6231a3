"""The Chinese character expert on validation: clean and with object emoji appended, by weight.

    .venv/bin/python tools/char_expert_val.py --model models/text-multilingual \
        --out docs/eval/text-multilingual/char-expert-val.json

Reads the Chinese (by script) polar rows of ``--data``'s validation split as they are and with
1-3 emoji of things appended (the training list ``OBJECT_EMOJI`` and the unseen
``VALIDATION_OBJECT_EMOJI``, as ``tools/object_emoji_val.py`` does), and prints the polarity
accuracy of the model's head margin plus ``w`` x the expert's log-odds for each weight ``w``
(0: the head alone), with the accuracy drops in points. Validation only: no test row is read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

import numpy as np

from model.data.emoji_set import VALIDATION_OBJECT_EMOJI
from model.data.specs import load_spec
from model.serving import load_classifier
from model.serving.language import script_language
from model.training.char_expert import WEIGHTS


def _tail_fn():  # tools/object_emoji_val.py's emoji tails, one definition
    path = Path(__file__).with_name("object_emoji_val.py")
    spec = importlib.util.spec_from_file_location("object_emoji_val", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.emoji_tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/text-multilingual")
    parser.add_argument("--data", default="mix:-hutto_amazon")
    parser.add_argument("--out", default="runs/char-expert-val.json")
    args = parser.parse_args()
    clf = load_classifier(args.model, device="cpu")
    expert = clf.char_expert
    if expert is None:
        raise SystemExit(f"{args.model} has no character expert")
    clf.char_expert = None  # the head's own margin, unscaled
    clf.temperature = clf.char_temperature = 1.0
    rows, _ = load_spec(f"{args.data}:val")
    val = [r for r in rows if r.label != "neutral" and script_language(r.text) == expert.language]
    y = np.array([r.label == "positive" for r in val])
    tail = _tail_fn()
    clean = [r.text for r in val]
    objects, unseen = random.Random("objects"), random.Random("unseen")
    variants = {
        "clean": clean,
        "objects": [f"{t} {tail(objects)}" for t in clean],
        "unseen_objects": [f"{t} {tail(unseen, VALIDATION_OBJECT_EMOJI)}" for t in clean],
    }
    labels = list(clf.labels)
    pos, neg = labels.index("positive"), labels.index("negative")
    result: dict[str, object] = {"model": args.model, "n": len(val), "by_weight": {}}
    for name, texts in variants.items():
        p = clf.predict_proba(texts).numpy().astype(np.float64)
        margin = np.log(p[:, pos]) - np.log(p[:, neg])
        odds = expert.model([clf.normalise(t) for t in texts]).numpy().astype(np.float64)
        for w in WEIGHTS:
            acc = float(((margin + w * odds > 0) == y).mean())
            result["by_weight"].setdefault(f"{w:g}", {})[name] = round(acc, 4)  # type: ignore[union-attr]
    print(f"{len(val)} Chinese validation rows; polarity accuracy and drops (points)")
    for w, accs in result["by_weight"].items():  # type: ignore[union-attr]
        drops = {k: round(100 * (accs["clean"] - v), 2) for k, v in accs.items() if k != "clean"}
        accs["drops_points"] = drops
        print(f"  weight {w:<5} clean {accs['clean']:.4f}  drops {drops}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
