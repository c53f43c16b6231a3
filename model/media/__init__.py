"""Media bytes -> model inputs: one decoder and one resampler for training and serving.

:mod:`model.media.decode` (sniffing, limits, image resizing, audio decoding, the 16-bit grid and
:class:`~model.media.decode.DecodeConfig`, whose feature-shaping part is saved in a model's
``config.json``), :mod:`model.media.resample` (the polyphase resampler),
:mod:`model.media.errors` (:class:`~model.media.errors.MediaDecodeError`). Nothing here imports
torch.

Import from the modules (``decode`` and ``resample`` are both modules and functions, so the
package re-exports nothing).
"""
