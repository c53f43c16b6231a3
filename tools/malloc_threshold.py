"""The text model's speed under the worker's malloc settings, old and new, in turns (issue 13).

    .venv/bin/python tools/malloc_threshold.py [--batch 64] [--rounds 4] \\
        [--out docs/malloc-threshold-cpu.json]

``workers.memory.tune`` fixes glibc's mmap threshold. It was 128 KiB; it is now 32 MiB (with a
64 MiB trim threshold). This loads the default model once, on the thread that runs it, and
times ``predict`` on text-only comments at ``--batch`` under each setting in turns (``mallopt``
can change the thresholds at any time), ``--rounds`` times, 1,024 comments a round, so that a
drifting machine load slows both alike. Prints comments/s per setting, the ratio, and the
minor page faults per comment (the cost of a fresh ``mmap``: every page is faulted in and
zero-filled on first touch).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from commentflow.produce import synthetic_events  # noqa: E402
from model.base import CommentInput  # noqa: E402
from model.serving import load_classifier  # noqa: E402
from workers import memory  # noqa: E402

SETTINGS = {
    "mmap 128 KiB (before)": (128 * 1024, 128 * 1024),  # trim threshold: glibc's default
    "mmap 32 MiB, trim 64 MiB (now)": (
        memory.MMAP_THRESHOLD_BYTES,
        memory.TRIM_THRESHOLD_BYTES,
    ),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/multimodal")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=None, help="where to save the JSON (optional)")
    args = p.parse_args()
    memory.tune()
    clf = load_classifier(args.model, "cpu")
    n = 1024
    texts = [e["text"] for e in synthetic_events(n + args.batch, seed=7)]
    clf.predict([CommentInput(t) for t in texts[-args.batch :]])  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in SETTINGS}
    faults: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for r in range(args.rounds):
        for name, (mmap_at, trim_at) in SETTINGS.items():
            memory.set_thresholds(mmap_at, trim_at)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for i in range(0, n, args.batch):
                clf.predict([CommentInput(t) for t in texts[i : i + args.batch]])
            rates[name].append(n / (time.perf_counter() - t0))
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
            print(f"round {r + 1}: {name:32s} {rates[name][-1]:6.1f} comments/s", flush=True)
    before, now = SETTINGS
    result = {
        "model": args.model,
        "batch": args.batch,
        "rounds": args.rounds,
        "comments_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "minor_faults_per_comment": {k: statistics.median(v) for k, v in faults.items()},
        "ratio_now_to_before": statistics.median(rates[now]) / statistics.median(rates[before]),
        "all_rounds": rates,
    }
    print()
    for k in SETTINGS:
        print(
            f"{k:32s} {result['comments_per_s'][k]:6.1f} comments/s (median), "
            f"{result['minor_faults_per_comment'][k]:7.1f} page faults per comment"
        )
    print(f"now / before = {result['ratio_now_to_before']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
