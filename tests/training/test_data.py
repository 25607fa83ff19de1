"""training/data.py: the torch Datasets (items, caching, masks) and the normal hold-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmad.samples.make_dataset import make_dataset
from mmad.training.data import (
    DataError,
    ImageTransform,
    TestDataset,
    TrainDataset,
    find_categories,
    load_mask,
    select_categories,
    split_categories_holdout,
    split_normal_holdout,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A small generated MVTec-layout dataset (read-only for the tests that share it). Its own variant of
    the conftest's generated_dataset: 96x96 images, so the Datasets resize them to 256, and at
    ImageTransform(96) the masks come back as the files hold them."""
    return make_dataset(tmp_path_factory.mktemp("syn"), n_train=4, n_test_good=2, n_test_defect_per_type=1, size=96)


# ------------------------------------------------------------------------------------------------
# torch Datasets
# ------------------------------------------------------------------------------------------------
def test_train_dataset_items(synthetic):
    categories = find_categories(synthetic)
    data = TrainDataset(categories)
    assert len(data) == 8 and data.categories == ["object", "texture"]
    item = data[5]
    assert set(item) == {"image", "category", "path"}
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert item["category"] == "texture" and item["path"] == str(categories[1].train[1])
    raw = data.raw_image(5)
    assert raw.shape == (256, 256, 3) and raw.dtype == np.uint8
    torch.testing.assert_close(item["image"], ImageTransform()(raw))
    with pytest.raises(IndexError):
        data[8]


def test_test_dataset_items(synthetic):
    categories = find_categories(synthetic)
    data = TestDataset(categories, transform=ImageTransform(image_size=96))
    assert len(data) == 10
    assert data.labels == [item.label for c in categories for item in c.test]
    for i in range(len(data)):
        item = data[i]
        assert set(item) == {"image", "mask", "label", "category", "path", "defect"}
        assert item["image"].shape == (3, 96, 96) and item["mask"].shape == (1, 96, 96)
        assert item["mask"].dtype == torch.float32 and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        source = data.items[i]
        if source.label == 0:
            assert item["mask"].sum() == 0 and item["defect"] == "good"
        else:
            # At the native size the mask is the file's mask, unchanged.
            expected = torch.from_numpy(load_mask(source.mask).astype(np.float32))[None]
            torch.testing.assert_close(item["mask"], expected)
            assert item["defect"] == source.defect != "good"


def test_category_filter(synthetic):
    categories = find_categories(synthetic)
    assert TrainDataset(categories, only=["texture"]).categories == ["texture"]
    assert set(TestDataset(categories, only=["object"]).item_categories) == {"object"}
    assert [c.name for c in select_categories(categories, ["texture", "object"])] == ["object", "texture"]
    with pytest.raises(DataError, match="unknown category"):
        TrainDataset(categories, only=["carpet"])


def test_dataloader_batches(synthetic):
    data = TestDataset(find_categories(synthetic))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["mask"].shape == (4, 1, 256, 256)
    assert batch["label"].tolist() == data.labels[:4] and len(batch["category"]) == 4


def test_cache_keeps_decoded_images(tmp_path):
    root = make_dataset(
        tmp_path / "d", categories=("object",), n_train=2, n_test_good=1, n_test_defect_per_type=1, size=64
    )
    categories = find_categories(root)
    cached, uncached = TrainDataset(categories, cache=True), TrainDataset(categories)
    test = TestDataset(categories, cache=True)
    first = cached[0]["image"]
    test.preload(progress=False)
    for category in categories:
        for path in category.train + [item.path for item in category.test]:
            path.unlink()  # from now on, only the cache can serve these
    torch.testing.assert_close(cached[0]["image"], first)
    assert all(test[i]["image"].shape == (3, 256, 256) for i in range(len(test)))
    with pytest.raises(DataError, match="no such file") as info:
        uncached[0]
    assert str(categories[0].train[0]) in str(info.value)
    with pytest.raises(DataError):
        cached[1]  # never read before the files went away


