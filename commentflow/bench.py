"""``commentflow bench``: three measurements in one run, on the same machine, side by side.

(a) model only: comments/s of the classifier alone, at several batch sizes;
(b) end to end: comments/s through broker -> worker process -> predictions topic + Redis when
    flooded, then p50/p99 latency (event ``created_at`` to the prediction read back) at a paced
    rate of half that throughput (a flood would measure only queueing);
(c) naive baseline: one consumer that parses, classifies, publishes, writes Redis and commits one
    event at a time, on the event loop;
(d) media: end to end with 20% image and 10% audio comments served by a local HTTP server, cold
    (every media URL new) and warm (the same media again, new comments: the cache at work).

Prints the table and the ratios (b)/(a) and (b)/(c); saves ``results.json`` and ``bench.png``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from commentflow.local import WorkerProcess, read_topic
from commentflow.produce import produce, synthetic_events
from commentflow.settings import Settings
from commentflow.stack import EmbeddedStack
from model import CommentInput, load_classifier
from workers.aggregates import AggregateStore, PredictionRecord
from workers.validation import parse_event

__all__ = ["BenchOptions", "run"]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What ``commentflow bench`` measures, and where the results go."""

    events: int = 3000  # events for the end-to-end flood (b)
    latency_seconds: float = 15.0  # paced latency phase of (b)
    model_events: int = 1024  # comments per batch size (a)
    naive_events: int = 300  # events for the baseline (c)
    media_events: int = 1000  # events for the media run (d); 0 skips it
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128)  # batch sizes for (a)
    out: str | None = None  # output folder (default runs/bench-<time>)


