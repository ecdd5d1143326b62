"""Machine tasks behind one interface: run a model, score its predictions, describe one prediction.

A :class:`Task` knows

* how to run a **pixel model** on ``uint8 (N, H, W, 3)`` images (:meth:`Task.predict`: eval mode, no
  gradients, on the model's own device, batch by batch; the model's train/eval mode is restored),
* how to turn a model's (or a codec's :meth:`~cdlib.codecs.base.Codec.analyse`) raw output into
  predictions (:meth:`Task.postprocess`),
* how to **score** predictions against targets (:meth:`Task.score`, a dict of metric values; mAP and
  IoU come from ``torchmetrics``), with :attr:`Task.metric` the main one,
* how to **describe** one prediction as JSON (:meth:`Task.describe`).

Predictions and targets, per task:

* ``classification``: logits ``(N, C)``; targets are class indices ``(N,)``.
* ``detection``: one dict per image, ``boxes`` ``(K, 4)`` xyxy pixels, ``scores``, ``labels``; targets
  are dicts with ``boxes`` and ``labels``.
* ``instance_segmentation``: as detection, plus ``masks`` ``(K, H, W)`` bool; targets are dicts with
  ``masks`` and ``labels``.
* ``parsing``: label maps ``(N, H, W)``; targets too (pixels equal to ``ignore_index`` are not scored).
* ``attributes``: logits ``(N, A)``; targets are 0/1 ``(N, A)``.

``get_task("detection")`` builds one from its name; tasks with options take them as keywords
(``get_task("parsing", num_classes=19)``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .metrics import _tensor, accuracy

# --------------------------------------------------------------------------- running a pixel model


def _as_image_batch(images) -> np.ndarray:
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


@contextmanager
def _inference(model: Callable):
    """Eval mode and no gradients for the duration; yields the device of the model's parameters
    (CPU for a plain function or a module without parameters).  The previous mode is restored."""
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    param = next(module.parameters(), None) if module is not None else None
    device = param.device if param is not None else torch.device("cpu")
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            yield device
    finally:
        if module is not None:
            module.train(was_training)


def _check_len(what: str, items, n: int):
    if len(items) != n:
        raise ValueError(f"{n} images but {len(items)} {what}")
    return items


def _cpu(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().cpu()


# --------------------------------------------------------------------------- the interface


class Task:
    """One machine task; subclasses set :attr:`name` and :attr:`metric` and implement
    :meth:`postprocess`, :meth:`score` and :meth:`describe`."""

    name: str = ""
    metric: str = ""                # main metric: the column task curves are plotted and BD-compared on
    time_column: str = "analyse_s"  # seconds a decode-free pipeline spends analysing the streams

    # -- running a model -------------------------------------------------------
    def predict(self, model: Callable, images, batch_size: int = 256):
        """Predictions of a pixel model on ``uint8 (N, H, W, 3)`` images, in batches of ``batch_size``.

        The model gets float ``(B, 3, H, W)`` batches in ``[0, 1]`` on its own device (see
        :meth:`forward`); an ``nn.Module`` runs in eval mode under ``no_grad`` and gets its mode back.
        """
        images = _as_image_batch(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not len(images):
            raise ValueError(f"{self.name}: no images")
        chunks = []
        with _inference(model) as device:
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                chunks.append(self.postprocess(self.forward(model, x)))
        return self.concat(chunks)

    def forward(self, model: Callable, x: torch.Tensor):
        """Raw model output for one float batch ``(B, 3, H, W)``; default ``model(x)``."""
        return model(x)

    def postprocess(self, output):
        """Predictions of one batch (on the CPU) from a model's raw output, or from what a codec's
        ``analyse(streams, task)`` returns."""
        raise NotImplementedError

    def concat(self, chunks: list):
        """Join the predictions of consecutive batches."""
        return torch.cat(chunks)

    # -- targets and scores ----------------------------------------------------
    def check_targets(self, targets, n: int):
        """Targets of ``n`` images, validated (and converted where needed)."""
        return _check_len("targets", targets, n)

    def score(self, preds, targets) -> dict[str, float]:
        """Metric values of ``preds`` against ``targets``; the first key is :attr:`metric`."""
        raise NotImplementedError

    def describe(self, pred) -> dict:
        """One image's prediction as a JSON-ready dict."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, metric={self.metric!r})"


