"""The model verbs' command modules: light to import, defaults equal to the library's."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import subprocess
import sys

import pytest

MODEL_VERBS = (
    "train",
    "evaluate",
    "build_data",
    "features",
    "train_fusion",
    "train_char_expert",
    "train_fallback",
    "evaluate_multimodal",
    "bench_model",
    "gpu_check",
)


@pytest.mark.parametrize("verb", MODEL_VERBS)
def test_contract_and_help_import_nothing_heavy(verb: str) -> None:
    """Building the verb's parser imports no torch, numpy or model module (a fresh process)."""
    code = f"""
import argparse, sys
from commentflow.commands import {verb} as m
assert isinstance(m.HELP, str) and m.EXAMPLE.startswith("commentflow ")
assert m.USES_SETTINGS in (True, False) and callable(m.run)
m.add_arguments(argparse.ArgumentParser())
heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "numpy", "model", "PIL"))
assert not heavy, heavy
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def _parse(verb: str, *argv: str) -> argparse.Namespace:
    m = importlib.import_module(f"commentflow.commands.{verb}")
    parser = argparse.ArgumentParser()
    m.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_train_defaults_are_the_recipe_defaults() -> None:
    from commentflow.commands import train
    from model.data.text import DEFAULT_SEED
    from model.encoders.text import POOLINGS
    from model.training.text import TrainConfig

    assert dataclasses.asdict(TrainConfig()) == train.DEFAULTS
    assert (train.POOLINGS, train.DEFAULT_SEED) == (POOLINGS, DEFAULT_SEED)
    args = _parse("train")
    assert {k: getattr(args, k) for k in train.DEFAULTS} == train.DEFAULTS


def test_train_fusion_defaults_are_the_recipe_defaults() -> None:
    from commentflow.commands import train_fusion
    from model.training.fusion import FusionData, FusionTrainConfig

    assert dataclasses.asdict(FusionTrainConfig()) == train_fusion.DEFAULTS
    args = _parse("train-fusion".replace("-", "_"))
    assert {k: getattr(args, k) for k in train_fusion.DEFAULTS} == train_fusion.DEFAULTS
    d = FusionData()
    assert (args.train, args.val, args.test, args.text_cache_dir) == (
        d.train,
        d.val,
        d.test,
        d.text_cache_dir,
    )


def test_build_data_and_evaluate_defaults() -> None:
    from commentflow.commands import build_data, evaluate, evaluate_multimodal
    from model.data import synthesis
    from model.data.text import DEFAULT_SEED

    assert build_data.DEFAULT_SIZES == synthesis.DEFAULT_SIZES
    assert build_data.DEFAULT_KINDS == synthesis.DEFAULT_KINDS
    assert build_data.DEFAULT_SOURCE == synthesis.DEFAULT_SOURCE
    assert DEFAULT_SEED == build_data.DEFAULT_SEED == evaluate.DEFAULT_SEED
    assert evaluate_multimodal.DEFAULT_SEED == DEFAULT_SEED


def test_bench_model_batch_sizes() -> None:
    assert _parse("bench_model").batch_sizes == [1, 8, 32, 128]
    assert _parse("bench_model", "--batch-sizes", "32,1,1").batch_sizes == [1, 32]
    with pytest.raises(SystemExit):
        _parse("bench_model", "--batch-sizes", "0,x")
