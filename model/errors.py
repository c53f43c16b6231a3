"""Errors of the model package: a model directory that cannot be used (fatal at start-up)."""

from __future__ import annotations

from schemas.errors import CommentflowError

__all__ = ["ModelError", "ModelFormatError", "UnsafeWeightsError"]


class ModelError(CommentflowError):
    """A model directory that cannot be used."""


class ModelFormatError(ModelError):
    """Missing files, an unknown or old ``format_version``, mismatched shapes."""


class UnsafeWeightsError(ModelError):
    """The directory holds pickled weights (``.bin``, ``.pt``, ``.pth``, ``.pkl``): refused."""
