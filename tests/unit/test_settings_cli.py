from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commentflow.cli import VERBS, build_parser, command, main, settings_from_args
from commentflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]
#: The verbs whose module still delegates to the model package (torch) until it is restructured.
MODEL_VERBS = {
    "train",
    "evaluate",
    "build-data",
    "features",
    "train-fusion",
    "evaluate-multimodal",
    "bench-model",
}


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
    with pytest.raises(ValueError, match="precision"):
        Settings(precision="float16")
    with pytest.raises(ValueError, match="inference_lanes"):
        Settings(inference_lanes=-1)


def test_to_env_round_trips():
    s = Settings(batch_max=9, web_enabled=False, kafka_bootstrap="a:1,b:2")
    assert Settings.from_env(s.to_env()) == s


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("COMMENTFLOW_BATCH_MAX", "7")
    monkeypatch.setenv("COMMENTFLOW_INPUT_TOPIC", "from-env")
    args = build_parser().parse_args(["worker", "--batch-max", "11", "--no-web-enabled"])
    s = settings_from_args(args)
    assert (s.batch_max, s.input_topic, s.web_enabled) == (11, "from-env", False)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    mod = command(verb)
    assert f"commentflow {verb}" in out and mod.HELP in out
    assert "example:" in out and mod.EXAMPLE.split()[1] == verb
    assert ("settings:" in out) == mod.USES_SETTINGS


def test_the_verb_modules_keep_to_the_contract():
    for verb in VERBS:
        mod = command(verb)
        assert isinstance(mod.HELP, str) and "\n" not in mod.HELP, verb
        assert mod.EXAMPLE.startswith(f"commentflow {verb}"), verb
        assert isinstance(mod.USES_SETTINGS, bool), verb
        assert callable(mod.add_arguments) and callable(mod.run), verb


def test_every_setting_flag_explains_itself():
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize("verb", ["worker", "stack", "bench", "soak"])
def test_model_and_partitions_are_one_flag_each_with_a_hidden_alias(verb, capsys):
    args = build_parser().parse_args([verb, "--model", "m1", "--partitions", "3"])
    assert (args.model_dir, args.topic_partitions) == ("m1", 3)
    args = build_parser().parse_args([verb, "--model-dir", "m2", "--topic-partitions", "4"])
    assert (args.model_dir, args.topic_partitions) == ("m2", 4)
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "--model MODEL_DIR" in out and "--partitions" in out
    assert "--model-dir" not in out and "--topic-partitions" not in out


def test_worker_refuses_a_missing_model_dir(capsys):
    assert main(["worker", "--model", "/nonexistent/model"]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def _cli(
    *argv: str,
    env: dict[str, str] | None = None,
    python: tuple[str, ...] = ("-m", "commentflow"),
):
    """``python [python] [argv]`` from the repository, without COMMENTFLOW_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *python, *argv],
        env={**base, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


#: What no ``--help`` may import (the model verbs too, once the model restructure lands).
HEAVY = ("torch", "numpy", "transformers", "faust", "aiokafka", "redis", "PIL", "onnxruntime")

#: Runs the CLI's main and prints the top-level packages imported, on stderr's last line.
_MODULES_AFTER_MAIN = (
    "import sys\n"
    "from commentflow.cli import main\n"
    "try:\n    main(sys.argv[1:])\n"
    "except SystemExit:\n    pass\n"
    "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
)


@pytest.mark.parametrize("verb", [None, *sorted(set(VERBS) - MODEL_VERBS)])
def test_help_imports_nothing_heavy(verb):
    """``commentflow --help`` and every non-model ``VERB --help``: no torch, Faust, Kafka ..."""
    result = _cli(*([verb] if verb else []), "--help", python=("-c", _MODULES_AFTER_MAIN))
    assert result.returncode == 0, result.stderr[-2000:]
    imported = set(result.stderr.strip().splitlines()[-1].split())
    assert "commentflow" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    if verb is None:  # the top level lists every verb with its one-line help
        for name in VERBS:
            assert name in result.stdout and command(name).HELP[:30] in result.stdout, name


def test_importtime_of_help_shows_no_torch():
    """The check of the README: ``python -X importtime -m commentflow --help`` names no torch."""
    result = _cli("--help", python=("-X", "importtime", "-m", "commentflow"))
    assert result.returncode == 0 and "import time:" in result.stderr
    assert "torch" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["worker"], {"COMMENTFLOW_BATCH_MAX": "abc"}, "COMMENTFLOW_BATCH_MAX"),
        (["worker", "--batch-max", "0"], {}, "batch_max must be at least 1"),
        (["produce", "--batch-max", "x"], {}, "--batch-max"),
        (["no-such-verb"], {}, "invalid choice"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(argv, env, says):
    result = _cli(*argv, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert lines[0].startswith("commentflow")
    assert "Traceback" not in result.stderr


def test_python_m_commentflow():
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "commentflow 0.1.0"


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
