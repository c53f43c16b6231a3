"""Evaluation: metrics, the evaluator of a model directory, throughput."""
