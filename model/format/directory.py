"""What every model directory shares: the ``format`` tag, the versions, the pickle refusal.

A model directory holds ``config.json`` (``{"format": "commentflow.model", "format_version": N,
...}``), ``model.safetensors``, ``metrics.json`` and ``MODEL_CARD.md``. :func:`read_config` checks
the envelope and :func:`model_kind` names the layout, so that one loader can dispatch on it:

=========  ================  ==========================================
version    ``kind``           layout
=========  ================  ==========================================
1          (absent)           text encoder + MLP head (:mod:`model.format.text`)
2          ``multimodal``     encoders + fusion network (:mod:`model.format.multimodal`)
=========  ================  ==========================================
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from model.errors import ModelFormatError, UnsafeWeightsError

__all__ = [
    "FORMAT",
    "PICKLE_SUFFIXES",
    "check_no_pickles",
    "copy_config_part",
    "copy_local_encoder",
    "declared_safetensors",
    "model_kind",
    "open_model_dir",
    "read_config",
    "write_config_files",
]

FORMAT = "commentflow.model"
#: ``(format_version, kind)`` -> the layout's name, the key of every registry keyed on layouts.
KINDS: dict[tuple[int, str | None], str] = {(1, None): "text", (2, "multimodal"): "multimodal"}
_KNOWN = "this commentflow reads format_version 1 (text) and format_version 2 (multimodal)"
#: Weight files that may hold pickles (arbitrary code on load): refused everywhere in a model dir.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_no_pickles(model_dir: Path) -> None:
    """Raise :class:`UnsafeWeightsError` if any file under ``model_dir`` may hold a pickle."""
    bad = sorted(
        str(p.relative_to(model_dir))
        for p in model_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    if bad:
        raise UnsafeWeightsError(
            f"{model_dir} contains pickled weight files {bad}; only safetensors are loaded "
            "(pickles can run arbitrary code). Convert them to .safetensors and delete them."
        )


def read_config(model_dir: Path) -> dict[str, Any]:
    """Read ``config.json`` and check its ``format`` tag (the version: :func:`model_kind`)."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{model_dir} is not a commentflow model directory: no config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelFormatError(f"{path}: 'format' must be {FORMAT!r}, got {got!r}")
    return cfg


def model_kind(cfg: Mapping[str, Any], model_dir: Path) -> str:
    """``text`` or ``multimodal`` from ``format_version`` and ``kind``; else ModelFormatError."""
    version, kind = cfg.get("format_version"), cfg.get("kind")
    if type(version) is int and (version, kind) in KINDS:
        return KINDS[(version, kind)]
    if version == 2:
        raise ModelFormatError(
            f"{model_dir}/config.json: format_version 2 needs kind 'multimodal', got {kind!r}; "
            + _KNOWN
        )
    raise ModelFormatError(
        f"{model_dir}/config.json: format_version {version!r} is not supported; {_KNOWN}"
        + (" (missing)" if version is None else "; a newer model needs a newer commentflow")
    )


def open_model_dir(model_dir: str | Path) -> tuple[Path, dict[str, Any], str]:
    """Check a directory (exists, no pickles, a known format); return it, its config, its kind."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelFormatError(f"model directory {path} does not exist")
    check_no_pickles(path)
    cfg = read_config(path)
    return path, cfg, model_kind(cfg, path)


def copy_local_encoder(src: str | Path, dst: Path) -> None:
    """Copy a local encoder folder into a model directory, never its pickled files."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.is_file() and f.suffix.lower() not in PICKLE_SUFFIXES:
            shutil.copy2(f, dst / f.name)


def replace_config(model_dir: str | Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``cfg`` as ``model_dir/config.json`` atomically (a temporary file, then a rename)."""
    path = Path(model_dir) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def declared_safetensors(model_dir: str | Path, key: str, name: str) -> Path:
    """The weights file a ``config.json`` block ``key`` names: a plain ``.safetensors`` file name
    of a file inside ``model_dir``; anything else (a path, another suffix, absent) is refused."""
    path = Path(model_dir) / name
    if Path(name).name != name or path.suffix != ".safetensors" or not path.is_file():
        raise ModelFormatError(f"{key}.file must be a .safetensors in {model_dir}")
    return path


def copy_config_part(
    src_dir: str | Path,
    dst_dir: str | Path,
    key: str,
    check: Callable[[Path, Mapping[str, Any]], object],
) -> bool:
    """Copy the ``key`` block of ``src_dir``'s ``config.json`` and the weights file it names
    (its ``file``) into ``dst_dir`` (the rest of that config kept); False when ``src_dir`` has
    none. ``check(directory, config)`` (a reader that raises ModelFormatError) vets the source
    before anything is copied and the new config before it replaces the old one."""
    src, dst = Path(src_dir), Path(dst_dir)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if cfg.get(key) is None:
        return False
    check(src, cfg)
    block = cfg[key]
    name = str(block["file"])
    shutil.copyfile(declared_safetensors(src, key, name), dst / name)
    dst_cfg = json.loads((dst / "config.json").read_text(encoding="utf-8"))
    dst_cfg[key] = dict(block)
    check(dst, dst_cfg)
    replace_config(dst, dst_cfg)
    return True


def write_config_files(
    out: Path,
    cfg: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    model_card: str | None,
) -> None:
    """Write ``config.json`` and, when given, ``metrics.json`` and ``MODEL_CARD.md``."""
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if model_card is not None:
        (out / "MODEL_CARD.md").write_text(model_card, encoding="utf-8")
