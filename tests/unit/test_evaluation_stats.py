"""Bootstrap intervals, temperature scaling, ECE, polarity and the served temperature."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.errors import ModelFormatError
from model.evaluation.bootstrap import (
    bootstrap_confusions,
    classification_intervals,
    resample_indices,
)
from model.evaluation.calibration import (
    apply_temperature,
    ece_interval,
    expected_calibration_error,
    fit_shared_temperature,
    fit_temperature,
    logits_from_probs,
    nll,
    reliability_bins,
)
from model.evaluation.metrics import classification_metrics
from model.evaluation.sections import format_section, polarity, score_section
from model.format.calibration import read_route_temperatures, read_temperature, write_calibration
from model.serving import load_classifier
from model.testing import make_tiny_model_dir

LABELS = ("negative", "neutral", "positive")


def test_resamples_are_seeded_and_chunked() -> None:
    a = np.concatenate(list(resample_indices(50, 300, seed=1)))
    b = np.concatenate(list(resample_indices(50, 300, seed=1)))
    assert a.shape == (300, 50) and np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate(list(resample_indices(50, 300, seed=2))))


def test_bootstrap_confusions_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    cms = bootstrap_confusions(t, p, 3, n_resamples=20, seed=5)
    idx = np.concatenate(list(resample_indices(200, 20, seed=5)))
    for k in (0, 7, 19):
        ref = classification_metrics(t[idx[k]], p[idx[k]], LABELS)["confusion_matrix"]
        assert cms[k].tolist() == ref


def test_point_values_equal_the_plain_metrics() -> None:
    rng = np.random.default_rng(3)
    t, p = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    ci = classification_intervals(t, p, LABELS, n_resamples=200)
    m = classification_metrics(t, p, LABELS)
    assert ci["accuracy"]["value"] == round(m["accuracy"], 4)
    assert ci["macro_f1"]["value"] == round(m["macro_f1"], 4)
    for lab in LABELS:
        for k in ("precision", "recall", "f1"):
            c = ci["per_class"][lab][k]
            assert c["value"] == round(m["per_class"][lab][k], 4) and c["lo"] <= c["hi"]


def test_interval_coverage_on_a_known_distribution() -> None:
    """Rows right with probability 0.8: the 95% interval of the accuracy holds 0.8 in about 95%
    of independent samples (binomial, n=400; 200 repetitions, so allow 0.88-1.0)."""
    rng = np.random.default_rng(11)
    covered, widths = 0, []
    for rep in range(200):
        y = np.zeros(400, dtype=np.int64)
        pred = np.where(rng.random(400) < 0.8, 0, 1)
        acc = classification_intervals(y, pred, ("a", "b"), n_resamples=500, seed=rep)["accuracy"]
        covered += acc["lo"] <= 0.8 <= acc["hi"]
        widths.append(acc["hi"] - acc["lo"])
    assert 0.88 <= covered / 200 <= 1.0
    expected = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 400)  # normal approximation: 0.078
    assert abs(np.mean(widths) - expected) < 0.01


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t: float) -> None:
    rng = np.random.default_rng(7)
    z = rng.normal(0, 3, size=(20000, 3))
    probs = apply_temperature(z, true_t)  # labels drawn from softmax(z / T)
    y = (rng.random(len(z))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    t = fit_temperature(z, y)
    assert abs(t - true_t) / true_t < 0.05
    assert nll(z, y, t) <= min(nll(z, y, t * 1.1), nll(z, y, t / 1.1))
    # served probabilities carry the same information as logits
    assert abs(fit_temperature(logits_from_probs(apply_temperature(z, 1.0)), y) - t) < 1e-3


def test_temperature_keeps_the_argmax() -> None:
    z = np.random.default_rng(1).normal(size=(100, 3))
    for t in (0.3, 1.0, 4.0):
        assert np.array_equal(apply_temperature(z, t).argmax(1), z.argmax(1))


def test_ece_hand_computed() -> None:
    # confidences 0.9 (bin 14: (14/15, 1]), 0.9, 0.6 (bin 8: (8/15, 9/15]), 0.5 (bin 7)
    probs = np.array([[0.95, 0.03, 0.02], [0.05, 0.95, 0.0], [0.6, 0.3, 0.1], [0.25, 0.25, 0.5]])
    y = np.array([0, 0, 0, 1])  # right, wrong, right, wrong
    # bin 14: |0.5 - 0.95| * 2; bin 8: |1 - 0.6| * 1; bin 7: |0 - 0.5| * 1; over 4 rows
    expected = (0.45 * 2 + 0.4 + 0.5) / 4
    assert expected_calibration_error(probs, y) == pytest.approx(expected)
    r = reliability_bins(probs, y)
    assert (
        r["count"][14] == 2 and r["count"][8] == 1 and r["count"][7] == 1 and sum(r["count"]) == 4
    )
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0  # confident and right
    ci = ece_interval(probs, y, n_resamples=200)
    assert ci["value"] == round(expected, 4) and 0 <= ci["lo"] <= ci["hi"] <= 1


def test_polarity_uses_negative_vs_positive_only() -> None:
    probs = np.array([[0.3, 0.5, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.2, 0.2, 0.6]])
    y = np.array([0, 2, 1, 2])  # the neutral row is left out
    yt, yp = polarity(probs, y, list(LABELS))
    assert yt.tolist() == [0, 1, 1] and yp.tolist() == [0, 1, 1]
    s = score_section(probs, y, LABELS, temperature=2.0, n_resamples=100)
    assert s["polarity"]["accuracy"]["value"] == 1.0 and s["metrics"]["accuracy"] == 0.25
    assert s["predicted_neutral_share"] == 0.5
    assert s["calibration"]["temperature"] == 2.0 and "ece_scaled" in s["calibration"]


def test_served_temperature(tmp_path: Path) -> None:
    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    texts = ["great love", "awful bad", "the table"]
    base = load_classifier(d, device="cpu").predict_proba(texts)
    assert read_temperature(json.loads((d / "config.json").read_text())) == 1.0  # absent: T = 1
    calibrated = shutil.copytree(d, tmp_path / "c")
    write_calibration(calibrated, 2.0, fitted_on="unit test")
    cfg = json.loads((calibrated / "config.json").read_text())
    assert cfg["calibration"] == {"temperature": 2.0, "fitted_on": "unit test"}
    clf = load_classifier(calibrated, device="cpu")
    assert clf.temperature == 2.0
    scaled = clf.predict_proba(texts)
    expected = torch.softmax(torch.log(base) / 2.0, dim=-1)
    assert torch.allclose(scaled, expected, atol=1e-5)
    assert torch.equal(scaled.argmax(-1), base.argmax(-1))
    for bad in (0, -1, "x", float("nan")):
        with pytest.raises(ModelFormatError):
            read_temperature({"calibration": {"temperature": bad}})
        for key in ("fused_temperature", "char_temperature"):
            with pytest.raises(ModelFormatError):
                read_route_temperatures({"calibration": {"temperature": 1.0, key: bad}})
            with pytest.raises(ModelFormatError):
                write_calibration(calibrated, 1.0, **{key: bad})
    with pytest.raises(ModelFormatError):
        read_temperature({"calibration": [2.0]})


def test_route_temperatures_read_back_and_default_to_the_temperature(tmp_path: Path) -> None:
    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    assert read_route_temperatures({}) == (1.0, 1.0, 1.0, 1.0)
    assert read_route_temperatures({"calibration": {"temperature": 0.8}}) == (0.8, 0.8, 0.8, 0.8)
    write_calibration(d, 0.8, fused_temperature=1.25, fitted_on="unit test", n=3)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["calibration"] == {
        "temperature": 0.8,
        "fused_temperature": 1.25,
        "fitted_on": "unit test",
        "n": 3,
    }
    assert read_route_temperatures(cfg) == (0.8, 1.25, 0.8, 0.8)
    write_calibration(d, 0.8, char_temperature=1.1)
    cfg = json.loads((d / "config.json").read_text())
    assert read_route_temperatures(cfg) == (0.8, 0.8, 1.1, 0.8)
    # the fallback head's temperature is its own, kept in its block (model.format.fallback_head)
    assert read_route_temperatures({**cfg, "fallback_head": {"temperature": 1.5}})[3] == 1.5
    write_calibration(d, 0.9)  # a single temperature again: the others are gone
    cfg = json.loads((d / "config.json").read_text())
    assert (read_temperature(cfg), read_route_temperatures(cfg)) == (0.9, (0.9, 0.9, 0.9, 0.9))


def test_per_row_temperatures_in_sections() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
    t = np.array([0.5, 2.0, 2.0])
    scaled = apply_temperature(np.log(probs), t)
    for i in range(3):
        np.testing.assert_allclose(scaled[i], apply_temperature(np.log(probs[i : i + 1]), t[i])[0])
    s = score_section(probs, np.array([0, 2, 1]), LABELS, temperature=t, n_resamples=20)
    assert s["calibration"]["temperature"] == [0.5, 2.0]
    assert "T=0.500/2.000" in format_section("x", s)
    one = score_section(probs, np.array([0, 2, 1]), LABELS, temperature=np.full(3, 0.5))
    assert one["calibration"]["temperature"] == 0.5


def test_evaluate_per_source_command(tmp_path: Path) -> None:
    """Several --data specs and --calibrate-on: sections with intervals, polarity, the leak
    section of a split spec, reliability and confusion plots, and --save-temperature."""
    import argparse

    from commentflow.commands import evaluate

    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    words = {"negative": "awful bad", "neutral": "the table", "positive": "great love"}
    rng = np.random.default_rng(0)
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 7)) for _ in range(300)]
    texts = [
        (f"{words[lab]} {' '.join(rng.choice(vocab, 5))}", lab) for _ in range(40) for lab in words
    ]
    rows = [f"{t},{lab}" for t, lab in texts]
    rows += [f"RT @x: {t},{lab}" for t, lab in texts[:30]]  # variants, some across splits
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(
        ["--model", str(d), "--data", f"{tmp_path / 'd.csv'}:test", "--data",
         f"{tmp_path / 'd.csv'}:val", "--calibrate-on", f"{tmp_path / 'd.csv'}:val",
         "--bootstrap", "50", "--out", str(out), "--no-progress", "--save-temperature",
         "--obfuscation"]
    )  # fmt: skip
    assert evaluate.run(args, None) == 0
    result = json.loads((out / "metrics.json").read_text())
    test = f"{tmp_path / 'd.csv'}:test"
    assert {test, f"{test} without train variants"} <= set(result["sections"])
    leaked = result["data"][test]["rows_with_train_variants"]
    assert leaked > 0
    assert result["sections"][f"{test} without train variants"]["n"] == (
        result["sections"][test]["n"] - leaked
    )
    s = result["sections"][test]
    assert {"intervals", "polarity", "calibration", "metrics"} <= set(s)
    assert "ece_scaled" in s["calibration"] and result["calibration"]["temperature"] > 0
    assert (out / "reliability.png").is_file() and list(out.glob("confusion_*.png"))
    obfuscated = result["obfuscation"][test]
    assert obfuscated["n"] == s["n"] and {"leet", "spaced", "emoji"} <= set(obfuscated)
    assert len(obfuscated["leet"]["drop_interval"]) == 2  # paired bootstrap of the drop
    gate = result["data"][test]["language_gate"]
    assert sum(gate["detected"].values()) == s["n"] and gate["model_languages"] == ["en"]
    assert len(gate["rows"]) == s["n"] <= 60  # a small set is listed row by row
    assert {"text", "label", "predicted", "language", "confidence"} <= set(gate["rows"][0])
    t = json.loads((d / "config.json").read_text())["calibration"]["temperature"]
    assert load_classifier(d, device="cpu").temperature == pytest.approx(t)


def _drawn(true_t: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from ``softmax(z / true_t)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, 3))
    probs = apply_temperature(z, true_t)
    return z, (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)


def test_shared_temperature_weighs_each_group_the_same() -> None:
    """One temperature for two groups that want different ones: the argmin of the mean of
    their NLLs, whatever each group's size; one group is fit_temperature."""
    sharp, sy = _drawn(0.6, 4000, 1)  # a familiar source: the scores want sharpening
    soft, fy = _drawn(1.8, 1000, 2)  # a new source: they want softening
    t = fit_shared_temperature([(sharp, sy), (soft, fy)])
    assert fit_temperature(sharp, sy) < t < fit_temperature(soft, fy)
    grid = np.linspace(0.3, 3.0, 2701)
    best = grid[np.argmin([nll(sharp, sy, g) + nll(soft, fy, g) for g in grid])]
    assert t == pytest.approx(best, abs=2e-3)
    # four copies of the small group change nothing: groups are weighed, not rows
    soft4, fy4 = np.concatenate([soft] * 4), np.concatenate([fy] * 4)
    assert fit_shared_temperature([(sharp, sy), (soft4, fy4)]) == pytest.approx(t, abs=1e-5)
    # an empty group is no group; none at all is an error
    empty = (sharp[:0], sy[:0])
    assert fit_shared_temperature([(sharp, sy), empty]) == pytest.approx(
        fit_temperature(sharp, sy), abs=1e-6
    )
    with pytest.raises(ValueError, match="no rows"):
        fit_shared_temperature([empty])


