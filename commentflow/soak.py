"""``commentflow soak``: one worker under mixed, partly hostile traffic; its memory over time.

Starts the embedded stack, a :class:`~commentflow.media_server.MediaServer` and ONE
``commentflow worker`` subprocess with the default settings (only the names, the stack, a free
web port, a 6 s session timeout and what loopback media needs are set), then offers
:class:`~commentflow.soak_traffic.Traffic` at a fixed rate for ``--minutes``. Every
``--sample-s`` it prints one row: the worker's RSS (``/proc/PID/status``), threads, open files
and CPU, Redis ``used_memory`` of the state Redis (and the cache Redis when the stack has one),
what was produced, predicted and dead-lettered, and the backlog (outcomes still due).

At the end it stops producing, waits for the backlog to drain (bounded), stops the worker with
SIGTERM and prints the summary: RSS at the end of warm-up, its maximum and its end value, growth
after warm-up in % and the least-squares slope (MB/hour) over the post-warm-up samples; the same
for Redis; and the outcome check (every valid comment predicted, every malformed message
dead-lettered; duplicates reported). ``soak.json`` and ``soak.png`` go to ``--out``.

Exit status: 0 when every outcome is there and the worker never died, 1 otherwise.

The numbers are for reading (the README quotes a 30-minute run); nothing here is a timing test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from commentflow.bench import _machine
from commentflow.cpu_usage import TICKS_PER_S, stat_ticks
from commentflow.local import WorkerProcess
from commentflow.media_server import MediaServer
from commentflow.settings import Settings
from commentflow.soak_traffic import Ledger, Traffic
from commentflow.stack import EmbeddedStack, free_port

__all__ = ["SoakConfig", "print_report", "soak"]

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


@dataclass(frozen=True, slots=True)
class SoakConfig:
    minutes: float = 30.0
    rate: float = 20.0  # offered messages per second
    sample_s: float = 10.0
    warmup_minutes: float | None = None  # default: max(1 min, 20% of the run)
    users: int = 2000
    seed: int = 0
    drain_s: float = 120.0  # longest wait for the backlog after producing stops
    ready_timeout_s: float = 300.0  # the worker's first prediction (model load)
    max_restarts: int = 3  # a worker that died is started again (as a process manager would)
    exclude: frozenset[str] = frozenset()
    media_hosts: tuple[str, ...] = ("media.soak.test",)
    wildcard_domain: str = "wild.soak.test"

    @property
    def warmup_s(self) -> float:
        if self.warmup_minutes is not None:
            return self.warmup_minutes * 60
        return max(60.0, 0.2 * self.minutes * 60)


# -- probes --------------------------------------------------------------------------------------


def process_stats(pid: int | None) -> dict[str, float | None]:
    """RSS and its high-water mark (MB), threads, open descriptors and CPU seconds of ``pid``."""
    out: dict[str, float | None] = {
        "rss_mb": None,
        "hwm_mb": None,
        "threads": None,
        "fds": None,
        "cpu_s": None,
    }
    if pid is None:
        return out
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "VmRSS":
                out["rss_mb"] = int(rest.split()[0]) / 1024
            elif name == "VmHWM":
                out["hwm_mb"] = int(rest.split()[0]) / 1024
            elif name == "Threads":
                out["threads"] = int(rest)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        out["cpu_s"] = stat_ticks(f"/proc/{pid}/stat")[1] / TICKS_PER_S  # utime + stime
    except (OSError, ValueError, IndexError):
        pass  # the process is gone (or not Linux): the row shows blanks
    return out


async def redis_stats(client: aioredis.Redis) -> dict[str, Any]:
    try:
        memory = await client.info("memory")
        stats = await client.info("stats")
        keys = await client.dbsize()
    except Exception as exc:  # noqa: BLE001 - a row with the error, not a failed soak
        return {"error": type(exc).__name__}
    return {
        "used_memory_mb": memory["used_memory"] / 2**20,
        "maxmemory_mb": memory.get("maxmemory", 0) / 2**20,
        "policy": memory.get("maxmemory_policy"),
        "evicted_keys": stats.get("evicted_keys", 0),
        "keys": keys,
    }


# -- the run -------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Mutable state shared by the producer, the reader and the sampler."""

    config: SoakConfig
    ledger: Ledger
    worker: WorkerProcess
    produced: int = 0
    phase: str = "warm-up"
    started: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    failed: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def _read_outcomes(bootstrap: str, predictions: str, dlq: str, ledger: Ledger) -> None:
    """Follow both output topics from the beginning (no group) into ``ledger``; runs until
    cancelled."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        while not tps:
            await consumer.topics()
            for topic in (predictions, dlq):
                tps += [
                    TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
                ]
            if len(tps) < 2:
                tps = []
                await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        doc = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if tp.topic == predictions:
                        ledger.on_prediction(doc)
                    else:
                        ledger.on_dead_letter(doc)
    finally:
        await consumer.stop()


async def _produce(run: _Run, bootstrap: str, topic: str, traffic: Traffic, until: float) -> None:
    """Offer ``traffic`` at ``config.rate`` until ``until`` (monotonic) or the run failed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    pending: set[asyncio.Future[Any]] = set()
    try:
        start = time.monotonic()
        for i, planned in enumerate(traffic):
            now = time.monotonic()
            if now >= until or run.failed:
                break
            delay = start + i / run.config.rate - now
            if delay > 0:
                await asyncio.sleep(delay)
            future = await producer.send(topic, planned.value, key=planned.key)
            run.produced += 1

            def done(f: asyncio.Future[Any], p: Any = planned) -> None:
                pending.discard(f)
                if f.cancelled() or f.exception() is not None:
                    run.ledger.send_errors += 1
                else:
                    md = f.result()
                    run.ledger.on_sent(p, md.partition, md.offset)

            pending.add(future)
            future.add_done_callback(done)
        if pending:
            await asyncio.wait(pending, timeout=30)
    finally:
        await producer.stop()


