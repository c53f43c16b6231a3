"""Training checkpoints as safetensors (never pickle): model, best weights, optimizer, RNG.

Written and read by the one training loop (:mod:`model.training.loop`), which keeps a
``state.json`` beside the tensors.
"""

from __future__ import annotations

import torch

__all__ = ["pack_training_state", "restore_training_state"]


def pack_training_state(
    model: torch.nn.Module, best_state: dict[str, torch.Tensor], opt: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Flatten the model, the best weights so far, the optimizer state and torch's RNG."""
    t = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    t |= {f"best.{k}": v.contiguous() for k, v in best_state.items()}
    for i, p in enumerate(model.parameters()):
        for name, val in opt.state.get(p, {}).items():
            t[f"opt.{i}.{name}"] = torch.as_tensor(val).reshape(-1) if name == "step" else val
    t["rng.torch"] = torch.get_rng_state()
    return t


def restore_training_state(
    t: dict[str, torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Load a packed state into ``model`` and ``opt``; return the best weights."""
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    torch.set_rng_state(t["rng.torch"])
    return {k[5:]: v for k, v in t.items() if k.startswith("best.")}
