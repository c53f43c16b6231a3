"""``commentflow predict``: a file scored offline reads like the predictions topic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from commentflow.cli import main
from commentflow.predict import row_to_comment
from model.testing import make_tiny_model_dir
from schemas.events import Prediction


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-predict") / "model")


def _predictions(path: Path) -> list[dict]:
    docs = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for doc in docs:
        Prediction.model_validate(doc)  # every field of the topic, nothing else
    return docs


def test_csv_rows_get_topic_predictions_with_defaults(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "c.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "comment_id", "user_id"])
        w.writerows([["great stuff", "c1", "u1"], ["awful", "", ""], ["meh", "c3", "u3"]])
    out = tmp_path / "p.jsonl"
    argv = ["predict", "--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    assert main([*argv, "--batch-size", "2", "--device", "cpu"]) == 0
    docs = _predictions(out)
    assert [d["comment_id"] for d in docs] == ["c1", "row-2", "c3"]
    assert docs[1]["user_id"] == "offline"
    assert all(d["modalities"] == ["text"] and d["model"]["name"] for d in docs)
    assert "predict" in capsys.readouterr().err  # the progress bar and summary are on stderr


def test_jsonl_events_keep_metadata_and_invalid_rows_are_skipped(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {
            "comment_id": "a",
            "user_id": "u",
            "text": "hello there",
            "created_at": "2026-01-01T10:00:00+01:00",
            "metadata": {"tenant": "t1"},
            "media": [{"type": "image", "url": "https://img.example/x.png?sig=secret"}],
        },
        {"comment_id": "b", "user_id": "u", "text": ""},  # neither text nor media: invalid
        {"comment_id": "c", "user_id": "u", "text": "fine", "created_at": "2026-01-01T00:00:00Z"},
    ]
    data = tmp_path / "e.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "p.jsonl"
    argv = ["predict", "--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    assert main([*argv, "--no-progress", "--device", "cpu"]) == 1  # a row was skipped
    docs = _predictions(out)
    assert [d["comment_id"] for d in docs] == ["a", "c"]
    assert docs[0]["metadata"] == {"tenant": "t1"}
    assert docs[0]["created_at"] == "2026-01-01T09:00:00Z"
    [err] = docs[0]["media_errors"]
    assert err["reason"] == "media_disabled" and "secret" not in err["url"]  # never fetched
    assert "row 2 skipped (schema_violation)" in capsys.readouterr().err


def test_local_image_is_decoded_and_urls_are_not_fetched(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    row = row_to_comment({"text": "x", "image": str(img)}, 1, now="2026-01-01T00:00:00Z")
    assert len(row.comment.images) == 1 and row.media_errors == []
    row = row_to_comment(
        {"text": "x", "image": "http://169.254.169.254/a.png", "audio": str(tmp_path / "no.wav")},
        2,
        now="2026-01-01T00:00:00Z",
    )
    assert row.comment.images == () and row.comment.audio == ()
    assert [e["reason"] for e in row.media_errors] == ["media_disabled", "not_found"]


def test_parquet_is_read_with_pyarrow_or_refused_with_a_hint(tmp_path: Path) -> None:
    from model.data.records import read_records

    path = tmp_path / "c.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="pip install pyarrow"):
            list(read_records(path))
        return
    pq.write_table(pa.table({"text": ["a", "b"], "comment_id": ["1", "2"]}), path)
    assert [r["comment_id"] for r in read_records(path)] == ["1", "2"]


def test_a_jsonl_line_that_is_not_an_object_names_its_line(tmp_path: Path) -> None:
    from model.data.records import read_records

    path = tmp_path / "e.jsonl"
    path.write_text('{"text": "a"}\n[1]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"e.jsonl:2"):
        list(read_records(path))


def test_a_row_the_model_fails_on_alone_is_skipped_and_the_rest_scored() -> None:
    import io

    from commentflow.predict import score_rows
    from model.base import ClassOutput

    class Picky:
        name, version, labels, device = "picky", "1", ("negative", "neutral", "positive"), "cpu"

        def predict(self, batch):
            if any(c.text == "boom" for c in batch):
                raise RuntimeError("model bug")
            return [
                ClassOutput(
                    "neutral", {"negative": 0.2, "neutral": 0.6, "positive": 0.2}, ("text",)
                )
                for _ in batch
            ]

    out = io.BytesIO()
    rows = [{"text": "a"}, {"text": "boom"}, {"text": "c"}]
    result = score_rows(Picky(), rows, out, batch_size=3)
    docs = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [d["comment_id"] for d in docs] == ["row-1", "row-3"]
    assert [(s.row, s.code) for s in result.skipped] == [(2, "processing_failed")]
    for doc in docs:
        Prediction.model_validate(doc)


def test_entities_enabled_adds_the_worker_entity_fields(tiny_model: Path, tmp_path: Path) -> None:
    """``--entities-enabled`` (the worker's setting): the packaged NER, as on the topic."""
    data = tmp_path / "c.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "comment_id"])
        w.writerows([["Apple support told me Tim Cook would call", "c1"], ["it came late", "c2"]])
    out = tmp_path / "p.jsonl"
    argv = ["predict", "--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    assert main([*argv, "--device", "cpu", "--entities-enabled", "--no-progress"]) == 0
    docs = _predictions(out)
    assert [d["entities_status"] for d in docs] == ["ok", "ok"]
    assert {e["key"] for e in docs[0]["entities"]} >= {"apple", "tim cook"}
    assert docs[1]["entities"] == []
    plain = tmp_path / "plain.jsonl"
    argv[argv.index(str(out))] = str(plain)
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    assert all("entities" not in d for d in _predictions(plain))
