"""ShapesWorld: seeded procedural scenes of coloured, textured, rotated shapes for machine tasks.

Rendered in vectorised numpy and cached on disk under ``cache_dir("shapesworld")``.
Registers the ``shapes`` dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..images import resize, to_item_image
from ..paths import cache_dir
from .base import SPLIT_ID, check_split, register_dataset, seeded_rng

SHAPES_EVAL_N = 1000  # scenes in the val and test splits that build_dataset makes


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
    scikit-image photo: one large main object and smaller distractors.  Targets: ``label`` = class
    of the largest visible object; with ``with_targets=True`` also ``boxes`` (xyxy pixels, exclusive max), ``labels``,
    instance ``masks`` and ``semantic`` (0 background, class + 1).

    Splits are generated from disjoint seed streams; images come in chunks (256 at 64x64) seeded
    by ``(seed, split, chunk)``, so ``n=100`` is a prefix of ``n=1000``.  Arrays are
    cached under :func:`cdlib.paths.cache_dir`.  Training items are randomly flipped as a function
    of ``(aug_seed, epoch, index)`` (targets flipped with them).
    """

    CLASSES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross", "ring",
               "crescent")
    VERSION = 2
    CHUNK = 256

    def __init__(self, split: str = "train", n: int = 4000, image_size: int = 64, seed: int = 0,
                 max_objects: int = 3, with_targets: bool = False, augment: bool | None = None,
                 aug_seed: int = 0, cache: bool = True, progress: bool = False):
        check_split(split)
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
        from ..progress import progress_bar

        tqdm = progress_bar()

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
            from .photos import NaturalPhotos  # here, so that 'shapes' registers before 'photos'

            pool = []
            for img in NaturalPhotos.train_images():
                h, w = img.shape[:2]
                s = min(h, w)
                for y, x in {((h - s) // 2, (w - s) // 2), (0, 0), (h - s, w - s)}:
                    pool.append(resize(img[y:y + s, x:x + s], (2 * size, 2 * size)))
            cls._BACKGROUNDS[size] = np.stack(pool)
        return cls._BACKGROUNDS[size]

    def _chunk_size(self) -> int:
        """Scenes per chunk: CHUNK at 64x64, fewer for larger images (same pixels per chunk, bounded memory)."""
        return max(16, self.CHUNK * 64 * 64 // self.image_size ** 2)

    def _chunk(self, c: int) -> dict:
        """Render one chunk of scenes, vectorised over images and objects (loops only over classes)."""
        B, K, S = self._chunk_size(), self.max_objects, self.image_size
        rng = seeded_rng(self.seed, SPLIT_ID[self.split], c, 0x5A)
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
        return self.augment and bool(seeded_rng(self.aug_seed, self.epoch, i, 0xF1).random() < 0.5)

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


@register_dataset("shapes")
def build_shapes(cfg, split: str) -> ShapesWorld:
    """``cfg.num_train`` training scenes, :data:`SHAPES_EVAL_N` val/test scenes, at ``cfg.image_size``.

    Scene content is always generated with data seed 0 (so every model sees the same
    scenes); ``cfg.seed`` drives augmentation.
    """
    n = cfg.num_train if split == "train" else SHAPES_EVAL_N
    return ShapesWorld(split, n=n, image_size=cfg.image_size, seed=0, aug_seed=cfg.seed)
