"""``commentflow tail`` on the real broker: a redelivered prediction is printed once."""

from __future__ import annotations

import asyncio
import sys

import orjson
from support.stream import send


async def test_tail_prints_each_prediction_once(topics, env_for_stack) -> None:
    def prediction(comment_id: str) -> dict:
        return {
            "schema": "commentflow.prediction/1",
            "comment_id": comment_id,
            "user_id": "u1",
            "label": "positive",
        }

    # a redelivery (the same prediction twice), then another comment
    sent = [prediction("c1"), prediction("c1"), prediction("c2"), prediction("c1")]
    await send(env_for_stack["COMMENTFLOW_KAFKA_BOOTSTRAP"], topics.predictions_topic, sent)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commentflow.cli",
        "tail",
        "--from-beginning",
        "--max",
        "2",
        env=env_for_stack,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    docs = [orjson.loads(line) for line in out.splitlines()]
    # with --max 2, a duplicate printed would show up as the second line
    assert [d["comment_id"] for d in docs] == ["c1", "c2"]


async def test_tail_in_a_group_drops_repeated_dead_letters(topics, stack) -> None:
    from commentflow.tail import key_for_topic, tail

    def dead_letter(offset: int) -> dict:
        return {"source": {"topic": topics.input_topic, "partition": 0, "offset": offset}}

    sent = [dead_letter(1), dead_letter(1), dead_letter(2)]
    await send(stack.bootstrap, topics.dlq_topic, [(orjson.dumps(d), b"k") for d in sent])
    got: list[dict] = []
    key = key_for_topic(topics.dlq_topic, dlq_topic=topics.dlq_topic)
    n = await asyncio.wait_for(
        tail(
            stack.bootstrap,
            topics.dlq_topic,
            got.append,
            key=key,
            from_beginning=True,
            max_messages=2,
            group=f"{topics.app_id}-tail",
        ),
        120,
    )
    assert n == 2 and [d["source"]["offset"] for d in got] == [1, 2]