async def _sample(run: _Run, clients: dict[str, aioredis.Redis], server: MediaServer) -> None:
    """One row: probes, counters; restarts a worker that died (bounded)."""
    restarted = False
    if not run.worker.alive() and run.phase != "stopped" and not run.failed:
        code = run.worker.stop(timeout=1)
        crash = _crash_excerpt(run.worker.log_tail(200_000))
        run.restarts.append({"t_s": round(run.elapsed(), 1), "exit_code": code, "log": crash})
        print(f"!! worker died (exit code {code}):\n{crash}", flush=True)
        if len(run.restarts) > run.config.max_restarts:
            run.failed = f"the worker died {len(run.restarts)} times"
        else:
            run.worker.start()
            restarted = True
    proc = process_stats(run.worker.pid)
    row: dict[str, Any] = {
        "t_s": round(run.elapsed(), 1),
        "phase": run.phase,
        "pid": run.worker.pid,
        "restarted": restarted,  # the probe saw a process that is just starting
        **proc,
        "produced": run.produced,
        "acked": len(run.ledger.sent),
        "predicted": len(run.ledger.predicted),
        "dead_lettered": len(run.ledger.dead),
        "duplicate_predictions": sum(n - 1 for n in run.ledger.predicted.values() if n > 1),
        "backlog": run.ledger.backlog,
        "media_requests": sum(server.hits.values()),
        "redis": {name: await redis_stats(c) for name, c in clients.items()},
    }
    prev = run.samples[-1] if run.samples else None
    row["cpu_pct"] = None
    if (
        prev
        and prev.get("cpu_s") is not None
        and proc["cpu_s"] is not None
        and prev["pid"] == row["pid"]
    ):
        row["cpu_pct"] = round(
            100 * (proc["cpu_s"] - prev["cpu_s"]) / max(row["t_s"] - prev["t_s"], 1e-9), 1
        )
    run.samples.append(row)
    print(_row(row), flush=True)


_HEADER = (
    f"{'t(s)':>6} {'phase':>7} {'produced':>8} {'predict':>8} {'dead':>6} {'backlog':>7} "
    f"{'RSS MB':>7} {'thr':>4} {'fds':>4} {'cpu%':>5} {'redis MB':>9} {'cache MB':>9} {'media':>6}"
)


def _crash_excerpt(log: str, chars: int = 1500) -> str:
    """The last traceback in a worker log (Faust logs a page of shutdown after it)."""
    at = log.rfind("Traceback (most recent call last)")
    if at < 0:
        return log[-chars:]
    start = log.rfind("\n", 0, at - 1)  # the log line that introduced it
    return log[start + 1 : start + 1 + chars]


