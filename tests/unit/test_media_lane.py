"""Out-of-order completion with in-order acknowledgement: the tracker and the media lane, on fakes.

A text comment in the same batch as (or behind) a comment whose media is slow is published
first; the acknowledged (so committable) offset never passes the unfinished comment.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
from support.fakes import FakeClassifier, FakePublisher, FakeRedis, FakeStore

from workers.completion import CompletionTracker
from workers.config import ProcessorConfig
from workers.crash_guard import CrashGuard
from workers.inference import InferenceRunner
from workers.media import ResolvedMedia
from workers.messages import Inbound
from workers.model_guard import ModelFailed
from workers.pipeline import LaneConfig, StreamPipeline
from workers.processor import BatchProcessor
from workers.watchdog import Watchdog

TOPIC = "comments"
PREDICTIONS = ProcessorConfig().predictions_topic


def message(offset: int, value: bytes, partition: int = 0) -> Inbound:
    return Inbound(TOPIC, partition, offset, b"k", value)


def event(cid: str, media: list[dict] | None = None) -> bytes:
    doc = {"comment_id": cid, "user_id": "u1", "text": "fine", "created_at": "2026-11-28T10:00:00Z"}
    if media:
        doc["media"] = media
    return orjson.dumps(doc)


def slow(name: str) -> list[dict]:
    return [{"type": "image", "url": f"https://m.test/slow/{name}.png"}]


# -- the tracker


async def test_the_tracker_acks_only_each_partitions_done_prefix_in_offset_order():
    acked: list[tuple[int, int]] = []

    async def ack(m: Inbound) -> None:
        acked.append((m.partition, m.offset))

    t = CompletionTracker(ack)
    p0 = [message(i, b"") for i in range(4)]
    p1 = [message(i, b"", partition=1) for i in range(2)]
    t.track(p0 + p1)
    assert await t.complete([p0[2], p0[3], p1[1]]) == 0  # both partitions blocked at offset 0
    assert t.lowest_unfinished(TOPIC, 0) == 0 and t.lowest_unfinished(TOPIC, 1) == 0
    assert await t.complete([p0[0]]) == 1
    assert acked == [(0, 0)] and t.lowest_unfinished(TOPIC, 0) == 1
    await t.complete([p1[0], p0[1]])
    assert sorted(acked) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert [o for p, o in acked if p == 0] == [0, 1, 2, 3]
    assert len(t) == 0 and t.lowest_unfinished(TOPIC, 0) is None


async def test_a_redelivered_older_offset_blocks_the_newer_ones_until_done():
    acked: list[int] = []

    async def ack(m: Inbound) -> None:
        acked.append(m.offset)

    t = CompletionTracker(ack)
    newer = [message(i, b"") for i in (5, 6)]
    t.track(newer)
    older = message(3, b"")  # taken again after a rebalance
    t.track([older])
    await t.complete(newer)
    assert acked == [] and t.lowest_unfinished(TOPIC, 0) == 3
    await t.complete([older])
    assert acked == [3, 5, 6]


async def test_wait_below_returns_once_acks_free_room():
    async def ack(m: Inbound) -> None:
        pass

    t = CompletionTracker(ack)
    ms = [message(i, b"") for i in range(3)]
    t.track(ms)
    waiter = asyncio.ensure_future(t.wait_below(3))
    await asyncio.sleep(0)
    assert not waiter.done()
    await t.complete(ms[:1])
    await asyncio.wait_for(waiter, 5)


# -- the pipeline with a media lane


class SlowMedia:
    """Resolves ``slow`` URLs only once ``release`` is set; everything else at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def resolve_batch(self, refs, *, timeout_s=None):
        return [await self.resolve(r) for r in refs]

    async def resolve(self, refs, deadline=None):
        if any("/slow/" in r["url"] for r in refs):
            self.waiting.set()
            await self.release.wait()
        return ResolvedMedia([], [], [])


