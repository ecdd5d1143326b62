"""cfg.augment = "deit": timm's RandAugment, erasing and mixup/cutmix, seeded and in [0, 1]."""
import random

import numpy as np
import pytest
import torch

from cdlib.augment import BatchMixup, ColorJitterAugment, DeiTAugment
from cdlib.config import make_config
from cdlib.models.baselines import classification_loss


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=6, size=32):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.num_classes = 3

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(i % 3)}


def test_deit_augment_is_seeded_in_range_and_leaves_global_rngs_alone():
    base = _Images()
    aug = DeiTAugment(base, seed=0)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    items = [aug[i] for i in range(len(aug))]
    assert (random.random(), np.random.rand(), torch.rand(1)) == before  # the caller's generators untouched
    again = [aug[i] for i in range(len(aug))]
    for a, b, i in zip(items, again, range(len(aug))):
        assert torch.equal(a["image"], b["image"]) and int(a["label"]) == i % 3
        assert a["image"].shape == (3, 32, 32) and 0 <= a["image"].min() and a["image"].max() <= 1
    assert any(not torch.allclose(a["image"], base[i]["image"], atol=2 / 255) for i, a in enumerate(items))
    aug.set_epoch(1)
    assert any(not torch.equal(aug[i]["image"], items[i]["image"]) for i in range(len(aug)))
    assert DeiTAugment(base, seed=1)[0]["image"].shape == (3, 32, 32) and aug.num_classes == 3


def test_colour_jitter_is_seeded_and_in_range():
    base = _Images()
    aug = ColorJitterAugment(base, seed=0)
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    a = [aug[i]["image"] for i in range(len(aug))]
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(x, aug[i]["image"]) for i, x in enumerate(a))
    assert all(0 <= x.min() and x.max() <= 1 and x.shape == (3, 32, 32) for x in a)
    assert not torch.allclose(a[0], base[0]["image"])
    aug.set_epoch(1)
    assert not torch.equal(aug[0]["image"], a[0])


def test_deit_augment_refuses_non_image_items():
    class Bad(_Images):
        def __getitem__(self, i):
            return {"image": torch.rand(32, 32), "label": torch.tensor(0)}

    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        DeiTAugment(Bad())[0]


def test_batch_mixup_gives_soft_smoothed_targets():
    np.random.seed(0)
    mix = BatchMixup(num_classes=3, label_smoothing=0.1)
    x = torch.rand(4, 3, 16, 16)
    out = mix({"image": x, "label": torch.tensor([0, 1, 2, 0])})
    y = out["label"]
    assert y.shape == (4, 3) and y.is_floating_point()
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    assert float(y.min()) >= 0.1 / 3 - 1e-6  # smoothing is in the targets
    assert out["image"].shape == x.shape and not torch.equal(out["image"], x)
    with pytest.raises(ValueError, match="even batch"):
        mix({"image": torch.rand(3, 3, 8, 8), "label": torch.tensor([0, 1, 2])})
    with pytest.raises(ValueError, match="labelled"):
        mix({"image": x})


def test_soft_targets_are_not_smoothed_twice():
    logits = torch.randn(5, 4)
    label = torch.tensor([0, 3, 1, 2, 2])
    hard = classification_loss(logits, label, 0.1)
    smooth = torch.nn.functional.one_hot(label, 4).float() * 0.9 + 0.1 / 4
    torch.testing.assert_close(classification_loss(logits, smooth, 0.1), hard)
    torch.testing.assert_close(classification_loss(logits, label, 0.0),
                               torch.nn.functional.cross_entropy(logits, label))
    with pytest.raises(ValueError, match="num_classes"):
        classification_loss(logits, torch.rand(5, 10))


def test_config_checks_augment():
    with pytest.raises(ValueError, match="valid values: , timm, deit"):
        make_config("bai2022", "laptop", augment="randaugment")
    with pytest.raises(ValueError, match="batch_size must be even"):
        make_config("bai2022", "laptop", augment="deit", batch_size=31)
    assert make_config("bai2022", "laptop", augment="deit").augment == "deit"
