"""The comment classifier: interface, model directory format, training and evaluation."""

from model.base import LABELS, MODALITIES, Classifier, ClassOutput, CommentInput

__all__ = ["LABELS", "MODALITIES", "ClassOutput", "Classifier", "CommentInput", "load_classifier"]


def load_classifier(model_dir, device: str = "auto") -> Classifier:  # type: ignore[no-untyped-def]
    """Load the classifier stored in ``model_dir`` on ``device`` (``auto``: CUDA when present).

    Dispatches on ``format_version`` / ``kind``: v1 text model or v2 multimodal model.
    """
    from model.multimodal import load_classifier as _load

    return _load(model_dir, device=device)
