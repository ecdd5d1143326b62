"""Data: ShapesWorld scenes, the scikit-image photos, and loaders for user datasets.

Everything here is seeded and ships with the dependencies, so a chapter never
downloads anything:

* :class:`ShapesWorld` - procedural scenes of 1..N coloured, textured, rotated
  shapes (10 classes) over natural-photo backgrounds, with a class label (largest
  visible object), boxes, instance masks and a semantic mask.  Rendered in
  vectorised numpy, cached on disk.
* :class:`NaturalPhotos` - the colour photos shipped with scikit-image, split by
  whole image into train (random crops) and test (full images).
* :class:`ImageFolderDataset` (ImageNet / Imagenette layout), :class:`FlatFolderDataset`
  (Kodak, CLIC), :func:`coco_detection`, :func:`voc_detection` for what users bring.

Items are dicts: ``{"image": float (3, H, W) in [0, 1], "label": int64}`` (see
``docs/ARCHITECTURE.md``).  Random augmentation is a pure function of
``(seed, epoch, index)`` so that resumed and multi-process training see the same data.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
SPLITS = ("train", "val", "test")
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def cache_dir() -> Path:
    """Where generated data is cached: ``$CDLIB_CACHE`` or ``~/.cache/cdlib``."""
    return Path(os.environ.get("CDLIB_CACHE", Path.home() / ".cache" / "cdlib"))


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def to_item_image(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    img = np.ascontiguousarray(img)
    if not img.flags.writeable:  # e.g. np.asarray(PIL image): torch wants writable memory
        img = img.copy()
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(255)


# --------------------------------------------------------------------------------------------- images from disk
def load_image(path, return_note: bool = False):
    """Read an image file as uint8 RGB ``(H, W, 3)``.

    Grey images are replicated to three channels, alpha is dropped, 16-bit images are
    scaled to 8 bits and EXIF orientation is applied; ``return_note=True`` also returns a
    sentence saying which of these happened (or ``""``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            notes = []
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
                im = Image.fromarray(arr).convert("RGB")
                notes.append("16-bit samples scaled to 8 bits")
                mode = "L"
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                notes.append("alpha channel dropped")
            if mode in ("L", "1", "LA", "I", "F"):
                notes.append("grey image replicated to RGB")
            elif mode == "CMYK":
                notes.append("CMYK converted to RGB")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for unreadable / truncated files
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e}); "
                         f"supported: {', '.join(IMAGE_EXTENSIONS)}") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{path}: empty image")
    note = "; ".join(notes)
    return (arr, note) if return_note else arr


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3) with Lanczos (area-correct downscaling)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS))


