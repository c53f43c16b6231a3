"""The one training loop: epochs, early stopping on a validation score, checkpoint and resume.

A recipe (:class:`~model.training.text.Trainer`, :class:`~model.training.fusion.FusionTrainer`)
subclasses :class:`EpochLoop`: it builds ``model``, ``opt`` and ``cfg`` in its ``setup`` (then
calls :meth:`EpochLoop.reset_loop`) and implements :meth:`EpochLoop.run_epoch`; the loop owns
the rest. After every epoch a checkpoint is written into ``ckpt_dir``: the model, the best
weights so far, the optimizer and torch's RNG as safetensors (never pickle, see
:mod:`model.training.checkpoint`) and ``state.json`` (epoch, scores, history, config and its
fingerprint). ``--resume`` loads it back when the fingerprint matches.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from model.threads import torch_threads
from model.training.checkpoint import pack_training_state, restore_training_state

__all__ = ["EpochLoop"]


class EpochLoop:
    """Train ``model`` epoch by epoch until ``cfg.epochs`` or ``cfg.patience`` epochs without
    a better validation score; keep and finally load the best epoch's weights."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    cfg: Any  # a frozen dataclass with seed, epochs, patience and fingerprint()
    ckpt_dir: Path
    progress: bool
    #: Name of the best score in ``state.json``.
    score_key = "best_score"
    #: Print every epoch's record as a JSON line.
    echo_records = False
    bar_unit = "it"

    def reset_loop(self) -> None:
        """The loop state before the first epoch (call at the end of ``setup``)."""
        self.epoch, self.best_score, self.best_epoch, self.bad_epochs = 0, -1.0, 0, 0
        self.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.history: list[dict[str, Any]] = []

    def run_epoch(self, gen: torch.Generator) -> tuple[float, dict[str, Any]]:
        """One epoch of training (epoch ``self.epoch + 1``) and its validation.

        Returns the validation score (higher is better) and the epoch's record for the history.
        """
        raise NotImplementedError

    def postfix(self, rec: dict[str, Any]) -> dict[str, Any]:
        """What the progress bar shows after an epoch."""
        return {"best": round(self.best_score, 4)}

    # the loop ------------------------------------------------------------------------------------
    def train(self) -> None:
        # Batches of a few hundred rows are too small for intra-op parallelism: one thread is as
        # fast on an idle machine and ~30x faster on a busy one (OpenMP workers spin-wait).
        with torch_threads(1):
            self._train()

    def _train(self) -> None:
        cfg = self.cfg
        bar = tqdm(
            total=cfg.epochs,
            initial=self.epoch,
            desc="epochs",
            unit=self.bar_unit,
            disable=not self.progress,
        )
        while self.epoch < cfg.epochs and self.bad_epochs < cfg.patience:
            self.model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.epoch)
            score, rec = self.run_epoch(gen)
            self.epoch += 1
            self.history.append(rec)
            if score > self.best_score:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                self.best_state = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
            else:
                self.bad_epochs += 1
            self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(self.postfix(rec))
            if self.echo_records:
                tqdm.write(json.dumps(rec))
        bar.close()
        self.model.load_state_dict(self.best_state)
        self.model.eval()

    # checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        t = pack_training_state(self.model, self.best_state, self.opt)
        save_file(t, str(self.ckpt_dir / f"epoch-{self.epoch:03d}.safetensors"))
        state = {
            "epoch": self.epoch,
            self.score_key: self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "config": asdict(self.cfg),
            "fingerprint": self.cfg.fingerprint(),
        }
        tmp = self.ckpt_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.ckpt_dir / "state.json")
        for old in sorted(self.ckpt_dir.glob("epoch-*.safetensors"))[:-2]:  # keep the last two
            old.unlink()

    def load_checkpoint(self) -> bool:
        """Restore the last epoch's state; False when there is nothing to resume."""
        state_path = self.ckpt_dir / "state.json"
        if not state_path.is_file():
            return False
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != self.cfg.fingerprint():
            raise SystemExit(
                f"--resume: checkpoint in {self.ckpt_dir} was made with another config "
                f"({state.get('config')}); remove it or use the same flags"
            )
        t = load_file(str(self.ckpt_dir / f"epoch-{state['epoch']:03d}.safetensors"))
        self.best_state = restore_training_state(t, self.model, self.opt)
        self.epoch, self.best_score = state["epoch"], state[self.score_key]
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
        self.history = state["history"]
        return True

    def clear_checkpoints(self) -> None:
        """Forget an earlier run's checkpoints (a run without ``--resume`` starts afresh)."""
        if self.ckpt_dir.exists():
            for f in [*self.ckpt_dir.glob("epoch-*.safetensors"), self.ckpt_dir / "state.json"]:
                f.unlink(missing_ok=True)

    def start(self, resume: bool) -> bool:
        """Resume from the checkpoint when ``resume`` (True if one was loaded), else clear it."""
        if resume:
            return self.load_checkpoint()
        self.clear_checkpoints()
        return False
