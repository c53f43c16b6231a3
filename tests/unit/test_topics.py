"""The worker's topic list and the facts the README's ACL table rests on, read from Faust itself."""

from __future__ import annotations

from streamer.app import create_app
from streamer.settings import Settings
from streamer.topics import leader_topic, worker_topics


def test_the_leader_topic_is_fausts_and_the_app_declares_nothing() -> None:
    settings = Settings(app_id="cf-x", web_enabled=False, topic_partitions=6)
    app = create_app(settings)
    assert not app.conf.topic_allow_declare  # no Create ACL: every topic exists beforehand
    assert not app.conf.topic_disable_leader  # so the leader topic is subscribed to
    assert (
        app._leader_assignor._leader_topic_name
        == leader_topic(settings)
        == "cf-x-__assignor-__leader"
    )
    assert worker_topics(settings) == {
        settings.input_topic: 6,
        settings.predictions_topic: 6,
        settings.dlq_topic: 6,
        "cf-x-__assignor-__leader": 1,
    }
    assert not app.tables  # no changelog topics


def test_the_producer_is_not_idempotent_so_no_idempotent_write_acl() -> None:
    app = create_app(Settings(web_enabled=False))
    assert app.conf.processing_guarantee.value == "at_least_once"  # no transactions
    kwargs = {**app.producer._settings_default(), **app.producer._settings_extra()}
    assert not kwargs.get("enable_idempotence") and kwargs["acks"] == -1


async def test_the_worker_consumer_long_polls_at_most_consumer_fetch_max_wait_s() -> None:
    # faust hard-codes fetch_max_wait_ms=1500; streamer.consumer replaces it (what tansu needs)
    app = create_app(Settings(web_enabled=False, consumer_fetch_max_wait_s=0.03))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 30  # what aiokafka hands its Fetcher in start()


def test_faust_makes_its_data_folder_outside_the_working_directory(tmp_path, monkeypatch) -> None:
    # Faust creates ``<datadir>/v1/tables`` at start (memory tables write nothing there); its
    # default ``<app_id>-data`` is relative, so every worker and test left a folder in the cwd.
    monkeypatch.chdir(tmp_path)
    app = create_app(Settings(app_id="cf/odd id", web_enabled=False))
    app._create_directories()
    assert list(tmp_path.iterdir()) == []
    assert app.conf.datadir.is_absolute() and app.conf.tabledir.is_dir()
    assert app.conf.datadir.name == "commentflow-faust-cf_odd_id"
