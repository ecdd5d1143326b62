"""The real CelebAMask-HQ (paper profile): the same items as :class:`~.faceworld.FaceWorld`.

CelebAMask-HQ cannot be downloaded here; bring it and point ``cfg.data_path`` (or ``root``) at the folder
that holds :data:`CELEBAMASK_LAYOUT`.  The parsing map is painted from the per-part mask PNGs in the label
order, later labels over earlier ones, as the dataset's own ``g_mask.py`` does.  Registers ``celebamask_hq``.

Landmarks: CelebAMask-HQ ships none (CelebA's landmarks are for the original, unaligned images).  With
``landmarks="masks"`` (default) they are derived from the masks: eye centroids, the centroid of the lowest third
of the nose, the leftmost and rightmost mouth pixels; a point whose part is absent (eyes under sunglasses, a
closed-mouth face without lips...) is NaN.  ``landmarks="none"`` gives all NaN.  These are pseudo-landmarks, not
CelebA's annotations: use them only for relative comparisons.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...data.base import SPLITS, register_dataset
from ...images import load_image, resize, to_item_image
from .faceworld import ATTRIBUTES, CELEBAMASK_LABELS, FULL_TO_MERGED, LABEL_SETS, labels_for_config

IMG_DIR, MASK_DIR, ATTR_FILE = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno", "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE, PARTITION_FILE = "CelebA-HQ-to-CelebA-mapping.txt", "list_eval_partition.txt"
PARTS = CELEBAMASK_LABELS[1:]  # the part names of the mask files, in label order (skin = 1 ... cloth = 18)
CELEBAMASK_LAYOUT = f"""<root>/
  {IMG_DIR}/<id>.jpg                               0.jpg ... 29999.jpg
  {MASK_DIR}/<k>/<id:05d>_<part>.png     k = id // 2000; part in {", ".join(PARTS)}
                                                   (a part absent from a face has no file)
  {ATTR_FILE}              line 1: number of images; line 2: the 40 attribute names;
                                                   then "<id>.jpg  1 -1 ..." (1 = yes, -1 = no)
  [{MAPPING_FILE} and {PARTITION_FILE}]   optional: CelebA's train/val/test split;
                                                   without them ids with id % 10 < 8 are train, 8 val, 9 test"""


def _layout_error(what: str) -> FileNotFoundError:
    return FileNotFoundError(f"CelebAMask-HQ: {what}; expected layout:\n{CELEBAMASK_LAYOUT}")


def read_attribute_file(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, ids, values)`` of ``CelebAMask-HQ-attribute-anno.txt``: values uint8 0/1 ``(N, 40)``."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        count, names = int(lines[0][0]), lines[1]
        rows = lines[2:]
        if len(rows) != count or any(len(r) != len(names) + 1 for r in rows):
            raise ValueError(f"{len(rows)} rows for a stated count of {count}, or rows not of 1 + {len(names)} fields")
        ids = np.array([int(Path(r[0]).stem) for r in rows], dtype=np.int64)
        values = (np.array([[int(x) for x in r[1:]] for r in rows], dtype=np.int64) > 0).astype(np.uint8)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path} is not a CelebAMask-HQ attribute file ({e}); expected layout:\n"
                         f"{CELEBAMASK_LAYOUT}") from None
    return names, ids, values


def _official_split(root: Path) -> dict[int, str] | None:
    mapping, partition = root / MAPPING_FILE, root / PARTITION_FILE
    if not (mapping.is_file() and partition.is_file()):
        return None
    part = {}
    for ln in partition.read_text().splitlines():
        f = ln.split()
        if len(f) == 2:
            part[f[0]] = SPLITS[int(f[1])]
    out = {}
    for ln in mapping.read_text().splitlines()[1:]:
        f = ln.split()
        if len(f) == 3 and f[2] in part:
            out[int(f[0])] = part[f[2]]
    return out


def landmarks_from_parsing(parsing: np.ndarray) -> np.ndarray:
    """Five pseudo-landmarks ``(5, 2)`` (x, y in [0, 1]) from a full-label parsing map; NaN where a part is absent."""
    H, W = parsing.shape
    out = np.full((5, 2), np.nan, dtype=np.float32)
    for j, lab in enumerate((4, 5)):                                   # l_eye, r_eye
        ys, xs = np.nonzero(parsing == lab)
        if len(xs):
            out[j] = (xs.mean() + 0.5) / W, (ys.mean() + 0.5) / H
    ys, xs = np.nonzero(parsing == 2)                                  # nose: lowest third
    if len(xs):
        low = ys >= ys.min() + 2 * (ys.max() - ys.min()) / 3
        out[2] = (xs[low].mean() + 0.5) / W, (ys[low].mean() + 0.5) / H
    ys, xs = np.nonzero(np.isin(parsing, (10, 11, 12)))                # mouth corners
    if len(xs):
        for j, x in ((3, xs.min()), (4, xs.max())):
            out[j] = (x + 0.5) / W, (ys[xs == x].mean() + 0.5) / H
    return out


class CelebAMaskHQ(torch.utils.data.Dataset):
    """CelebAMask-HQ as ``{"image", "parsing", "attributes", "landmarks"}`` items (see :class:`FaceWorld`).

    ``split`` in train | val | test | all (see :data:`CELEBAMASK_LAYOUT` for the split rule); ``image_size``:
    images are resized (Lanczos), masks with nearest neighbour; ``labels``: "full" (19) or "merged" (12);
    ``attributes``: a sequence of CelebA names (default FaceWorld's :data:`ATTRIBUTES`, so that one analysis
    head serves both) or ``"all"`` (the file's 40); ``landmarks``: "masks" or "none" (module docstring).
    Missing or malformed paths raise ``FileNotFoundError`` / ``ValueError`` showing the expected layout.
    """

    def __init__(self, root, split: str = "train", image_size: int = 256, labels: str = "full",
                 attributes="default", landmarks: str = "masks", max_items: int | None = None):
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
        if labels not in LABEL_SETS:
            raise ValueError(f"labels must be one of {tuple(LABEL_SETS)}, got {labels!r}")
        if landmarks not in ("masks", "none"):
            raise ValueError(f"landmarks must be 'masks' or 'none', got {landmarks!r}")
        if not str(root):
            raise _layout_error("no root given (set data_path=/path/to/CelebAMask-HQ)")
        root = Path(root)
        if not root.is_dir():
            raise _layout_error(f"root {root} is not a folder")
        for sub in (IMG_DIR, MASK_DIR):
            if not (root / sub).is_dir():
                raise _layout_error(f"{root / sub} is missing")
        if not (root / ATTR_FILE).is_file():
            raise _layout_error(f"{root / ATTR_FILE} is missing")
        names, ids, values = read_attribute_file(root / ATTR_FILE)
        if isinstance(attributes, str) and attributes == "all":
            attributes = tuple(names)
        elif isinstance(attributes, str) and attributes == "default":
            attributes = ATTRIBUTES
        unknown = [a for a in attributes if a not in names]
        if unknown:
            raise ValueError(f"unknown CelebA attributes {unknown}; the file has: {', '.join(names)}")
        cols = [names.index(a) for a in attributes]
        if split != "all":
            official = _official_split(root)
            if official is not None:
                keep = np.array([official.get(int(i)) == split for i in ids], dtype=bool)
            else:
                r = ids % 10
                keep = {"train": r < 8, "val": r == 8, "test": r == 9}[split]
            ids, values = ids[keep], values[keep]
        if max_items is not None:
            ids, values = ids[:max_items], values[:max_items]
        self.root, self.split, self.image_size, self.labels = root, split, int(image_size), labels
        self.landmark_mode = landmarks
        self.ids, self.attribute_names = ids, tuple(attributes)
        self.attribute_values = values[:, cols].astype(np.float32)
        self.label_names = LABEL_SETS[labels]
        self.num_classes, self.num_attributes = len(self.label_names), len(self.attribute_names)
        if len(ids):
            first = root / IMG_DIR / f"{ids[0]}.jpg"
            if not first.is_file():
                raise _layout_error(f"image {first} is missing")
            if not (root / MASK_DIR / str(ids[0] // 2000)).is_dir():
                raise _layout_error(f"mask folder {root / MASK_DIR / str(ids[0] // 2000)} is missing")

    def set_epoch(self, epoch: int) -> None:  # no random augmentation here; kept for the training loop
        pass

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.root / IMG_DIR / f"{self.ids[i]}.jpg"

    def mask_path(self, i: int, part: str) -> Path:
        k = int(self.ids[i])
        return self.root / MASK_DIR / str(k // 2000) / f"{k:05d}_{part}.png"

    def load_parsing(self, i: int) -> np.ndarray:
        """Full-label parsing map uint8 ``(S, S)`` painted from the part masks in label order."""
        S = self.image_size
        out = np.zeros((S, S), dtype=np.uint8)
        for lab, part in enumerate(PARTS, start=1):
            p = self.mask_path(i, part)
            if p.is_file():
                m = Image.open(p).convert("L").resize((S, S), Image.NEAREST)
                out[np.asarray(m) > 0] = lab
        return out

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        path = self.image_path(i)
        if not path.is_file():
            raise _layout_error(f"image {path} is missing")
        img = resize(load_image(path), (self.image_size, self.image_size))
        par = self.load_parsing(i)
        lm = landmarks_from_parsing(par) if self.landmark_mode == "masks" else np.full((5, 2), np.nan, np.float32)
        lab = FULL_TO_MERGED[par] if self.labels == "merged" else par.astype(np.int64)
        return {"image": to_item_image(img), "parsing": torch.from_numpy(lab),
                "attributes": torch.from_numpy(self.attribute_values[i].copy()), "landmarks": torch.from_numpy(lm)}


@register_dataset("celebamask_hq")
def build_celebamask_hq(cfg, split: str) -> CelebAMaskHQ:
    """CelebAMask-HQ under ``cfg.data_path`` at ``cfg.image_size`` (labels as the ``faceworld`` builder)."""
    return CelebAMaskHQ(cfg.data_path, split=split, image_size=cfg.image_size, labels=labels_for_config(cfg))
