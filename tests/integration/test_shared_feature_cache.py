"""Two workers' classifiers share OCR text, transcripts and image embeddings through Redis."""

from __future__ import annotations

import numpy as np
import redis

from model import CommentInput, load_classifier
from model.serving.shared_cache import decode_value, encode_value
from model.testing.multimodal import make_tiny_multimodal_dir


def test_second_worker_reuses_the_first_workers_media_features(stack, names, tmp_path):
    model_dir = make_tiny_multimodal_dir(tmp_path / "mm")
    first, second = load_classifier(model_dir), load_classifier(model_dir)
    client = redis.Redis.from_url(stack.redis_url)
    for clf in (first, second):
        clf.use_shared_cache(client, names.redis_prefix)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    audio = rng.standard_normal(16_000).astype(np.float32) * 0.1
    batch = [CommentInput("look", (image,), (audio,))]

    out_first = first.predict(batch)
    ex1, ex2 = first.extractor, second.extractor
    assert (ex1.ocr.inner.calls, ex1.asr.inner.calls, ex1.image_encoder.inner.calls) == (1, 1, 1)
    out_second = second.predict(batch)
    # the second classifier computed nothing: everything came from Redis
    assert (ex2.ocr.inner.calls, ex2.asr.inner.calls, ex2.image_encoder.inner.calls) == (0, 0, 0)
    assert out_second[0].scores == out_first[0].scores
    assert out_second[0].modalities == ("text", "image", "audio")
    keys = list(client.scan_iter(match=f"{names.redis_prefix}feature:*"))
    assert len(keys) == 3 and all(client.ttl(k) > 0 for k in keys)
    client.delete(*keys)
    client.close()


def test_redis_down_is_only_a_miss(tmp_path):
    model_dir = make_tiny_multimodal_dir(tmp_path / "mm")
    clf = load_classifier(model_dir)
    clf.use_shared_cache(redis.Redis(port=1, socket_connect_timeout=0.2), "x:")
    image = np.zeros((8, 8, 3), np.uint8)
    out = clf.predict([CommentInput("", (image,))])
    assert out[0].modalities == ("image",)


def test_values_round_trip_without_pickle():
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    assert np.array_equal(decode_value(encode_value(arr)), arr)
    assert decode_value(encode_value("héllo")) == "héllo"
    assert encode_value(object()) is None
