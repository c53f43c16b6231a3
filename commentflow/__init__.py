"""commentflow: classify user comments as they stream in, from text, images and audio."""

__version__ = "0.1.0"
