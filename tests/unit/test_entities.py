"""The entity stage: normalisation, a tiny rule-based spaCy pipeline, its runner, the worker's use
of it, and (a few tests) the packaged en_core_web_sm."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakes import FakeClassifier, FakePublisher, FakeStore

import model
from model.base import ClassOutput
from model.entities import (
    ENTITY_LABELS,
    Entity,
    EntityConfig,
    EntityRecognizer,
    EntityResult,
    EntitySource,
    _readable,
    entity_key,
    load_packaged_recognizer,
    read_patterns,
)
from model.errors import ModelFormatError
from model.evaluation.entities import format_entities, load_gold, score_entities
from model.testing.multimodal import make_tiny_multimodal_dir
from schemas.events import MAX_ENTITIES, CommentEvent, Prediction
from schemas.export import JSON_DIR
from workers.config import ProcessorConfig
from workers.entities import EntityRunner
from workers.entity_aggregates import group_entities
from workers.inference import InferenceRunner
from workers.messages import Inbound
from workers.prediction import prediction_document
from workers.processor import BatchProcessor

_SCHEMA = json.loads((JSON_DIR / "prediction-1.schema.json").read_text())

PATTERNS = [
    {"label": "PRODUCT", "pattern": [{"LOWER": "iphone"}]},
    {"label": "PRODUCT", "pattern": [{"LOWER": "iphones"}]},
    {"label": "PRODUCT", "pattern": [{"LOWER": "iphone"}, {"LOWER": "'s"}]},
    {"label": "ORG", "pattern": [{"LOWER": "apple"}]},
    {"label": "ORG", "pattern": [{"LOWER": "dhl"}]},
    {"label": "PERSON", "pattern": [{"LOWER": "tim"}, {"LOWER": "cook"}]},
    {"label": "DATE", "pattern": [{"LOWER": "tuesday"}]},
    {"label": "GPE", "pattern": [{"LOWER": "paris"}]},
]


def tiny_nlp():
    """A blank English tokenizer with an entity ruler: no weights, milliseconds to build."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    return nlp


def tiny(**config) -> EntityRecognizer:
    return EntityRecognizer(tiny_nlp(), config=EntityConfig(**config), name="tiny", version="1")


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surface", "key"),
    [
        ("iPhone", "iphone"),
        ("iphone's", "iphone"),
        ("IPHONE", "iphone"),
        ("iPhones", "iphone"),
        ("iPhone\u2019s", "iphone"),
        ("  the   Samsung\tGalaxy ", "samsung galaxy"),
        ("The PlayStation 5", "playstation 5"),
        ("Paris", "paris"),
        ("Lexus", "lexus"),
        ("Boss", "boss"),
        ("bus", "bus"),
        ("Apples'", "apple"),
        ("\uff29\uff30\uff28\uff2f\uff2e\uff25", "iphone"),  # full-width letters (NFKC)
        ("'", ""),
    ],
)
def test_entity_key_groups_case_whitespace_plural_possessive(surface: str, key: str) -> None:
    assert entity_key(surface) == key


# -- the stage with a tiny pipeline -------------------------------------------------------------


def test_entities_from_text_ocr_and_transcript_with_offsets_and_modality() -> None:
    src = EntitySource(
        text="My iPhone died, Apple please fix it",
        ocr_text="DHL LOST MY PARCEL",
        transcript="tim cook should answer on tuesday",
        language="en",
    )
    [result] = tiny().recognise([src])
    assert result.status == "ok"
    got = [(e.text, e.label, e.modality, e.key) for e in result.entities]
    assert got == [
        ("iPhone", "PRODUCT", "text", "iphone"),
        ("Apple", "ORG", "text", "apple"),
        ("DHL", "ORG", "image", "dhl"),
        ("tim cook", "PERSON", "audio", "tim cook"),
    ]  # tuesday: a DATE, not what the comment is about
    texts = {"text": src.text, "image": src.ocr_text, "audio": src.transcript}
    for e in result.entities:
        assert texts[e.modality][e.start : e.end] == e.text