class Lane:
    def __init__(self, *, concurrency: int = 2, warm=None, classifier=None, watchdog=None) -> None:
        self.media = SlowMedia()
        self.redis = FakeRedis()
        self.guard = CrashGuard(self.redis, prefix="t:", app_id="a", poison_after=3)
        self.publisher = FakePublisher()
        self.store = FakeStore()
        self.classifier = classifier or FakeClassifier()
        self.runner = InferenceRunner(lambda: self.classifier)
        s = ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.005, model_failure_exit_s=0.05)
        self.processor = BatchProcessor(s, self.runner, self.publisher, self.store, self.media)
        self.acks: list[int] = []
        self.pipeline = StreamPipeline(
            self.processor,
            self.ack,
            guard=self.guard,
            lane=LaneConfig(concurrency=concurrency, depth=2, warm=warm, watchdog=watchdog),
        )

    async def ack(self, m: Inbound) -> None:
        self.acks.append(m.offset)

    def predicted(self) -> list[str]:
        return [orjson.loads(m.value)["comment_id"] for m in self.publisher.sent]

    async def until(self, condition, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 - a plain condition, no event
                await asyncio.sleep(0.001)


async def test_text_is_published_before_a_slow_media_comment_and_acks_wait_for_it():
    h = Lane()
    await h.runner.start()
    await h.pipeline.start()
    try:
        # batch 1: the slow media comment first, text behind it; batch 2: more text
        await h.pipeline.submit(
            [message(0, event("m0", slow("a"))), message(1, event("t1")), message(2, event("t2"))]
        )
        await h.pipeline.submit([message(3, event("t3")), message(4, event("t4"))])
        await h.until(lambda: len(h.predicted()) == 4)
        assert h.predicted() == ["t1", "t2", "t3", "t4"]  # m0 still waits for its media
        assert h.media.waiting.is_set()
        # nothing acknowledged past the unfinished offset 0: a commit now commits nothing
        assert h.acks == []
        assert h.pipeline.tracker.lowest_unfinished(TOPIC, 0) == 0
        assert h.guard.key(message(0, b"")) in h.redis.data  # m0 still counted in flight
        h.media.release.set()
        await h.until(lambda: h.acks == [0, 1, 2, 3, 4])
        assert h.predicted() == ["t1", "t2", "t3", "t4", "m0"]
    finally:
        await h.pipeline.stop(5)
        await h.runner.stop()
    assert h.redis.data == {}  # the crash guard forgot everything


async def test_after_a_crash_messages_go_alone_with_their_media_inline_not_in_the_lane():
    h = Lane()
    batch = [message(0, event("m0", slow("d"))), message(1, event("t1"))]
    h.redis.data[h.guard.key(batch[0])] = 1  # an earlier worker died with it in flight
    await h.runner.start()
    await h.pipeline.start()
    try:
        submitting = asyncio.ensure_future(h.pipeline.submit(batch))
        await asyncio.wait_for(h.media.waiting.wait(), 10)
        # m0 is processed alone: nothing behind it starts before it is finished (poison pinning)
        assert h.predicted() == [] and not submitting.done()
        h.media.release.set()
        await asyncio.wait_for(submitting, 10)
        await h.until(lambda: h.acks == [0, 1])
        assert h.predicted() == ["m0", "t1"]
    finally:
        await h.pipeline.stop(5)
        await h.runner.stop()


async def test_an_unfinished_media_comment_at_stop_is_not_acked_nor_what_follows():
    h = Lane()
    await h.runner.start()
    await h.pipeline.start()
    await h.pipeline.submit([message(0, event("t0")), message(1, event("m1", slow("b")))])
    await h.pipeline.submit([message(2, event("t2"))])
    await h.until(lambda: len(h.predicted()) == 2)
    await h.pipeline.stop(0.2)
    await h.runner.stop()
    # t2 is published and aggregated but not acknowledged: redelivered, skipped as done
    assert h.acks == [0] and h.predicted() == ["t0", "t2"]
    assert all(v <= 0 for v in h.redis.data.values())  # m1's count taken back


async def test_media_features_are_warmed_off_the_inference_thread_before_predict():
    threads: list[str] = []
    h: Lane

    def warm(inputs) -> None:
        threads.append(threading.current_thread().name)

    class Classifier(FakeClassifier):
        def predict(self, batch):
            threads.append(threading.current_thread().name)
            return super().predict(batch)

    h = Lane(warm=warm, classifier=Classifier())
    h.media = ImageMedia()
    h.processor._media = h.media  # noqa: SLF001 - swap the fake before starting
    await h.runner.start()
    await h.pipeline.start()
    try:
        img = [{"type": "image", "url": "https://m.test/a.png"}]
        await h.pipeline.submit([message(0, event("m0", img))])
        await h.until(lambda: h.acks == [0])
    finally:
        await h.pipeline.stop(5)
        await h.runner.stop()
    assert threads[0].startswith("media-warm") and threads[1].startswith("inference")


class ImageMedia(SlowMedia):
    async def resolve(self, refs, deadline=None):
        import numpy as np

        return ResolvedMedia([np.zeros((4, 4, 3), np.uint8)], [], [])


async def test_a_hung_warm_call_fires_the_watchdog_text_still_flows_nothing_of_it_is_acked():
    release = threading.Event()
    hangs: list[float] = []

    def warm(inputs) -> None:  # OCR stuck in native code: it ignores cancellation
        release.wait(30)

    dog = Watchdog(0.3, what="media warm-up", on_hang=hangs.append)
    h = Lane(warm=warm, watchdog=dog)
    h.media = ImageMedia()
    h.processor._media = h.media  # noqa: SLF001 - swap the fake before starting
    await h.runner.start()
    dog.start()
    await h.pipeline.start()
    try:
        img = [{"type": "image", "url": "https://m.test/a.png"}]
        await h.pipeline.submit([message(0, event("m0", img)), message(1, event("t1"))])
        await h.until(lambda: bool(hangs))  # the worker would exit here (os._exit)
        assert dog.hung and hangs[0] >= 0.3
        assert h.predicted() == ["t1"] and h.acks == []  # m0 holds the offset: redelivered
    finally:
        release.set()
        await h.pipeline.stop(5)
        dog.stop()
        await h.runner.stop()


async def test_a_failed_model_in_the_lane_stops_submit_and_acks_nothing_of_it():
    class Broken(FakeClassifier):
        def predict(self, batch):
            raise RuntimeError("CUDA fault")

    h = Lane(classifier=Broken())
    h.media.release.set()
    await h.runner.start()
    await h.pipeline.start()
    with pytest.raises(ModelFailed):
        for i in range(0, 400, 2):
            await h.pipeline.submit(
                [message(i, event(f"m{i}", slow("c"))), message(i + 1, event(f"t{i}"))]
            )
            await asyncio.sleep(0.01)
    await h.pipeline.stop(0, abandon=False)
    await h.runner.stop()
    assert h.acks == [] and h.predicted() == []


def test_warm_media_fills_the_caches_so_predict_computes_no_media_again(tmp_path):
    import numpy as np

    from model import CommentInput, load_classifier
    from model.testing.multimodal import make_tiny_multimodal_dir

    c = load_classifier(make_tiny_multimodal_dir(tmp_path / "mm", seed=0), "cpu")
    rng = np.random.default_rng(0)
    batch = [
        CommentInput("look", (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),)),
        CommentInput("listen", (), (rng.standard_normal(1600).astype(np.float32),)),
    ]
    expected = load_classifier(make_tiny_multimodal_dir(tmp_path / "mm2", seed=0), "cpu").predict(
        batch
    )
    c.warm_media(batch)
    ex = c.extractor
    inner = (ex.image_encoder.inner, ex.ocr.inner, ex.asr.inner)
    calls = [x.calls for x in inner]
    got = c.predict(batch)
    assert [x.calls for x in inner] == calls  # predict only read the caches
    assert [o.label for o in got] == [o.label for o in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.scores == pytest.approx(b.scores)


@pytest.mark.parametrize(
    ("committed", "acked", "unfinished"),
    [
        (None, [1, 2, 3], 0),  # a new group: nothing committed yet, offset 0 unfinished
        (5, [6, 7], 5),  # the one unfinished offset is exactly the committed one
    ],
)
def test_why_faust_must_see_acks_in_order(committed, acked, unfinished):
    """faust-streaming's Consumer._new_offset, given out-of-order acks, commits past an
    unfinished offset (so workers.completion hands it each partition's acks in order)."""
    from collections import defaultdict
    from types import SimpleNamespace

    from faust.transport.consumer import Consumer
    from faust.types import TP
    from intervaltree import IntervalTree

    tp = TP("comments", 0)
    state = SimpleNamespace(  # the consumer's bookkeeping that _new_offset reads
        _acked=defaultdict(list, {tp: list(acked)}),
        _acked_index=defaultdict(set, {tp: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {tp: committed}),
    )
    new_offset = Consumer._new_offset(state, tp)  # type: ignore[arg-type]
    assert new_offset is not None and new_offset > unfinished  # the unfinished one is lost
