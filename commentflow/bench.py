"""``commentflow bench``: four measurements in one run, on the same machine, side by side.

(a) model only: comments/s of the classifier alone, at several batch sizes, and at the configured
    batch size as the worker runs it (its inference lanes: :mod:`workers.inference`); the ratios
    use the fastest of these at the configured size;
(b) end to end: comments/s through broker -> worker process -> predictions topic + Redis when
    flooded (timed after an untimed warm-up flood, as (a) is timed warm), then p50/p99 latency
    (event ``created_at`` to the prediction read back) at a paced rate of half that throughput
    (a flood would measure only queueing), with the worker's per-stage breakdown
    (``commentflow_stage_seconds``, scraped from its ``/metrics``) and the cores each process
    (and the worker's inference lanes) used during the flood (:mod:`commentflow.cpu_usage`):
    the CPU per comment besides the model, and the most (b)/(a) can be on these cores;
(c) naive baseline: one consumer that parses, classifies, publishes, writes Redis and commits one
    event at a time, on the event loop;
(d) media latency at one fixed offered rate, three phases on one worker: text only; then 20% of
    comments with **new** realistic media (10% a picture of a sentence, 10% a spoken voice note:
    what OCR and speech recognition must read); then the same media again on new comments (the
    caches at work). p50/p99 separately for text-only comments and comments with media.

Prints the table and the ratios the issue sets targets on; saves ``results.json`` and
``bench.png``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from commentflow.cpu_usage import cores_by_role, snapshot, throughput_bound
from commentflow.local import WorkerProcess, read_topic
from commentflow.media_server import MediaServer
from commentflow.produce import produce, synthetic_events
from commentflow.settings import Settings
from commentflow.stack import EmbeddedStack
from model import CommentInput, load_classifier
from streamer.agents import inference_plan, load_worker_classifier
from workers import memory
from workers.aggregates import AggregateStore, PredictionRecord
from workers.inference import InferenceRunner
from workers.metrics import STAGES
from workers.validation import parse_event

__all__ = ["BenchOptions", "run"]

#: The bench's readers long-poll briefly: their own fetch wait is not the pipeline's latency.
READ_WAIT_MS = 10
#: Events of the untimed warm-up flood before (b) is timed (a third of ``--events`` at most).
WARM_FLOOD_MAX = 1000


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What ``commentflow bench`` measures, and where the results go."""

    events: int = 3000  # events for the end-to-end flood (b)
    latency_seconds: float = 15.0  # paced latency phase of (b)
    model_events: int = 1024  # comments per batch size (a)
    naive_events: int = 300  # events for the baseline (c)
    media_rate: float = 5.0  # offered comments/s of every phase of (d); 0 skips (d)
    media_seconds: float = 60.0  # length of each phase of (d)
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128)  # batch sizes for (a)
    out: str | None = None  # output folder (default runs/bench-<time>)


def run(options: BenchOptions, settings: Settings) -> int:
    """Run the four measurements, save ``results.json`` and ``bench.png``; the exit status."""
    out = Path(options.out or f"runs/bench-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    memory.tune()  # the worker's malloc settings (workers.memory): (a) measures the same model
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
    classifier = load_classifier(settings.model_dir, settings.device, precision=settings.precision)
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


async def _model_lanes(settings: Settings, n: int) -> dict[str, Any] | None:
    """The model alone as the worker runs it: loaded on its first inference lane, batches of
    ``batch_max`` on every lane at once (None with one lane: then (a) above is that)."""
    import torch

    lanes, threads = inference_plan(settings)
    if lanes < 2:
        return None
    before = torch.get_num_threads()
    runner = InferenceRunner(
        lambda: load_worker_classifier(settings), lanes=lanes, torch_threads=threads
    )
    await runner.start()
    try:
        size = settings.batch_max
        texts = [e["text"] for e in synthetic_events(n, seed=7)]
        batches = [[CommentInput(t) for t in texts[i : i + size]] for i in range(0, n, size)]
        await asyncio.gather(*(runner.predict(b) for b in batches[:lanes]))  # warm-up
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(runner.predict(b) for b in batches))
        rate = n / (time.perf_counter() - started)
        cpu_ms = 1000 * (time.process_time() - cpu) / n  # this process: the lanes, mostly
    finally:
        await runner.stop()
        # a lane's count is also torch's default for threads that have not used torch yet:
        # the rest of the bench ((a) again, (c) on this thread) runs with the default as before
        torch.set_num_threads(before)
    return {"lanes": lanes, "torch_threads": threads, "rate": rate, "cpu_ms_per_comment": cpu_ms}


