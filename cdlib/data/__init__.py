"""Data: ShapesWorld scenes, the scikit-image photos, and loaders for user datasets.

Everything here is seeded and ships with the dependencies, so a chapter never
downloads anything.  One module per concern:

* :mod:`~cdlib.data.shapes` - :class:`ShapesWorld`, procedural scenes of 1..N coloured,
  textured, rotated shapes (10 classes) over natural-photo backgrounds, with a class label
  (largest visible object), boxes, instance masks and a semantic mask; cached on disk.
* :mod:`~cdlib.data.photos` - :class:`NaturalPhotos`, the photos shipped with the
  dependencies, split by whole image into train (random crops) and test (full images), and
  :class:`PhotoMix`, the codecs' training mix (colour photos, dead leaves, ShapesWorld mosaics).
* :mod:`~cdlib.data.deadleaves` - :func:`dead_leaves`, procedural images with natural statistics.
* :mod:`~cdlib.data.folders` - :class:`ImageFolderDataset` (ImageNet / Imagenette layout)
  and :class:`FlatFolderDataset` (Kodak, CLIC).
* :mod:`~cdlib.data.detection` - :func:`coco_detection`, :func:`voc_detection`.
* :mod:`~cdlib.data.base` - splits, seeded randomness and the dataset registry.

Items are dicts: ``{"image": float (3, H, W) in [0, 1], "label": int64}`` (see
``docs/ARCHITECTURE.md``).  Random augmentation is a pure function of
``(seed, epoch, index)`` so that resumed and multi-process training see the same data.

Datasets register themselves: :func:`build_dataset` looks ``cfg.dataset`` up among the
builders added with :func:`register_dataset` (``shapes``, ``photos``, ``imagefolder``,
``flatfolder`` here; a paper package may add its own)::

    from cdlib.data import register_dataset

    @register_dataset("my_scenes")
    def build(cfg, split):          # split: "train" | "val" | "test"
        return MyScenes(split, size=cfg.image_size, seed=cfg.seed)
"""
from __future__ import annotations

from ..images import IMAGE_EXTENSIONS, fit_max_side, load_image, to_item_image
from ..paths import cache_dir
from .base import SPLITS, build_dataset, content_hash, list_datasets, register_dataset, unregister_dataset
# Importing the dataset modules registers their datasets (in this order: shapes, photos, imagefolder, flatfolder).
from .shapes import SHAPES_EVAL_N, ShapesWorld
from .photos import COLOUR_PHOTOS_TRAIN, PHOTOS_TEST, PHOTOS_TRAIN, NaturalPhotos, PhotoMix
from .folders import FlatFolderDataset, ImageFolderDataset
from .detection import COCO_LAYOUT, VOC_CLASSES, VOC_LAYOUT, coco_detection, voc_detection

__all__ = [
    # registry
    "register_dataset", "unregister_dataset", "list_datasets", "build_dataset", "SPLITS",
    # datasets
    "ShapesWorld", "SHAPES_EVAL_N", "NaturalPhotos", "PhotoMix", "PHOTOS_TEST", "PHOTOS_TRAIN", "COLOUR_PHOTOS_TRAIN", "ImageFolderDataset",
    "FlatFolderDataset", "coco_detection", "voc_detection", "VOC_CLASSES", "COCO_LAYOUT", "VOC_LAYOUT",
    # re-exported from cdlib.images / cdlib.paths (their home now), for code that imported them from here
    "IMAGE_EXTENSIONS", "load_image", "fit_max_side", "to_item_image", "cache_dir",
    # determinism
    "content_hash",
]
