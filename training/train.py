"""Multi-class training: one model for every category given (training/README.md, "Training recipe").

Single process, or several through torchrun (DistributedDataParallel; gloo on CPU, nccl on GPU).
Resumable: the checkpoint folder holds the optimizer and RNG states, and a resumed run continues
the same schedule (same total iterations, same learning-rate drop); see resume.py.

    train(cfg, data_roots, out_dir)  =  set_up(...) -> run_epochs(run) -> finish(run)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from .checkpoint import CheckpointInfo, save_checkpoint
from .config import RunConfig
from .data import (
    Category,
    ImageTransform,
    TrainDataset,
    check_images_decode,
    find_categories,
    split_categories_holdout,
)
from .models import AnomalyModel, build_model, count_parameters
from .report import CURVES_FILE, save_training_curves
from .resume import load_saved_weights, restore, resume_state
from .thresholds import DEPLOYMENT, category_thresholds, combine_categories, deployment_thresholds, describe


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
    """ADer's rule: no decay for 1-D parameters and names ending in '.bias' (README "Training recipe")."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def reconstruction_loss(
    feats: list[torch.Tensor], recon: list[torch.Tensor], weight: float, kind: str = "mse"
) -> torch.Tensor:
    """Σ over scales of weight · MSE (ADer's L2Loss, lam = 5), or with kind "cosine" of weight · the mean
    cosine distance over positions (what the anomaly map measures)."""
    if kind == "cosine":
        return sum(weight * (1 - F.cosine_similarity(g, f, dim=1)).mean() for f, g in zip(feats, recon))
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
    """Per-scale RMS of the encoder's features over (up to max_images) training images, evenly spread over the
    dataset (so every category of a multi-category run counts) and in order (every DDP process computes the same)."""
    picks = np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int)
    subset = torch.utils.data.Subset(images, sorted(set(picks.tolist())))
    sums, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for batch in DataLoader(subset, batch_size=batch_size):
        for i, f in enumerate(model.encoder(batch.to(device))):
            sums[i] += f.double().pow(2).sum().cpu()
            count[i] += f.numel()
    return (sums / count).sqrt().float()


class Reconstructor(torch.nn.Module):
    """(encoder features, reconstruction) of a batch of images or of cached features; the unit
    that DistributedDataParallel wraps (the frozen encoder has no gradients to synchronise)."""

    def __init__(self, model: AnomalyModel, noise: float = 0.0):
        super().__init__()
        self.model = model
        self.noise = noise  # train.feature_noise: the decoder learns to restore normal features, not copy them

    def forward(self, batch, cached: bool):
        feats = batch if cached else self.model.encode(batch)
        if self.noise and self.model.training:
            return feats, self.model.reconstruct([f + self.noise * torch.randn_like(f) for f in feats])
        return feats, self.model.reconstruct(feats)


class ImagesOnly(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]["image"]


# ----------------------------------------------------------------------------------------------
# Training: set-up, epochs, finish
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainingRun:
    """What one training run holds from set-up through its epochs to the finish."""

    cfg: RunConfig
    out_dir: Path
    device: str
    log: Callable[[str], None]
    rank: int
    world: int
    categories: list[Category]  # every category, for the checkpoint and periodic evaluation
    holdout: list[Category]  # held-out normals of each category, for the deployment threshold
    transform: ImageTransform
    train_set: TrainDataset
    model: AnomalyModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    loader: DataLoader | None = None
    sampler: DistributedSampler | None = None
    generator: torch.Generator | None = None
    net: torch.nn.Module | None = None
    info: CheckpointInfo | None = None
    start_epoch: int = 0
    started: float = 0.0
    started_cpu: float = 0.0

    @property
    def main(self) -> bool:
        """The process that logs and writes the checkpoint."""
        return self.rank == 0

    @property
    def iters_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def total_iters(self) -> int:
        return self.cfg.train.epochs * self.iters_per_epoch


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
    """Train one model on all categories under `data_roots`; returns the checkpoint folder.

    Refused before any data is read: a config field of the wrong type or out of range (cfg.validate()).
    Refused before the first epoch: an image that does not decode (set_up), naming the file.
    """
    cfg.validate()
    run = set_up(cfg, data_roots, Path(out_dir), resume, encoder_weights, random_encoder, device, log)
    run_epochs(run)
    finish(run)
    return run.out_dir