def test_one_mention_per_key_label_and_modality_and_the_count_is_bounded() -> None:
    text = "iPhone iphone's IPHONE iPhones and Apple, apple, Paris"
    [result] = tiny().recognise([EntitySource(text, ocr_text="IPHONE")])
    assert [(e.key, e.modality) for e in result.entities] == [
        ("iphone", "text"),
        ("apple", "text"),
        ("paris", "text"),
        ("iphone", "image"),
    ]
    [bounded] = tiny(max_entities=2).recognise([EntitySource(text, ocr_text="IPHONE")])
    assert len(bounded.entities) == 2


def test_texts_are_cut_to_max_chars_and_offsets_stay_valid() -> None:
    text = "x " * 30 + "Apple"  # Apple starts at 60
    [cut] = tiny(max_chars=40).recognise([EntitySource(text)])
    [whole] = tiny(max_chars=100).recognise([EntitySource(text)])
    assert cut.entities == ()
    assert [(e.start, e.end) for e in whole.entities] == [(60, 65)]


def test_languages_without_a_model_get_no_entities_and_say_so() -> None:
    results = tiny().recognise(
        [
            EntitySource("Apple est nul", language="fr"),
            EntitySource("Apple", language="und"),
            EntitySource("Apple", language=None),
            EntitySource("", ocr_text="", transcript=""),
        ]
    )
    assert [r.status for r in results] == ["unsupported_language", "ok", "ok", "ok"]
    assert [len(r.entities) for r in results] == [0, 1, 1, 0]


def test_one_pipe_call_per_batch() -> None:
    calls: list[int] = []
    nlp = tiny_nlp()
    real = nlp.pipe

    def pipe(texts, **kw):
        texts = list(texts)
        calls.append(len(texts))
        return real(texts, **kw)

    nlp.pipe = pipe  # type: ignore[method-assign]
    r = EntityRecognizer(nlp)
    r.recognise([EntitySource("Apple", "DHL", "Paris"), EntitySource("iPhone"), EntitySource()])
    assert calls == [4]
    r.recognise([EntitySource()])
    assert calls == [4]  # nothing to read: no call


def test_labels_kept_are_about_things_not_numbers() -> None:
    assert {"PERSON", "ORG", "PRODUCT", "GPE", "EVENT", "WORK_OF_ART"} <= ENTITY_LABELS
    assert not {"DATE", "TIME", "MONEY", "CARDINAL", "ORDINAL", "PERCENT"} & ENTITY_LABELS


# -- the runner: its own thread -----------------------------------------------------------------


class _ThreadRecorder:
    def __init__(self, fail: bool = False) -> None:
        self.threads: list[str] = []
        self.fail = fail
        self.inner = tiny_nlp()

    def pipe(self, texts, **kw):
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("boom")
        return self.inner.pipe(texts, **kw)


async def test_runner_loads_and_runs_off_the_event_loop_and_is_idempotent() -> None:
    nlp = _ThreadRecorder()
    loads: list[str] = []

    def load() -> EntityRecognizer:
        loads.append(threading.current_thread().name)
        return EntityRecognizer(nlp)

    runner = EntityRunner(load)
    with pytest.raises(RuntimeError):
        await runner.recognise([EntitySource("Apple")])
    await runner.start()
    await runner.start()
    [r] = await runner.recognise([EntitySource("Apple")])
    assert [e.key for e in r.entities] == ["apple"]
    assert len(loads) == 1 and loads[0].startswith("entities")
    assert nlp.threads and all(t.startswith("entities") for t in nlp.threads)
    await runner.stop()
    await runner.stop()
    assert not runner.ready


async def test_runner_failure_is_counted_and_returns_none() -> None:
    async with EntityRunner(lambda: EntityRecognizer(_ThreadRecorder(fail=True))) as runner:
        assert await runner.recognise([EntitySource("Apple")]) is None
        assert runner.failures == 1


