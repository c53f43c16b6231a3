"""One module per ``commentflow`` verb, named after it (``forget-user`` -> ``forget_user``).

Each module is light to import (the standard library only) and defines::

    HELP: str           # one line, shown in ``commentflow --help``
    EXAMPLE: str        # shown at the end of ``commentflow VERB --help``
    USES_SETTINGS: bool # whether the settings flags and COMMENTFLOW_* variables apply
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace, settings: Settings | None) -> int: ...

``run`` imports what the verb needs and calls the library with typed arguments: argparse stays
here and in :mod:`commentflow.cli`. The table of verbs, in order, is :data:`commentflow.cli.VERBS`.
"""
