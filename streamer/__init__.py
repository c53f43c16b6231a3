"""The Faust layer: the app, its topics and the thin agent over :mod:`workers`.

:func:`create_app` and :func:`run_worker` are imported on first use, so that
:mod:`streamer.settings` and :mod:`streamer.logs` (read by every command line) import no Faust.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run_worker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from streamer import app

        return getattr(app, name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")