# -- the worker: predictions carry entities, records carry them grouped -------------------------


def _inbound(i: int, text: str, user: str = "u1") -> Inbound:
    value = orjson.dumps(
        {"comment_id": f"c{i}", "user_id": user, "text": text, "created_at": "2026-11-28T10:00Z"}
    )
    return Inbound("comments", 0, i, user.encode(), value)


class _LanguageClassifier(FakeClassifier):
    """FakeClassifier that says French for texts starting with "Le ", and reads OCR text."""

    def predict(self, batch):
        outs = super().predict(batch)
        return [
            ClassOutput(
                o.label,
                o.scores,
                o.modalities,
                language="fr" if c.text.startswith("Le ") else "en",
                ocr_text="DHL" if "parcel" in c.text else "",
            )
            for c, o in zip(batch, outs, strict=True)
        ]


async def _process(entities: EntityRunner | None, texts: list[str]):
    runner = InferenceRunner(_LanguageClassifier)
    await runner.start()
    if entities is not None:
        await entities.start()
    pub, store = FakePublisher(), FakeStore()
    proc = BatchProcessor(
        ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.01),
        runner,
        pub,
        store,
        entities=entities,
    )
    try:
        await proc.process([_inbound(i, t) for i, t in enumerate(texts)])
    finally:
        await runner.stop()
        if entities is not None:
            await entities.stop()
    docs = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.predictions"]
    return docs, store, proc


async def test_predictions_carry_entities_and_validate_against_the_contract() -> None:
    texts = [
        "bad: my iPhone died and Apple does not care",
        "where is my parcel",
        "Le iPhone est nul",
        "nothing here",
    ]
    docs, store, proc = await _process(EntityRunner(lambda: tiny()), texts)
    schema = json.loads((JSON_DIR / "prediction-1.schema.json").read_text())
    for d in docs:
        Prediction.model_validate(d)
        jsonschema.validate(d, schema)
    by_id = {d["comment_id"]: d for d in docs}
    assert by_id["c0"]["entities"] == [
        {"text": "iPhone", "label": "PRODUCT", "modality": "text", "start": 8, "end": 14,
         "key": "iphone"},
        {"text": "Apple", "label": "ORG", "modality": "text", "start": 24, "end": 29,
         "key": "apple"},
    ]  # fmt: skip
    assert by_id["c1"]["entities"][0]["modality"] == "image"
    assert (by_id["c2"]["entities"], by_id["c2"]["entities_status"]) == (
        [],
        "unsupported_language",
    )
    assert (by_id["c3"]["entities"], by_id["c3"]["entities_status"]) == ([], "ok")
    records = {r.comment_id: r for r in store.applied}
    assert [(e.key, e.labels, e.modalities) for e in records["c0"].entities] == [
        ("iphone", ("PRODUCT",), ("text",)),
        ("apple", ("ORG",), ("text",)),
    ]
    assert records["c3"].entities == ()
    sample = proc.metrics.entities.labels("text")._value.get()  # noqa: SLF001 - prometheus
    assert sample == 2


async def test_without_the_stage_no_entity_fields_and_a_failed_stage_says_so() -> None:
    off, _, _ = await _process(None, ["my iPhone"])
    assert "entities" not in off[0] and "entities_status" not in off[0]
    failing = EntityRunner(lambda: EntityRecognizer(_ThreadRecorder(fail=True)))
    failed, store, proc = await _process(failing, ["my iPhone", "my Pixel"])
    assert [(d["entities"], d["entities_status"]) for d in failed] == [([], "failed")] * 2
    for docs in (off, failed):
        Prediction.model_validate(docs[0])
    assert [r.entities for r in store.applied] == [(), ()]
    assert proc.metrics.entity_failures._value.get() == 1  # noqa: SLF001 - prometheus


