"""`mmad train` and `mmad eval`. Light at import: torch is imported only when a command runs."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one model on one or more categories",
        description="Train MMAD (or MambaAD) on the normal images of every category given.",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="dataset roots: MVTec-AD category or dataset folders, VisA roots (split_csv/1cls.csv), "
        "or plain folders of normal images",
    )
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument(
        "--preset",
        default="fast",
        choices=["fast", "paper", "tiny"],
        help="fast: sized for a 2-core CPU (default); paper: the published recipe; tiny: tests",
    )
    p.add_argument("--arch", choices=["mmad", "mambaad"], help="override the preset's architecture")
    p.add_argument("--encoder", help="efficientnet_lite0 (offline default), resnet34 (paper), wide_resnet50_2")
    p.add_argument("--encoder-weights", default="default", help="weights file for the encoder (default: look it up)")
    p.add_argument("--random-encoder", action="store_true", help="random encoder weights (tests only)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int, help="evaluate every N epochs (0: never during training)")
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes; --resume continues")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: seven metrics, reports, thresholds",
        description="Seven metrics and mAD per category, metrics.json/md/csv, PNG grids; stores "
        "the F1-optimal threshold in the checkpoint.",
    )
    e.add_argument("--checkpoint", required=True, help="checkpoint folder written by mmad train")
    e.add_argument("--data", nargs="+", required=True, help="dataset roots with test images and masks")
    e.add_argument("--out", required=True, help="folder for the reports")
    e.add_argument(
        "--aupro",
        default="sklearn",
        choices=["sklearn", "adeval"],
        help="AUPRO variant (default sklearn: ADer's 100-threshold per-region PRO)",
    )
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=run_eval)


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import preset
    from .train import train

    cfg = preset(args.preset)
    model_over = {k: v for k, v in (("arch", args.arch), ("encoder", args.encoder)) if v is not None}
    train_over = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("seed", args.seed),
            ("eval_every", args.eval_every),
            ("max_minutes", args.max_minutes),
        )
        if v is not None
    }
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, **model_over), train=dataclasses.replace(cfg.train, **train_over)
    )
    weights = None if args.random_encoder else args.encoder_weights
    train(
        cfg,
        args.data,
        args.out,
        resume=args.resume,
        encoder_weights=weights,
        random_encoder=args.random_encoder,
        device=pick_device(args.device),
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint

    evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.out,
        aupro=args.aupro,
        device=pick_device(args.device),
        batch_size=args.batch_size,
    )
    return 0
