"""The trainable networks: the MLP head, the acoustic encoder, the fusion Transformer."""
