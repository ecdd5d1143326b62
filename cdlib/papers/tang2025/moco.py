"""Stages 1 and 3 of Paper C: MoCo v2 (He et al. 2020; Chen et al. 2020) with ContrastiveCrop (Peng et al.,
CVPR 2022).

- :class:`MoCoState`: the momentum (key) encoder, the queue of negatives and the crop boxes.  All of it is
  module state, so a training checkpoint holds it and a resumed run is exact; exports leave it out
  (``Tang2025.serving_drop``), so a stage that starts from an exported checkpoint re-synchronises the key
  encoder with the query encoder and starts a fresh queue.
- :func:`heatmap_boxes`: ContrastiveCrop's boxes: the layer4 map summed over channels, min-max normalised,
  upsampled to the image, thresholded; the box around what is above the threshold.
- :class:`TwoViews`: the training data of stages 1 and 3: two MoCo v2 views of each image, their crops centred
  by Beta(0.6, 0.6) draws inside the image's box (or placed uniformly: ``ccrop=False``, plain random crops).
  Every draw is seeded from ``(seed, epoch, index, view)``.  Boxes are refreshed when an epoch starts
  (:meth:`TwoViews.set_epoch`), after a warm-up, every ``box_every`` epochs.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ...data.base import seeded_rng

# MoCo v2's augmentation (Chen et al. 2020, as in the official ContrastiveCrop code).
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
P_JITTER, P_GREY, P_BLUR, P_FLIP = 0.8, 0.2, 0.5, 0.5
BLUR_SIGMA = (0.1, 2.0)
BETA = 0.6          # ContrastiveCrop: crop centres ~ Beta(0.6, 0.6) inside the box
BOX_THRESHOLD = 0.1  # ... around the heatmap above 0.1 (after min-max normalisation)


def heatmap_boxes(feature_map: torch.Tensor, image_size, threshold: float = BOX_THRESHOLD) -> torch.Tensor:
    """ContrastiveCrop's boxes ``(B, 4)`` = (x0, y0, x1, y1) as fractions of the image, from the last
    feature map ``(B, C, h, w)``: channels summed, min-max normalised per image, upsampled (bilinear) to
    ``image_size`` (H, W), thresholded; an image with nothing above the threshold gets the whole image."""
    heat = feature_map.float().sum(1, keepdim=True)
    lo = heat.amin(dim=(2, 3), keepdim=True)
    hi = heat.amax(dim=(2, 3), keepdim=True)
    heat = (heat - lo) / (hi - lo).clamp_min(1e-12)
    H, W = (int(image_size), int(image_size)) if isinstance(image_size, int) else map(int, image_size)
    heat = F.interpolate(heat, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    mask = heat > threshold
    rows, cols = mask.any(2), mask.any(1)                              # (B, H), (B, W)
    ys, xs = torch.arange(H, device=heat.device), torch.arange(W, device=heat.device)
    big = torch.tensor(10 ** 9, device=heat.device)
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -1).amax(1) + 1
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -1).amax(1) + 1
    boxes = torch.stack([x0 / W, y0 / H, x1 / W, y1 / H], 1).float()
    empty = ~mask.flatten(1).any(1)
    boxes[empty] = torch.tensor([0.0, 0.0, 1.0, 1.0], device=heat.device)
    return boxes


class MoCoState(nn.Module):
    """The training-only state of MoCo: key encoder parts (copies of the query's head, RE module, tail and
    projection head, updated as an exponential moving average, never by gradients), the queue of ``queue``
    normalised keys of size ``dim`` with its pointer, ContrastiveCrop's boxes (one row per training image,
    fractions of the image) and the epoch they were computed at (-1: not yet)."""

    def __init__(self, parts: dict, dim: int, queue: int):
        super().__init__()
        self.key = nn.ModuleDict({k: copy.deepcopy(m) for k, m in parts.items()})
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("ready", torch.zeros((), dtype=torch.long))  # 0, or the stage (1, 3) last synced
        self.register_buffer("boxes", torch.zeros(0, 4))
        self.register_buffer("boxes_epoch", torch.full((), -1, dtype=torch.long))

    @torch.no_grad()
    def sync(self, parts: dict) -> None:
        """Key encoder := query encoder, a fresh random queue (MoCo's initialisation), whole-image boxes; the
        caller records in ``ready`` which stage it synced for."""
        for k, m in parts.items():
            self.key[k].load_state_dict(m.state_dict())
        self.queue.copy_(F.normalize(torch.randn_like(self.queue), dim=0))
        self.queue_ptr.zero_()
        self.boxes.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]).expand_as(self.boxes))  # a stage starts unguided
        self.boxes_epoch.fill_(-1)

    @torch.no_grad()
    def momentum_update(self, parts: dict, m: float) -> None:
        """key = m * key + (1 - m) * query, parameters only (the key encoder keeps its own BN statistics)."""
        for k, module in parts.items():
            for pk, pq in zip(self.key[k].parameters(), module.parameters()):
                pk.mul_(m).add_(pq.detach(), alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (N, dim; every process's, in rank order) over the oldest entries, wrapping around."""
        K = self.queue.shape[1]
        keys = keys[-K:]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % K
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % K)

    def resize_boxes(self, n: int) -> None:
        """One whole-image box per training image (a new dataset size resets them)."""
        if self.boxes.shape[0] != n:
            self.boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(n, 1).to(self.boxes.device)
            self.boxes_epoch.fill_(-1)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: the positive key against the queue's negatives (q, k normalised (N, dim))."""
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.clone().detach()
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def _crop_box(rng: np.random.Generator, H: int, W: int, box, ccrop: bool):
    """(top, left, height, width) of one crop: RandomResizedCrop's scale and ratio; the centre drawn from
    Beta(0.6, 0.6) inside ``box`` and the crop clipped to the image (ContrastiveCrop), or, with ``ccrop``
    off, placed uniformly (torchvision's RandomResizedCrop)."""
    area = H * W
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= W and 0 < h <= H:
            break
    else:
        w, h = W, H
    if not ccrop:
        return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    x0, y0, x1, y1 = box
    cx = (x0 + (x1 - x0) * rng.beta(BETA, BETA)) * W
    cy = (y0 + (y1 - y0) * rng.beta(BETA, BETA)) * H
    left, top = max(int(cx - w / 2), 0), max(int(cy - h / 2), 0)
    right, bottom = min(left + w, W), min(top + h, H)
    return top, left, bottom - top, right - left


