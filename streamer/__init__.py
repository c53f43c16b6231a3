"""The Faust layer: the app, its topics and the thin agent over :mod:`workers`."""

from streamer.app import create_app, run_worker

__all__ = ["create_app", "run_worker"]
