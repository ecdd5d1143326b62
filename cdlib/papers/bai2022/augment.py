"""Training augmentation beyond the datasets' own crops and flips: Paper A's two recipes, from timm.

The bai2022 model option ``augment`` (``--set augment=...``) picks one; the model's data hooks
(``wrap_train_dataset``, ``batch_transform``) hand it to the training loop.
``augment = "timm"``: timm's default training colour jitter (0.4) per image (kept for comparison).  The
official step 2 passes ``color_jitter=None`` to timm (crops and flips only: ``augment = ""``, both profiles).
``augment = "deit"`` is step 1 of Paper A at paper scale (DeiT, Touvron et al. 2021): per image
RandAugment ``rand-m9-mstd0.5-inc1`` and random erasing (p 0.25, per-pixel noise), per batch mixup
(alpha 0.8) or cutmix (alpha 1.0) with label smoothing folded into the soft targets.  The pieces are
timm's; this module only makes them reproducible (every random draw is seeded from the seed, the epoch
and the item, like the datasets' own augmentation) and keeps images in [0, 1], which a codec needs.

``augment = ""``: nothing here; the dataset's crops and flips only (which the other two keep).
"""
from __future__ import annotations

import random

import numpy as np
import torch

RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
ERASE_PROB = 0.25
COLOR_JITTER = 0.4  # timm's default training colour jitter: brightness, contrast, saturation (laptop step 2)
MIXUP_ALPHA, CUTMIX_ALPHA = 0.8, 1.0
# DeiT erases in the ImageNet-normalised space with N(0, 1) noise; here the same noise is mapped back to
# pixels (and clipped to [0, 1]), because the model codes unnormalised images.
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index, 0xDE17]).generate_state(1)[0])


class _ItemAugment(torch.utils.data.Dataset):
    """A dataset whose items' ``"image"`` (``(3, H, W)`` float in [0, 1]) goes through :meth:`augment`.

    Every random draw is seeded from ``(seed, epoch, index)`` and the caller's generators (Python, NumPy,
    torch) are left as they were, so a resumed or distributed run sees the same images.
    """

    name = ""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # num_classes, classes, labels ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        img = item["image"]
        if not (torch.is_tensor(img) and img.ndim == 3 and img.shape[0] == 3):
            raise ValueError(f"augment={self.name!r} needs (3, H, W) image tensors, "
                             f"got {getattr(img, 'shape', type(img))}")
        s = _item_seed(self.seed, self.epoch, i)
        state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(s)
            np.random.seed(s)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                item["image"] = self.augment(img).clamp(0, 1).contiguous()
        finally:
            random.setstate(state)
            np.random.set_state(np_state)
        return item


class ColorJitterAugment(_ItemAugment):
    """timm's default training colour jitter: brightness, contrast and saturation 0.4 (the laptop's step 2)."""

    name = "timm"

    def __init__(self, dataset, seed: int = 0, strength: float = COLOR_JITTER):
        from torchvision.transforms import ColorJitter

        super().__init__(dataset, seed)
        self.jitter = ColorJitter(strength, strength, strength)

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        return self.jitter(img)


class DeiTAugment(_ItemAugment):
    """RandAugment (``rand-m9-mstd0.5-inc1``) and random erasing (p 0.25, per-pixel noise), as DeiT.

    timm draws from NumPy (RandAugment's choice of ops), Python's ``random`` (magnitudes, erasing boxes) and
    torch (erasing noise): the base class seeds all three per item.
    """

    name = "deit"

    def __init__(self, dataset, seed: int = 0):
        from timm.data import rand_augment_transform
        from timm.data.random_erasing import RandomErasing

        super().__init__(dataset, seed)
        self.rand_augment = rand_augment_transform(RAND_AUGMENT, {"img_mean": (124, 116, 104)})
        self.erase = RandomErasing(probability=ERASE_PROB, mode="pixel", device="cpu")

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        pil = Image.fromarray((img.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy())
        x = torch.from_numpy(np.asarray(self.rand_augment(pil), dtype=np.float32) / 255).permute(2, 0, 1)
        return self.erase((x - _MEAN) / _STD) * _STD + _MEAN


class BatchMixup:
    """timm's ``Mixup`` on a training batch: mixed images, soft ``"label"`` of shape (B, num_classes).

    Label smoothing goes into the soft targets here, so the loss must not smooth again
    (:func:`cdlib.losses.classification_loss`).  Draws come from NumPy's global generator,
    which the training loop re-seeds before every step.
    """

    def __init__(self, num_classes: int, label_smoothing: float):
        from timm.data import Mixup

        self.mixup = Mixup(mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA, label_smoothing=label_smoothing,
                           num_classes=num_classes)

    def __call__(self, batch: dict) -> dict:
        if "label" not in batch:
            raise ValueError("augment='deit' (mixup/cutmix) needs labelled batches")
        x, y = batch["image"], batch["label"]
        if len(x) % 2:
            raise ValueError(f"mixup/cutmix needs an even batch size per process, got {len(x)}")
        x, y = self.mixup(x.clone(), y)
        return {**batch, "image": x, "label": y}


AUGMENTS = ("", "timm", "deit")


def _check(augment: str) -> str:
    if augment not in AUGMENTS:
        raise ValueError(f"bad value {augment!r} for 'augment'; valid values: {', '.join(map(repr, AUGMENTS))}")
    return augment


def wrap_dataset(dataset, augment: str, seed: int):
    """The training dataset with ``augment`` applied per item (unchanged for ``""``)."""
    if _check(augment) == "deit":
        return DeiTAugment(dataset, seed)
    if augment == "timm":
        return ColorJitterAugment(dataset, seed)
    return dataset


def batch_transform(augment: str, num_classes: int, label_smoothing: float):
    """The per-batch part of ``augment`` (``None`` for ``""`` and ``"timm"``)."""
    return BatchMixup(num_classes, label_smoothing) if _check(augment) == "deit" else None
