"""The photographs shipped inside the installed packages (no download), as small datasets.

Whole images are split: the test photos are never cropped for training.  Registers the
``photos`` dataset (the scikit-image photos that ShapesWorld also uses as backgrounds) and
``photomix`` / ``colourphotos`` (the codecs' training data: every colour photo the dependencies ship,
dead leaves and ShapesWorld mosaics; see :class:`PhotoMix`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..images import fit_max_side, resize, to_item_image
from .base import register_dataset, seeded_rng

PHOTOS_TEST = ("astronaut", "coffee", "rocket")
PHOTOS_TRAIN = ("chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left",
                "brick", "grass", "gravel", "camera", "coins", "moon", "page")
# Every colour photograph that the dependencies ship, the held-out ones excepted (the right view of the
# stereo motorcycle pair is left out: it nearly repeats the left one).  Seven of PHOTOS_TRAIN's twelve are
# grey textures or scans, unlike the test photos; ShapesWorld keeps that list for its backgrounds so that
# its scenes never change.
COLOUR_PHOTOS_TRAIN = ("chelsea", "motorcycle_left", "immunohistochemistry", "retina", "hubble_deep_field",
                       "sklearn:china", "sklearn:flower", "matplotlib:grace_hopper")


def sample_photo(name: str) -> np.ndarray:
    """A photo shipped by a dependency, as uint8 RGB ``(H, W, 3)``: ``"sklearn:china"`` /
    ``"sklearn:flower"`` (scikit-learn), ``"matplotlib:grace_hopper"``, else a scikit-image sample."""
    source, _, key = name.rpartition(":")
    if not source:
        return skimage_photo(name)
    try:
        if source == "sklearn":
            from sklearn.datasets import load_sample_image

            img = load_sample_image(f"{key}.jpg")
        elif source == "matplotlib":
            from matplotlib import cbook
            from PIL import Image

            with cbook.get_sample_data(f"{key}.jpg") as f:
                img = Image.open(f).convert("RGB")
        else:
            raise ValueError(f"unknown photo source {source!r} in {name!r} (sklearn, matplotlib or scikit-image)")
    except (ImportError, OSError) as e:
        raise RuntimeError(f"photo {name!r} is not available offline ({e})") from None
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[..., :3])


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
                 max_side: int | None = None, photos: tuple[str, ...] = PHOTOS_TRAIN):
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
        held_out = set(PHOTOS_TEST) & set(photos)
        if held_out:
            raise ValueError(f"training photos must not include the held-out test photos {sorted(held_out)}")
        for name in photos:
            img = sample_photo(name)
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


class PhotoMix(torch.utils.data.Dataset):
    """Training crops for image codecs, from three offline sources mixed by ``weights``:

    * ``photos``: random-scale crops of :data:`COLOUR_PHOTOS_TRAIN` (as :class:`NaturalPhotos`);
    * ``deadleaves``: :func:`cdlib.data.deadleaves.dead_leaves` images textured with those photos;
    * ``shapes``: mosaics of 64x64 ShapesWorld training scenes (the machine-task chapters code them).

    Item ``i`` of an epoch is a pure function of ``(seed, epoch, i)``, whatever the worker.
    """

    SOURCES = ("photos", "deadleaves", "shapes")

    def __init__(self, crop: int = 256, seed: int = 0, n_crops: int = 4096,
                 weights: tuple[float, float, float] = (0.4, 0.45, 0.15)):
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (3,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be three non-negative numbers for {self.SOURCES}, got {weights}")
        self.weights, self.crop, self.seed, self.n_crops, self.epoch = w / w.sum(), int(crop), int(seed), \
            int(n_crops), 0
        self.photos = NaturalPhotos("train", crop=crop, seed=seed, n_crops=n_crops, photos=COLOUR_PHOTOS_TRAIN)
        # textures for the leaves: the photos at half size (finer grain for the small leaves)
        self.textures = [resize(p, (p.shape[0] // 2, p.shape[1] // 2)) for p in
                         (sample_photo(n) for n in COLOUR_PHOTOS_TRAIN)]
        self._scenes = None

    def scenes(self) -> np.ndarray:
        if self._scenes is None:
            from .shapes import ShapesWorld

            self._scenes = ShapesWorld("train", n=4000, image_size=64, seed=self.seed).images
        return self._scenes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.photos.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n_crops

    def source(self, i: int) -> str:
        rng = seeded_rng(self.seed, self.epoch, i, 0x31)
        return self.SOURCES[rng.choice(3, p=self.weights)]

    def crop_array(self, i: int) -> np.ndarray:
        src = self.source(i)
        if src == "photos":
            return self.photos.crop_array(i)
        rng = seeded_rng(self.seed, self.epoch, i, 0x32)
        if src == "deadleaves":
            from .deadleaves import dead_leaves

            return dead_leaves(rng, self.crop, self.textures)
        scenes, s = self.scenes(), 64
        k = -(-self.crop // s)
        tiles = scenes[rng.integers(0, len(scenes), size=k * k)]
        mosaic = tiles.reshape(k, k, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(k * s, k * s, 3)
        return np.ascontiguousarray(mosaic[: self.crop, : self.crop])

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return {"image": to_item_image(self.crop_array(i))}


@register_dataset("photos")
def build_photos(cfg, split: str) -> NaturalPhotos:
    """Training: ``max(1024, 64 * cfg.batch_size)`` crops of ``cfg.image_size`` per epoch.

    Val and test: the held-out photos at full size.
    """
    if split == "train":
        return NaturalPhotos("train", crop=cfg.image_size, seed=cfg.seed, n_crops=max(1024, 64 * cfg.batch_size))
    return NaturalPhotos("test")


def _codec_train_set(cfg, split: str, weights) -> torch.utils.data.Dataset:
    if split == "train":
        return PhotoMix(crop=cfg.image_size, seed=cfg.seed, n_crops=max(1024, 64 * cfg.batch_size), weights=weights)
    return NaturalPhotos("test")


@register_dataset("photomix")
def build_photomix(cfg, split: str):
    """Training: :class:`PhotoMix` (40% colour photos, 45% dead leaves, 15% ShapesWorld mosaics).
    Val and test: the held-out photos."""
    return _codec_train_set(cfg, split, (0.4, 0.45, 0.15))


@register_dataset("colourphotos")
def build_colourphotos(cfg, split: str):
    """Training: crops of the colour photos only (:class:`PhotoMix` without the procedural sources, the
    comparison run of chapter 1).  Val and test: the held-out photos."""
    return _codec_train_set(cfg, split, (1.0, 0.0, 0.0))
