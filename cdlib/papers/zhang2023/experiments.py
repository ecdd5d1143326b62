"""Chapter 4's measurements, kept here so the chapter reads as the experiment, not as the plumbing.

Every pipeline is scored by the same function (:func:`~.analysis.score`) on the same faces:

- **decode-free**: the layered codec's streams, analysed from the two decoded latents
  (:meth:`~.codec.Zhang2023Codec.analyse_all`, one entropy decode per stream for the three tasks);
- **decode-then-analyse**: any codec's streams decoded to pixels, then the pixel baseline (the same trunk on
  an RGB stem, trained on clean faces) on the decoded faces;
- **raw RGB**: the pixel baseline on the uncompressed faces (24 bpp).

Quality of the decoded faces for people: PSNR, MS-SSIM (pytorch-msssim) and four weight-free perceptual
metrics from piq (GMSD and MDSI: lower is better; HaarPSI and VIF: higher is better), and KID with features of
the pixel baseline (a network trained here, so its numbers compare pipelines, not papers).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ...bitstream import bpp as bpp_of_stream
from ...progress import progress_bar
from .analysis import score

#: piq's weight-free metrics: name -> (function, True when higher is better)
PERCEPTUAL = {"gmsd": ("gmsd", False), "haarpsi": ("haarpsi", True), "vif": ("vif_p", True),
              "mdsi": ("mdsi", False)}
TASK_METRICS = ("miou", "pixel_accuracy", "attribute_accuracy", "landmark_nme")


def _float(images) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float() / 255


def targets_of(ds, n: int | None = None) -> dict:
    """``{"parsing", "attributes", "landmarks"}`` tensors of the first ``n`` faces of a FaceWorld."""
    n = len(ds) if n is None else int(n)
    return {"parsing": torch.from_numpy(ds.label_map(np.asarray(ds.parsing[:n]))),
            "attributes": torch.from_numpy(np.asarray(ds.attributes[:n])),
            "landmarks": torch.from_numpy(np.asarray(ds.landmarks[:n]))}


def face_arrays(ds, n: int | None = None) -> tuple[np.ndarray, dict]:
    """``(images uint8 (N, H, W, 3), targets)`` of the first ``n`` items of any face dataset (FaceWorld or
    CelebAMask-HQ), with the dataset's own label set."""
    from ...train import collate

    n = len(ds) if n is None else min(len(ds), int(n))
    batch = collate([ds[i] for i in range(n)])
    images = (batch["image"].permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return images, {k: batch[k] for k in ("parsing", "attributes", "landmarks")}


def attribute_groups(pred: dict, targets: dict, kinds: dict) -> dict:
    """Mean attribute accuracy per group of attributes (``kinds``: name -> group, in the order of the
    attribute columns)."""
    ok = ((pred["attributes"] > 0).long() == targets["attributes"].long()).float().mean(0)
    groups: dict = {}
    for acc, kind in zip(ok.tolist(), kinds.values()):
        groups.setdefault(kind, []).append(acc)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def label_colours(labels) -> np.ndarray:
    """uint8 RGB ``(K, 3)``: one seaborn colour per parsing label (background black)."""
    import seaborn as sns

    pal = (np.array(sns.color_palette("tab20", len(labels))) * 255).astype(np.uint8)
    pal[0] = 0
    return pal


@torch.no_grad()
def pixel_predictions(model, images, batch_size: int = 128) -> dict:
    """The pixel baseline's outputs on uint8 ``(N, H, W, 3)`` faces."""
    model = model.eval()
    outs = [model.predict(_float(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


@torch.no_grad()
def perceptual_scores(reference, decoded) -> dict:
    """Mean PSNR, MS-SSIM and piq's weight-free metrics of decoded faces against the originals (uint8)."""
    import piq
    from pytorch_msssim import ms_ssim

    x, y = _float(reference), _float(decoded)
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    out = {"psnr": float((10 * torch.log10(1 / mse)).mean()),
           # 64-px faces: five MS-SSIM scales need a window of 3 (the default 11 needs 160 px)
           "ms_ssim": float(ms_ssim(x, y, data_range=1.0, win_size=3, size_average=True))}
    for name, (fn, _) in PERCEPTUAL.items():
        out[name] = float(getattr(piq, fn)(x, y, data_range=1.0, reduction="mean"))
    return out


def _row(name: str, label: str, quality, kind: str, streams, h: int, w: int, scores: dict, **extra) -> dict:
    return {"codec": name, "label": label, "quality": quality, "pipeline": kind,
            "bpp": float(np.mean([bpp_of_stream(s, h, w) for s in streams])), **scores, **extra}


def decode_then_analyse_curve(codec, pixel_model, images, targets: dict, num_classes: int,
                              qualities=None, progress: bool = False) -> pd.DataFrame:
    """One row per rate point: every face encoded, decoded to pixels, analysed by ``pixel_model``; the
    decoded faces' quality too."""
    h, w = images.shape[1:3]
    rows = []
    qualities = list(codec.qualities if qualities is None else qualities)
    for q in progress_bar()(qualities, desc=f"{codec.name}", disable=not progress):
        streams = codec.encode_batch(list(images), q)
        decoded = np.stack(codec.decode_batch(streams))
        pred = pixel_predictions(pixel_model, decoded)
        rows.append(_row(codec.name, codec.label or codec.name, q, "decode-then-analyse", streams, h, w,
                         {**score(pred, targets, num_classes), **perceptual_scores(images, decoded)}))
    return pd.DataFrame(rows)


def decode_free_curve(codec, images, targets: dict, num_classes: int, decode: bool = True,
                      progress: bool = False) -> pd.DataFrame:
    """One row per rate point of a :class:`~.codec.Zhang2023Codec` with analysers: analysis from the streams
    (never the generator); with ``decode``, the faces it decodes for people are scored too."""
    h, w = images.shape[1:3]
    rows = []
    for q in progress_bar()(list(codec.qualities), desc=codec.name, disable=not progress):
        streams = codec.encode_batch(list(images), q)
        pred = codec.analyse_all(streams)
        extra = perceptual_scores(images, np.stack(codec.decode_batch(streams, batch_size=100))) if decode else {}
        rows.append(_row(codec.name, codec.label or codec.name, q, "decode-free", streams, h, w,
                         {**score(pred, targets, num_classes), **extra}))
    return pd.DataFrame(rows)


def raw_point(pixel_model, images, targets: dict, num_classes: int) -> dict:
    """The pixel baseline on uncompressed faces, at 24 bpp."""
    return {"codec": "raw", "label": "raw RGB", "quality": None, "pipeline": "raw", "bpp": 24.0,
            **score(pixel_predictions(pixel_model, images), targets, num_classes)}


def paper_saving(curve: pd.DataFrame, raw: dict, metric: str, points: float = 1.0,
                 higher_is_better: bool = True) -> dict:
    """The paper's saving: ``1 - R / 24`` at the lowest rate point whose ``metric`` is within ``points``
    (percentage points) of raw RGB; ``{"bpp": nan, "saving": nan}`` when no rate point is."""
    sign = 1 if higher_is_better else -1
    ok = curve[sign * (raw[metric] - curve[metric]) * 100 <= points].sort_values("bpp")
    if ok.empty:
        return {"bpp": float("nan"), "saving": float("nan"), "within": False}
    r = float(ok["bpp"].iloc[0])
    return {"bpp": r, "saving": 1 - r / 24.0, "within": True}


def layer_report(codec, images, qualities=None) -> pd.DataFrame:
    """Per rate point and layer: real bytes of the streams against the likelihood estimate (summed over the
    faces), and the header's share of the stream."""
    rows = []
    for q in (codec.qualities if qualities is None else qualities):
        streams = codec.encode_batch(list(images), q)
        real = [codec.layer_bytes(s) for s in streams]
        est = [codec.estimated_bits(im, q) for im in images]
        total = sum(r["total"] for r in real)
        for layer in ("structure", "texture"):
            payload = sum(r[layer] for r in real)
            estimate = sum(e[layer] for e in est) / 8
            rows.append({"quality": q, "layer": layer, "stream bytes": payload, "estimated bytes": estimate,
                         "stream / estimate - 1 (%)": 100 * (payload / estimate - 1),
                         "share of the stream (%)": 100 * payload / total})
        rows.append({"quality": q, "layer": "header", "stream bytes": sum(r["header"] for r in real),
                     "estimated bytes": float("nan"), "stream / estimate - 1 (%)": float("nan"),
                     "share of the stream (%)": 100 * sum(r["header"] for r in real) / total})
    return pd.DataFrame(rows)


def matched_point(curve: pd.DataFrame, target_bpp: float) -> tuple[object, float]:
    """``(quality, bpp)`` of the rate point of a measured curve with the largest bpp not above ``target_bpp``
    (else its lowest-rate point): matched bits for the extreme-rate comparison."""
    below = curve[curve["bpp"] <= target_bpp]
    row = below.loc[below["bpp"].idxmax()] if len(below) else curve.loc[curve["bpp"].idxmin()]
    return row["quality"], float(row["bpp"])


class _PooledFeatures(torch.nn.Module):
    """The pixel baseline's trunk, globally pooled: the feature network of KID."""

    def __init__(self, pixel_model):
        super().__init__()
        self.m = pixel_model.eval()

    def forward(self, x_uint8):
        f = self.m.trunk.blocks(self.m.stem(x_uint8.float() / 255))
        return f.mean((-2, -1))


@torch.no_grad()
def kid(pixel_model, reference, decoded, subset_size: int = 50, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets; torchmetrics) between decoded and original faces, in the feature space of
    the pixel baseline: relative numbers, comparable only within this chapter."""
    from torchmetrics.image.kid import KernelInceptionDistance

    import warnings

    torch.manual_seed(seed)
    feats = _PooledFeatures(pixel_model)
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred 64-d vectors here
        warnings.filterwarnings("ignore", message=r".*will save all extracted features", category=UserWarning)
        metric = KernelInceptionDistance(feature=feats, subset_size=min(subset_size, len(reference)),
                                         normalize=False)
    metric.update(torch.from_numpy(np.stack(reference)).permute(0, 3, 1, 2), real=True)
    metric.update(torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2), real=False)
    m, s = metric.compute()
    return float(m), float(s)


def analysis_timing(codec, pixel_model, streams: Sequence[bytes], batch_size: int = 64, repeat: int = 3,
                    per_stream_limit: int | None = 32):
    """:func:`cdlib.eval.timing.decode_free_timing` for parsing: both paths one stream at a time (on the first
    ``per_stream_limit`` streams, scaled to all) and ``batch_size`` at a time."""
    from ...eval.timing import decode_free_timing

    return decode_free_timing(codec, pixel_model.for_task("parsing"), streams, "parsing", batch_size=batch_size,
                              repeat=repeat, per_stream_limit=per_stream_limit)
