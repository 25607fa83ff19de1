"""Multi-class training: one model for every category given (MODEL_SPEC §4).

Single process, or several through torchrun (DistributedDataParallel; gloo on CPU, nccl on GPU).
Resumable: the checkpoint folder holds the optimizer and RNG states, and a resumed run continues
the same schedule (same total iterations, same learning-rate drop).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointInfo,
    load_resume_state,
    load_state,
    load_tensors,
    read_info,
    save_checkpoint,
)
from .config import RunConfig
from .data import ImageTransform, TrainDataset, find_categories, split_categories_holdout
from .models import AnomalyModel, build_model, count_parameters


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def param_groups(model: AnomalyModel, weight_decay: float) -> list[dict]:
    """ADer's rule: no decay for 1-D parameters and names ending in '.bias' (§4)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def reconstruction_loss(feats: list[torch.Tensor], recon: list[torch.Tensor], weight: float) -> torch.Tensor:
    """Σ over scales of weight · MSE (ADer's L2Loss, lam = 5)."""
    return sum(weight * F.mse_loss(g, f) for f, g in zip(feats, recon))


class FeatureCache(Dataset):
    """Encoder features of every training image, computed once: the encoder is frozen and the
    recipe has no augmentation, so they never change."""

    def __init__(self, model: AnomalyModel, images: Dataset, batch_size: int, device, show: bool):
        loader = DataLoader(images, batch_size=batch_size, shuffle=False)
        chunks = []
        with torch.no_grad():
            for batch in tqdm(loader, desc="caching encoder features", disable=not show, leave=False):
                chunks.append([f.cpu() for f in model.encode(batch.to(device))])
        self.feats = [torch.cat([c[i] for c in chunks]) for i in range(3)]

    def __len__(self) -> int:
        return len(self.feats[0])

    def __getitem__(self, i: int):
        return [f[i] for f in self.feats]


@torch.no_grad()
def feature_rms(model: AnomalyModel, images: Dataset, batch_size: int, device, max_images: int = 64) -> torch.Tensor:
    """Per-scale RMS of the encoder's features over (up to max_images) training images, in order,
    so every DDP process computes the same values."""
    subset = torch.utils.data.Subset(images, range(min(max_images, len(images))))
    sums, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for batch in DataLoader(subset, batch_size=batch_size):
        for i, f in enumerate(model.encoder(batch.to(device))):
            sums[i] += f.double().pow(2).sum().cpu()
            count[i] += f.numel()
    return (sums / count).sqrt().float()


class Reconstructor(torch.nn.Module):
    """(encoder features, reconstruction) of a batch of images or of cached features; the unit
    that DistributedDataParallel wraps (the frozen encoder has no gradients to synchronise)."""

    def __init__(self, model: AnomalyModel):
        super().__init__()
        self.model = model

    def forward(self, batch, cached: bool):
        if cached:
            return batch, self.model.reconstruct(batch)
        return self.model.forward_features(batch)


