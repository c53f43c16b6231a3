"""Kafka security settings: validation, secrets handling, and the one mapping to the clients.

SASL (PLAIN, SCRAM, OAUTHBEARER) cannot be proven end to end here: the embedded broker (tansu
0.6) offers only SCRAM behind ``--authentication``, keeps users in its memory store and refuses
the AlterUserScramCredentials request that would create one before the client authenticates, so
no login can succeed. These tests check what the clients are given instead: aiokafka's keyword
arguments and what Faust derives from our ``broker_credentials`` (its own
``credentials_to_aiokafka_auth``, which its consumer, producer and admin client call).
TLS runs end to end in ``tests/integration/test_kafka_tls.py``.
"""

from __future__ import annotations

import ssl
from dataclasses import fields
from pathlib import Path

import pytest
from support.tls import make_pki

from commentflow.cli import build_parser
from streamer.settings import Settings, is_secret
from workers.kafka_security import KafkaSecurity, KafkaSecurityError

SECRET = "s3cr3t-Pa55"  # noqa: S105 - a test value that must never leak


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def sasl(**changes: object) -> Settings:
    values = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "commentflow",
        "kafka_sasl_password": SECRET,
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol must be one of"),
        ({"kafka_sasl_username": ""}, "SASL_SSL needs kafka_sasl_username"),
        ({"kafka_sasl_password": ""}, "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism must be one of"),
        ({"kafka_sasl_mechanism": "OAUTHBEARER"}, "OAUTHBEARER needs kafka_sasl_oauth_token_file"),
        (
            {
                "kafka_sasl_mechanism": "OAUTHBEARER",
                "kafka_sasl_oauth_token_file": "/run/secrets/token",
            },
            "not a SASL username or password",
        ),
        ({"kafka_sasl_oauth_token_file": "/t"}, "needs kafka_sasl_mechanism OAUTHBEARER"),
        ({"kafka_security_protocol": "SSL"}, "use SASL_SSL"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": "/ca.pem"},
            "use SSL or SASL_SSL",
        ),
        ({"kafka_ssl_keyfile": "/k.pem"}, "kafka_ssl_keyfile needs kafka_ssl_certfile"),
    ],
)
def test_bad_combinations_are_one_clear_line_without_the_secret(changes, message):
    with pytest.raises(KafkaSecurityError) as info:
        sasl(**changes)
    text = str(info.value)
    assert message in text and "\n" not in text and SECRET not in text


def test_plaintext_is_the_default_and_needs_nothing():
    s = Settings()
    assert s.kafka_security == KafkaSecurity()
    assert s.kafka_security.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert s.kafka_ssl_check_hostname is True


def test_unreadable_tls_files_name_the_file(tmp_path: Path):
    security = KafkaSecurity(
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "missing.pem")
    )
    with pytest.raises(KafkaSecurityError, match="missing.pem"):
        security.ssl_context()


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_are_not_in_repr_dumps_or_describe():
    s = sasl(
        kafka_ssl_certfile="/run/secrets/client.pem",
        kafka_ssl_keyfile="/run/secrets/client.key",
        kafka_ssl_key_password="key-" + SECRET,
    )
    assert SECRET not in repr(s) and SECRET not in repr(s.kafka_security)
    assert SECRET not in str(s.to_env()) and SECRET not in s.kafka_security.describe()
    # ... but a child process that needs them gets them
    child = s.to_env(secrets=True)
    assert child["COMMENTFLOW_KAFKA_SASL_PASSWORD"] == SECRET
    assert Settings.from_env(child) == s


def test_secrets_have_no_command_line_flag():
    secret_fields = [f.name for f in fields(Settings) if is_secret(f)]
    assert secret_fields == ["kafka_sasl_password", "kafka_ssl_key_password"]
    help_text = build_parser(["worker"])._subparsers._group_actions[0].choices["worker"]  # noqa: SLF001
    flags = help_text.format_help()
    assert "--kafka-sasl-username" in flags and "--kafka-ssl-cafile" in flags
    assert "--kafka-sasl-password" not in flags and "--kafka-ssl-key-password" not in flags
    with pytest.raises(SystemExit):
        build_parser(["worker"]).parse_args(["worker", "--kafka-sasl-password", SECRET])


