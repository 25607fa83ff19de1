"""What a checkpoint must hold to load (training/checkpoint.py): finite weights, a valid config, thresholds that are
finite numbers, JSON fields of the right kind; and the decode check of every training image before training
(training/data.py: check_images_decode)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmad.runtime.contract import file_sha256
from mmad.training.checkpoint import META_FILE, RESUME_FILE, WEIGHTS_FILE, CheckpointError, load_model, read_info
from mmad.training.data import DataError, check_images_decode, find_categories


def copy_checkpoint(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def edit_json(folder: Path, edit) -> None:
    path = folder / META_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def set_weight(folder: Path, value: float) -> str:
    """Set one element of a decoder weight to `value`, keep the sha256 in step; returns the tensor's name."""
    tensors = load_file(str(folder / WEIGHTS_FILE))
    key = next(k for k in sorted(tensors) if k.startswith("decoder.") and tensors[k].is_floating_point())
    tensors[key].view(-1)[-1] = value
    save_file(tensors, str(folder / WEIGHTS_FILE))
    edit_json(folder, lambda d: d.update(weights_sha256=file_sha256(folder / WEIGHTS_FILE)))
    return key


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tiny_checkpoint, tmp_path, value):
    run = copy_checkpoint(tiny_checkpoint, tmp_path / "run")
    key = set_weight(run, value)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_FILE}: tensor '{key}' holds 1 non-finite value"):
        load_model(run)


def test_finite_weights_still_load(tiny_checkpoint, tmp_path):
    run = copy_checkpoint(tiny_checkpoint, tmp_path / "run")
    key = set_weight(run, 1e30)  # large, but a number
    model, _ = load_model(run)
    assert model.state_dict()[key].view(-1)[-1].item() == pytest.approx(1e30)


def test_non_finite_resume_state_is_refused(tiny_checkpoint, tmp_path):
    from mmad.training.checkpoint import load_resume_state

    run = copy_checkpoint(tiny_checkpoint, tmp_path / "run")
    save_file({"optim.0.exp_avg": torch.tensor([0.0, math.nan]), "rng.torch": torch.zeros(4, dtype=torch.uint8)},
              str(run / RESUME_FILE))  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"{RESUME_FILE}: tensor 'optim.0.exp_avg' holds 1 non-finite"):
        load_resume_state(run)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["config"]["model"].update(std=[0, 0, 0]), "model.std: expected every value > 0"),
        (lambda d: d["config"]["model"].update(mean=[0.5]), "model.mean: expected a list of 3"),
        (lambda d: d["config"]["model"].update(d_state=16.5), "model.d_state: expected an integer, got 16.5"),
        (lambda d: d["config"]["model"].update(blur_sigma=-1), "model.blur_sigma: expected a value > 0"),
        (lambda d: d["config"]["train"].update(epochs=0), "train.epochs: expected a value >= 1"),
        (lambda d: d.update(config=None), "expected an object with 'model' and 'train'"),
        (lambda d: d.update(thresholds=None), "'thresholds' must be a JSON object, got None"),
        (lambda d: d.update(categories="object"), "'categories' must be a JSON list"),
        (lambda d: d.update(thresholds={"f1": "high"}), "thresholds.f1 must be a finite number, got 'high'"),
        (lambda d: d.update(thresholds={"f1": math.nan}), "thresholds.f1 must be a finite number, got nan"),
        (lambda d: d.update(thresholds={"normal_quantile": "x"}), "normal_quantile must be a finite number"),
        (lambda d: d.update(thresholds={"deployment": 0.3}), "thresholds.deployment must be a JSON object"),
        (lambda d: d.update(thresholds={"deployment": {"image": 0.3, "categories": {"a": 1}}}), "an object per"),
        (lambda d: d.update(thresholds={"deployment": {"image": math.inf}}), "deployment.image must be a finite"),
    ],
)
def test_bad_checkpoint_json_is_refused_naming_file_and_field(tiny_checkpoint, tmp_path, edit, message):
    run = copy_checkpoint(tiny_checkpoint, tmp_path / "run")
    edit_json(run, edit)
    with pytest.raises(CheckpointError, match=message) as refused:
        read_info(run)
    assert str(run / META_FILE) in str(refused.value)


def write_truncated_png(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_every_image_is_decode_checked_and_the_bad_ones_named(generated_dataset, tmp_path):
    data = Path(shutil.copytree(generated_dataset, tmp_path / "data"))
    categories = find_categories([str(data)])
    check_images_decode(categories)  # all good: no error
    bad = [categories[0].train[1], categories[1].train[0]]
    for path in bad:
        write_truncated_png(path)
    with pytest.raises(DataError, match="2 image") as refused:
        check_images_decode(categories)
    assert all(str(path) in str(refused.value) for path in bad)
