"""The colour photographs shipped inside the scikit-image wheel (no download), as a small dataset.

Whole images are split: the test photos are never cropped for training.  Registers the
``photos`` dataset.
"""
from __future__ import annotations

import numpy as np
import torch

from ..images import fit_max_side, resize, to_item_image
from .base import register_dataset, seeded_rng

PHOTOS_TEST = ("astronaut", "coffee", "rocket")
PHOTOS_TRAIN = ("chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left",
                "brick", "grass", "gravel", "camera", "coins", "moon", "page")


def skimage_photo(name: str) -> np.ndarray:
    """The scikit-image sample ``name`` as uint8 RGB ``(H, W, 3)`` (grey replicated, alpha dropped)."""
    import skimage.data as skd

    if name == "motorcycle_left":
        load = lambda: skd.stereo_motorcycle()[0]  # noqa: E731
    else:
        load = getattr(skd, name)
    try:
        img = np.asarray(load())
    except Exception as e:  # a data file that this scikit-image build does not ship
        raise RuntimeError(f"scikit-image photo {name!r} is not available offline ({e})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / max(float(img.max()), 1.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img)


class NaturalPhotos(torch.utils.data.Dataset):
    """The scikit-image photos as a small rate-distortion set.

    ``split="train"``: ``n_crops`` random ``crop x crop`` patches per epoch from the
    training photos, at random scale (1/4..1) and flip; the crop of item ``i`` is a pure
    function of ``(seed, epoch, i)``.  ``split="test"``: the full held-out photos
    (``max_side`` downscales them).  The split is by whole image and fixed.
    """

    SCALES = (1.0, 0.7, 0.5, 0.35, 0.25)

    def __init__(self, split: str = "train", crop: int = 64, seed: int = 0, n_crops: int = 4096,
                 max_side: int | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"NaturalPhotos split must be 'train' or 'test', got {split!r}")
        if crop < 8:
            raise ValueError(f"crop must be >= 8 pixels, got {crop}")
        self.split, self.crop, self.seed, self.epoch = split, int(crop), int(seed), 0
        if split == "test":
            self.images = self.test_images(max_side)
            return
        self.n_crops = int(n_crops)
        # A small pyramid per photo, so that crops at any scale are plain slices.
        self.pyramid = []
        for name in PHOTOS_TRAIN:
            img = skimage_photo(name)
            for s in self.SCALES:
                h, w = round(img.shape[0] * s), round(img.shape[1] * s)
                if min(h, w) >= self.crop:
                    self.pyramid.append(resize(img, (h, w)))
        areas = np.array([p.shape[0] * p.shape[1] for p in self.pyramid], dtype=np.float64)
        self.weights = areas / areas.sum()

    @staticmethod
    def test_images(max_side: int | None = None) -> list[np.ndarray]:
        """The held-out photos as uint8 (H, W, 3), optionally downscaled to ``max_side``."""
        return [fit_max_side(skimage_photo(n), max_side) for n in PHOTOS_TEST]

    @staticmethod
    def train_images() -> list[np.ndarray]:
        return [skimage_photo(n) for n in PHOTOS_TRAIN]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) if self.split == "test" else self.n_crops

    def crop_array(self, i: int) -> np.ndarray:
        rng = seeded_rng(self.seed, self.epoch, i, 0xC0)
        p = self.pyramid[rng.choice(len(self.pyramid), p=self.weights)]
        y = rng.integers(0, p.shape[0] - self.crop + 1)
        x = rng.integers(0, p.shape[1] - self.crop + 1)
        out = p[y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        img = self.images[i] if self.split == "test" else self.crop_array(i)
        return {"image": to_item_image(img)}


@register_dataset("photos")
def build_photos(cfg, split: str) -> NaturalPhotos:
    """Training: ``max(1024, 64 * cfg.batch_size)`` crops of ``cfg.image_size`` per epoch.

    Val and test: the held-out photos at full size.
    """
    if split == "train":
        return NaturalPhotos("train", crop=cfg.image_size, seed=cfg.seed, n_crops=max(1024, 64 * cfg.batch_size))
    return NaturalPhotos("test")