def fit_max_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so that the longer side is at most ``max_side`` (aspect kept)."""
    if not max_side:
        return img
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    return _resize(img, (max(1, round(h * s)), max(1, round(w * s))))


# --------------------------------------------------------------------------------------------- natural photos
# The colour photographs shipped inside the scikit-image wheel (no download).  Whole images
# are split: the test images are never cropped for training.
PHOTOS_TEST = ("astronaut", "coffee", "rocket")
PHOTOS_TRAIN = ("chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left",
                "brick", "grass", "gravel", "camera", "coins", "moon", "page")


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data as skd

    if name == "motorcycle_left":
        fn = lambda: skd.stereo_motorcycle()[0]  # noqa: E731
    else:
        fn = getattr(skd, name)
    try:
        img = np.asarray(fn())
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
            img = _skimage_photo(name)
            for s in self.SCALES:
                h, w = round(img.shape[0] * s), round(img.shape[1] * s)
                if min(h, w) >= self.crop:
                    self.pyramid.append(_resize(img, (h, w)))
        areas = np.array([p.shape[0] * p.shape[1] for p in self.pyramid], dtype=np.float64)
        self.weights = areas / areas.sum()

    @staticmethod
    def test_images(max_side: int | None = None) -> list[np.ndarray]:
        """The held-out photos as uint8 (H, W, 3), optionally downscaled to ``max_side``."""
        return [fit_max_side(_skimage_photo(n), max_side) for n in PHOTOS_TEST]

    @staticmethod
    def train_images() -> list[np.ndarray]:
        return [_skimage_photo(n) for n in PHOTOS_TRAIN]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) if self.split == "test" else self.n_crops

    def crop_array(self, i: int) -> np.ndarray:
        rng = _rng(self.seed, self.epoch, i, 0xC0)
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


# --------------------------------------------------------------------------------------------- ShapesWorld
def _polygon(r, th, k):
    """Inside a regular k-gon of circumradius 1 (polar coordinates)."""
    seg = 2 * np.pi / k
    return r * np.cos(np.mod(th, seg) - seg / 2) <= np.cos(np.pi / k)


def _inside(cls: str, u, v):
    """Membership of local coordinates (u, v) (object radius 1) in each shape."""
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    if cls == "circle":
        return r <= 0.95
    if cls == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if cls == "triangle":
        return _polygon(r, th + np.pi / 2, 3)
    if cls == "diamond":
        return np.abs(u) / 0.7 + np.abs(v) <= 1.0
    if cls == "pentagon":
        return _polygon(r, th + np.pi / 2, 5)
    if cls == "hexagon":
        return _polygon(r, th, 6)
    if cls == "star":  # five points: radius oscillates between 0.45 and 1
        tri = np.abs(np.mod(th * 5 / (2 * np.pi), 1.0) - 0.5) * 2  # 1 at the points, 0 between
        return r <= 0.42 + 0.58 * tri ** 1.5
    if cls == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if cls == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if cls == "crescent":
        return (r <= 0.95) & (np.hypot(u - 0.45, v) >= 0.72)
    raise KeyError(cls)


class ShapesWorld(torch.utils.data.Dataset):
    """Seeded procedural scenes for machine tasks.

    Each image holds 1..``max_objects`` shapes from :attr:`CLASSES` with random colour,
    size, rotation and texture (flat, stripes, checks, gradient) over a crop of a
    scikit-image photo: one large main object and smaller distractors.  Targets: ``label`` = class of the largest visible object;
    with ``with_targets=True`` also ``boxes`` (xyxy pixels, exclusive max), ``labels``,
    instance ``masks`` and ``semantic`` (0 background, class + 1).

    Splits are generated from disjoint seed streams; images come in chunks (256 at 64x64) seeded
    by ``(seed, split, chunk)``, so ``n=100`` is a prefix of ``n=1000``.  Arrays are
    cached under :func:`cache_dir`.  Training items are randomly flipped as a function
    of ``(aug_seed, epoch, index)`` (targets flipped with them).
    """

    CLASSES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross", "ring",
               "crescent")
    VERSION = 2
    CHUNK = 256

    def __init__(self, split: str = "train", n: int = 4000, image_size: int = 64, seed: int = 0,
                 max_objects: int = 3, with_targets: bool = False, augment: bool | None = None,
                 aug_seed: int = 0, cache: bool = True, progress: bool = False):
        _check_split(split)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        if not 1 <= max_objects <= 8:
            raise ValueError(f"max_objects must be in 1..8, got {max_objects}")
        self.split, self.n, self.image_size, self.seed = split, int(n), int(image_size), int(seed)
        self.max_objects, self.with_targets = int(max_objects), with_targets
        self.augment = (split == "train") if augment is None else bool(augment)
        self.aug_seed, self.epoch = int(aug_seed), 0
        self.num_classes = len(self.CLASSES)
        arrays = self._load_or_generate(cache, progress)
        self.images: np.ndarray = arrays["images"]          # uint8 (N, S, S, 3)
        self.labels: np.ndarray = arrays["labels"]          # int64 (N,)
        self.instances: np.ndarray = arrays["instances"]    # uint8 (N, S, S): 0 background, k+1 = slot k
        self.object_classes: np.ndarray = arrays["object_classes"]  # int64 (N, K), -1 = no object

    # -- generation ------------------------------------------------------------------------------------------
    def _cache_path(self) -> Path:
        key = f"v{self.VERSION}-{self.split}-{self.n}-{self.image_size}-{self.seed}-{self.max_objects}"
        return cache_dir() / "shapesworld" / f"{key}.npz"

    def _load_or_generate(self, cache: bool, progress: bool) -> dict:
        path = self._cache_path()
        if cache and path.is_file():
            try:
                with np.load(path) as z:
                    return {k: z[k] for k in ("images", "labels", "instances", "object_classes")}
            except Exception:  # a damaged cache file is regenerated, never trusted
                pass
        from tqdm.auto import tqdm

        n_chunks = -(-self.n // self._chunk_size())
        parts = [self._chunk(c) for c in tqdm(range(n_chunks), desc=f"ShapesWorld {self.split}",
                                               disable=not progress)]
        arrays = {k: np.concatenate([p[k] for p in parts])[: self.n] for k in parts[0]}
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        return arrays

    _BACKGROUNDS: dict = {}

    @classmethod
    def _backgrounds(cls, size: int) -> np.ndarray:
        """Square background pool: every photo's centre square and halves, at 2x the image size."""
        if size not in cls._BACKGROUNDS:
            pool = []
            for img in NaturalPhotos.train_images():
                h, w = img.shape[:2]
                s = min(h, w)
                for y, x in {((h - s) // 2, (w - s) // 2), (0, 0), (h - s, w - s)}:
                    pool.append(_resize(img[y:y + s, x:x + s], (2 * size, 2 * size)))
            cls._BACKGROUNDS[size] = np.stack(pool)
        return cls._BACKGROUNDS[size]

    def _chunk_size(self) -> int:
        """Scenes per chunk: CHUNK at 64x64, fewer for larger images (same pixels per chunk, bounded memory)."""
        return max(16, self.CHUNK * 64 * 64 // self.image_size ** 2)

    def _chunk(self, c: int) -> dict:
        """Render one chunk of scenes, vectorised over images and objects (loops only over classes)."""
        B, K, S = self._chunk_size(), self.max_objects, self.image_size
        rng = _rng(self.seed, _SPLIT_ID[self.split], c, 0x5A)
        # Background: a random S x S window of a random pool image, flipped at random, and
        # flattened in contrast so that objects stay the salient content.
        pool = self._backgrounds(S)
        pid = rng.integers(0, len(pool), B)
        y0 = rng.integers(0, S + 1, B)
        x0 = rng.integers(0, S + 1, B)
        rows = y0[:, None] + np.arange(S)
        cols = x0[:, None] + np.arange(S)
        cols = np.where(rng.random(B)[:, None] < 0.5, cols, cols[:, ::-1])
        bg = pool[pid[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32) / 255
        mean = bg.mean(axis=(1, 2), keepdims=True)
        canvas = mean + (bg - mean) * rng.uniform(0.35, 0.7, (B, 1, 1, 1)).astype(np.float32)

        # Objects: count, class, centre, radius, rotation, colour, texture.
        count = rng.integers(1, K + 1, B)
        present = np.arange(K)[None, :] < count[:, None]                         # (B, K)
        klass = rng.integers(0, self.num_classes, (B, K))
        # Slot 0 is the main object (large, near the centre, painted first); the others are smaller
        # distractors painted over it, so the label (largest visible object) is well defined.
        radius = rng.uniform(0.08, 0.16, (B, K)) * S
        radius[:, 0] = rng.uniform(0.24, 0.36, B) * S
        cy = rng.uniform(0.12, 0.88, (B, K)) * S
        cx = rng.uniform(0.12, 0.88, (B, K)) * S
        cy[:, 0] = rng.uniform(0.3, 0.7, B) * S
        cx[:, 0] = rng.uniform(0.3, 0.7, B) * S
        angle = rng.uniform(0, 2 * np.pi, (B, K))
        colour = rng.uniform(0.05, 1.0, (B, K, 3)).astype(np.float32)
        colour2 = rng.uniform(0.05, 1.0, (B, K, 3)).astype(np.float32)
        texture = rng.integers(0, 4, (B, K))                                       # flat, stripes, checks, gradient
        freq = rng.uniform(2.0, 5.0, (B, K))

        yy, xx = np.meshgrid(np.arange(S, dtype=np.float32) + 0.5, np.arange(S, dtype=np.float32) + 0.5,
                             indexing="ij")
        dy = (yy[None, None] - cy[..., None, None]) / radius[..., None, None]     # (B, K, S, S)
        dx = (xx[None, None] - cx[..., None, None]) / radius[..., None, None]
        ca, sa = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
        u = (ca * dx + sa * dy).astype(np.float32)
        v = (-sa * dx + ca * dy).astype(np.float32)
        inside = np.zeros((B, K, S, S), dtype=bool)
        for k, name in enumerate(self.CLASSES):
            sel = (klass == k) & present
            if sel.any():
                inside[sel] = _inside(name, u[sel], v[sel])

        # Texture weight in [0, 1] between the two colours of each object.
        f = freq[..., None, None]
        t = np.zeros((B, K, S, S), dtype=np.float32)
        t = np.where(texture[..., None, None] == 1, (np.sin(u * f * np.pi) > 0), t)
        t = np.where(texture[..., None, None] == 2, (np.sin(u * f * np.pi / 1.5) * np.sin(v * f * np.pi / 1.5) > 0), t)
        t = np.where(texture[..., None, None] == 3, np.clip((u + 1) / 2, 0, 1), t).astype(np.float32)
        paint = colour[..., None, None, :] * (1 - t[..., None]) + colour2[..., None, None, :] * t[..., None]

        # Paint back to front: later slots occlude earlier ones; record the visible owner.
        owner = np.zeros((B, S, S), dtype=np.uint8)
        for k in range(K):
            m = inside[:, k]
            canvas = np.where(m[..., None], paint[:, k], canvas)
            owner[m] = k + 1
        areas = np.stack([(owner == k + 1).sum(axis=(1, 2)) for k in range(K)], axis=1)  # (B, K)
        object_classes = np.where(areas > 0, klass, -1)
        label = klass[np.arange(B), areas.argmax(axis=1)]
        images = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
        return {"images": images, "labels": label.astype(np.int64), "instances": owner,
                "object_classes": object_classes.astype(np.int64)}

    # -- access ----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def _flipped(self, i: int) -> bool:
        return self.augment and bool(_rng(self.aug_seed, self.epoch, i, 0xF1).random() < 0.5)

    def targets(self, i: int, flip: bool = False) -> dict:
        """Boxes (xyxy, float32), labels, instance masks (uint8 (K, S, S)) and semantic mask of image ``i``."""
        inst = self.instances[i][:, ::-1] if flip else self.instances[i]
        slots = [k for k in range(self.max_objects) if self.object_classes[i, k] >= 0]
        masks = np.stack([inst == k + 1 for k in slots]).astype(np.uint8)
        labels = self.object_classes[i, slots]
        rows, cols = masks.any(axis=2), masks.any(axis=1)                         # (K, S)
        idx = np.arange(self.image_size)
        boxes = np.stack([np.where(cols, idx, 10**9).min(1), np.where(rows, idx, 10**9).min(1),
                          np.where(cols, idx, -1).max(1) + 1, np.where(rows, idx, -1).max(1) + 1], axis=1)
        lut = np.concatenate([[0], self.object_classes[i] + 1]).astype(np.int64)
        lut[1:][self.object_classes[i] < 0] = 0
        return {"boxes": torch.from_numpy(boxes.astype(np.float32)), "labels": torch.from_numpy(labels),
                "masks": torch.from_numpy(masks), "semantic": torch.from_numpy(lut[inst])}

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i = i % self.n
        flip = self._flipped(i)
        img = self.images[i][:, ::-1] if flip else self.images[i]
        item = {"image": to_item_image(img), "label": torch.tensor(int(self.labels[i]))}
        if self.with_targets:
            item.update(self.targets(i, flip))
        return item


# --------------------------------------------------------------------------------------------- user datasets
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
            rng = _rng(self.seed, self.epoch, i, 0x1F)
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
                img = _resize(img, (max(c, round(h * s)), max(c, round(w * s))))
                h, w = img.shape[:2]
            rng = _rng(self.seed, self.epoch, i, 0xFF)
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            img = img[y:y + c, x:x + c]
            if rng.random() < 0.5:
                img = img[:, ::-1]
        return {"image": to_item_image(img)}


class _DetectionDataset(torch.utils.data.Dataset):
    """Wraps a torchvision detection dataset into ``{"image", "boxes", "labels"}`` items."""

    def __init__(self, base, parse):
        self.base, self.parse = base, parse

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        img, target = self.base[i]
        boxes, labels = self.parse(target)
        return {"image": to_item_image(np.asarray(img.convert("RGB"))),
                "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(labels, dtype=torch.int64)}


COCO_LAYOUT = "root/<split>/<image>.jpg and root/annotations/instances_<split>.json (e.g. split=val2017)"


def coco_detection(root, split: str = "val2017") -> torch.utils.data.Dataset:
    """COCO instances as ``{"image", "boxes" (xyxy), "labels" (COCO category ids)}`` (torchvision's CocoDetection)."""
    from torchvision.datasets import CocoDetection

    root = Path(root)
    images, ann = root / split, root / "annotations" / f"instances_{split}.json"
    for p in (images, ann):
        if not p.exists():
            raise FileNotFoundError(f"COCO: {p} not found; expected layout {COCO_LAYOUT}")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            base = CocoDetection(str(images), str(ann))
        except (ValueError, KeyError) as e:
            raise ValueError(f"COCO: cannot parse {ann} ({e}); expected layout {COCO_LAYOUT}") from None

    def parse(target):
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (t["bbox"] for t in target)]
        return boxes, [t["category_id"] for t in target]

    return _DetectionDataset(base, parse)


VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_LAYOUT = ("root/VOCdevkit/VOC<year>/{JPEGImages/<id>.jpg, Annotations/<id>.xml, "
              "ImageSets/Main/<image_set>.txt}")


def voc_detection(root, year: str = "2012", image_set: str = "val") -> torch.utils.data.Dataset:
    """Pascal VOC as ``{"image", "boxes" (xyxy), "labels" (index into VOC_CLASSES)}`` (torchvision's VOCDetection)."""
    from torchvision.datasets import VOCDetection

    root = Path(root)
    base_dir = root / "VOCdevkit" / f"VOC{year}"
    for p in (base_dir / "JPEGImages", base_dir / "Annotations", base_dir / "ImageSets" / "Main" / f"{image_set}.txt"):
        if not p.exists():
            raise FileNotFoundError(f"VOC: {p} not found; expected layout {VOC_LAYOUT}")
    base = VOCDetection(str(root), year=year, image_set=image_set, download=False)

    def parse(target):
        objs = target["annotation"].get("object", [])
        if isinstance(objs, dict):
            objs = [objs]
        boxes, labels = [], []
        for o in objs:
            if o["name"] not in VOC_CLASSES:
                raise ValueError(f"VOC: unknown class {o['name']!r}; expected one of {VOC_CLASSES}")
            b = o["bndbox"]
            boxes.append([float(b["xmin"]) - 1, float(b["ymin"]) - 1, float(b["xmax"]), float(b["ymax"])])
            labels.append(VOC_CLASSES.index(o["name"]))
        return boxes, labels

    return _DetectionDataset(base, parse)


# --------------------------------------------------------------------------------------------- config -> dataset
SHAPES_EVAL_N = 1000


def build_dataset(cfg, split: str = "train") -> torch.utils.data.Dataset:
    """The dataset a :class:`~cdlib.config.TrainConfig` names (``cfg.dataset``) for ``split``.

    ShapesWorld content is always generated with data seed 0 (so every model sees the same
    scenes); ``cfg.seed`` drives augmentation and order.
    """
    _check_split(split)
    if cfg.dataset == "shapes":
        n = cfg.num_train if split == "train" else SHAPES_EVAL_N
        return ShapesWorld(split, n=n, image_size=cfg.image_size, seed=0, aug_seed=cfg.seed)
    if cfg.dataset == "photos":
        if split == "train":
            return NaturalPhotos("train", crop=cfg.image_size, seed=cfg.seed, n_crops=max(1024, 64 * cfg.batch_size))
        return NaturalPhotos("test")
    if cfg.dataset == "imagefolder":
        return ImageFolderDataset(cfg.data_path, split=split, image_size=cfg.image_size, seed=cfg.seed)
    if cfg.dataset == "flatfolder":
        root = Path(cfg.data_path)
        if (root / split).is_dir():
            root = root / split
        return FlatFolderDataset(root, crop=cfg.image_size if split == "train" else None, seed=cfg.seed)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; expected shapes | photos | imagefolder | flatfolder")


def content_hash(arr: np.ndarray) -> str:
    """Short sha256 of an array's bytes (used by tests and chapters to show determinism)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


warnings.filterwarnings("ignore", message=".*Palette images with Transparency.*")