def test_group_entities_counts_a_key_once_per_comment() -> None:
    [r] = tiny().recognise([EntitySource("iPhone iPhones Apple", ocr_text="IPHONE")])
    grouped = group_entities(r.entities)
    assert [(g.key, g.name, g.labels, g.modalities) for g in grouped] == [
        ("iphone", "iPhone", ("PRODUCT",), ("text", "image")),
        ("apple", "Apple", ("ORG",), ("text",)),
    ]
    the = Entity("the  PlayStation 5", "PRODUCT", "text", 0, 18, "playstation 5")
    assert group_entities([the])[0].name == "PlayStation 5"


def test_schema_bounds_the_entity_list() -> None:
    schema = json.loads((JSON_DIR / "prediction-1.schema.json").read_text())
    assert schema["properties"]["entities"]["anyOf"][0]["maxItems"] == MAX_ENTITIES


# -- the multimodal classifier hands over what it read ------------------------------------------


def test_multimodal_outputs_carry_ocr_text_and_transcript(tmp_path: Path) -> None:
    clf = model.load_classifier(make_tiny_multimodal_dir(tmp_path / "mm", seed=0), device="cpu")
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    voice = rng.standard_normal(16000).astype(np.float32) * 0.1
    outs = clf.predict(
        [
            model.CommentInput("just text"),
            model.CommentInput("look", images=(picture,), audio=(voice,)),
        ]
    )
    assert (outs[0].ocr_text, outs[0].transcript) == ("", "")
    assert outs[1].ocr_text and outs[1].transcript


# -- the packaged model (a few end-to-end tests) ------------------------------------------------


@pytest.fixture(scope="module")
def packaged() -> EntityRecognizer:
    return load_packaged_recognizer()


def test_packaged_model_loads_only_tok2vec_and_ner(packaged: EntityRecognizer) -> None:
    assert packaged.nlp.pipe_names == ["tok2vec", "ner"]
    assert packaged.version.startswith("3.")


def test_packaged_model_finds_brands_people_and_places_in_every_modality(
    packaged: EntityRecognizer,
) -> None:
    [r] = packaged.recognise(
        [
            EntitySource(
                text="Apple support told me Tim Cook would call back, never happened",
                ocr_text="Black Friday sale at Amazon",
                transcript="i ordered from amazon and dhl lost it",
            )
        ]
    )
    # the plumbing of every modality through the real model; its accuracy (lower on upper-case
    # OCR and lower-case transcripts) is what `commentflow evaluate --data entities` measures
    found = {(e.key, e.modality) for e in r.entities}
    assert {("apple", "text"), ("tim cook", "text"), ("amazon", "image")} <= found
    assert ("dhl", "audio") in found


async def test_packaged_model_in_the_runner_off_the_loop(packaged: EntityRecognizer) -> None:
    async with EntityRunner(lambda: packaged) as runner:
        results = await asyncio.gather(
            runner.recognise([EntitySource("Netflix raised prices again")]),
            runner.recognise([EntitySource("Le service de Netflix", language="fr")]),
        )
    assert results[0] is not None and results[1] is not None
    assert results[0][0].status == "ok" and results[1][0].status == "unsupported_language"


# -- the contract: any entity result round-trips through the document and both schemas ----------

_entity = st.builds(
    lambda text, label, modality, start, n: Entity(
        text, label, modality, start, start + n, entity_key(text)
    ),
    st.text(min_size=1, max_size=30),
    st.sampled_from(sorted(ENTITY_LABELS)),
    st.sampled_from(["text", "image", "audio"]),
    st.integers(0, 10_000),
    st.integers(1, 50),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_entity, max_size=MAX_ENTITIES),
    st.sampled_from(["ok", "unsupported_language"]),
)
def test_any_entity_result_makes_a_valid_prediction(entities, status) -> None:
    event = CommentEvent.model_validate_json(
        b'{"comment_id": "c", "user_id": "u", "text": "t", "created_at": "2026-01-01T00:00:00Z"}'
    )
    out = ClassOutput("neutral", {"negative": 0.2, "neutral": 0.5, "positive": 0.3}, ("text",))
    doc = prediction_document(
        event,
        out,
        model={"name": "m", "version": "1"},
        processed_at="2026-01-01T00:00:01Z",
        entities=EntityResult(status, tuple(entities)),
    )
    wire = orjson.loads(orjson.dumps(doc))
    Prediction.model_validate(wire)
    jsonschema.validate(wire, _SCHEMA)
    assert [e["text"] for e in wire["entities"]] == [e.text for e in entities]