def test_evaluate_calibrates_on_an_unseen_source_too(tmp_path: Path) -> None:
    """--calibrate-unseen MODEL=SPEC: the text route's temperature minimises the mean NLL of
    the calibration rows and of SPEC as MODEL serves it, with MODEL's own temperature undone
    and the evaluated model's applied; the facts land in metrics.json and config.json."""
    import argparse

    from commentflow.commands import evaluate

    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    other = make_tiny_model_dir(tmp_path / "other", seed=1)
    write_calibration(d, 1.3)
    write_calibration(other, 0.7)
    words = {"negative": "awful bad", "neutral": "the table", "positive": "great love"}
    rng = np.random.default_rng(0)
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 7)) for _ in range(300)]
    rows = [
        f"{words[lab]} {' '.join(rng.choice(vocab, 5))},{lab}" for _ in range(40) for lab in words
    ]
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(
        ["--model", str(d), "--data", f"{data}:test", "--calibrate-on", f"{data}:val",
         "--calibrate-unseen", f"{other}={data}:train", "--bootstrap", "20", "--out", str(out),
         "--no-progress", "--save-temperature"]
    )  # fmt: skip
    served = load_classifier(d, device="cpu")
    second = load_classifier(other, device="cpu")
    from model.data.specs import load_spec

    val, _ = load_spec(f"{data}:val")
    new, _ = load_spec(f"{data}:train")
    y_val = np.array([served.labels.index(r.label) for r in val])
    y_new = np.array([served.labels.index(r.label) for r in new])
    z_val = np.log(served.predict_proba([r.text for r in val]).numpy())
    z_new = np.log(second.predict_proba([r.text for r in new]).numpy()) * 0.7 / 1.3
    want = 1.3 * fit_shared_temperature([(z_val, y_val), (z_new, y_new)])
    assert evaluate.run(args, None) == 0
    cal = json.loads((d / "config.json").read_text())["calibration"]
    assert cal["temperature"] == pytest.approx(want, rel=1e-4)
    assert cal["unseen"] == f"{other}={data}:train" and cal["n_unseen"] == len(new)
    alone = 1.3 * fit_temperature(z_val, y_val)
    assert abs(alone - want) > 1e-3  # the unseen rows moved it
    report = json.loads((out / "metrics.json").read_text())["calibration"]["unseen"]
    assert report["n"] == len(new) and report["routes"] == {"text": len(new)}
    assert report["nll_scaled"] == pytest.approx(nll(z_new, y_new, want / 1.3), abs=1e-4)
    with pytest.raises(SystemExit, match="MODEL=SPEC"):
        evaluate.run(parser.parse_args(["--model", str(d), "--data", f"{data}:test",
                                        "--calibrate-on", f"{data}:val",
                                        "--calibrate-unseen", f"{data}:train"]), None)  # fmt: skip
