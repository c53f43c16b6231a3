"""docker-compose.yml is valid for docker-compose (v1, offline) and wires the production stack.

``docker-compose`` must be installed (``make system-deps``): a missing tool fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from commentflow.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
TOPICS = ("comments", "comments.predictions", "comments.dlq")


def _compose_config(
    path: Path, token: str | None = "compose-test-token", profiles: tuple[str, ...] = ()
):
    """``docker-compose -f path [--profile P] config``; ``token``: COMMENTFLOW_DASHBOARD_TOKEN
    (None: unset)."""
    tool = shutil.which("docker-compose")
    assert tool, (
        "docker-compose is not installed: make system-deps (apt-get install docker-compose)"
    )
    unset = {"COMMENTFLOW_DASHBOARD_TOKEN", "REDIS_STATE_MAXMEMORY", "REDIS_CACHE_MAXMEMORY"}
    env = {k: v for k, v in os.environ.items() if k not in unset}  # the file's defaults
    if token is not None:
        env["COMMENTFLOW_DASHBOARD_TOKEN"] = token
    return subprocess.run(
        [tool, "-f", str(path), *(f"--profile={p}" for p in profiles), "config"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = _compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_dashboard_needs_a_token_and_the_worker_health_is_readyz(config: dict[str, Any]) -> None:
    dash = config["services"]["dashboard"]
    assert _env(dash)["COMMENTFLOW_DASHBOARD_TOKEN"] == "compose-test-token"
    assert _env(dash)["COMMENTFLOW_DASHBOARD_HOST"] == "0.0.0.0"  # noqa: S104 (in a container)
    result = _compose_config(COMPOSE_FILE, token=None)
    assert result.returncode != 0 and "dashboard token" in result.stderr
    assert "/readyz" in " ".join(config["services"]["worker"]["healthcheck"]["test"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"kafka", "topics", "redis", "redis-cache", "worker", "producer-demo"} <= set(services)
    assert services["producer-demo"].get("profiles") == ["demo"]
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    for name in ("kafka", "redis", "redis-cache", "worker"):
        assert "healthcheck" in services[name], name


def _flags(command: list[str]) -> dict[str, str]:
    """``["redis-server", "--a", "1", "--b", "x"]`` -> ``{"--a": "1", "--b": "x"}``."""
    assert command[0] == "redis-server", command
    return dict(zip(command[1::2], command[2::2], strict=True))


def test_state_redis_persists_and_never_evicts(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    flags = _flags(redis["command"])
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--maxmemory"] == "4gb"  # full: writes answer OOM, the workers retry
    assert any(v.endswith(":/data") or ":/data:" in v for v in redis["volumes"])


def test_cache_redis_is_bounded_lru_without_persistence(config: dict[str, Any]) -> None:
    cache = config["services"]["redis-cache"]
    assert cache["image"].startswith("redis:7")
    flags = _flags(cache["command"])
    assert flags["--maxmemory-policy"] == "allkeys-lru"
    assert flags["--maxmemory"] == "512mb"
    assert flags["--appendonly"] == "no" and flags["--save"] == ""
    assert "volumes" not in cache


@pytest.mark.parametrize("service", ["worker", "dashboard"])
def test_workers_and_dashboard_get_both_redis(config: dict[str, Any], service: str) -> None:
    env = _env(config["services"][service])
    assert env["COMMENTFLOW_REDIS_URL"] == "redis://redis:6379/0"
    assert env["COMMENTFLOW_REDIS_CACHE_URL"] == "redis://redis-cache:6379/0"


def test_kafka_runs_kraft_combined_mode(config: dict[str, Any]) -> None:
    kafka = config["services"]["kafka"]
    env = _env(kafka)
    assert kafka["image"].startswith(("apache/kafka:", "bitnami/kafka:"))
    roles = env.get("KAFKA_PROCESS_ROLES") or env.get("KAFKA_CFG_PROCESS_ROLES")
    assert set(roles.split(",")) == {"broker", "controller"}
    assert "1@kafka:9093" in (
        env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or env.get("KAFKA_CFG_CONTROLLER_QUORUM_VOTERS")
    )
    advertised = env.get("KAFKA_ADVERTISED_LISTENERS") or env.get("KAFKA_CFG_ADVERTISED_LISTENERS")
    assert "kafka:9092" in advertised
    assert not any("ZOOKEEPER" in k for k in env)


def test_topics_service_creates_the_three_topics(config: dict[str, Any]) -> None:
    topics = config["services"]["topics"]
    script = " ".join(topics.get("command") or []) + " ".join(topics.get("entrypoint") or [])
    script += " ".join(_env(topics).values())  # the names are the workers' variables' defaults
    for topic in TOPICS:
        assert topic in script
    assert "--if-not-exists" in script
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def _run_topics_job(job: dict[str, Any], tmp_path: Path) -> dict[str, int]:
    """Run the job's script with a stub ``kafka-topics.sh``: the topics it creates, with their
    partition counts."""
    log = tmp_path / "kafka-topics.log"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text('#!/bin/sh\necho "$@" >> "$LOG"\n')
    stub.chmod(0o755)
    script = job["command"][0].replace("$$", "$")
    script = script.replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    env = {**_env(job), "LOG": str(log), "PATH": os.environ["PATH"]}
    subprocess.run([*job["entrypoint"], script], env=env, check=True)
    created: dict[str, int] = {}
    for line in log.read_text().splitlines():
        words = line.split()
        if "--create" in words:
            assert "--if-not-exists" in words, line
            created[words[words.index("--topic") + 1]] = int(words[words.index("--partitions") + 1])
    return created


#: The worker settings that name or size a topic.
_TOPIC_VARIABLES = {
    ENV_PREFIX + name
    for name in ("INPUT_TOPIC", "PREDICTIONS_TOPIC", "DLQ_TOPIC", "APP_ID", "TOPIC_PARTITIONS")
}


@pytest.mark.parametrize(
    "overrides", [{}, {"COMMENTFLOW_APP_ID": "cf-eu", "COMMENTFLOW_DLQ_TOPIC": "dl"}]
)
def test_topics_job_creates_every_topic_the_worker_needs(
    overrides: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input, predictions and dead-letter topics and Faust's leader topic, named from the
    same variables as the workers' settings (streamer.topics.worker_topics is the list)."""
    from streamer.topics import worker_topics

    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    config = yaml.safe_load(_compose_config(COMPOSE_FILE).stdout)
    created = _run_topics_job(config["services"]["topics"], tmp_path)
    for service in ("worker", "worker-gpu", "worker-secure"):
        if service in config["services"]:
            env = _env(config["services"][service])
            worker_env = {k: v for k, v in env.items() if k in _TOPIC_VARIABLES}
            assert created == worker_topics(Settings.from_env(worker_env)), service
    assert set(overrides.values()) - {"cf-eu"} <= set(created)


