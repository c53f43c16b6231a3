"""TLS end to end on the real stack: a worker, the producer CLI and the readiness probe talk to the
embedded broker only through stunnel, with certificates made by the test (mTLS: the broker side
requires a client certificate signed by the test CA).

The broker advertises only the TLS port, so every connection a client makes after bootstrap
(metadata, the group coordinator, fetches, the producer) goes through TLS too. The negative tests
check that a certificate problem stops the worker with one clear line and exit status 2 (the
pre-flight in ``streamer.app``), never a worker that silently retries forever.

Needs ``openssl`` and Debian's ``stunnel4`` (``make system-deps``): without them the tests fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from support.stream import readyz, wait_for, wait_predictions
from support.tls import TlsBroker, find_stunnel, make_pki

from commentflow.processes import free_port
from model.testing import make_tiny_model_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    # a missing tool fails, never skips: `make test` must prove TLS
    assert find_stunnel() and shutil.which("openssl"), "make system-deps (stunnel4, openssl)"
    # the server certificate names only "localhost": 127.0.0.1 is a hostname mismatch
    return make_pki(tmp_path_factory.mktemp("pki"), server_names=("DNS:localhost",))


@pytest.fixture(scope="module")
async def tls_broker(pki, tmp_path_factory: pytest.TempPathFactory):
    async with TlsBroker(pki, tmp_path_factory.mktemp("tls-broker")) as broker:
        yield broker


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model") / "model")


def tls_settings(make_settings, tiny_model, broker: TlsBroker, pki, **overrides):
    values = {
        "kafka_bootstrap": broker.bootstrap,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": str(pki.ca),
        "kafka_ssl_certfile": str(pki.client_cert),
        "kafka_ssl_keyfile": str(pki.client_key),
        **overrides,
    }
    return make_settings(tiny_model, **values)


async def create_topics(settings, partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_security.client_kwargs()
    )
    await admin.start()
    try:
        names = [settings.input_topic, settings.predictions_topic, settings.dlq_topic]
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def exit_code(worker, timeout_s: float = 60.0) -> int | None:
    await wait_for(lambda: not worker.alive(), timeout_s=timeout_s, what="the worker's exit")
    return worker.stop()


async def test_worker_producer_cli_and_probe_over_mutual_tls(
    stack, make_settings, tiny_model, tls_broker, pki, start_worker
):
    web_port = free_port()
    settings = tls_settings(
        make_settings,
        tiny_model,
        tls_broker,
        pki,
        topic_partitions=2,
        web_enabled=True,
        web_port=web_port,
    )
    await create_topics(settings)
    worker = start_worker(settings, "tls-worker")
    # the reference producer, as a user runs it: settings from the environment only
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")}
    env.update(settings.to_env(secrets=True))
    produced = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "commentflow.cli", "produce", "--synthetic", "12", "--seed", "5"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    ids = {f"syn-5-{i}" for i in range(12)}
    docs = await wait_predictions(settings, ids, worker=worker, timeout_s=120)
    assert ids <= {d["comment_id"] for d in docs}
    # /readyz: its broker check is a client of its own, connected with the same TLS settings
    status, body = await wait_for(
        lambda: _ready(web_port), timeout_s=30, what="/readyz to answer 200"
    )
    assert status == 200 and body["checks"]["broker"] == "ok", body


async def _ready(port: int):
    try:
        status, body = await readyz(port)
    except OSError:
        return None
    return (status, body) if status == 200 else None


async def test_wrong_ca_stops_the_worker_with_a_clear_error(
    stack, make_settings, tiny_model, tls_broker, pki, start_worker
):
    settings = tls_settings(
        make_settings, tiny_model, tls_broker, pki, kafka_ssl_cafile=str(pki.other_ca)
    )
    worker = start_worker(settings, "wrong-ca")
    assert await exit_code(worker) == 2, worker.log_tail()
    assert "CERTIFICATE_VERIFY_FAILED" in worker.log_tail(), worker.log_tail()


async def test_hostname_mismatch_is_refused_unless_checking_is_off(
    stack, make_settings, tiny_model, tls_broker, pki, start_worker
):
    by_ip = f"127.0.0.1:{tls_broker.tls_port}"  # the certificate names only localhost
    settings = tls_settings(make_settings, tiny_model, tls_broker, pki, kafka_bootstrap=by_ip)
    worker = start_worker(settings, "mismatch")
    assert await exit_code(worker) == 2, worker.log_tail()
    assert "mismatch" in worker.log_tail(), worker.log_tail()

    # turned off, the chain is still verified and the same address works
    unchecked = settings.replace(kafka_ssl_check_hostname=False)
    await create_topics(unchecked)
    producer = AIOKafkaProducer(bootstrap_servers=by_ip, **unchecked.kafka_security.client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(unchecked.input_topic, b"{}")
    finally:
        await producer.stop()


async def test_missing_client_certificate_is_refused_by_an_mtls_broker(
    stack, make_settings, tiny_model, tls_broker, pki, start_worker
):
    settings = tls_settings(
        make_settings, tiny_model, tls_broker, pki, kafka_ssl_certfile="", kafka_ssl_keyfile=""
    )
    worker = start_worker(settings, "no-client-cert")
    assert await exit_code(worker) == 2, worker.log_tail()
    assert "refused the TLS session" in worker.log_tail(), worker.log_tail()