def _row(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    redis = r["redis"].get("state", {})
    cache = r["redis"].get("cache", {})
    return (
        f"{r['t_s']:6.0f} {r['phase']:>7} {r['produced']:8d} {r['predicted']:8d} "
        f"{r['dead_lettered']:6d} {r['backlog']:7d} {f(r['rss_mb'], '7.1f'):>7} "
        f"{f(r['threads'], '4d'):>4} {f(r['fds'], '4d'):>4} {f(r['cpu_pct'], '5.0f'):>5} "
        f"{f(redis.get('used_memory_mb'), '9.2f'):>9} {f(cache.get('used_memory_mb'), '9.2f'):>9} "
        f"{r['media_requests']:6d}"
    )


async def soak(
    settings: Settings,
    config: SoakConfig,
    out: Path,
    *,
    stack: EmbeddedStack | None = None,
) -> dict[str, Any]:
    """Run one soak and return its report (also saved as ``out/soak.json`` and ``soak.png``).

    ``stack``: an already running stack to use (tests share theirs); default: a new one.
    """
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    if stack is None:
        log_dir = Path(tempfile.mkdtemp(prefix="commentflow-soak-"))
        async with EmbeddedStack(partitions=settings.topic_partitions, log_dir=log_dir) as own:
            return await soak(settings, config, out, stack=own)

    tag = uuid.uuid4().hex[:8]
    hosts = ",".join([*config.media_hosts, f"*.{config.wildcard_domain}"])
    cache_url = getattr(stack, "redis_cache_url", None) or ""  # a stack with a cache Redis
    # the embedded broker is plaintext: the user's Kafka security settings do not apply to it
    s = settings.without_kafka_security().replace(
        kafka_bootstrap=stack.bootstrap,
        redis_url=stack.redis_url,
        redis_cache_url=cache_url or settings.redis_cache_url,
        input_topic=f"soak.{tag}.comments",
        predictions_topic=f"soak.{tag}.predictions",
        dlq_topic=f"soak.{tag}.dlq",
        app_id=f"soak-{tag}",
        redis_prefix=f"soak:{tag}:",
        session_timeout_s=6.0,  # the embedded broker holds joins for half of it (see ASSETS)
        web_port=free_port(),
        media_allow_hosts=hosts,
        media_resolve=",".join(f"{h}=127.0.0.1" for h in hosts.split(",") if h != "localhost"),
    )
    await stack.create_topics([s.input_topic, s.predictions_topic, s.dlq_topic], stack.partitions)
    clients = {"state": aioredis.Redis.from_url(s.redis_url)}
    if cache_url:
        clients["cache"] = aioredis.Redis.from_url(cache_url)
    ledger = Ledger(s.input_topic)
    run = _Run(config, ledger, WorkerProcess(s, log_path=out / "worker.log"))
    server = MediaServer()
    await server.start()
    traffic = Traffic(
        tag,
        server.url,
        hosts=config.media_hosts,
        wildcard_domain=config.wildcard_domain,
        users=config.users,
        seed=config.seed,
        exclude=config.exclude,
        duplicate_after=max(50, int(config.rate * 10)),
    )
    reader = asyncio.create_task(
        _read_outcomes(s.kafka_bootstrap, s.predictions_topic, s.dlq_topic, ledger)
    )
    print(
        f"soak {tag}: {config.minutes:g} min at {config.rate:g} msg/s, warm-up "
        f"{config.warmup_s / 60:.1f} min, model {s.model_dir}\nworker log {out / 'worker.log'}, "
        f"media server 127.0.0.1:{server.port} as {hosts}",
        flush=True,
    )
    exit_code: int | None = None
    try:
        run.worker.start()
        ready_s = await _wait_ready(run, s, traffic)
        print(f"worker ready after {ready_s:.1f} s (first prediction)\n{_HEADER}", flush=True)
        run.phase, run.started = "run", time.monotonic()
        run_s = config.minutes * 60
        producing = asyncio.create_task(
            _produce(run, s.kafka_bootstrap, s.input_topic, traffic, run.started + run_s)
        )
        while not producing.done():
            await asyncio.wait({producing}, timeout=config.sample_s)
            if reader.done():
                reader.result()  # the outcome reader failed: raise its error
            await _sample(run, clients, server)
        producing.result()
        run.phase = "drain"
        drain_until = time.monotonic() + config.drain_s
        while run.ledger.backlog and time.monotonic() < drain_until and not run.failed:
            await asyncio.sleep(min(config.sample_s, max(0.0, drain_until - time.monotonic())))
            await _sample(run, clients, server)
        if run.samples[-1]["phase"] != "drain":
            await _sample(run, clients, server)  # one row after the run, drained or not
    finally:
        run.phase = "stopped"
        exit_code = await asyncio.to_thread(run.worker.stop, s.shutdown_timeout_s + 10)
        await asyncio.sleep(2)  # what the worker published while stopping
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await server.stop()
        for c in clients.values():
            await c.aclose()
    report = {
        "tag": tag,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            **asdict(config),
            "exclude": sorted(config.exclude),
            "warmup_s": config.warmup_s,
        },
        # to_env() leaves the Kafka secrets out; the dashboard token is filtered here
        "worker_settings": {k: v for k, v in s.to_env().items() if "TOKEN" not in k},
        "machine": _machine(),
        "worker_ready_s": ready_s,
        "worker_exit_code": exit_code,
        "worker_restarts": run.restarts,
        "failed": run.failed,
        "media_requests": dict(server.hits),
        "samples": run.samples,
        "summary": summarize(run.samples, config.warmup_s),
        "outcomes": ledger.check(),
    }
    report["ok"] = bool(report["outcomes"]["ok"] and not run.restarts and not run.failed)
    await asyncio.to_thread(_save, report, out)
    return report