def test_the_schema_refuses_too_many_entities_and_unknown_modalities() -> None:
    base = {
        "schema": "commentflow.prediction/1",
        "comment_id": "c",
        "user_id": "u",
        "label": "neutral",
        "scores": {"negative": 0.2, "neutral": 0.5, "positive": 0.3},
        "modalities": ["text"],
        "model": {"name": "m", "version": "1"},
        "created_at": "2026-01-01T00:00:00Z",
        "processed_at": "2026-01-01T00:00:01Z",
        "entities_status": "ok",
    }
    one = {"text": "DHL", "label": "ORG", "modality": "text", "start": 0, "end": 3, "key": "dhl"}
    validator = jsonschema.Draft202012Validator(_SCHEMA)
    assert not list(validator.iter_errors({**base, "entities": [one]}))
    assert list(validator.iter_errors({**base, "entities": [one] * (MAX_ENTITIES + 1)}))
    assert list(validator.iter_errors({**base, "entities": [{**one, "modality": "ocr"}]}))
    assert list(validator.iter_errors({**base, "entities_status": "maybe"}))


# -- the evaluation ------------------------------------------------------------------------------


def test_the_packaged_gold_set_is_consistent() -> None:
    items = load_gold()
    assert len(items) >= 150
    assert {i["modality"] for i in items} == {"text", "image", "audio"}
    for item in items:
        for e in item["entities"]:
            assert item["text"][e["start"] : e["end"]] == e["text"], item["id"]
            assert e["label"] in ENTITY_LABELS
    assert len({i["id"] for i in items}) == len(items)


def test_scores_strict_and_by_key_with_intervals() -> None:
    gold = [
        # found exactly (strict and key)
        {"text": "Apple is bad", "modality": "text",
         "entities": [{"start": 0, "end": 5, "label": "ORG", "text": "Apple"}]},
        # found under another label: wrong strictly, right by key
        {"text": "my iPhone", "modality": "text",
         "entities": [{"start": 3, "end": 9, "label": "ORG", "text": "iPhone"}]},
        # missed (the ruler does not know it) and one found that is not gold (Paris)
        {"text": "DELL IN PARIS", "modality": "image",
         "entities": [{"start": 0, "end": 4, "label": "ORG", "text": "DELL"}]},
        {"text": "nothing here", "modality": "audio", "entities": []},
    ]  # fmt: skip
    r = score_entities(tiny(), gold, n_resamples=50)
    s, k = r["overall"]["strict"], r["overall"]["key"]
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 2)
    assert (k["tp"], k["fp"], k["fn"]) == (2, 1, 1)
    assert k["precision"] == pytest.approx(2 / 3) and k["recall"] == pytest.approx(2 / 3)
    assert r["by_modality"]["image"]["key"]["recall"] == 0.0
    assert r["recall_by_label"]["ORG"] == {"gold": 3, "strict": 1 / 3, "key": 2 / 3}
    lo, hi = r["f1_interval_95"]["key"]
    assert 0.0 <= lo <= k["f1"] <= hi <= 1.0
    text = format_entities(r)
    assert "overall" in text and "image" in text and "ORG 0.33/0.67" in text


