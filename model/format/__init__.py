"""The model directory: one reader/writer per format version, one envelope check.

:mod:`model.format.directory` checks what every version shares (``format`` tag, version, kind,
no pickles); :mod:`model.format.text` is format v1, :mod:`model.format.multimodal` format v2.
Loading a directory into a classifier is :func:`model.serving.load_classifier`.
"""