def _save(report: dict[str, Any], out: Path) -> None:
    (out / "soak.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    plot(report, out / "soak.png")


async def _wait_ready(run: _Run, s: Settings, traffic: Traffic) -> float:
    """Send one comment and wait for its prediction: the model is loaded, partitions assigned."""
    started = time.monotonic()
    warm = traffic.warm_up()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        md = await producer.send_and_wait(s.input_topic, warm.value, key=warm.key)
    finally:
        await producer.stop()
    run.ledger.on_sent(warm, md.partition, md.offset)
    while not run.ledger.predicted.get(warm.comment_id or ""):
        if not run.worker.alive():
            raise RuntimeError(
                "the worker exited before its first prediction:\n" + run.worker.log_tail()
            )
        if time.monotonic() - started > run.config.ready_timeout_s:
            raise RuntimeError("no first prediction in time; worker log:\n" + run.worker.log_tail())
        await asyncio.sleep(0.2)
    return time.monotonic() - started


# -- summary -------------------------------------------------------------------------------------


def _series(samples: list[dict[str, Any]], value: Any, warmup_s: float) -> dict[str, Any]:
    """One series: its value at the end of warm-up, max (drain included), end of the run, growth
    after warm-up (%) and least-squares slope (units per hour) over the post-warm-up samples."""
    every = [(r["t_s"], r["phase"], value(r)) for r in samples if not r["restarted"]]
    points = [(t, v) for t, phase, v in every if phase == "run" and v is not None]
    if not points:
        return {}
    after = [(t, v) for t, v in points if t >= warmup_s]
    start = after[0] if after else points[-1]  # the first sample after warm-up is the baseline
    end = points[-1]
    out: dict[str, Any] = {
        "at_warmup_end": start[1],
        "max": max(v for _, _, v in every if v is not None),
        "end": end[1],
        "growth_after_warmup_pct": None,
        "slope_per_h": None,
        "post_warmup_samples": len(after),
    }
    if len(after) >= 2:
        out["growth_after_warmup_pct"] = 100 * (end[1] - start[1]) / start[1] if start[1] else None
        n = len(after)
        mt = sum(t for t, _ in after) / n
        mv = sum(v for _, v in after) / n
        var = sum((t - mt) ** 2 for t, _ in after)
        if var > 0:
            out["slope_per_h"] = 3600 * sum((t - mt) * (v - mv) for t, v in after) / var
    return out


def summarize(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    redis_names = sorted({name for r in samples for name in r["redis"]})
    summary: dict[str, Any] = {
        "worker_rss_mb": _series(samples, lambda r: r["rss_mb"], warmup_s),
        "worker_threads": _series(samples, lambda r: r["threads"], warmup_s),
        "worker_fds": _series(samples, lambda r: r["fds"], warmup_s),
    }
    for name in redis_names:
        sr = _series(
            samples, lambda r, n=name: r["redis"].get(n, {}).get("used_memory_mb"), warmup_s
        )
        last = next((r["redis"][name] for r in reversed(samples) if name in r["redis"]), {})
        maxmemory = last.get("maxmemory_mb") or 0
        sr.update(
            maxmemory_mb=maxmemory,
            policy=last.get("policy"),
            evicted_keys=last.get("evicted_keys"),
            keys=last.get("keys"),
            within_maxmemory=(not maxmemory) or sr.get("max", 0) <= maxmemory,
        )
        summary[f"redis_{name}_used_memory_mb"] = sr
    run_rows = [r for r in samples if r["phase"] == "run"]
    if run_rows:
        last = run_rows[-1]
        summary["offered_rate"] = last["produced"] / max(last["t_s"], 1e-9)
        summary["outcome_rate"] = (last["predicted"] + last["dead_lettered"]) / max(
            last["t_s"], 1e-9
        )
        summary["max_backlog"] = max(r["backlog"] for r in run_rows)
        summary["backlog_at_end_of_run"] = last["backlog"]
    return summary


def print_report(report: dict[str, Any]) -> None:
    s, o = report["summary"], report["outcomes"]

    def line(name: str, d: dict[str, Any], unit: str = "MB") -> str:
        if not d:
            return f"{name}: no samples"
        g, k = d.get("growth_after_warmup_pct"), d.get("slope_per_h")
        return (
            f"{name}: at warm-up end {d['at_warmup_end']:.1f} {unit}, max {d['max']:.1f}, "
            f"end {d['end']:.1f}; after warm-up "
            + (f"{g:+.1f}%" if g is not None else "n/a")
            + (f", slope {k:+.1f} {unit}/h" if k is not None else "")
            + f" ({d['post_warmup_samples']} samples)"
        )

    print("\n== summary ==")
    print(line("worker RSS", s["worker_rss_mb"]))
    print(line("worker threads", s["worker_threads"], "threads"))
    print(line("worker open fds", s["worker_fds"], "fds"))
    for key, d in s.items():
        if key.startswith("redis_"):
            print(line(key.removesuffix("_used_memory_mb").replace("_", " ") + " used_memory", d))
            print(
                f"    maxmemory {d.get('maxmemory_mb', 0):.0f} MB ({d.get('policy')}), "
                f"evicted {d.get('evicted_keys')}, keys {d.get('keys')}, "
                f"within limit: {d.get('within_maxmemory')}"
            )
    if "offered_rate" in s:
        print(
            f"offered {s['offered_rate']:.1f} msg/s, outcomes {s['outcome_rate']:.1f}/s, "
            f"max backlog {s['max_backlog']}, backlog at end of run {s['backlog_at_end_of_run']}"
        )
    print(
        f"outcomes: sent {o['sent']}, valid {o['valid_comments']} "
        f"(predicted {o['predicted_once_or_more']}), malformed {o['malformed']} "
        f"(dead-lettered {o['dead_lettered']}); missing {o['missing']}, "
        f"unexpected {o['unexpected']}, duplicate predictions {o['duplicate_predictions']}, "
        f"duplicate dead letters {o['duplicate_dead_letters']}, send errors {o['send_errors']}"
    )
    for ex in o["missing_examples"][:5] + o["unexpected_examples"][:5]:
        print(f"    {ex}")
    print(f"dead-letter codes: {o['dead_letter_codes']}")
    print(f"media errors (first prediction of each comment): {o['media_errors']}")
    print(f"media requests served: {report['media_requests']}")
    if report["worker_restarts"]:
        print(
            f"!! the worker died {len(report['worker_restarts'])} time(s) (see soak.json): "
            "the memory numbers above span restarts and say nothing about growth"
        )
    print(f"worker exit code after SIGTERM: {report['worker_exit_code']}")
    print(
        "RESULT: "
        + (
            "ok"
            if report["ok"]
            else "FAILED" + (f" ({report['failed']})" if report["failed"] else "")
        )
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["samples"]
    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [r["rss_mb"] for r in rows], "o-", ms=3, label="worker RSS")
    axes[0].set_ylabel("MB")
    for name in sorted({n for r in rows for n in r["redis"]}):
        used = [r["redis"].get(name, {}).get("used_memory_mb") for r in rows]
        axes[1].plot(t, used, "o-", ms=3, label=f"{name} Redis used_memory")
        top = report["summary"].get(f"redis_{name}_used_memory_mb", {}).get("maxmemory_mb")
        if top:
            axes[1].axhline(top, ls=":", color="gray", label=f"{name} maxmemory")
    axes[1].set_ylabel("MB")
    axes[2].plot(t, [r["produced"] for r in rows], label="produced")
    axes[2].plot(t, [r["predicted"] + r["dead_lettered"] for r in rows], label="outcomes")
    axes[2].plot(t, [r["backlog"] for r in rows], label="backlog")
    axes[2].set_ylabel("messages")
    axes[2].set_xlabel("minutes")
    warm = report["config"]["warmup_s"] / 60
    for ax in axes:
        ax.axvline(warm, color="gray", ls="--", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    c = report["config"]
    axes[0].set_title(
        f"commentflow soak: {c['minutes']:g} min at {c['rate']:g} msg/s (dashed: end of warm-up)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
