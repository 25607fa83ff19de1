"""training/models/: scan orders, the direction round trip, the blur, the model's shapes, determinism and sizes."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mmad.training import config
from mmad.training.encoders import build_encoder
from mmad.training.models.head import AnomalyModel, count_parameters, dead_router_weights
from mmad.training.models.layers import GaussianBlur
from mmad.training.models.mmad import Mixer
from mmad.training.models.scan_block import DirectionalScan
from mmad.training.models.scan_orders import CURVES, curve_order, direction_indices, inverse_indices

# training/README.md, "Scan orders and directions": the 4×4 vectors and the start of the 8×8 Hilbert curve.
SPEC_4X4 = {
    "scan": [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12],
    "zorder": [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15],
    "zigzag": [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15],
    "hilbert": [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3],
}


@pytest.mark.parametrize("curve", sorted(SPEC_4X4))
def test_curves_match_spec_vectors(curve):
    assert curve_order(curve, 4).tolist() == SPEC_4X4[curve]


def test_hilbert_8x8_start_and_path():
    order = curve_order("hilbert", 8)
    assert order[:12].tolist() == [0, 8, 9, 1, 2, 3, 11, 10, 18, 19, 27, 26]
    # A Hilbert curve moves to a 4-neighbour at every step, starts at (0,0), ends at (0, S-1) in x+y·S.
    for size in (8, 16, 32, 64):
        o = curve_order("hilbert", size)
        x, y = o % size, o // size
        assert np.all(np.abs(np.diff(x)) + np.abs(np.diff(y)) == 1)
        assert (x[0], y[0]) == (0, 0) and (x[-1], y[-1]) == (size - 1, 0)


@pytest.mark.parametrize("size", [1, 2, 8, 16, 32, 64])
@pytest.mark.parametrize("curve", CURVES)
def test_every_curve_is_a_permutation(curve, size):
    assert sorted(curve_order(curve, size).tolist()) == list(range(size * size))


def test_hilbert_needs_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        curve_order("hilbert", 12)


def test_directions_are_views_of_the_curve():
    s = 4
    grid = np.arange(s * s).reshape(s, s)
    idx = direction_indices("zigzag", s, 8)
    order = curve_order("zigzag", s)
    views = [grid, grid.T, np.rot90(grid, 1), np.rot90(grid, 1).T]
    for k, view in enumerate(views):
        expected = view.reshape(-1)[order]
        assert idx[k].tolist() == expected.tolist()
        assert idx[k + 4].tolist() == expected[::-1].tolist()


@pytest.mark.parametrize("curve", ["hilbert", "zorder", "zigzag"])
def test_encode_then_decode_is_identity(curve):
    scan = DirectionalScan(curve, 8, 8)
    x = torch.randn(2, 3, 64)
    seq = scan.encode(x)
    assert seq.shape == (2, 8, 3, 64)
    # Decoding sums the 8 directions: with the scan replaced by the identity, that is 8·x.
    torch.testing.assert_close(scan.decode(seq), 8 * x)
    inv = inverse_indices(direction_indices(curve, 8, 8))
    for k in range(8):
        torch.testing.assert_close(seq[:, k].index_select(2, torch.from_numpy(inv[k])), x)


def test_scan_gathers_have_exact_gradients():
    """encode and decode use each other as backward; check against autograd of plain gathers."""
    scan = DirectionalScan("hilbert", 4, 8)
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 8, 3, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(scan.encode, (x,))
    assert torch.autograd.gradcheck(scan.decode, (y,))


def test_blur_equals_scipy_gaussian_filter():
    rng = np.random.default_rng(0)
    img = rng.random((2, 1, 64, 64)).astype(np.float32)
    out = GaussianBlur(4.0, 64)(torch.from_numpy(img)).numpy()
    for i in range(2):
        ref = gaussian_filter(img[i, 0].astype(np.float64), sigma=4)
        np.testing.assert_allclose(out[i, 0], ref, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = config.tiny_preset().model
    return AnomalyModel(cfg, build_encoder(cfg.encoder, weights=None, random_init=True))


def test_reconstruction_shapes_match_encoder(tiny_model):
    x = torch.randn(2, 3, 256, 256)
    feats, recon = tiny_model.forward_features(x)
    assert [f.shape for f in feats] == [g.shape for g in recon]
    assert [f.shape[1] for f in feats] == list(tiny_model.encoder.channels)


def test_mambaad_config_reconstructs_the_same_shapes():
    cfg = dataclasses.replace(config.tiny_preset().model, arch="mambaad")
    model = AnomalyModel(cfg, build_encoder(cfg.encoder, weights=None, random_init=True)).eval()
    with torch.no_grad():
        feats, recon = model.forward_features(torch.randn(1, 3, 256, 256))
        out = model(torch.randn(1, 3, 256, 256))
    assert [f.shape for f in feats] == [g.shape for g in recon]
    assert out.anomaly_map.shape == (1, 1, 256, 256)
    assert any(type(m).__name__ == "LSSModule" for m in model.modules())


def test_eval_is_deterministic_and_batch_independent(tiny_model):
    tiny_model.eval()
    x = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        out = tiny_model(x)
        again = tiny_model(x)
        single = tiny_model(x[1:2])
    assert out.anomaly_map.shape == (3, 1, 256, 256) and out.score.shape == (3,)
    torch.testing.assert_close(out.anomaly_map, again.anomaly_map)
    torch.testing.assert_close(out.score[1:2], single.score, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.score, out.anomaly_map.flatten(1).amax(1))


def test_feature_scale_leaves_the_anomaly_map_unchanged(tiny_model):
    """Cosine maps are invariant to per-scale divisors; only the loss works at another scale."""
    tiny_model.eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        feats = [f for f in tiny_model.encoder(x)]
        recon = tiny_model.reconstruct(feats)
        plain = tiny_model.anomaly_map(feats, recon)
        scales = torch.tensor([2.0, 5.0, 9.0])
        scaled = tiny_model.anomaly_map([f / s for f, s in zip(feats, scales)], [g / s for g, s in zip(recon, scales)])
    torch.testing.assert_close(plain.anomaly_map, scaled.anomaly_map)


def test_router_eval_rule_is_map_of_training_sample():
    mixer = Mixer(8, 8, config.tiny_preset().model, 0.0)
    p = torch.softmax(torch.randn(2, 8, 8, 2) * 3, dim=-1)
    mixer.eval()
    m = mixer.route_mask(p)
    assert torch.equal(m[:, 0], (p[..., 0] > p[..., 1]).float())
    # Training samples m=1 with probability softmax(p)[0]; the eval rule picks the likelier outcome.
    mixer.train()
    torch.manual_seed(0)
    freq = torch.stack([mixer.route_mask(p) for _ in range(2000)]).mean(0)[:, 0]
    prob = torch.softmax(p, -1)[..., 0]
    assert torch.allclose(freq, prob, atol=0.05)  # 2000 samples: std ≤ 0.011
    clear = (prob - 0.5).abs() > 0.05
    assert torch.equal((freq > 0.5)[clear], (prob > 0.5)[clear])
    assert torch.equal(m[:, 0][clear], (prob > 0.5)[clear].float())


def test_training_step_gives_gradients_to_fuser_and_decoder_only(tiny_model):
    tiny_model.train()
    feats, recon = tiny_model.forward_features(torch.randn(2, 3, 256, 256))
    loss = sum(torch.nn.functional.mse_loss(g, f) for f, g in zip(feats, recon))
    loss.backward()
    assert all(p.grad is None for p in tiny_model.encoder.parameters())
    grads = [p.grad for p in tiny_model.trainable_parameters()]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


@pytest.mark.parametrize("arch, expected_millions", [("mmad", 25.0), ("mambaad", 25.65)])
def test_paper_parameter_count(arch, expected_millions, capsys):
    """MMAD with ResNet-34 ≈ 25.0 M (paper Table 2), MambaAD 25.65 M (README "Size and cost"), counted as the
    published code counts them: every weight (the encoder's too), the scan index tables it stores as
    parameters, and for MMAD the dead router weights it builds but cannot use."""
    cfg = dataclasses.replace(config.paper_preset().model, arch=arch)
    model = AnomalyModel(cfg, build_encoder("resnet34", weights=None, random_init=True))
    counts = count_parameters(model)
    published = counts["total"] + counts["index_tables"] + counts.get("dead_router_weights", 0)
    print(f"{arch} paper config: {counts}; published-style total {published / 1e6:.2f} M")
    assert abs(published / 1e6 - expected_millions) / expected_millions < 0.01
    assert counts["encoder"] == pytest.approx(8.17e6, rel=0.01)
    if arch == "mmad":
        assert counts["dead_router_weights"] == dead_router_weights(cfg)
        assert counts["fuser"] == pytest.approx(6.30e6, rel=0.01)
