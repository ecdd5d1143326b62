"""Detection datasets users bring: COCO and Pascal VOC (through torchvision), as ``{"image", "boxes", "labels"}`` items.

Not registered for training (they take their own arguments); chapters call
:func:`coco_detection` and :func:`voc_detection` directly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..images import to_item_image


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