def test_mask_of_a_different_size_is_an_error(tmp_path):
    root = make_dataset(tmp_path, categories=("object",), n_train=1, n_test_good=0, n_test_defect_per_type=1, size=64)
    mask = root / "object" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    data = TestDataset(find_categories(root))
    with pytest.raises(DataError, match="expected equal sizes") as info:
        data[[item.defect for item in data.items].index("hole")]
    assert str(mask) in str(info.value)


# ------------------------------------------------------------------------------------------------
# Normal hold-out
# ------------------------------------------------------------------------------------------------
def test_split_normal_holdout_is_a_deterministic_partition():
    items = [f"img{i:03d}" for i in range(209)]
    kept, held = split_normal_holdout(items, 0.1, seed=42)
    assert len(held) == round(0.1 * 209) and len(kept) + len(held) == 209
    assert set(kept).isdisjoint(held) and set(kept) | set(held) == set(items)
    assert kept == sorted(kept) and held == sorted(held)  # input order kept
    assert split_normal_holdout(items, 0.1, seed=42) == (kept, held)
    assert split_normal_holdout(items, 0.1, seed=43)[1] != held


def test_split_normal_holdout_edges():
    assert split_normal_holdout(["a", "b", "c"], 0.0, 0) == (["a", "b", "c"], [])
    assert len(split_normal_holdout(["a", "b", "c"], 0.01, 0)[1]) == 1  # at least one
    with pytest.raises(DataError, match="at least 2"):
        split_normal_holdout(["a"], 0.1, 0)
    for fraction in (-0.1, 1.0):
        with pytest.raises(ValueError, match="fraction"):
            split_normal_holdout(["a", "b"], fraction, 0)


def test_split_normal_holdout_floor_never_takes_more_than_half():
    """Training's rule (TrainConfig): max(10 % of n, the floor of 20), but the floor never takes more than half."""
    held = {
        n: len(split_normal_holdout(list(range(n)), 0.1, 0, minimum=20)[1]) for n in (2, 3, 6, 39, 40, 60, 209, 391)
    }
    assert held == {2: 1, 3: 1, 6: 3, 39: 19, 40: 20, 60: 20, 209: 21, 391: 39}
    # The floor only adds images: the items held out without it are among those held out with it.
    assert set(split_normal_holdout(list(range(60)), 0.1, 7)[1]) < set(
        split_normal_holdout(list(range(60)), 0.1, 7, 20)[1]
    )
    assert split_normal_holdout(list(range(60)), 0.0, 0, minimum=20)[1] == []  # no hold-out asked for: none
    assert len(split_normal_holdout(list(range(10)), 0.6, 0, minimum=20)[1]) == 6  # a fraction above half is obeyed
    with pytest.raises(DataError, match="at least 2"):
        split_normal_holdout(["a"], 0.1, 0, minimum=20)


def test_split_categories_holdout_with_a_floor(synthetic):
    categories = find_categories(synthetic)  # 4 normals per category
    _, held = split_categories_holdout(categories, 0.1, seed=1, minimum=20)
    assert [len(h.train) for h in held] == [2, 2]


def test_split_categories_holdout(synthetic):
    categories = find_categories(synthetic)
    kept, held = split_categories_holdout(categories, 0.25, seed=1)
    for original, k, h in zip(categories, kept, held):
        assert (k.name, h.name) == (original.name, original.name)
        assert len(h.train) == 1 and h.test == [] and k.test == original.test
        assert sorted(k.train + h.train) == sorted(original.train)
    # A category's split does not depend on which other categories are present.
    _, held_alone = split_categories_holdout(categories[1:], 0.25, seed=1)
    assert held_alone[0].train == held[1].train
    assert len(TrainDataset(held)) == 2
    with pytest.raises(TypeError, match="split_categories_holdout"):
        split_normal_holdout(categories, 0.25, seed=1)