def test_cpu_workers_reserve_no_gpu(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    assert worker["profiles"] == ["cpu"]
    assert worker["command"] == ["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert worker["image"] == "commentflow:cpu"
    assert worker["deploy"]["replicas"] == 3
    assert "resources" not in worker["deploy"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["redis-cache"]["condition"] == "service_healthy"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    env = _env(worker)
    assert env["COMMENTFLOW_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["COMMENTFLOW_REDIS_URL"] == "redis://redis:6379/0"


def test_gpu_workers_run_the_cuda_build_with_a_gpu_each(config: dict[str, Any]) -> None:
    cpu, gpu = config["services"]["worker"], config["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert gpu["image"] == "commentflow:cuda" != cpu["image"]
    assert _env(gpu)["COMMENTFLOW_DEVICE"] == "cuda"  # no silent fallback to the CPU
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    # everything else as the CPU worker: same group, dependencies, health, command
    for key in ("command", "depends_on", "healthcheck", "stop_grace_period", "expose"):
        assert gpu[key] == cpu[key], key
    assert {**_env(gpu), "COMMENTFLOW_DEVICE": "-"} == {**_env(cpu), "COMMENTFLOW_DEVICE": "-"}


@pytest.mark.parametrize("profile", ["cpu", "gpu", "demo"])
def test_each_profile_validates(profile: str) -> None:
    """v1 ``config`` lists every profile's services (the checks above); each profile parses."""
    result = _compose_config(COMPOSE_FILE, profiles=(profile,))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service", ["dashboard", "producer-demo"])
def test_other_services_use_the_cpu_image(config: dict[str, Any], service: str) -> None:
    assert config["services"][service]["image"] == "commentflow:cpu"
    assert "resources" not in (config["services"][service].get("deploy") or {})


@pytest.mark.parametrize("service", ["worker", "worker-gpu", "producer-demo", "dashboard"])
def test_env_names_only_settings_fields(config: dict[str, Any], service: str) -> None:
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    env = _env(config["services"][service])
    assert env, service
    assert set(env) <= known, set(env) - known
    Settings.from_env(env)  # and every value reads as its field's type


@pytest.mark.parametrize("service", ["worker", "worker-gpu", "producer-demo", "dashboard"])
def test_commands_are_real_cli_commands(config: dict[str, Any], service: str) -> None:
    """Every commentflow service's command parses with the real ``commentflow`` CLI."""
    from commentflow.cli import build_parser

    args = build_parser().parse_args(config["services"][service]["command"])
    assert callable(args.func)


def test_dockerfile_installs_the_torch_variant_first() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    torch_at = text.index("torch==2.13.0")
    # TORCH_VARIANT picks the wheel index: CPU by default, a CUDA build by name; checked
    assert "ARG TORCH_VARIANT=cpu" in text
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert "torch.version.cuda" in text
    assert torch_at < text.index("pip install -c constraints.txt .")
    # installed as an application, in its own venv, never into the system site-packages
    venv_at = text.index("RUN python -m venv /opt/commentflow")
    assert venv_at < torch_at and "PATH=/opt/commentflow/bin:$PATH" in text
    # the tested versions, no extra (no embedded broker, no test tools)
    assert "COPY pyproject.toml README.md constraints.txt ./" in text
    assert "/opt/commentflow/bin/pip install -c constraints.txt ." in text
    assert ".[" not in text and "pip install calfkit" not in text
    assert 'ENTRYPOINT ["commentflow"]' in text
    assert "\nUSER " in text


def test_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above means something: a wrong type fails ``config``."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text().replace("replicas: 3", "replicas: three")
    assert text != COMPOSE_FILE.read_text()
    broken.write_text(text)
    result = _compose_config(broken)
    assert result.returncode != 0 and "replicas" in result.stderr, result.stderr


def test_secure_profile_worker_reads_its_password_from_a_secret_file(
    config: dict[str, Any], tmp_path: Path
) -> None:
    """worker-secure (profile "secure"): SASL_SSL settings that validate; the password only
    through ``*_FILE`` from a Docker secret, never in the environment or on the command line."""
    from streamer.settings import FILE_SUFFIX, is_secret

    service = config["services"]["worker-secure"]
    assert service["profiles"] == ["secure"]
    env = _env(service)
    secrets = {ENV_PREFIX + f.name.upper() for f in fields(Settings) if is_secret(f)}
    assert not secrets & set(env), "a secret in the environment"
    password_file = env["COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE"]
    assert password_file.startswith("/run/secrets/")
    assert {s["source"] if isinstance(s, dict) else s for s in service["secrets"]} >= {
        Path(password_file).name
    }
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    assert set(env) <= known | {name + FILE_SUFFIX for name in secrets}
    (tmp_path / "password").write_text("from-a-file\n")
    local = {**env, "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password")}
    settings = Settings.from_env(local)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password == "from-a-file"  # noqa: S105
    assert "password" not in " ".join(service["command"])
