"""Training: the loop with checkpoints and early stopping, the text and fusion recipes."""