# -- (b) end to end --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stages(port: int) -> dict[str, tuple[float, float]]:
    """The worker's ``commentflow_stage_seconds``: stage -> (sum, count)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
        ) as resp,
    ):
        text = await resp.text()
    out: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}
    for family in text_string_to_metric_families(text):
        if family.name != "commentflow_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if stage in out and sample.name.endswith("_sum"):
                out[stage][0] = sample.value
            elif stage in out and sample.name.endswith("_count"):
                out[stage][1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def _breakdown(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Mean milliseconds per observation of each stage between two scrapes."""
    out = {}
    for stage in STAGES:
        total = after[stage][0] - before[stage][0]
        count = after[stage][1] - before[stage][1]
        if count > 0:
            out[stage] = {"mean_ms": 1000 * total / count, "count": count}
    return out


def _worker_settings(settings: Settings, kind: str, **changes: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.replace(
        input_topic=f"{kind}.{tag}.comments",
        predictions_topic=f"{kind}.{tag}.predictions",
        dlq_topic=f"{kind}.{tag}.dlq",
        app_id=f"{kind}-{tag}",
        redis_prefix=f"{kind}:{tag}:",
        web_enabled=True,
        web_port=_free_port(),
        **changes,
    )


async def _first_prediction(s: Settings, tag: str, log: Path) -> None:
    """Warm-up: model loaded and partitions assigned once the first prediction is back."""
    warm = list(synthetic_events(1, seed=99, prefix=f"warm-{tag}"))
    await produce(s.kafka_bootstrap, s.input_topic, warm)
    got = await read_topic(
        s.kafka_bootstrap, s.predictions_topic, until=lambda d: len(d) >= 1, timeout_s=180
    )
    if not got:
        raise RuntimeError("the worker produced no prediction; see " + str(log))


async def _end_to_end(
    settings: Settings, stack: EmbeddedStack, options: BenchOptions, log: Path
) -> dict[str, Any]:
    s = _worker_settings(settings, "bench")
    tag = s.app_id
    await stack.create_topics([s.input_topic, s.predictions_topic, s.dlq_topic])
    worker = WorkerProcess(s, log_path=log).start()
    try:
        await _first_prediction(s, tag, log)
        n = options.events
        # (a) times the model warm (its fastest of two runs); so is (b): the first batches after
        # start-up run slower (the traced graphs specialise on their first shapes, the consumer
        # ramps up its fetches), and a short flood would count that against the pipeline
        warm = min(WARM_FLOOD_MAX, n // 3)
        if warm:
            await produce(
                s.kafka_bootstrap,
                s.input_topic,
                synthetic_events(warm, users=500, seed=3, prefix=f"warm-{tag}"),
            )
            await read_topic(
                s.kafka_bootstrap,
                s.predictions_topic,
                until=lambda d: len(d) >= warm + 1,
                timeout_s=600,
            )
        flood = list(synthetic_events(n, users=500, seed=1, prefix=f"flood-{tag}"))
        bar = tqdm(total=n, desc="(b) end to end, flood", unit="comment")
        flood_before = await _stages(s.web_port)
        roles = _roles(stack, worker)
        cpu_before = snapshot(roles)
        started = time.perf_counter()
        producing = asyncio.create_task(produce(s.kafka_bootstrap, s.input_topic, flood))
        docs = await read_topic(
            s.kafka_bootstrap,
            s.predictions_topic,
            until=lambda d: len(d) >= n + 1 + warm,  # read from the start: warm-up ones too
            timeout_s=600,
            on_message=lambda d, _t: bar.update(str(d.get("comment_id")).startswith("flood-")),
        )
        elapsed = time.perf_counter() - started
        cpu_after = snapshot(roles)
        bar.close()
        await producing
        throughput = (len(docs) - 1 - warm) / elapsed
        cpu = (
            cores_by_role(cpu_before, cpu_after, roles, worker="worker")
            if cpu_before is not None and cpu_after is not None
            else None
        )
        flood_stages = _breakdown(flood_before, await _stages(s.web_port))
        model = flood_stages.get("model", {"mean_ms": 0.0, "count": 0.0})
        # the inference lanes' busy share during the flood (1.0 per lane): one per lane = the
        # pipeline never let the model wait, and what (b) lacks against (a) is the model running
        # slower next to the broker, Redis and the clients on the same cores
        model_busy = model["mean_ms"] * model["count"] / 1000 / elapsed

        rate = max(1.0, throughput / 2)
        m = max(100, int(rate * options.latency_seconds))
        _freeze_heap()
        paced = synthetic_events(m, users=500, seed=2, prefix=f"paced-{tag}")
        latencies: list[float] = []
        timeline: list[tuple[float, float]] = []  # (s since the phase began, ms) in read order
        want = {f"paced-{tag}-2-{i}" for i in range(m)}
        began = time.time()

        def on_message(doc: dict[str, Any], now: float) -> None:
            if doc["comment_id"] in want:
                created = datetime.fromisoformat(doc["created_at"]).timestamp()
                latencies.append((now - created) * 1000)
                timeline.append((round(created - began, 3), round(latencies[-1], 1)))
                bar.update(1)

        before = await _stages(s.web_port)
        bar = tqdm(total=m, desc=f"(b) latency at {rate:.0f}/s", unit="comment")
        producing = asyncio.create_task(produce(s.kafka_bootstrap, s.input_topic, paced, rate=rate))
        await read_topic(
            s.kafka_bootstrap,
            s.predictions_topic,
            until=lambda _d: len(latencies) >= m,
            timeout_s=600,
            on_message=on_message,
            fetch_max_wait_ms=READ_WAIT_MS,
        )
        bar.close()
        await producing
        stages = _breakdown(before, await _stages(s.web_port))
        latencies.sort()
        return {
            "events": n,
            "warm_up_events": warm,
            "throughput": throughput,
            "latency_rate": rate,
            "latency_events": len(latencies),
            "p50_ms": _pct(latencies, 50),
            "p99_ms": _pct(latencies, 99),
            # when the slow ones were sent: a tail from a few stalls shows up as clusters
            "latency_timeline": timeline,
            "batch_max": s.batch_max,
            "stages": stages,
            "flood_stages": flood_stages,
            "flood_model_busy": model_busy,
            # cores used on average during the flood, by role (commentflow.cpu_usage)
            "flood_cores": cpu,
        }
    finally:
        worker.stop()


def _roles(stack: EmbeddedStack, worker: WorkerProcess) -> dict[str, int | None]:
    """The processes whose CPU (b) accounts for: the worker, the embedded broker and Redis
    servers, and this bench process (the producer and the reader of the predictions)."""

    def pid(proc: Any) -> int | None:
        return proc.pid if proc is not None else None

    return {
        "worker": worker.pid,
        "broker": pid(stack.kafka_process),
        "redis": pid(stack.redis_process),
        "redis_cache": pid(stack.redis_cache_process),
        "bench": os.getpid(),
    }


def _freeze_heap() -> None:
    """Take what this process holds now out of the cyclic collector's walks (``gc.freeze``).

    The bench process has loaded torch, transformers and a classifier: a full collection over
    all that paused its event loop, which paces the producer and reads the predictions, for
    ~0.3-0.7 s now and then, and the comments sent around it got that pause added to their
    measured latency (the p99 of a 15 s paced phase), a pause of the bench, not of the worker.
    """
    gc.collect()
    gc.freeze()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# -- (d) media latency: text only, new realistic media, the same media again -----------------

_MEDIA_PHASES = ("text_only", "new_media", "cached_media")


def _media_events(
    n: int, tag: str, phase: str, port: int, with_media: bool
) -> Iterator[dict[str, Any]]:
    """Paced events (``created_at`` set as each is sent); 10% with a picture of a sentence and
    10% with a voice note when ``with_media`` (the same URLs in every phase that has media)."""
    for i, e in enumerate(synthetic_events(n, users=500, seed=4, prefix=f"{phase}-{tag}")):
        if with_media and i % 10 == 0:
            e["media"] = [{"type": "image", "url": f"http://localhost:{port}/meme/{i // 10}.png"}]
        elif with_media and i % 10 == 1:
            e["media"] = [{"type": "audio", "url": f"http://localhost:{port}/voice/{i // 10}.wav"}]
        yield e


async def _media_phase(
    s: Settings, server: MediaServer, phase: str, n: int, rate: float, seconds: float
) -> dict[str, Any]:
    """One paced phase of (d): latencies of text-only comments and of comments with media."""
    _freeze_heap()
    text_ms: list[float] = []
    media_ms: list[float] = []
    errors = 0
    tag, port, with_media = s.app_id, server.port, phase != "text_only"
    has_media = {
        e["comment_id"]: bool(e.get("media"))
        for e in _media_events(n, tag, phase, port, with_media)
    }
    bar = tqdm(total=n, desc=f"(d) {phase} at {rate:g}/s", unit="comment")

    def on_message(doc: dict[str, Any], now: float) -> None:
        nonlocal errors
        media = has_media.get(doc["comment_id"])
        if media is None:
            return
        created = datetime.fromisoformat(doc["created_at"]).timestamp()
        (media_ms if media else text_ms).append((now - created) * 1000)
        errors += len(doc["media_errors"])
        bar.update(1)

    before = await _stages(s.web_port)
    requests = server.requests
    events = _media_events(n, tag, phase, port, with_media)
    producing = asyncio.create_task(produce(s.kafka_bootstrap, s.input_topic, events, rate=rate))
    await read_topic(
        s.kafka_bootstrap,
        s.predictions_topic,
        until=lambda _d: len(text_ms) + len(media_ms) >= n,
        timeout_s=max(600, 4 * seconds),
        on_message=on_message,
        fetch_max_wait_ms=READ_WAIT_MS,
    )
    bar.close()
    await producing
    text_ms.sort()
    media_ms.sort()
    return {
        "text_events": len(text_ms),
        "text_p50_ms": _pct(text_ms, 50),
        "text_p99_ms": _pct(text_ms, 99),
        "media_events": len(media_ms),
        "media_p50_ms": _pct(media_ms, 50),
        "media_p99_ms": _pct(media_ms, 99),
        "media_requests": server.requests - requests,
        "media_errors": errors,
        "stages": _breakdown(before, await _stages(s.web_port)),
    }


async def _media(
    settings: Settings, stack: EmbeddedStack, options: BenchOptions, log: Path
) -> dict[str, Any]:
    rate = options.media_rate
    n = max(20, int(rate * options.media_seconds))
    server = MediaServer()
    await server.start()
    # rendered and spoken before any phase: serving them costs nothing during the measurement
    await server.prepare_realistic(images=(n + 9) // 10, voices=(n + 8) // 10)
    s = _worker_settings(settings, "media", media_allow_hosts="localhost")
    await stack.create_topics([s.input_topic, s.predictions_topic, s.dlq_topic])
    worker = WorkerProcess(s, log_path=log).start()
    try:
        await _first_prediction(s, s.app_id, log)
        out: dict[str, Any] = {
            "rate": rate,
            "events_per_phase": n,
            "image_share": 0.1,
            "audio_share": 0.1,
        }
        for phase in _MEDIA_PHASES:
            out[phase] = await _media_phase(s, server, phase, n, rate, options.media_seconds)
        out["text_p99_new_media_over_text_only"] = (
            out["new_media"]["text_p99_ms"] / out["text_only"]["text_p99_ms"]
        )
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
    lanes = await _model_lanes(settings, options.model_events)
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
        # the model alone again at batch_max, right after (b): the machine may be shared, and
        # the ratio uses the faster of the two measurements (the conservative one)
        again = await asyncio.to_thread(
            _model_only, settings, [settings.batch_max], options.model_events
        )
        lanes_again = await _model_lanes(settings, options.model_events)
        naive = await _naive(s, stack, options.naive_events)
        media = (
            await _media(s, stack, options, out / "worker-media.log")
            if options.media_rate > 0
            else None
        )
    model["batch_max_again"] = again["per_batch_size"][settings.batch_max]
    candidates = [model["per_batch_size"][settings.batch_max], model["batch_max_again"]]
    if lanes is not None and lanes_again is not None:
        model["lanes"] = {
            **lanes,
            "rate_again": lanes_again["rate"],
            "cpu_ms_per_comment_again": lanes_again["cpu_ms_per_comment"],
        }
        candidates += [lanes["rate"], lanes_again["rate"]]
    model_rate = max(candidates)  # the fastest way the model alone ran (the conservative one)
    full_batch_s = settings.batch_max / model_rate  # one full batch of model time
    budget_ms = 1000 * (settings.batch_wait_s + full_batch_s)
    ratios = {
        "e2e_over_model": e2e["throughput"] / model_rate,
        "e2e_over_naive": e2e["throughput"] / naive["throughput"],
        "p99_over_batch_wait_plus_full_batch": e2e["p99_ms"] / budget_ms,
    }
    if media is not None:
        ratios["text_p99_new_media_over_text_only"] = media["text_p99_new_media_over_text_only"]
    budget = _cpu_budget(model.get("lanes"), e2e)
    if budget is not None:
        ratios["e2e_over_model_bound"] = budget["bound"]
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
        "full_batch_model_ms": 1000 * full_batch_s,
        "cpu_budget": budget,
        "ratios": ratios,
    }


def _cpu_budget(lanes: dict[str, Any] | None, e2e: dict[str, Any]) -> dict[str, Any] | None:
    """CPU milliseconds per comment in (b), by role, and the bound they put on (b)/(a).

    The model's CPU per comment is (a)'s (the lanes alone; the lower of its two runs, as the
    ratio takes the faster (a): the lower bound of the two); the rest is
    what the flood's other roles used per comment predicted. ``bound``: everything on this
    machine's cores (the broker, both Redis servers and the worker's own non-model work);
    ``bound_worker_only``: the worker's non-model work alone (the broker and Redis elsewhere,
    as in production). The bench's own producer and reader are left out of both.
    """
    cores = e2e.get("flood_cores")
    if lanes is None or not cores or e2e["throughput"] <= 0:
        return None
    per = {k: 1000 * v / e2e["throughput"] for k, v in cores.items() if k not in ("cores",)}
    model_ms = min(lanes["cpu_ms_per_comment"], lanes.get("cpu_ms_per_comment_again", math.inf))
    rest = per["worker_other"] + per["broker"] + per["redis"] + per["redis_cache"]
    return {
        "model_alone_cpu_ms_per_comment": model_ms,
        "flood_cpu_ms_per_comment": per,  # idle and elsewhere: ms of a core per comment too
        "rest_cpu_ms_per_comment": rest,
        "bound": throughput_bound(model_ms, rest),
        "bound_worker_only": throughput_bound(model_ms, per["worker_other"]),
    }


def _machine() -> dict[str, Any]:
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def _print_stages(stages: dict[str, dict[str, float]], indent: str = "      ") -> None:
    if stages:
        print(
            indent
            + "stages (mean ms): "
            + ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in stages.items())
        )


def _print(r: dict[str, Any]) -> None:
    m, e, n = r["model_only"], r["end_to_end"], r["naive"]
    bm = r["settings"]["batch_max"]
    print(f"\nmodel {m['model']} on {m['device']}; machine {r['machine']}")
    print("(a) model only, comments/s by batch size:")
    for size, rate in m["per_batch_size"].items():
        mark = "  <- configured batch_max" if int(size) == bm else ""
        print(f"      batch {int(size):4d}: {rate:8.1f}{mark}")
    if "batch_max_again" in m:
        print(f"      batch {bm:4d}: {m['batch_max_again']:8.1f}  (again, right after (b))")
    if "lanes" in m:
        ln = m["lanes"]
        print(
            f"      batch {bm:4d}: {ln['rate']:8.1f}, again {ln['rate_again']:.1f}  (the worker's "
            f"{ln['lanes']} inference lanes of {ln['torch_threads']} thread(s) each)"
        )
    print(f"(b) end to end (broker -> worker -> predictions + Redis), {e['events']} events:")
    print(
        f"      throughput {e['throughput']:8.1f} comments/s; the inference lanes busy "
        f"{e.get('flood_model_busy', float('nan')):.0%} of the flood (100% a lane)"
    )
    _print_stages(e.get("flood_stages", {}))
    if e.get("flood_cores"):
        c = e["flood_cores"]
        print(
            "      cores used in the flood: "
            + ", ".join(f"{k} {v:.2f}" for k, v in c.items() if k != "cores")
            + f" (of {c['cores']:.2f})"
        )
    print(
        f"      latency at {e['latency_rate']:.0f}/s: p50 {e['p50_ms']:.0f} ms, "
        f"p99 {e['p99_ms']:.0f} ms ({e['latency_events']} events)"
    )
    _print_stages(e.get("stages", {}))
    print(f"(c) naive baseline, one event at a time: {n['throughput']:8.1f} comments/s")
    d = r.get("media")
    if d:
        print(
            f"(d) media latency at {d['rate']:g}/s ({d['events_per_phase']} comments per phase; "
            "10% a picture of a sentence, 10% a voice note):"
        )
        for phase in _MEDIA_PHASES:
            p = d[phase]
            line = (
                f"      {phase:13s} text p50 {p['text_p50_ms']:6.0f} ms, "
                f"p99 {p['text_p99_ms']:6.0f}"
            )
            if p["media_events"]:
                line += (
                    f" | media p50 {p['media_p50_ms']:6.0f} ms, p99 {p['media_p99_ms']:6.0f}"
                    f" ({p['media_requests']} requests, {p['media_errors']} media errors)"
                )
            print(line)
            _print_stages(p.get("stages", {}), indent="        ")
    ratios = r["ratios"]
    print(
        f"ratios: (b)/(a) at batch {bm} (the fastest (a)) = {ratios['e2e_over_model']:.2f} "
        "(target >= 0.90)   "
        f"(b)/(c) = {ratios['e2e_over_naive']:.2f}"
    )
    print(
        f"        p99 at half the maximum rate / (batch wait + one full batch of model time = "
        f"{1000 * r['settings']['batch_wait_s'] + r['full_batch_model_ms']:.0f} ms) = "
        f"{ratios['p99_over_batch_wait_plus_full_batch']:.2f} (target <= 2)"
    )
    b = r.get("cpu_budget")
    if b:
        alone = b["model_alone_cpu_ms_per_comment"]
        print(
            f"        CPU per comment: the model alone {alone:.2f} ms, "
            f"the rest of (b) {b['rest_cpu_ms_per_comment']:.2f} ms (worker "
            f"{b['flood_cpu_ms_per_comment']['worker_other']:.2f}, broker + Redis "
            f"{b['rest_cpu_ms_per_comment'] - b['flood_cpu_ms_per_comment']['worker_other']:.2f})"
            f" -> (b)/(a) at most {b['bound']:.2f} on these cores "
            f"({b['bound_worker_only']:.2f} with the broker and Redis elsewhere)"
        )
    if "text_p99_new_media_over_text_only" in ratios:
        print(
            "        text p99 with 20% new media / text p99 with none = "
            f"{ratios['text_p99_new_media_over_text_only']:.2f} (target <= 1.5)"
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
