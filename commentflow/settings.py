"""The application's settings: re-exported from :mod:`streamer.settings`, where they live.

``Settings`` sits in the lowest layer that needs the whole object (the stream worker), so that
nothing below the application shell imports :mod:`commentflow`.
"""

from streamer.settings import DEFAULT_MODEL_DIR, ENV_PREFIX, Settings

__all__ = ["DEFAULT_MODEL_DIR", "ENV_PREFIX", "Settings"]
