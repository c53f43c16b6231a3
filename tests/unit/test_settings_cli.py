from __future__ import annotations

import dataclasses

import pytest

from commentflow.cli import build_parser, main, settings_from_args
from commentflow.settings import Settings


def test_env_is_read_and_typed():
    s = Settings.from_env(
        {
            "COMMENTFLOW_BATCH_MAX": "7",
            "COMMENTFLOW_BATCH_WAIT_S": "0.5",
            "COMMENTFLOW_WEB_ENABLED": "no",
            "COMMENTFLOW_REDIS_PREFIX": "x:",
            "OTHER": "1",
        }
    )
    assert (s.batch_max, s.batch_wait_s, s.web_enabled, s.redis_prefix) == (7, 0.5, False, "x:")


def test_bad_env_value_names_the_variable():
    with pytest.raises(ValueError, match="COMMENTFLOW_BATCH_MAX"):
        Settings.from_env({"COMMENTFLOW_BATCH_MAX": "many"})


def test_settings_are_frozen_and_checked():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_max = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        Settings(batch_max=0)


def test_to_env_round_trips():
    s = Settings(batch_max=9, web_enabled=False, kafka_bootstrap="a:1,b:2")
    assert Settings.from_env(s.to_env()) == s


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("COMMENTFLOW_BATCH_MAX", "7")
    monkeypatch.setenv("COMMENTFLOW_INPUT_TOPIC", "from-env")
    args = build_parser().parse_args(["worker", "--batch-max", "11", "--no-web-enabled"])
    s = settings_from_args(args)
    assert (s.batch_max, s.input_topic, s.web_enabled) == (11, "from-env", False)


@pytest.mark.parametrize(
    "command",
    ["stack", "worker", "produce", "build-data", "train", "evaluate", "bench", "dashboard", "demo"],
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_worker_refuses_a_missing_model_dir(capsys):
    assert main(["worker", "--model-dir", "/nonexistent/model"]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_produce_needs_exactly_one_source(capsys):
    assert main(["produce"]) == 2
    assert main(["produce", "x.jsonl", "--synthetic", "3"]) == 2


def test_observability_settings_are_flags_and_checked():
    args = build_parser().parse_args(
        ["dashboard", "--dashboard-port", "0", "--dashboard-token", "t", "--log-format", "json"]
    )
    s = settings_from_args(args)
    assert (s.dashboard_port, s.dashboard_token, s.log_format) == (0, "t", "json")
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")
