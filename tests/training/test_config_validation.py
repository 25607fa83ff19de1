"""The typed config's one validation (training/config.py: check_fields, ModelConfig/TrainConfig/RunConfig.validate):
every field's type and range, with a message naming the field and what was expected; and --device."""

from __future__ import annotations

import dataclasses

import pytest

from mmad.runtime.errors import ConfigError
from mmad.training.cli import pick_device
from mmad.training.config import PRESETS, RunConfig, preset, tiny_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_survives_a_round_trip(name):
    cfg = preset(name)
    cfg.validate()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"d_state": 16.5}, "model.d_state: expected an integer, got 16.5"),
        ({"d_state": True}, "model.d_state: expected an integer, got True"),
        ({"d_state": 0}, "model.d_state: expected a value >= 1, got 0"),
        ({"blur_sigma": -1.0}, "model.blur_sigma: expected a value > 0, got -1.0"),
        ({"blur_sigma": float("nan")}, "model.blur_sigma: expected a finite number, got nan"),
        ({"mean": (0.5,)}, r"model.mean: expected a list of 3 values \(a finite number\), got \(0.5,\)"),
        ({"std": (0.0, 0.0, 0.0)}, "model.std: expected every value > 0"),
        ({"std": (0.2, "x", 0.2)}, r"model.std\[1\]: expected a finite number, got 'x'"),
        ({"decoder_dims": (32, 16, -16, 8)}, "model.decoder_dims: expected every value >= 1"),
        ({"drop_path": 1.0}, r"model.drop_path: expected a value in \[0, 1\)"),
        ({"encoder": 3}, "model.encoder: expected a string, got 3"),
        ({"normalize_features": 1}, "model.normalize_features: expected true or false, got 1"),
        ({"image_size": 0}, "model.image_size must be 256"),
    ],
)
def test_a_bad_model_field_is_named_with_what_was_expected(fields, message):
    cfg = tiny_preset()
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(cfg.model, **fields).validate()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epochs": 0}, "train.epochs: expected a value >= 1, got 0"),
        ({"epochs": 2.5}, "train.epochs: expected an integer"),
        ({"batch_size": 0}, "train.batch_size: expected a value >= 1"),
        ({"base_lr": 0.0}, "train.base_lr: expected a value > 0"),
        ({"betas": (0.9,)}, "train.betas: expected a list of 2 values"),
        ({"threshold_holdout": 1.0}, r"train.threshold_holdout: expected a value in \[0, 1\)"),
        ({"threshold_false_alarm_rate": 0.0}, "train.threshold_false_alarm_rate"),
        ({"max_minutes": -1.0}, "train.max_minutes: expected a value >= 0"),
    ],
)
def test_a_bad_train_field_is_named_with_what_was_expected(fields, message):
    cfg = tiny_preset()
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fields)).validate()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["model"].update(d_state=16.5), "model.d_state: expected an integer"),
        (lambda d: d["model"].update(mean=[0.5]), "model.mean: expected a list of 3"),
        (lambda d: d.update(model=None), "config model: expected an object of fields, got None"),
        (lambda d: d.update(train=[]), "config train: expected an object of fields"),
        (lambda d: d["train"].update(epochs="10"), "train.epochs: expected an integer, got '10'"),
        (lambda d: d["model"].update(colour=1), r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_a_config_read_from_json_is_checked_field_by_field(edit, message):
    data = tiny_preset().to_dict()
    edit(data)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data).validate()


def test_a_config_that_is_not_an_object_is_refused():
    with pytest.raises(ConfigError, match="expected an object with 'model' and 'train'"):
        RunConfig.from_dict(None)


def test_train_refuses_a_bad_config_before_reading_any_data(tmp_path):
    from mmad.training.train import train

    cfg = tiny_preset()
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0))
    with pytest.raises(ConfigError, match="train.epochs"):
        train(bad, [str(tmp_path / "no-such-data")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_device_names_are_checked(monkeypatch):
    import torch

    assert pick_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="--device 'gpu': expected cpu, cuda"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="--device cuda: this machine has no CUDA device"):
        pick_device("cuda")
    # A machine with one GPU: cuda:0 is there, cuda:1 is not.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\), cuda:0..cuda:0"):
        pick_device("cuda:1")