def moco_view(img: torch.Tensor, rng: np.random.Generator, box, ccrop: bool, size: int) -> torch.Tensor:
    """One MoCo v2 view of ``img`` (3, H, W) in [0, 1]: box-guided resized crop to ``size``, colour jitter
    (p 0.8), greyscale (p 0.2), Gaussian blur (p 0.5, sigma 0.1..2, kernel about a tenth of the size), flip."""
    H, W = img.shape[-2:]
    top, left, h, w = _crop_box(rng, H, W, box, ccrop)
    v = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if rng.random() < P_JITTER:
        b, c, s = (rng.uniform(1 - JITTER[k], 1 + JITTER[k]) for k in ("brightness", "contrast", "saturation"))
        hue = rng.uniform(-JITTER["hue"], JITTER["hue"])
        v = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(v, b), c), s), hue)
    if rng.random() < P_GREY:
        v = TF.rgb_to_grayscale(v, num_output_channels=3)
    if rng.random() < P_BLUR:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        v = TF.gaussian_blur(v, [k, k], [float(rng.uniform(*BLUR_SIGMA))] * 2)
    if rng.random() < P_FLIP:
        v = TF.horizontal_flip(v)
    return v.clamp(0, 1).contiguous()


def plain_copy(dataset):
    """A shallow copy of ``dataset`` without its own training augmentation (crops and flips come from
    the views; a flipped base image would also mirror its box)."""
    plain = copy.copy(dataset)
    for flag in ("augment", "train"):
        if isinstance(getattr(plain, flag, None), bool):
            setattr(plain, flag, False)
    return plain


class TwoViews(torch.utils.data.Dataset):
    """Items ``{"image": view 1, "image2": view 2, "index", "label"}`` of a dataset, for MoCo.

    ``state``: the model's :class:`MoCoState` (its ``boxes`` are read when an item is made);
    ``refresh(dataset) -> boxes (N, 4)``: the model's box computation, called by :meth:`set_epoch` at epochs
    ``box_warmup, box_warmup + box_every, ...`` when ``ccrop`` is on (the epoch is recorded in the state, so a
    resumed run does not recompute them)."""

    def __init__(self, dataset, state: MoCoState, refresh, *, seed: int = 0, size: int | None = None,
                 ccrop: bool = True, box_warmup: int = 20, box_every: int = 20):
        self.base = plain_copy(dataset)
        self.state, self.refresh = state, refresh
        self.seed, self.epoch, self.ccrop = int(seed), 0, bool(ccrop)
        self.box_warmup, self.box_every = int(box_warmup), max(1, int(box_every))
        self.size = int(size) if size else None
        self.num_classes = getattr(dataset, "num_classes", None)
        state.resize_boxes(len(self.base))

    def __len__(self) -> int:
        return len(self.base)

    def __getstate__(self):  # DataLoader workers get the data, not the model behind ``refresh``
        return {**self.__dict__, "refresh": None}

    def refresh_due(self, epoch: int) -> bool:
        return (self.ccrop and epoch >= self.box_warmup and (epoch - self.box_warmup) % self.box_every == 0
                and int(self.state.boxes_epoch) < epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.refresh_due(self.epoch) and self.refresh is not None:
            with torch.no_grad():
                self.state.boxes.copy_(self.refresh(self.base).to(self.state.boxes))
                self.state.boxes_epoch.fill_(self.epoch)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        img = item["image"]
        size = self.size or img.shape[-1]
        box = self.state.boxes[i].tolist()
        views = [moco_view(img, seeded_rng(self.seed, self.epoch, i, v, 0xCC), box, self.ccrop, size)
                 for v in (0, 1)]
        return {"image": views[0], "image2": views[1], "index": torch.tensor(i), "label": item.get(
            "label", torch.tensor(-1))}
