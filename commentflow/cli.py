"""The ``commentflow`` command line: a table of verbs, one module of :mod:`commentflow.commands`
each.

``commentflow --help`` reads the verbs' one-line ``HELP`` from their light modules and nothing
else; ``commentflow VERB ...`` builds that verb's parser only and calls its ``run``, which imports
what the verb needs (torch only for the verbs that load a model). Every
:class:`~streamer.settings.Settings` field is a flag of the verbs that use settings
(``--kafka-bootstrap``, ``--redis-url``, ``--model``, ...) that overrides its ``COMMENTFLOW_*``
variable. Secret settings (``metadata["secret"]``: the Kafka passwords) have no flag, since
flags show in ``ps``: they come from the environment or a ``COMMENTFLOW_<NAME>_FILE``. A bad flag or
setting is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from types import ModuleType
from typing import Any, NoReturn

from commentflow import __version__
from streamer.settings import ENV_PREFIX, Settings, is_secret

__all__ = ["VERBS", "build_parser", "main", "settings_from_args"]

#: The verbs, in the order ``commentflow --help`` lists them: the stream, the model, the tools.
VERBS: tuple[str, ...] = (
    "stack",
    "worker",
    "produce",
    "train",
    "train-char-expert",
    "train-fallback",
    "evaluate",
    "build-data",
    "features",
    "train-fusion",
    "evaluate-multimodal",
    "bench-model",
    "predict",
    "tail",
    "bench",
    "gpu-check",
    "dashboard",
    "demo",
    "forget-user",
    "redis-memory",
    "soak",
)

#: Settings whose flag is not their field's name; the field's name stays a hidden alias.
FLAGS = {"model_dir": "--model", "topic_partitions": "--partitions"}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command(verb: str) -> ModuleType:
    """The light module of ``verb`` (``HELP``, ``EXAMPLE``, ``add_arguments``, ``run``)."""
    return importlib.import_module("commentflow.commands." + verb.replace("-", "_"))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`Settings` field, in a group, each with its one-line help."""
    group = parser.add_argument_group(
        "settings",
        f"each overrides its environment variable {ENV_PREFIX}<NAME>; [default]",
    )
    for f in fields(Settings):
        if is_secret(f):
            continue  # environment or *_FILE only: a flag would show in `ps`
        name = "--" + f.name.replace("_", "-")
        flag = FLAGS.get(f.name, name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = f.default if f.default is not MISSING else None
        help_ = f"{f.metadata['help']} [{default}]".replace("%", "%%")
        if kind == "bool":
            kwargs: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        else:
            conv: Callable[[str], Any] = {"int": int, "float": float}.get(kind, str)
            kwargs = {"type": conv, "metavar": f.name.upper()}
        group.add_argument(flag, dest=f.name, default=None, help=help_, **kwargs)
        if flag != name:
            group.add_argument(name, dest=f.name, default=None, help=argparse.SUPPRESS, **kwargs)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings, overridden by the flags given (``ValueError`` if bad)."""
    overrides = {f.name: getattr(args, f.name, None) for f in fields(Settings) if not is_secret(f)}
    return Settings.from_env(**overrides)


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the verbs in ``only`` get their flags (all verbs when ``None``).

    ``commentflow VERB ...`` builds and imports just ``VERB``; with no verb (``--help``, a typo)
    every verb is listed with its ``HELP``, and none is built.
    """
    parser = _Parser(
        prog="commentflow",
        description="Classify streaming comments from text, images and audio.",
        epilog="`commentflow VERB --help` shows a verb's flags and an example.",
    )
    parser.add_argument("--version", action="version", version=f"commentflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for verb in [v for v in VERBS if v in only] if only else VERBS:
        mod = command(verb)
        p = sub.add_parser(
            verb,
            help=mod.HELP,
            description=mod.HELP,
            epilog=f"example:\n  {mod.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or verb in only:
            mod.add_arguments(p)
            if mod.USES_SETTINGS:
                # the usage line shows the verb's own flags; the settings are listed below it
                p.usage = p.format_usage().removeprefix("usage: ").rstrip() + " [SETTINGS]"
                add_settings_arguments(p)
            p.set_defaults(func=mod.run)
    return parser


def _verb_in(argv: Sequence[str]) -> str | None:
    """The verb of ``argv``: its first word that is not an option (the top level has no values)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in VERBS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _verb_in(argv)
    args = build_parser([verb] if verb else []).parse_args(argv)
    mod = command(args.command)
    settings: Settings | None = None
    if mod.USES_SETTINGS:
        try:
            settings = settings_from_args(args)
        except ValueError as exc:
            print(f"commentflow {args.command}: error: {exc}", file=sys.stderr)
            return 2
    from streamer import logs

    log_format = settings.log_format if settings is not None else _env_log_format()
    logs.configure("debug" if args.verbose else "info", log_format)
    return int(mod.run(args, settings) or 0)


def _env_log_format() -> str:
    """``COMMENTFLOW_LOG_FORMAT`` for the verbs without settings (text if unreadable)."""
    try:
        return Settings.from_env().log_format
    except ValueError:
        return "text"


if __name__ == "__main__":
    sys.exit(main())