def test_secret_from_a_file(tmp_path: Path):
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    env = {
        "COMMENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "COMMENTFLOW_KAFKA_SASL_USERNAME": "commentflow",
        "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE": str(path),
    }
    assert Settings.from_env(env).kafka_sasl_password == SECRET
    with pytest.raises(ValueError, match="not both"):
        Settings.from_env({**env, "COMMENTFLOW_KAFKA_SASL_PASSWORD": SECRET})
    with pytest.raises(ValueError, match="PASSWORD_FILE: cannot read") as info:
        Settings.from_env({**env, "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "no")})
    assert SECRET not in str(info.value)


def test_a_child_process_gets_the_secret_value_not_the_file_too(tmp_path: Path):
    path = tmp_path / "password"
    path.write_text(SECRET)
    parent = {
        "COMMENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "COMMENTFLOW_KAFKA_SASL_USERNAME": "commentflow",
        "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE": str(path),
        "PATH": "/usr/bin",
    }
    settings = Settings.from_env(parent)
    child = settings.child_env(parent)
    assert "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE" not in child and child["PATH"] == "/usr/bin"
    assert Settings.from_env(child) == settings


def test_embedded_stack_tools_drop_the_security_settings():
    s = sasl(app_id="bench-x")
    plain = s.without_kafka_security()
    assert plain.kafka_security == KafkaSecurity() and plain.app_id == "bench-x"


def test_file_convention_for_ordinary_settings_too(tmp_path: Path):
    path = tmp_path / "user"
    path.write_text("someone\n")
    env = {
        "COMMENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "COMMENTFLOW_KAFKA_SASL_USERNAME_FILE": str(path),
        "COMMENTFLOW_KAFKA_SASL_PASSWORD": "pw",
    }
    assert Settings.from_env(env).kafka_sasl_username == "someone"
    child = Settings.from_env(env).child_env({**env, "PATH": "/bin"})
    assert "COMMENTFLOW_KAFKA_SASL_USERNAME_FILE" not in child
    assert child["COMMENTFLOW_KAFKA_SASL_USERNAME"] == "someone"


# -- the mapping ----------------------------------------------------------------------------------


def test_aiokafka_kwargs_for_sasl_ssl_with_mtls(pki):
    s = sasl(
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_certfile=str(pki.client_cert),
        kafka_ssl_keyfile=str(pki.client_key),
    )
    kwargs = s.kafka_security.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "commentflow",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_check_hostname_can_be_turned_off(pki):
    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_check_hostname=False,
    )
    context = s.kafka_security.ssl_context()
    assert context is not None and not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    assert "hostname NOT verified" in s.kafka_security.describe()


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SSL", None),
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "OAUTHBEARER"),
        ("SASL_PLAINTEXT", "OAUTHBEARER"),
        ("PLAINTEXT", None),
    ],
)
def test_faust_hands_aiokafka_what_the_other_clients_get(pki, protocol, mechanism):
    """What Faust's consumer, producer and admin client receive equals our client kwargs."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streamer.app import broker_credentials

    values: dict[str, object] = {"kafka_security_protocol": protocol}
    if mechanism == "OAUTHBEARER":
        values.update(kafka_sasl_mechanism=mechanism, kafka_sasl_oauth_token_file="/run/t")
    elif mechanism:
        values.update(
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="commentflow",
            kafka_sasl_password=SECRET,
        )
    if protocol.endswith("SSL"):
        values["kafka_ssl_cafile"] = str(pki.ca)
    security = Settings(**values).kafka_security  # type: ignore[arg-type]
    credentials = broker_credentials(security)
    faust_kwargs = dict(credentials_to_aiokafka_auth(credentials))
    ours = security.client_kwargs()
    faust_context = faust_kwargs.pop("ssl_context", None)
    our_context = ours.pop("ssl_context", None)
    assert {k: v for k, v in faust_kwargs.items() if v is not None} == ours
    assert (faust_context is None) == (our_context is None)
    if faust_context is not None:
        assert faust_context.check_hostname and faust_context.verify_mode == ssl.CERT_REQUIRED
    assert SECRET not in repr(credentials)


def test_faust_app_is_built_with_the_credentials(pki):
    from streamer.app import create_app

    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),
        web_enabled=False,
        consumer_auto_offset_reset="latest",
    )
    app = create_app(s)
    assert type(app.conf.broker_credentials).__name__ == "SSLCredentials"
    assert app.conf.consumer_auto_offset_reset == "latest"


# -- start position ---------------------------------------------------------------------------


def test_start_position_setting():
    assert Settings().consumer_auto_offset_reset == "earliest"
    env = {"COMMENTFLOW_CONSUMER_AUTO_OFFSET_RESET": "latest"}
    assert Settings.from_env(env).consumer_auto_offset_reset == "latest"
    with pytest.raises(ValueError, match="earliest or latest"):
        Settings(consumer_auto_offset_reset="none")


# -- OAUTHBEARER ------------------------------------------------------------------------------


async def test_oauth_token_is_read_from_its_file_at_every_login(tmp_path: Path):
    from workers.kafka_oauth import FileTokenProvider, TokenFileError

    path = tmp_path / "token"
    path.write_text("eyJ.first\n")
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_file=str(path),
    )
    kwargs = s.kafka_security.client_kwargs()
    provider = kwargs["sasl_oauth_token_provider"]
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER" and isinstance(provider, FileTokenProvider)
    assert await provider.token() == "eyJ.first"
    path.write_text("eyJ.refreshed")  # a sidecar renewed it
    assert await provider.token() == "eyJ.refreshed"
    assert "eyJ" not in repr(provider) and "eyJ" not in s.kafka_security.describe()
    path.write_text("")
    with pytest.raises(TokenFileError, match="is empty"):
        await provider.token()
    path.unlink()
    with pytest.raises(TokenFileError, match="token file"):
        await provider.token()


def test_worker_stops_at_start_without_its_oauth_token(tmp_path: Path):
    """Before the model loads or a broker is contacted: one line, exit status 2."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")}
    env.update(
        COMMENTFLOW_KAFKA_BOOTSTRAP="127.0.0.1:9",
        COMMENTFLOW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        COMMENTFLOW_KAFKA_SASL_MECHANISM="OAUTHBEARER",
        COMMENTFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE=str(tmp_path / "absent"),
        COMMENTFLOW_MODEL_DIR=str(tmp_path / "no-model"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "commentflow.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Kafka security: OAUTHBEARER token file" in result.stderr, result.stderr[-2000:]