# --------------------------------------------------------------------------- classification


class Classification(Task):
    """Top-1 classification: predictions are logits ``(N, C)``, the metric is top-1 ``accuracy``.

    ``classes``: optional class names, used by :meth:`describe`; ``top_k``: how many (class, probability)
    pairs :meth:`describe` lists.
    """

    name = "classification"
    metric = "accuracy"
    time_column = "classify_s"

    def __init__(self, classes: Sequence[str] | None = None, top_k: int = 5):
        self.classes = list(classes) if classes is not None else None
        self.top_k = int(top_k)

    def postprocess(self, output) -> torch.Tensor:
        return _cpu(output)

    def check_targets(self, targets, n: int) -> torch.Tensor:
        return _check_len("labels", _tensor(targets).long(), n)

    def score(self, preds, targets) -> dict[str, float]:
        return {"accuracy": accuracy(preds, targets)}

    def _named(self, c: int, d: dict) -> dict:
        if self.classes is not None and 0 <= c < len(self.classes):
            d["name"] = self.classes[c]
        return d

    def describe(self, pred) -> dict:
        """``{"class": top-1 index, "top5": [{"class", "probability"}, ...]}`` (softmax probabilities,
        best first; ``"name"`` too when the task knows the class names)."""
        logits = _cpu(pred).reshape(-1).double()
        probs = torch.softmax(logits, dim=0)
        k = min(self.top_k, len(probs))
        top = torch.topk(probs, k)
        c = int(logits.argmax())
        return self._named(c, {"class": c, f"top{self.top_k}": [
            self._named(int(i), {"class": int(i), "probability": float(p)}) for p, i in zip(top.values, top.indices)]})


# --------------------------------------------------------------------------- detection


class Detection(Task):
    """Object detection, scored with COCO box mAP (``torchmetrics`` ``MeanAveragePrecision``).

    The model follows the ``torchvision`` detection convention: it takes a list of ``(3, H, W)`` float
    images and, in eval mode, returns one dict per image with ``boxes`` (xyxy pixels), ``scores`` and
    ``labels``.  :meth:`score` returns ``map`` (mAP@[.5:.95]), ``map_50`` and ``map_75``.
    :meth:`describe` lists the detections with a score of at least ``min_score``, best first.
    """

    name = "detection"
    metric = "map"
    iou_type = "bbox"
    keys = ("boxes", "scores", "labels")

    def __init__(self, min_score: float = 0.0, max_items: int = 100):
        self.min_score, self.max_items = float(min_score), int(max_items)

    def forward(self, model, x):
        return model(list(x))

    def _one(self, d: Mapping) -> dict:
        return {"boxes": _cpu(d["boxes"]).float().reshape(-1, 4), "scores": _cpu(d["scores"]).float(),
                "labels": _cpu(d["labels"]).long()}

    def postprocess(self, output) -> list[dict]:
        if isinstance(output, Mapping):
            output = [output]
        return [self._one(d) for d in output]

    def concat(self, chunks):
        return [p for chunk in chunks for p in chunk]

    def check_targets(self, targets, n: int) -> list[dict]:
        targets = list(targets)
        _check_len("targets", targets, n)
        need = {"masks" if self.iou_type == "segm" else "boxes", "labels"}
        for i, t in enumerate(targets):
            missing = need - set(t)
            if missing:
                raise ValueError(f"{self.name}: target {i} lacks {sorted(missing)}")
        return targets

    def _metric_inputs(self, preds, targets):
        gt_keys = ("masks", "labels") if self.iou_type == "segm" else ("boxes", "labels")
        p = [{k: _tensor(d[k]) for k in self.keys} for d in preds]
        t = [{k: _tensor(d[k]) for k in gt_keys} for d in targets]
        if self.iou_type == "segm":
            for d in p + t:
                d["masks"] = d["masks"].bool()
        return p, t

    def score(self, preds, targets) -> dict[str, float]:
        from torchmetrics.detection import MeanAveragePrecision

        if len(preds) != len(targets):
            raise ValueError(f"{self.name}: {len(preds)} predictions for {len(targets)} targets")
        metric = MeanAveragePrecision(iou_type=self.iou_type, box_format="xyxy")
        metric.update(*self._metric_inputs(preds, targets))
        res = metric.compute()
        return {k: float(res[k]) for k in ("map", "map_50", "map_75")}

    def _item(self, pred, j: int) -> dict:
        return {"label": int(pred["labels"][j]), "score": float(pred["scores"][j]),
                "box": [float(v) for v in pred["boxes"][j]]}

    def describe(self, pred) -> dict:
        """``{"detections": [{"label", "score", "box": [x0, y0, x1, y1]}, ...]}``, best score first."""
        scores = _cpu(pred["scores"]).float()
        order = [int(j) for j in torch.argsort(scores, descending=True) if float(scores[j]) >= self.min_score]
        return {"detections": [self._item(pred, j) for j in order[: self.max_items]]}