def test_evaluate_entities_cli_prints_and_saves(tmp_path: Path, capsys, monkeypatch) -> None:
    from commentflow.cli import main

    monkeypatch.setattr("model.entities.load_packaged_recognizer", lambda config=None: tiny())
    assert (
        main(["evaluate", "--data", "entities", "--bootstrap", "20", "--out", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "held-out gold set" in out and "strict P" in out
    saved = json.loads((tmp_path / "entities.json").read_text())
    assert saved["items"] == len(load_gold()) and saved["model"]["name"] == "tiny"


def test_deployment_patterns_find_products_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "patterns.jsonl"
    path.write_text(
        "# our catalogue\n"
        '{"label": "PRODUCT", "pattern": "galaxy s24"}\n'
        "\n"
        '{"label": "BRAND", "pattern": [{"LOWER": "acme"}, {"LOWER": "pro"}]}\n'
    )
    r = load_packaged_recognizer(patterns=path)
    assert r.version.endswith("+2patterns")
    [res] = r.recognise(
        [
            EntitySource(
                text="my acme pro broke",
                ocr_text="SAMSUNG GALAXY S24 IS TRASH",
                transcript="the galaxy s24 camera is great",
            )
        ]
    )
    found = {(e.key, e.label, e.modality) for e in res.entities}
    assert {
        ("galaxy s24", "PRODUCT", "image"),
        ("galaxy s24", "PRODUCT", "audio"),
        ("acme pro", "BRAND", "text"),
    } <= found


@pytest.mark.parametrize(
    "line",
    ["{not json", '{"label": "ORG"}', '{"label": "", "pattern": "x"}', '["ORG", "x"]'],
)
def test_bad_pattern_files_name_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"label": "ORG", "pattern": "dhl"}\n' + line + "\n")
    with pytest.raises(ModelFormatError, match=r"p\.jsonl:2"):
        read_patterns(path)
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_patterns(tmp_path / "missing.jsonl")


def test_the_worker_loads_the_recogniser_its_settings_name(tmp_path: Path) -> None:
    from streamer.agents import load_entity_recognizer
    from streamer.settings import Settings

    path = tmp_path / "p.jsonl"
    path.write_text('{"label": "PRODUCT", "pattern": "galaxy s24"}\n')
    r = load_entity_recognizer(
        Settings(entities_max_per_comment=3, entities_max_chars=50, entities_patterns=str(path))
    )
    assert (r.config.max_entities, r.config.max_chars) == (3, 50)
    assert "PRODUCT" in r.config.labels and r.version.endswith("+1patterns")
    with pytest.raises(ValueError, match="between 1 and 32"):
        Settings(entities_max_per_comment=33)


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("DHL LOST MY PARCEL", "Dhl Lost My Parcel"),
        ("DHL lost my parcel", "DHL lost my parcel"),  # any lower case: as it is
        ("i ordered from amazon", "i ordered from amazon"),  # transcripts: as they are
        ("OK", "OK"),  # fewer than three capitals
        ("12345 !!", "12345 !!"),
        ("STRASSE \u00df", "STRASSE \u00df"),  # has a lower-case letter (\u00df)
    ],
)
def test_all_caps_texts_are_read_title_cased_with_the_same_length(text: str, read: str) -> None:
    assert _readable(text, True) == read and len(read) == len(text)
    assert _readable(text, False) == text


def test_all_caps_entities_keep_the_original_surface_and_offsets() -> None:
    """The option (off by default: it did not carry to the held-out set, model/entities.py)."""
    assert EntityConfig().titlecase_caps is False
    seen: list[str] = []
    nlp = tiny_nlp()
    real = nlp.pipe

    def pipe(texts, **kw):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, **kw)

    nlp.pipe = pipe  # type: ignore[method-assign]
    on = EntityRecognizer(nlp, config=EntityConfig(titlecase_caps=True))
    [r] = on.recognise([EntitySource(ocr_text="DHL LOST MY IPHONE")])
    assert seen == ["Dhl Lost My Iphone"]
    assert [(e.text, e.start, e.end, e.key) for e in r.entities] == [
        ("DHL", 0, 3, "dhl"),
        ("IPHONE", 12, 18, "iphone"),
    ]
