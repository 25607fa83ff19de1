"""training/encoders.py: the registry and build_encoder (shapes, channels, random weights, bad names)."""

from __future__ import annotations

import pytest
import torch

from mmad.training import encoders

EXPECTED_CHANNELS = {  # README "Encoder" (resnet34), torchvision's Bottleneck widths, Lite0 stage widths
    "efficientnet_lite0": (24, 40, 112),
    "resnet34": (64, 128, 256),
    "wide_resnet50_2": (256, 512, 1024),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANNELS))
def test_feature_shapes_and_channels(name):
    encoder = encoders.build_encoder(name, random_init=True)
    feats = encoder(torch.randn(1, 3, 256, 256))
    c1, c2, c3 = EXPECTED_CHANNELS[name]
    assert [tuple(f.shape) for f in feats] == [(1, c1, 64, 64), (1, c2, 32, 32), (1, c3, 16, 16)]
    assert encoder.channels == encoders.encoder_channels(name) == encoders.ENCODERS[name].channels == (c1, c2, c3)


def test_random_init_warns(caplog):
    with caplog.at_level("WARNING", logger=encoders.__name__):
        encoders.build_encoder("resnet34", random_init=True)
    assert "RANDOM weights" in caplog.text


def test_unknown_name_and_conflicting_options():
    with pytest.raises(ValueError, match="unknown encoder 'resnet35'.*resnet34"):
        encoders.encoder_channels("resnet35")
    with pytest.raises(ValueError, match="random_init=True conflicts"):
        encoders.build_encoder("resnet34", weights="/some/file.pth", random_init=True)