class InstanceSegmentation(Detection):
    """Instance segmentation, scored with COCO mask mAP (``MeanAveragePrecision(iou_type="segm")``).

    Models follow ``torchvision``'s Mask R-CNN convention: per image ``boxes``, ``scores``, ``labels``
    and ``masks`` (``(K, 1, H, W)`` probabilities, binarised at ``mask_threshold``).  Targets hold
    ``masks`` ``(K, H, W)`` and ``labels``.
    """

    name = "instance_segmentation"
    iou_type = "segm"
    keys = ("masks", "scores", "labels")

    def __init__(self, mask_threshold: float = 0.5, min_score: float = 0.0, max_items: int = 100):
        super().__init__(min_score, max_items)
        self.mask_threshold = float(mask_threshold)

    def _one(self, d: Mapping) -> dict:
        masks = _cpu(d["masks"])
        if masks.ndim == 4:  # (K, 1, H, W)
            masks = masks[:, 0]
        masks = masks if masks.dtype == torch.bool else masks > self.mask_threshold
        out = {"masks": masks, "scores": _cpu(d["scores"]).float(), "labels": _cpu(d["labels"]).long()}
        if "boxes" in d:
            out["boxes"] = _cpu(d["boxes"]).float().reshape(-1, 4)
        return out

    def _item(self, pred, j: int) -> dict:
        item = {"label": int(pred["labels"][j]), "score": float(pred["scores"][j]),
                "mask_area": int(pred["masks"][j].sum())}
        if "boxes" in pred:
            item["box"] = [float(v) for v in pred["boxes"][j]]
        return item


# --------------------------------------------------------------------------- parsing


class Parsing(Task):
    """Semantic segmentation (scene or face parsing), scored with mean IoU over classes.

    Predictions are label maps ``(N, H, W)`` (the model's ``(B, K, H, W)`` logits, or its ``"out"``
    entry as ``torchvision`` segmentation models return, are arg-maxed).  :meth:`score` accumulates
    intersections and unions over all images (``torchmetrics`` ``MulticlassJaccardIndex``, macro
    average over the classes present) and returns ``miou`` and ``pixel_accuracy``; pixels labelled
    ``ignore_index`` are skipped.  ``num_classes`` is needed to score.
    """

    name = "parsing"
    metric = "miou"

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = 255,
                 classes: Sequence[str] | None = None):
        self.num_classes = None if num_classes is None else int(num_classes)
        self.ignore_index = ignore_index
        self.classes = list(classes) if classes is not None else None
        if self.num_classes is None and self.classes is not None:
            self.num_classes = len(self.classes)

    def forward(self, model, x):
        out = model(x)
        return out["out"] if isinstance(out, Mapping) else out

    def postprocess(self, output) -> torch.Tensor:
        out = _cpu(output)
        if out.is_floating_point():
            if out.ndim != 4:
                raise ValueError(f"parsing: expected logits (B, K, H, W), got shape {tuple(out.shape)}")
            return out.argmax(dim=1)
        return out.long()

    def check_targets(self, targets, n: int) -> torch.Tensor:
        t = _tensor(targets).long()
        if t.ndim != 3:
            raise ValueError(f"parsing: expected label maps (N, H, W), got shape {tuple(t.shape)}")
        return _check_len("label maps", t, n)

    def score(self, preds, targets) -> dict[str, float]:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        if self.num_classes is None:
            raise ValueError("parsing: give num_classes (get_task('parsing', num_classes=K)) to score")
        p, t = _tensor(preds).long(), _tensor(targets).long()
        if p.shape != t.shape:
            raise ValueError(f"parsing: predictions of shape {tuple(p.shape)} for targets of shape {tuple(t.shape)}")
        kw = {"num_classes": self.num_classes, "ignore_index": self.ignore_index}
        miou = MulticlassJaccardIndex(average="macro", **kw)(p, t)
        pix = MulticlassAccuracy(average="micro", **kw)(p, t)
        return {"miou": float(miou), "pixel_accuracy": float(pix)}

    def describe(self, pred) -> dict:
        """``{"height", "width", "classes": [{"class", "fraction"}, ...]}``: the classes present in the
        label map, by decreasing share of the pixels."""
        m = _cpu(pred).long()
        if m.ndim == 3 and m.is_floating_point():
            m = m.argmax(0)
        values, counts = torch.unique(m, return_counts=True)
        order = torch.argsort(counts, descending=True)
        items = []
        for j in order:
            c = int(values[j])
            item = {"class": c, "fraction": float(counts[j]) / m.numel()}
            if self.classes is not None and 0 <= c < len(self.classes):
                item["name"] = self.classes[c]
            items.append(item)
        return {"height": int(m.shape[-2]), "width": int(m.shape[-1]), "classes": items}