class ImagesOnly(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]["image"]


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(
    cfg: RunConfig,
    data_roots: list[str],
    out_dir: str | Path,
    *,
    resume: bool = False,
    encoder_weights: str | None = "default",
    random_encoder: bool = False,
    device: str = "cpu",
    log=print,
) -> Path:
    """Train one model on all categories under `data_roots`; returns the checkpoint folder."""
    out_dir = Path(out_dir)
    rank, world = distributed_context()
    main = rank == 0
    tc = cfg.train
    categories = find_categories(data_roots)
    train_cats, holdout = split_categories_holdout(categories, tc.threshold_holdout, tc.seed)
    transform = ImageTransform(image_size=cfg.model.image_size, mean=cfg.model.mean, std=cfg.model.std)
    train_set = TrainDataset(train_cats, transform, cache=True)

    seed_everything(tc.seed + rank)
    model = build_model(cfg.model, encoder_weights=encoder_weights, random_encoder=random_encoder).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr * world, betas=tc.betas, eps=tc.eps)

    if resume:  # the weights first: they include feature_scale, which the feature cache applies
        load_saved_weights(out_dir, model, cfg)
    elif cfg.model.normalize_features:
        model.feature_scale.copy_(feature_rms(model, ImagesOnly(train_set), tc.batch_size, device))
        if main:
            log(
                f"encoder feature scales (RMS over training images): {[round(v, 3) for v in model.feature_scale.tolist()]}"
            )
    source: Dataset = (
        FeatureCache(model, ImagesOnly(train_set), tc.batch_size, device, main)
        if tc.cache_features
        else ImagesOnly(train_set)
    )
    sampler = (
        torch.utils.data.distributed.DistributedSampler(source, world, rank, shuffle=True, seed=tc.seed, drop_last=True)
        if world > 1
        else None
    )
    generator = torch.Generator().manual_seed(tc.seed)
    if len(source) // world < tc.batch_size:
        raise ValueError(
            f"{len(source)} training images are fewer than one batch of {tc.batch_size} per process; "
            "lower --batch-size or add images"
        )
    loader = DataLoader(
        source,
        batch_size=tc.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        num_workers=tc.num_workers,
    )
    iters_per_epoch = len(loader)
    total_iters = tc.epochs * iters_per_epoch
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(tc.lr_drop_at * total_iters)], gamma=0.1)

    info = CheckpointInfo(config=cfg, categories=[c.name for c in categories])
    start_epoch = 0
    if resume:
        start_epoch = restore(out_dir, model, optimizer, scheduler, generator, info, cfg)
        log(f"resumed from {out_dir} at epoch {start_epoch}/{tc.epochs}")
    net = Reconstructor(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log(
            f"training {cfg.model.arch} ({cfg.preset}) on {', '.join(info.categories)}: {len(train_set)} images "
            f"({sum(len(h.train) for h in holdout)} held out for the threshold), {tc.epochs} epochs × "
            f"{iters_per_epoch} iterations, batch {tc.batch_size}×{world}, lr {tc.lr * world:g}, device {device}"
        )
        log("parameters: " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in count_parameters(model).items()))

    started = time.time()
    model.train()
    epoch = start_epoch
    for epoch in range(start_epoch, tc.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        loss_sum, seen, t0 = 0.0, 0, time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not main, leave=False)
        for batch in bar:
            batch = [f.to(device) for f in batch] if tc.cache_features else batch.to(device)
            loss = reconstruction_loss(*net(batch, tc.cache_features), tc.loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), tc.clip_grad)
            optimizer.step()
            scheduler.step()
            n = batch[0].shape[0] if tc.cache_features else batch.shape[0]
            loss_sum, seen = loss_sum + loss.item() * n, seen + n
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * world / (time.time() - t0):.1f}")
        info.progress = {
            "epoch": epoch + 1,
            "iteration": (epoch + 1) * iters_per_epoch,
            "total_iterations": total_iters,
            "finished": epoch + 1 == tc.epochs,
        }
        if main:
            log(
                f"epoch {epoch + 1}/{tc.epochs} loss {loss_sum / max(seen, 1):.5f} "
                f"lr {scheduler.get_last_lr()[0]:.2e} {seen * world / (time.time() - t0):.1f} img/s"
            )
            if tc.eval_every and (epoch + 1) % tc.eval_every == 0 and epoch + 1 < tc.epochs:
                info.history.append({"epoch": epoch + 1, **periodic_eval(model, categories, transform, device)})
                log(f"  eval: {info.history[-1]}")
            save_checkpoint(out_dir, model, info, resume_state(optimizer, scheduler, generator))
        if tc.max_minutes and (time.time() - started) / 60 > tc.max_minutes and epoch + 1 < tc.epochs:
            log(f"stopping after {tc.max_minutes:g} minutes at epoch {epoch + 1}; `--resume` continues the schedule")
            break
    if world > 1:
        check_replicas_agree(model)
    if main:
        # Capture the RNG states before the threshold pass: its DataLoader draws from the global RNG.
        state = resume_state(optimizer, scheduler, generator)
        info.thresholds.update(holdout_threshold(model, holdout, transform, tc, device))
        save_checkpoint(out_dir, model, info, state)
        log(f"saved {out_dir} ({(time.time() - started) / 60:.1f} min); thresholds {info.thresholds}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out_dir


def check_replicas_agree(model: AnomalyModel) -> None:
    """After DDP training every replica must hold the same weights; fail loudly if not."""
    total = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    if any(abs(g.item() - total.item()) > 1e-6 * max(1.0, abs(total.item())) for g in gathered):
        raise RuntimeError(f"DDP replicas diverged: weight sums {[g.item() for g in gathered]}")


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


# ----------------------------------------------------------------------------------------------
# Scores during and after training
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_scores(model: AnomalyModel, dataset, device, batch_size: int = 8) -> np.ndarray:
    model.eval()
    scores = [model(b["image"].to(device)).score.cpu() for b in DataLoader(dataset, batch_size=batch_size)]
    model.train()
    return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)


def holdout_threshold(model, holdout: list, transform, tc, device) -> dict:
    """Deployment threshold from held-out normal training images only (no defect labels needed)."""
    from .metrics import normal_quantile_threshold

    holdout = [c for c in holdout if c.train]
    if not holdout:
        return {}
    scores = predict_scores(model, TrainDataset(holdout, transform), device)
    return {
        "normal_quantile": float(normal_quantile_threshold(scores, tc.threshold_quantile)),
        "normal_quantile_q": tc.threshold_quantile,
        "normal_holdout_images": int(len(scores)),
    }


def periodic_eval(model, categories, transform, device) -> dict:
    from .evaluate import evaluate_model

    per_cat, _, _ = evaluate_model(model, categories, transform, device, progress=False)
    return {
        cat: {k: round(v, 2) for k, v in m.items() if k in ("I-AUROC", "P-AUROC", "mAD")} for cat, m in per_cat.items()
    }