def run(options: BenchOptions, settings: Settings) -> int:
    """Run the four measurements, save ``results.json`` and ``bench.png``; the exit status."""
    out = Path(options.out or f"runs/bench-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(_bench(options, settings, out))
    (out / "results.json").write_text(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    )
    _print(results)
    _plot(results, out / "bench.png")
    print(f"\nsaved {out / 'results.json'} and {out / 'bench.png'}")
    return 0


# -- (a) model only --------------------------------------------------------------------------


def _model_only(settings: Settings, sizes: list[int], n: int) -> dict[str, Any]:
    classifier = load_classifier(settings.model_dir, settings.device)
    texts = [e["text"] for e in synthetic_events(n, seed=7)]
    rates: dict[int, float] = {}
    for size in tqdm(sizes, desc="(a) model only", unit="batch size"):
        count = n if size > 1 else max(64, n // 4)
        classifier.predict([CommentInput(t) for t in texts[:size]])  # warm-up
        started = time.perf_counter()
        for i in range(0, count, size):
            classifier.predict([CommentInput(t) for t in texts[i : i + size]])
        rates[size] = count / (time.perf_counter() - started)
    return {
        "model": f"{classifier.name} {classifier.version}",
        "device": classifier.device,
        "per_batch_size": rates,
    }


# -- (b) end to end --------------------------------------------------------------------------


async def _end_to_end(
    settings: Settings, stack: EmbeddedStack, options: BenchOptions, log: Path
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    s = settings.replace(
        input_topic=f"bench.{tag}.comments",
        predictions_topic=f"bench.{tag}.predictions",
        dlq_topic=f"bench.{tag}.dlq",
        app_id=f"bench-{tag}",
        redis_prefix=f"bench:{tag}:",
        web_enabled=False,
    )
    await stack.create_topics([s.input_topic, s.predictions_topic, s.dlq_topic])
    worker = WorkerProcess(s, log_path=log).start()
    try:
        # warm-up: model loaded and partitions assigned once the first prediction is back
        warm = list(synthetic_events(1, seed=99, prefix=f"warm-{tag}"))
        await produce(s.kafka_bootstrap, s.input_topic, warm)
        got = await read_topic(
            s.kafka_bootstrap, s.predictions_topic, until=lambda d: len(d) >= 1, timeout_s=120
        )
        if not got:
            raise RuntimeError("the worker produced no prediction; see " + str(log))

        n = options.events
        flood = list(synthetic_events(n, users=500, seed=1, prefix=f"flood-{tag}"))
        bar = tqdm(total=n, desc="(b) end to end, flood", unit="comment")
        started = time.perf_counter()
        producing = asyncio.create_task(produce(s.kafka_bootstrap, s.input_topic, flood))
        docs = await read_topic(
            s.kafka_bootstrap,
            s.predictions_topic,
            until=lambda d: len(d) >= n + 1,
            timeout_s=600,
            on_message=lambda _d, _t: bar.update(1),
        )
        elapsed = time.perf_counter() - started
        bar.close()
        await producing
        throughput = (len(docs) - 1) / elapsed

        rate = max(1.0, throughput / 2)
        m = max(100, int(rate * options.latency_seconds))
        paced = synthetic_events(m, users=500, seed=2, prefix=f"paced-{tag}")
        latencies: list[float] = []
        want = {f"paced-{tag}-2-{i}" for i in range(m)}

        def on_message(doc: dict[str, Any], now: float) -> None:
            if doc["comment_id"] in want:
                created = datetime.fromisoformat(doc["created_at"]).timestamp()
                latencies.append((now - created) * 1000)
                bar.update(1)

        bar = tqdm(total=m, desc=f"(b) latency at {rate:.0f}/s", unit="comment")
        producing = asyncio.create_task(produce(s.kafka_bootstrap, s.input_topic, paced, rate=rate))
        await read_topic(
            s.kafka_bootstrap,
            s.predictions_topic,
            until=lambda _d: len(latencies) >= m,
            timeout_s=600,
            on_message=on_message,
        )
        bar.close()
        await producing
        latencies.sort()
        return {
            "events": n,
            "throughput": throughput,
            "latency_rate": rate,
            "latency_events": len(latencies),
            "p50_ms": _pct(latencies, 50),
            "p99_ms": _pct(latencies, 99),
            "batch_max": s.batch_max,
        }
    finally:
        worker.stop()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# -- (d) media, cold and warm cache ----------------------------------------------------------


async def _media(
    settings: Settings, stack: EmbeddedStack, options: BenchOptions, log: Path
) -> dict[str, Any]:
    n = options.media_events
    n_img, n_audio = n // 5, n // 10
    from commentflow.media_server import MediaServer

    server = MediaServer()
    await server.start()
    port = server.port
    tag = uuid.uuid4().hex[:8]
    s = settings.replace(
        input_topic=f"media.{tag}.comments",
        predictions_topic=f"media.{tag}.predictions",
        dlq_topic=f"media.{tag}.dlq",
        app_id=f"media-{tag}",
        redis_prefix=f"media:{tag}:",
        web_enabled=False,
        media_allow_hosts="localhost",
    )
    await stack.create_topics([s.input_topic, s.predictions_topic, s.dlq_topic])
    worker = WorkerProcess(s, log_path=log).start()

    def events(phase: str) -> list[dict[str, Any]]:
        out = list(synthetic_events(n, users=500, seed=4, prefix=f"{phase}-{tag}"))
        for i, e in enumerate(out):
            if i % 10 in (0, 1):  # 20% with an image
                url = f"http://localhost:{port}/photo/{(i // 5) % n_img}.jpg"
                e["media"] = [{"type": "image", "url": url}]
            elif i % 10 == 2:  # 10% with a voice note
                e["media"] = [
                    {
                        "type": "audio",
                        "url": f"http://localhost:{port}/tone/{(i // 10) % n_audio}.wav",
                    }
                ]
        return out

    try:
        warm = list(synthetic_events(1, seed=98, prefix=f"warm-{tag}"))
        await produce(s.kafka_bootstrap, s.input_topic, warm)
        await read_topic(
            s.kafka_bootstrap, s.predictions_topic, until=lambda d: len(d) >= 1, timeout_s=120
        )
        out: dict[str, Any] = {"events": n, "image_share": 0.2, "audio_share": 0.1}
        seen = 1
        for phase in ("cold", "warm"):
            before = server.requests
            bar = tqdm(total=n, desc=f"(d) media, {phase} cache", unit="comment")
            started = time.perf_counter()
            producing = asyncio.create_task(
                produce(s.kafka_bootstrap, s.input_topic, events(phase))
            )
            docs = await read_topic(
                s.kafka_bootstrap,
                s.predictions_topic,
                until=lambda d, k=seen + n: len(d) >= k,
                timeout_s=600,
                on_message=lambda d, _t, b=bar, p=f"{phase}-{tag}": (
                    b.update(1) if d["comment_id"].startswith(p) else None
                ),
            )
            elapsed = time.perf_counter() - started
            bar.close()
            await producing
            fresh = [d for d in docs if d["comment_id"].startswith(f"{phase}-{tag}")]
            seen += n
            out[phase] = {
                "throughput": n / elapsed,
                "media_requests": server.requests - before,
                "media_errors": sum(len(d["media_errors"]) for d in fresh),
            }
        out["warm_over_cold"] = out["warm"]["throughput"] / out["cold"]["throughput"]
        return out
    finally:
        worker.stop()
        await server.stop()


# -- (c) naive baseline ----------------------------------------------------------------------


async def _naive(settings: Settings, stack: EmbeddedStack, n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topic, out_topic = f"naive.{tag}.comments", f"naive.{tag}.predictions"
    await stack.create_topics([topic, out_topic])
    await produce(stack.bootstrap, topic, list(synthetic_events(n, users=500, seed=3)))
    classifier = load_classifier(settings.model_dir, settings.device)
    client = aioredis.Redis.from_url(stack.redis_url)
    store = AggregateStore(
        client,
        prefix=f"naive:{tag}:",
        dedup_ttl_s=3600,
        recent_per_user=20,
        feed_length=200,
        minute_ttl_s=3600,
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=f"naive-{tag}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    done = 0
    bar = tqdm(total=n, desc="(c) naive, one at a time", unit="comment")
    started = None
    try:
        while done < n:
            record = await consumer.getone()
            started = started or time.perf_counter()
            event = parse_event(record.value, max_bytes=settings.max_event_bytes)
            out = classifier.predict([CommentInput(event.text)])[0]
            doc = {"comment_id": event.comment_id, "label": out.label, "scores": out.scores}
            await producer.send_and_wait(out_topic, orjson.dumps(doc), key=record.key)
            await store.apply(
                [
                    PredictionRecord(
                        event.comment_id,
                        event.user_id,
                        out.label,
                        out.modalities,
                        orjson.dumps(doc),
                    )
                ],
                [],
                now_ms=int(time.time() * 1000),
            )
            await consumer.commit()
            done += 1
            bar.update(1)
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        bar.close()
        await consumer.stop()
        await producer.stop()
        await client.aclose()
    return {"events": n, "throughput": n / elapsed}


# -- driver ----------------------------------------------------------------------------------


async def _bench(options: BenchOptions, settings: Settings, out: Path) -> dict[str, Any]:
    sizes = sorted({*options.batch_sizes, settings.batch_max})
    model = await asyncio.to_thread(_model_only, settings, sizes, options.model_events)
    log_dir = Path(tempfile.mkdtemp(prefix="commentflow-bench-"))
    async with EmbeddedStack(partitions=settings.topic_partitions, log_dir=log_dir) as stack:
        # the embedded broker is plaintext: the user's Kafka security settings do not apply
        s = settings.without_kafka_security().replace(
            kafka_bootstrap=stack.bootstrap,
            redis_url=stack.redis_url,
            redis_cache_url=stack.redis_cache_url,
            session_timeout_s=6.0,
            commit_interval_s=0.5,
        )
        e2e = await _end_to_end(s, stack, options, out / "worker.log")
        naive = await _naive(s, stack, options.naive_events)
        media = (
            await _media(s, stack, options, out / "worker-media.log")
            if options.media_events
            else None
        )
    model_rate = model["per_batch_size"][settings.batch_max]
    return {
        "machine": _machine(),
        "settings": {
            "batch_max": settings.batch_max,
            "batch_wait_s": settings.batch_wait_s,
            "partitions": settings.topic_partitions,
            "model_dir": settings.model_dir,
        },
        "model_only": model,
        "end_to_end": e2e,
        "naive": naive,
        "media": media,
        "ratios": {
            "e2e_over_model": e2e["throughput"] / model_rate,
            "e2e_over_naive": e2e["throughput"] / naive["throughput"],
        },
    }


def _machine() -> dict[str, Any]:
    import os
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def _print(r: dict[str, Any]) -> None:
    m, e, n = r["model_only"], r["end_to_end"], r["naive"]
    bm = r["settings"]["batch_max"]
    print(f"\nmodel {m['model']} on {m['device']}; machine {r['machine']}")
    print("(a) model only, comments/s by batch size:")
    for size, rate in m["per_batch_size"].items():
        mark = "  <- configured batch_max" if int(size) == bm else ""
        print(f"      batch {int(size):4d}: {rate:8.1f}{mark}")
    print(f"(b) end to end (broker -> worker -> predictions + Redis), {e['events']} events:")
    print(f"      throughput {e['throughput']:8.1f} comments/s")
    print(
        f"      latency at {e['latency_rate']:.0f}/s: p50 {e['p50_ms']:.0f} ms, "
        f"p99 {e['p99_ms']:.0f} ms ({e['latency_events']} events)"
    )
    print(f"(c) naive baseline, one event at a time: {n['throughput']:8.1f} comments/s")
    print(
        f"ratios: (b)/(a) = {r['ratios']['e2e_over_model']:.2f}   "
        f"(b)/(c) = {r['ratios']['e2e_over_naive']:.2f}"
    )


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = r["model_only"]["per_batch_size"]
    sizes = [int(s) for s in per]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(sizes, list(per.values()), "o-", label="(a) model only")
    ax.axhline(
        r["end_to_end"]["throughput"],
        color="tab:green",
        ls="--",
        label=f"(b) end to end, batch_max={r['settings']['batch_max']}",
    )
    ax.axhline(r["naive"]["throughput"], color="tab:red", ls=":", label="(c) naive, one at a time")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("comments / s")
    ax.set_title(f"commentflow throughput ({r['model_only']['device']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
