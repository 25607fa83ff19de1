"""The synthetic MVTec-layout generator: layout, masks, visibility of defects, determinism, CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmad.samples.make_dataset import CATEGORIES, DEFECT_TYPES, add_defect, main, make_dataset, normal_image

SMALL = dict(n_train=3, n_test_good=2, n_test_defect_per_type=2, size=96)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_masks(tmp_path):
    root = make_dataset(tmp_path / "syn", **SMALL)
    assert root == tmp_path / "syn"
    for category in CATEGORIES:
        folder = root / category
        assert len(list((folder / "train" / "good").glob("*.png"))) == 3
        assert len(list((folder / "test" / "good").glob("*.png"))) == 2
        for kind in DEFECT_TYPES:
            images = sorted((folder / "test" / kind).glob("*.png"))
            assert len(images) == 2
            for image in images:
                with Image.open(folder / "ground_truth" / kind / f"{image.stem}_mask.png") as im:
                    mask = np.asarray(im)
                assert mask.shape == (96, 96)
                assert set(np.unique(mask).tolist()) == {0, 255}  # 0/255 and never empty
                with Image.open(image) as rgb:
                    assert rgb.mode == "RGB" and rgb.size == (96, 96)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defects_are_visible_and_confined_to_the_mask(category, kind):
    """Inside the mask the defect changes the image clearly; outside only anti-aliased edge pixels
    (within 1 px of the mask) may change."""
    for i in range(5):
        rng = np.random.default_rng([7, i])
        clean, region = normal_image(category, rng, 256)
        defective, mask = add_defect(clean, region, kind, rng)
        assert 15 <= mask.sum() < 0.05 * mask.size
        change = np.abs(defective.astype(int) - clean.astype(int)).max(axis=2)
        assert change[mask].mean() > 60, f"{category}/{kind} #{i}: defect barely visible"
        near = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near[np.clip(ys + dy, 0, 255), np.clip(xs + dx, 0, 255)] = True
        assert change[~near].max() == 0


def test_normal_images_vary_but_stay_alike():
    for category in CATEGORIES:
        a, _ = normal_image(category, np.random.default_rng(1), 128)
        b, _ = normal_image(category, np.random.default_rng(2), 128)
        assert not np.array_equal(a, b)
        # Variation is smaller than the difference between the two categories.
        other = CATEGORIES[1 - CATEGORIES.index(category)]
        c, _ = normal_image(other, np.random.default_rng(1), 128)
        within = np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max()
        between = np.abs(a.mean(axis=(0, 1)) - c.mean(axis=(0, 1))).max()
        assert within < between


def test_deterministic_for_a_seed(tmp_path):
    a = tree_digest(make_dataset(tmp_path / "a", **SMALL, seed=3))
    b = tree_digest(make_dataset(tmp_path / "b", **SMALL, seed=3))
    c = tree_digest(make_dataset(tmp_path / "c", **SMALL, seed=4))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_counts_do_not_change_other_images(tmp_path):
    small = tree_digest(make_dataset(tmp_path / "a", **SMALL))
    more = tree_digest(make_dataset(tmp_path / "b", **{**SMALL, "n_train": 5}))
    assert all(more[name] == digest for name, digest in small.items())


def test_refuses_to_overwrite_unless_asked(tmp_path):
    make_dataset(tmp_path, categories=("object",), **SMALL)
    with pytest.raises(FileExistsError, match="object"):
        make_dataset(tmp_path, categories=("object",), **SMALL)
    make_dataset(tmp_path, categories=("object",), **{**SMALL, "n_train": 1}, overwrite=True)
    assert len(list((tmp_path / "object" / "train" / "good").iterdir())) == 1


@pytest.mark.parametrize(
    "bad, match", [(dict(categories=("carpet",)), "carpet"), (dict(size=32), "size"), (dict(n_train=0), "n_train")]
)
def test_bad_arguments(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, **{**SMALL, **bad})


def test_cli(tmp_path, capsys):
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--categories",
                "texture",
                "--n-train",
                "2",
                "--n-test-good",
                "1",
                "--n-test-defect-per-type",
                "1",
                "--size",
                "64",
            ]
        )
        == 0
    )
    assert "wrote 1 categories" in capsys.readouterr().out
    assert len(list((tmp_path / "texture").rglob("*.png"))) == 2 + 1 + 3 + 3
    assert main(["--out", str(tmp_path), "--categories", "texture"]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_cli_as_module(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmad.samples.make_dataset",
            "--out",
            str(tmp_path),
            "--categories",
            "object",
            "--n-train",
            "1",
            "--n-test-good",
            "0",
            "--n-test-defect-per-type",
            "0",
            "--size",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "object" / "train" / "good" / "000.png").is_file()
