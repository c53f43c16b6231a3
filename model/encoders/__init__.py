"""Frozen encoders (text, image, OCR, ASR) and the registry that builds them from a config."""