def set_up(
    cfg: RunConfig, data_roots, out_dir: Path, resume: bool, encoder_weights, random_encoder: bool, device: str, log
) -> TrainingRun:
    """Data, model, optimizer, loader and schedule, in the order that fixes the random streams;
    restored from `out_dir` when resuming."""
    rank, world = distributed_context()
    tc = cfg.train
    categories = find_categories(data_roots)
    train_cats, holdout = split_categories_holdout(categories, tc.threshold_holdout, tc.seed, tc.threshold_min_images)
    transform = ImageTransform.from_model_config(cfg.model)
    train_set = TrainDataset(train_cats, transform, cache=True)
    # Every image is decoded now, the held-out ones too, so a bad file stops the run before the first
    # epoch and not after the last (the training images stay cached for the epochs).
    train_set.preload(progress=rank == 0)
    check_images_decode(holdout)

    seed_everything(tc.seed + rank)
    model = build_model(cfg.model, encoder_weights=encoder_weights, random_encoder=random_encoder).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr * world, betas=tc.betas, eps=tc.eps)
    run = TrainingRun(
        cfg, out_dir, device, log, rank, world, categories, holdout, transform, train_set, model, optimizer
    )
    make_loader(run, feature_source(run, resume))
    run.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(tc.lr_drop_at * run.total_iters)], gamma=0.1)
    run.info = CheckpointInfo(config=cfg, categories=[c.name for c in categories])
    if resume:
        run.start_epoch = restore(out_dir, model, optimizer, run.scheduler, run.generator, run.info, cfg)
        log(f"resumed from {out_dir} at epoch {run.start_epoch}/{tc.epochs}")
    run.net = Reconstructor(model, tc.feature_noise)
    if world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(run.net)
    if run.main:
        announce(run)
    return run


def feature_source(run: TrainingRun, resume: bool) -> Dataset:
    """What the loader serves: cached encoder features or the images. Sets the feature scales first
    (restored from the checkpoint when resuming), since the cache applies them."""
    model, tc = run.model, run.cfg.train
    if resume:
        load_saved_weights(run.out_dir, model, run.cfg)
    elif run.cfg.model.normalize_features:
        model.feature_scale.copy_(feature_rms(model, ImagesOnly(run.train_set), tc.batch_size, run.device))
        if run.main:
            scales = [round(v, 3) for v in model.feature_scale.tolist()]
            run.log(f"encoder feature scales (RMS over training images): {scales}")
    if tc.cache_features:
        return FeatureCache(model, ImagesOnly(run.train_set), tc.batch_size, run.device, run.main)
    return ImagesOnly(run.train_set)


def make_loader(run: TrainingRun, source: Dataset) -> None:
    """The shuffling loader (one shard per process under DDP), with its own seeded generator."""
    tc, world = run.cfg.train, run.world
    if world > 1:
        run.sampler = DistributedSampler(source, world, run.rank, shuffle=True, seed=tc.seed, drop_last=True)
    run.generator = torch.Generator().manual_seed(tc.seed)
    if len(source) // world < tc.batch_size:
        raise ValueError(
            f"{len(source)} training images are fewer than one batch of {tc.batch_size} per process; "
            "lower --batch-size or add images"
        )
    run.loader = DataLoader(
        source,
        batch_size=tc.batch_size,
        shuffle=run.sampler is None,
        sampler=run.sampler,
        drop_last=True,
        generator=run.generator,
        num_workers=tc.num_workers,
    )


def announce(run: TrainingRun) -> None:
    """Create the checkpoint folder with config.json and log what is about to be trained."""
    cfg, tc = run.cfg, run.cfg.train
    run.out_dir.mkdir(parents=True, exist_ok=True)
    (run.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    run.log(
        f"training {cfg.model.arch} ({cfg.preset}) on {', '.join(run.info.categories)}: {len(run.train_set)} images "
        f"({sum(len(h.train) for h in run.holdout)} held out for the threshold), {tc.epochs} epochs × "
        f"{run.iters_per_epoch} iterations, batch {tc.batch_size}×{run.world}, lr {tc.lr * run.world:g}, "
        f"device {run.device}"
    )
    run.log("parameters: " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in count_parameters(run.model).items()))


def run_epochs(run: TrainingRun) -> None:
    """Train from the start epoch to the last, saving after each; stop early after max_minutes."""
    tc = run.cfg.train
    run.started, run.started_cpu = time.time(), time.process_time()
    run.model.train()
    for epoch in range(run.start_epoch, tc.epochs):
        loss, images_per_s = train_one_epoch(run, epoch)
        end_epoch(run, epoch, loss, images_per_s)
        if tc.max_minutes and (time.time() - run.started) / 60 > tc.max_minutes and epoch + 1 < tc.epochs:
            run.log(
                f"stopping after {tc.max_minutes:g} minutes at epoch {epoch + 1}; `--resume` continues the schedule"
            )
            break


def train_one_epoch(run: TrainingRun, epoch: int) -> tuple[float, float]:
    """One pass over the loader; returns (mean loss, images per second over all processes)."""
    tc, cached = run.cfg.train, run.cfg.train.cache_features
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    loss_sum, seen, t0 = 0.0, 0, time.time()
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not run.main, leave=False)
    for batch in bar:
        batch = [f.to(run.device) for f in batch] if cached else batch.to(run.device)
        loss = reconstruction_loss(*run.net(batch, cached), tc.loss_weight, tc.loss)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.trainable_parameters(), tc.clip_grad)
        run.optimizer.step()
        run.scheduler.step()
        n = batch[0].shape[0] if cached else batch.shape[0]
        loss_sum, seen = loss_sum + loss.item() * n, seen + n
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * run.world / (time.time() - t0):.1f}")
    return loss_sum / max(seen, 1), seen * run.world / (time.time() - t0)


