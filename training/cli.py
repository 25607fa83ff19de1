"""`mmad train` and `mmad eval`: their options, made from the typed configs below, and the calls into
training. Light at import: torch is imported only when a command runs.

    mmad train --data ROOT [ROOT ...] --out RUN [--preset fast|paper|tiny] [--epochs N] [--resume] ...
    mmad eval  --checkpoint RUN --data ROOT [ROOT ...] --out REPORTS [--aupro sklearn|adeval] [--baseline knn]
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from mmad.runtime.options import add_options, config_from_args, option

from .config import ARCHS, KNN_BANK_SIZE, PRESETS  # torch-free

AUPRO_NAMES = ("sklearn", "adeval")  # metrics.AUPRO_VARIANTS; metrics imports scikit-learn, too slow here
DEVICE_HELP = "cpu, cuda, cuda:1 … (default: cuda when available)"


def parse_rate(text: str) -> float:
    """A rate strictly between 0 and 1."""
    rate = float(text)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"expected a rate between 0 and 1, got {text}")
    return rate


def parse_count(text: str) -> int:
    """A whole number >= 1 (epochs, images per batch)."""
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {text}")
    return value


@dataclass
class TrainCommand:
    """What `mmad train` was asked for; each field is the option of that name. None: the preset's value."""

    data: list[str] = option(
        metavar="ROOT",
        help="dataset roots: MVTec-AD category or dataset folders, VisA roots (split_csv/1cls.csv), "
        "or plain folders of normal images",
    )
    out: str = option(metavar="DIR", help="checkpoint folder to write")
    preset: str = option(
        "fast",
        choices=tuple(PRESETS),
        help="fast: sized for a 2-core CPU (default); paper: the published recipe; tiny: tests",
    )
    arch: str | None = option(None, choices=ARCHS, help="override the preset's architecture")
    encoder: str | None = option(
        None,
        metavar="NAME",
        help="override the preset's encoder: efficientnet_lite0 (offline), resnet34 (paper), wide_resnet50_2",
    )
    encoder_weights: str = option(
        "default", metavar="FILE", help="weights file for the encoder (default: look it up, see training/README.md)"
    )
    random_encoder: bool = option(False, help="random encoder weights (tests only)")
    epochs: int | None = option(None, metavar="N", parse=parse_count, help="training epochs (default: the preset's)")
    batch_size: int | None = option(
        None, metavar="N", parse=parse_count, help="images per batch and process (default: the preset's)"
    )
    seed: int | None = option(
        None, metavar="N", help="random seed of initialisation, shuffling and hold-out (default: the preset's)"
    )
    eval_every: int | None = option(
        None, metavar="N", help="evaluate every N epochs (0: never during training; default: the preset's)"
    )
    max_minutes: float | None = option(
        None, metavar="MIN", help="stop after this many minutes; --resume continues (default: the preset's)"
    )
    target_false_alarm_rate: float | None = option(
        None,
        metavar="RATE",
        parse=parse_rate,
        help="false-alarm rate the deployment threshold is fitted for, per category, on held-out normal "
        "images (the rule of mmad calibrate; default 0.001)",
    )
    resume: bool = option(False, help="continue the run in --out where it stopped")
    device: str = option("auto", help=DEVICE_HELP)


@dataclass
class EvalCommand:
    """What `mmad eval` was asked for; each field is the option of that name."""

    checkpoint: str = option(metavar="DIR", help="checkpoint folder written by mmad train")
    data: list[str] = option(metavar="ROOT", help="dataset roots with test images and masks")
    out: str = option(metavar="DIR", help="folder for the reports")
    aupro: str = option(
        "sklearn",
        choices=AUPRO_NAMES,
        help="AUPRO variant (default sklearn: ADer's 100-threshold per-region PRO; adeval: ADEval's binned one)",
    )
    batch_size: int = option(8, metavar="N", parse=parse_count, help="test images per batch")
    baseline: str | None = option(
        None,
        choices=("knn",),
        help="also score a training-free baseline on the checkpoint's encoder and report it beside the model "
        "(knn: PatchCore-style nearest neighbours to a memory bank of training-normal patches, per category)",
    )
    baseline_bank_size: int = option(
        KNN_BANK_SIZE,
        metavar="N",
        help="knn baseline: at most N patches in each category's memory bank (random subsample)",
    )
    device: str = option("auto", help=DEVICE_HELP)


def register(sub) -> None:
    """Add `train` and `eval` to the `mmad` command."""
    p = sub.add_parser(
        "train",
        help="train one model on one or more categories",
        description="Train MMAD (or MambaAD) on the normal images of every category given.",
    )
    add_options(p, TrainCommand)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: seven metrics, reports, thresholds",
        description="Seven metrics and mAD per category, metrics.json/md/csv, PNG grids; stores "
        "the F1-optimal threshold in the checkpoint.",
    )
    add_options(e, EvalCommand)
    e.set_defaults(func=run_eval)


def pick_device(name: str) -> str:
    """The torch device for --device; ConfigError when it is not a device name or not on this machine."""
    import torch

    from mmad.runtime.errors import ConfigError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected {DEVICE_HELP}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device {name}: this machine has no CUDA device (PyTorch {torch.__version__}, {build}); "
                "use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return name


def run_config(command: TrainCommand):
    """The preset's RunConfig with the command's overrides (the options left at None keep the preset's)."""
    from .config import preset

    cfg = preset(command.preset)
    model_over = {k: getattr(command, k) for k in ("arch", "encoder") if getattr(command, k) is not None}
    train_fields = {k: k for k in ("epochs", "batch_size", "seed", "eval_every", "max_minutes")}
    train_fields["target_false_alarm_rate"] = "threshold_false_alarm_rate"
    train_over = {f: getattr(command, k) for k, f in train_fields.items() if getattr(command, k) is not None}
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, **model_over), train=dataclasses.replace(cfg.train, **train_over)
    )


def run_train(args: argparse.Namespace) -> int:
    from .train import train

    command = config_from_args(TrainCommand, args)
    train(
        run_config(command),
        command.data,
        command.out,
        resume=command.resume,
        encoder_weights=None if command.random_encoder else command.encoder_weights,
        random_encoder=command.random_encoder,
        device=pick_device(command.device),
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint

    command = config_from_args(EvalCommand, args)
    evaluate_checkpoint(
        command.checkpoint,
        command.data,
        command.out,
        aupro=command.aupro,
        device=pick_device(command.device),
        batch_size=command.batch_size,
        baseline=command.baseline,
        baseline_bank_size=command.baseline_bank_size,
    )
    return 0