# --------------------------------------------------------------------------- attributes


class Attributes(Task):
    """Binary attributes (e.g. face attributes): predictions are logits ``(N, A)``, an attribute is
    predicted present when its probability is above ``threshold``.  The metric ``mean_accuracy`` is
    the accuracy of each attribute, averaged over the attributes (``torchmetrics``
    ``MultilabelAccuracy(average="macro")``)."""

    name = "attributes"
    metric = "mean_accuracy"

    def __init__(self, names: Sequence[str] | None = None, threshold: float = 0.5):
        self.names = list(names) if names is not None else None
        self.threshold = float(threshold)

    def postprocess(self, output) -> torch.Tensor:
        return _cpu(output)

    def check_targets(self, targets, n: int) -> torch.Tensor:
        t = _tensor(targets).long()
        if t.ndim != 2:
            raise ValueError(f"attributes: expected 0/1 targets (N, A), got shape {tuple(t.shape)}")
        return _check_len("attribute rows", t, n)

    def score(self, preds, targets) -> dict[str, float]:
        from torchmetrics.classification import MultilabelAccuracy

        p, t = _tensor(preds).float(), _tensor(targets).long()
        if p.shape != t.shape or p.ndim != 2:
            raise ValueError(f"attributes: predictions of shape {tuple(p.shape)} for targets of shape "
                             f"{tuple(t.shape)}")
        metric = MultilabelAccuracy(num_labels=p.shape[1], threshold=self.threshold, average="macro")
        return {"mean_accuracy": float(metric(torch.sigmoid(p), t))}

    def describe(self, pred) -> dict:
        """``{"attributes": [{"index", "probability", "present"}, ...]}`` (``"name"`` too when known)."""
        probs = torch.sigmoid(_cpu(pred).reshape(-1).double())
        items = []
        for i, p in enumerate(probs.tolist()):
            item = {"index": i, "probability": p, "present": p > self.threshold}
            if self.names is not None and i < len(self.names):
                item["name"] = self.names[i]
            items.append(item)
        return {"attributes": items}


# --------------------------------------------------------------------------- registry

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a :class:`Task` subclass available to :func:`get_task` by its ``name``."""
    if not cls.name:
        raise ValueError(f"task class {cls.__name__} has no name")
    _TASKS[cls.name] = cls
    return cls


for _cls in (Classification, Detection, InstanceSegmentation, Parsing, Attributes):
    register_task(_cls)


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name, **kw) -> Task:
    """A task by name (options as keywords), e.g. ``get_task("parsing", num_classes=19)``; a
    :class:`Task` instance is returned as it is."""
    if isinstance(name, Task):
        if kw:
            raise ValueError(f"get_task: options {sorted(kw)} given with a task object {name!r}")
        return name
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(list_tasks())}")
    return _TASKS[name](**kw)