def end_epoch(run: TrainingRun, epoch: int, loss: float, images_per_s: float) -> None:
    """Record progress; on the main process log, evaluate when due, and save the checkpoint."""
    tc, info = run.cfg.train, run.info
    info.progress = {
        "epoch": epoch + 1,
        "iteration": (epoch + 1) * run.iters_per_epoch,
        "total_iterations": run.total_iters,
        "finished": epoch + 1 == tc.epochs,
        "minutes": round((time.time() - run.started) / 60, 2),  # of this session (a resume starts again)
        # CPU time of this process, all its threads: on a shared machine, what the run would take alone.
        "cpu_minutes": round((time.process_time() - run.started_cpu) / 60, 2),
    }
    if not run.main:
        return
    run.log(
        f"epoch {epoch + 1}/{tc.epochs} loss {loss:.5f} "
        f"lr {run.scheduler.get_last_lr()[0]:.2e} {images_per_s:.1f} img/s"
    )
    info.history.append({"epoch": epoch + 1, "loss": round(loss, 6), "minutes": info.progress["minutes"]})
    if tc.eval_every and (epoch + 1) % tc.eval_every == 0 and epoch + 1 < tc.epochs:
        evaluated = periodic_eval(run.model, run.categories, run.transform, run.device, tc.eval_max_images)
        info.history[-1].update(evaluated)
        run.log(f"  eval: {evaluated}")
    save_training_curves(run.out_dir / CURVES_FILE, info.history)
    save_checkpoint(run.out_dir, run.model, info, resume_state(run.optimizer, run.scheduler, run.generator))


def finish(run: TrainingRun) -> None:
    """Check the replicas agree, set the deployment threshold, save the final checkpoint."""
    if run.world > 1:
        check_replicas_agree(run.model)
    if run.main:
        # Capture the RNG states before the threshold pass: its DataLoader draws from the global RNG.
        state = resume_state(run.optimizer, run.scheduler, run.generator)
        if run.cfg.model.normalize_map:
            fit_map_normalisation(run)
        run.info.thresholds.update(holdout_thresholds(run))
        save_checkpoint(run.out_dir, run.model, run.info, state)
        minutes = (time.time() - run.started) / 60
        run.log(f"saved {run.out_dir} ({minutes:.1f} min); {describe(deployment_thresholds(run.info.thresholds))}")
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def check_replicas_agree(model: AnomalyModel) -> None:
    """After DDP training every replica must hold the same weights; fail loudly if not."""
    total = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    if any(abs(g.item() - total.item()) > 1e-6 * max(1.0, abs(total.item())) for g in gathered):
        raise RuntimeError(f"DDP replicas diverged: weight sums {[g.item() for g in gathered]}")


# ----------------------------------------------------------------------------------------------
# Scores during and after training
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_normals(model: AnomalyModel, dataset, device, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N] and anomaly maps float32 [N, H, W] of a dataset of normal images."""
    model.eval()
    scores, maps = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        out = model(batch["image"].to(device))
        scores.append(out.score.cpu())
        maps.append(out.anomaly_map[:, 0].float().cpu())
    model.train()
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def holdout_thresholds(run: TrainingRun) -> dict:
    """The checkpoint's deployment thresholds, one per category from its own held-out normal training images
    (no defect labels needed), and the global ones (thresholds.py); {} when nothing was held out."""
    tc, per_category = run.cfg.train, {}
    for category in (c for c in run.holdout if c.train):
        scores, maps = predict_normals(run.model, TrainDataset([category], run.transform), run.device)
        per_category[category.name] = category_thresholds(
            category.name, scores, maps, tc.threshold_false_alarm_rate, tc.threshold_quantile, run.log
        )
    return {DEPLOYMENT: combine_categories(per_category, tc.threshold_false_alarm_rate)} if per_category else {}


@torch.no_grad()
def fit_map_normalisation(run: TrainingRun) -> None:
    """The trained model's per-pixel map statistics over its training images (AnomalyModel.fit_map_normalisation)."""
    cached, maps = run.cfg.train.cache_features, []
    run.model.eval()
    for batch in DataLoader(run.loader.dataset, batch_size=run.cfg.train.batch_size):
        feats = [f.to(run.device) for f in batch] if cached else run.model.encode(batch.to(run.device))
        maps.append(run.model.raw_maps(feats).cpu())
    run.model.train()
    run.model.fit_map_normalisation(torch.cat(maps))
    run.log(f"map normalisation fitted on {sum(len(m) for m in maps)} training images")


def periodic_eval(model, categories, transform, device, max_images: int = 0) -> dict:
    """I-AUROC, P-AUROC and mAD per category (on at most max_images test images of each; 0: all)."""
    from .evaluate import evaluate_model

    per_cat, _, _ = evaluate_model(model, categories, transform, device, progress=False, max_per_category=max_images)
    return {
        cat: {k: round(v, 2) for k, v in m.items() if k in ("I-AUROC", "P-AUROC", "mAD")} for cat, m in per_cat.items()
    }
