"""The error of :mod:`model.media`: media bytes that cannot become a model input.

::

    CommentflowError
    └── MediaDecodeError     reason: unsupported_type, too_large, unsupported_sample_rate,
                             decode_error (the worker reports the same codes in media_errors)

The worker maps it to :class:`workers.address_policy.DecodeFailed` with the same ``reason``;
feature extraction of a data set to :class:`model.serving.preprocess.FeatureError`.
"""

from __future__ import annotations

from schemas.errors import CommentflowError

__all__ = ["MediaDecodeError"]


class MediaDecodeError(CommentflowError):
    """The bytes are not a usable image or audio clip; :attr:`reason` names why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
