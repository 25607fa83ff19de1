"""Resuming a run: the optimizer, schedule and RNG states saved beside the weights (flat tensors in
safetensors, no pickle), and the check that a resumed run has the configuration it started with.
A resumed run continues the same schedule (same total iterations, same learning-rate drop).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointInfo,
    load_resume_state,
    load_state,
    load_tensors,
    read_info,
)
from .config import RunConfig


def resume_state(optimizer, scheduler, generator) -> dict[str, torch.Tensor]:
    """Optimizer moments, step counts and RNG states as flat tensors (safetensors, no pickle)."""
    state: dict[str, torch.Tensor] = {}
    for i, s in optimizer.state_dict()["state"].items():
        for key, value in s.items():
            state[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    state["scheduler.last_epoch"] = torch.tensor(scheduler.last_epoch)
    state["optim.group_lr"] = torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)
    state["rng.torch"] = torch.get_rng_state()
    state["rng.loader"] = generator.get_state()
    return state


def load_saved_weights(out_dir: Path, model, cfg: RunConfig) -> CheckpointInfo:
    """The weights of the run to resume, after checking it was started with the same configuration."""
    saved = read_info(out_dir)
    if saved.config.model != cfg.model or dataclasses.replace(saved.config.train, max_minutes=0) != dataclasses.replace(
        cfg.train, max_minutes=0
    ):
        raise CheckpointError(
            f"{out_dir}: --resume needs the same configuration the run started with "
            f"(saved preset '{saved.config.preset}'); see {out_dir}/checkpoint.json"
        )
    load_state(model, load_tensors(out_dir / WEIGHTS_FILE, saved.weights_sha256), out_dir / WEIGHTS_FILE)
    return saved


def restore(out_dir: Path, model, optimizer, scheduler, generator, info: CheckpointInfo, cfg: RunConfig) -> int:
    """Optimizer, schedule and RNG states of the run to resume (its weights are loaded already)."""
    saved = read_info(out_dir)
    state = load_resume_state(out_dir)
    opt_state = optimizer.state_dict()
    opt_state["state"] = {}
    for key, value in state.items():
        if key.startswith("optim.") and key != "optim.group_lr":
            _, i, name = key.split(".", 2)
            opt_state["state"].setdefault(int(i), {})[name] = value
    optimizer.load_state_dict(opt_state)
    for group, lr in zip(optimizer.param_groups, state["optim.group_lr"].tolist()):
        group["lr"] = lr
    scheduler.last_epoch = int(state["scheduler.last_epoch"])
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001 - keep get_last_lr() right
    torch.set_rng_state(state["rng.torch"])
    generator.set_state(state["rng.loader"])
    info.history, info.thresholds = saved.history, saved.thresholds
    return int(saved.progress.get("epoch", 0))
