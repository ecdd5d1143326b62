"""Loaders for the image folders users bring: ImageNet-style class folders and flat folders (Kodak, CLIC).

Registers the ``imagefolder`` and ``flatfolder`` datasets (``cfg.data_path`` is the root).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import IMAGE_EXTENSIONS, load_image, resize, to_item_image
from .base import register_dataset, seeded_rng


def _random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Inception-style crop (8-100 % of the area, aspect 3/4..4/3), seeded; falls back to a centre crop."""
    w, h = img.size
    for _ in range(10):
        area = h * w * rng.uniform(0.08, 1.0)
        ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    return _center_crop(img, size, 1.0)


def _center_crop(img: Image.Image, size: int, ratio: float = 0.875) -> Image.Image:
    """Resize the shorter side to ``size / ratio`` and take the centre ``size x size``."""
    w, h = img.size
    short = size / ratio
    s = short / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    w, h = img.size
    x, y = (w - size) // 2, (h - size) // 2
    return img.crop((x, y, x + size, y + size))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Classification data in the ImageNet layout: ``root/<class>/<image>`` (or ``root/<split>/<class>/...``).

    Training items: seeded random-resized crop + flip at ``image_size``; evaluation items:
    resize + centre crop.  File discovery is torchvision's ``ImageFolder``.
    """

    LAYOUT = "root/<class_name>/<image>.jpg (or root/train/<class_name>/..., root/val/<class_name>/...)"

    def __init__(self, root, split: str | None = None, image_size: int = 224, train: bool | None = None,
                 seed: int = 0):
        from torchvision.datasets import ImageFolder

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}; expected layout {self.LAYOUT}")
        if split is not None and (root / split).is_dir():
            root = root / split
        try:
            self.folder = ImageFolder(str(root), allow_empty=False)
        except (FileNotFoundError, RuntimeError) as e:
            raise FileNotFoundError(f"{root} is not an image-folder dataset ({e}); expected layout {self.LAYOUT}") \
                from None
        self.root, self.image_size, self.seed, self.epoch = root, int(image_size), int(seed), 0
        self.train = (split == "train") if train is None else bool(train)
        self.classes = self.folder.classes
        self.num_classes = len(self.classes)
        self.labels = np.array(self.folder.targets, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def load(self, i: int) -> np.ndarray:
        """The ``i``-th image at its full size, uint8 (H, W, 3)."""
        return load_image(self.folder.samples[i][0])

    def __getitem__(self, i: int) -> dict:
        img = Image.fromarray(self.load(i))
        if self.train:
            rng = seeded_rng(self.seed, self.epoch, i, 0x1F)
            img = _random_resized_crop(img, self.image_size, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = _center_crop(img, self.image_size)
        return {"image": to_item_image(np.asarray(img)), "label": torch.tensor(int(self.labels[i]))}


class FlatFolderDataset(torch.utils.data.Dataset):
    """Every image directly inside ``root`` (Kodak, CLIC), sorted by name.

    ``crop=None``: items are full images (evaluation); ``crop=S``: one seeded random ``S x S``
    crop (with flip) per image per epoch (training; images smaller than ``S`` are upscaled).
    """

    LAYOUT = "root/<image>.png (images directly in the folder, e.g. kodak/kodim01.png ... kodim24.png)"

    def __init__(self, root, crop: int | None = None, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}; expected layout {self.LAYOUT}")
        self.files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) directly inside {root}; "
                                    f"expected layout {self.LAYOUT}")
        self.root, self.crop, self.seed, self.epoch = root, crop, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        return load_image(self.files[i])

    def __getitem__(self, i: int) -> dict:
        img = self.load(i)
        if self.crop:
            c = self.crop
            h, w = img.shape[:2]
            if min(h, w) < c:
                s = c / min(h, w)
                img = resize(img, (max(c, round(h * s)), max(c, round(w * s))))
                h, w = img.shape[:2]
            rng = seeded_rng(self.seed, self.epoch, i, 0xFF)
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            img = img[y:y + c, x:x + c]
            if rng.random() < 0.5:
                img = img[:, ::-1]
        return {"image": to_item_image(img)}


@register_dataset("imagefolder")
def build_imagefolder(cfg, split: str) -> ImageFolderDataset:
    """``cfg.data_path`` (or its ``<split>`` sub-folder) at ``cfg.image_size``; random crops for ``train``."""
    return ImageFolderDataset(cfg.data_path, split=split, image_size=cfg.image_size, seed=cfg.seed)


@register_dataset("flatfolder")
def build_flatfolder(cfg, split: str) -> FlatFolderDataset:
    """``cfg.data_path/<split>`` if it exists, else ``cfg.data_path``.

    Training: one ``cfg.image_size`` crop per image per epoch; val and test: full images.
    """
    root = Path(cfg.data_path)
    if (root / split).is_dir():
        root = root / split
    return FlatFolderDataset(root, crop=cfg.image_size if split == "train" else None, seed=cfg.seed)
