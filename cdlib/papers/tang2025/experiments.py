"""Chapter 5's measurements, kept here so the chapter reads as the experiment, not as the plumbing.

Every pipeline is scored by :func:`score_features` on the same ShapesWorld test scenes (128 px, boxes and
masks): linear-probe accuracy, box mAP and mask mAP (torchmetrics' COCO definitions).

- **decode-free (DICM)**: the tang2025 streams decoded to the stride-4 features f3 (there are no pixels), then
  the heads trained on clean f2 of the same backbone (``tang2025_tasks_dicm``);
- **decode-then-analyse**: any pixel codec's streams decoded to pixels, then the stage-1 backbone (f1) and the
  heads trained on its clean features (``tang2025_tasks_ssl``): the same backbone and the same heads behind
  every pixel codec;
- **raw RGB**: the stage-1 backbone and its heads on the uncompressed scenes (24 bpp); **clean f2**: the DICM
  heads on f2 with no coding at all (what the codec can at most keep).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...bitstream import bpp as bpp_of_stream
from ...progress import progress_bar
from .tasks import standard_error

TASK_METRICS = ("accuracy", "box_map", "mask_map")


def scene_arrays(ds, n: int | None = None) -> tuple[np.ndarray, list, torch.Tensor]:
    """``(images uint8 (N, H, W, 3), targets [{"boxes", "labels", "masks"}], labels (N,))`` of the first ``n``
    scenes of a ShapesWorld made with ``augment=False``."""
    n = len(ds) if n is None else min(len(ds), int(n))
    return np.asarray(ds.images[:n]), [ds.targets(i) for i in range(n)], torch.as_tensor(ds.labels[:n])


def _images_tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def score_features(heads, features, targets: list, labels: torch.Tensor, batch_size: int = 50) -> dict:
    """Probe accuracy (with its standard error), box mAP and mask mAP of ``heads`` on stride-4 ``features``
    (a tensor or a list of equal-sized tensors, one per scene)."""
    from ...eval import Detection, InstanceSegmentation

    heads = heads.eval()
    logits, dets = [], []
    for s in range(0, len(features), batch_size):
        f = torch.stack(list(features[s: s + batch_size])) if isinstance(features, list) else features[s: s + batch_size]
        out = heads.analyse_features(f)
        logits.append(out["logits"])
        dets += out["detections"]
    acc = float((torch.cat(logits).argmax(1) == labels).float().mean())
    det, seg = Detection(), InstanceSegmentation()
    box = det.score(det.postprocess(dets), targets)
    mask = seg.score(seg.postprocess(dets), targets)
    return {"accuracy": acc, "accuracy_se": standard_error(acc, len(labels)), "box_map": box["map"],
            "box_map_50": box["map_50"], "mask_map": mask["map"], "mask_map_50": mask["map_50"]}


@torch.no_grad()
def pixel_features(heads, images, batch_size: int = 100) -> torch.Tensor:
    """The clean features (``heads.where``) of uint8 images, through ``heads``' own backbone."""
    x = _images_tensor(images)
    return torch.cat([heads.features(x[s: s + batch_size]) for s in range(0, len(x), batch_size)])


def _row(codec, quality, kind: str, streams, h: int, w: int, scores: dict, **extra) -> dict:
    return {"codec": codec.name, "label": codec.label or codec.name, "quality": quality, "pipeline": kind,
            "bpp": float(np.mean([bpp_of_stream(s, h, w) for s in streams])), **scores, **extra}


def decode_free_curve(codec, heads, images, targets, labels, qualities=None, progress: bool = False) -> pd.DataFrame:
    """One row per rate point of a tang2025 codec: the scenes' streams decoded to features, the heads on them."""
    h, w = images.shape[1:3]
    rows = []
    for q in progress_bar()(list(codec.qualities if qualities is None else qualities), desc=codec.name,
                            disable=not progress):
        streams = codec.encode_batch(list(images), q)
        feats = codec.decode_batch(streams, batch_size=100)
        rows.append(_row(codec, q, "decode-free", streams, h, w, score_features(heads, feats, targets, labels)))
    return pd.DataFrame(rows)


def decode_then_analyse_curve(codec, heads, images, targets, labels, qualities=None,
                              progress: bool = False) -> pd.DataFrame:
    """One row per rate point of a pixel codec: streams decoded to pixels, then ``heads``' backbone and heads."""
    h, w = images.shape[1:3]
    rows = []
    for q in progress_bar()(list(codec.qualities if qualities is None else qualities), desc=codec.name,
                            disable=not progress):
        streams = codec.encode_batch(list(images), q)
        decoded = np.stack(codec.decode_batch(streams))
        rows.append(_row(codec, q, "decode-then-analyse", streams, h, w,
                         score_features(heads, pixel_features(heads, decoded), targets, labels)))
    return pd.DataFrame(rows)


def clean_point(heads, images, targets, labels, label: str, bpp: float = 24.0) -> dict:
    """``heads`` on the clean features of uncompressed scenes (raw RGB: 24 bpp; clean f2: nothing is sent,
    reported at ``bpp``)."""
    return {"codec": label, "label": label, "quality": None, "pipeline": "clean", "bpp": bpp,
            **score_features(heads, pixel_features(heads, images), targets, labels)}


@torch.no_grad()
def stream_report(codec, images, qualities=None) -> pd.DataFrame:
    """Per rate point: the streams' payload bytes (header left out) against the likelihood estimate of the same
    latents (both summed over the scenes), the header bytes, and bpp."""
    from ...losses import bpp_of_likelihoods

    h, w = images.shape[1:3]
    x = _images_tensor(images)
    rows = []
    for q in (codec.qualities if qualities is None else qualities):
        model = codec._model(q)
        streams = codec.encode_batch(list(images), q)
        headers = [codec.parse(s)[0].size for s in streams]
        payload = sum(len(s) for s in streams) - sum(headers)
        est = 0.0
        for s in range(0, len(x), 100):
            xb = x[s: s + 100]
            y = model.g_a(model.re.filter(model.head(xb)))
            est += bpp_of_likelihoods(model.entropy(y)["likelihoods"], 1).item() / 8  # bits -> bytes
        rows.append({"quality": q, "payload_bytes": payload, "estimate_bytes": est,
                     "gap_percent": 100 * (payload - est) / est, "header_bytes": float(np.mean(headers)),
                     "bpp": float(np.mean([bpp_of_stream(s, h, w) for s in streams]))})
    return pd.DataFrame(rows)
