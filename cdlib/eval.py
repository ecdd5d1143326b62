"""Metrics, rate-distortion / rate-accuracy curves and Bjontegaard-delta (BD) numbers.

Conventions
-----------
* Images at the codec interface are ``uint8 (H, W, 3)`` numpy arrays; inside torch they are
  float ``(B, 3, H, W)`` in ``[0, 1]``.  Quality metrics take either.
* bpp counts the *whole* stream, container header included: ``8 * len(stream) / (H * W)``.
  Curves also report ``bpp_payload`` (header subtracted) so the container overhead is visible.
* Curves are :class:`pandas.DataFrame` objects with one row per codec quality setting.
* BD metrics come from the ``bjontegaard`` package (Akima interpolation by default).  Task curves
  (accuracy, mAP) are often *not* monotonic in rate; see :func:`clean_curve` for how that is handled.

MS-SSIM choice
--------------
:func:`ms_ssim` is the standard 5-scale MS-SSIM (11-tap Gaussian window) of ``pytorch_msssim``.
It is only defined when the shorter image side is larger than 160 px (four 2x down-samplings of an
11-tap window).  ``pytorch_msssim`` checks that bound whatever ``weights`` says, so "fewer scales" is
not available without changing the window too, which would be a different metric.  We therefore
**raise** ``ValueError`` for smaller images instead of silently computing something else (such as
SSIM).  :func:`rd_curve` reports ``ms_ssim = NaN`` and fills the ``note`` column when any image is
that small.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .bitstream import unpack

MS_SSIM_MIN_SIDE = 161  # pytorch_msssim: smaller side must be > (11 - 1) * 2**4 = 160
MIN_BD_POINTS = 4
MONOTONE_MODES = ("envelope", "isotonic", "raise")

# --------------------------------------------------------------------------- rate


def bpp_from_bytes(n_bytes_or_stream, height: int, width: int) -> float:
    """Bits per pixel of a stream (or of a byte count): ``8 * len / (H * W)``."""
    n = n_bytes_or_stream if isinstance(n_bytes_or_stream, (int, np.integer)) else len(n_bytes_or_stream)
    return 8.0 * int(n) / (int(height) * int(width))


def _header_bytes(stream: bytes) -> int:
    return unpack(stream)[0].size


# --------------------------------------------------------------------------- quality metrics


def _as_float_tensor(x) -> torch.Tensor:
    """numpy/torch image(s) -> float64 tensor, channel-last numpy layout converted to (…, 3, H, W)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    arr = np.asarray(x)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected numpy image(s) of shape (..., H, W, 3), got {arr.shape}")
    # float64 copy first: torch refuses to wrap read-only arrays (e.g. np.asarray of a PIL image) silently
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64)).movedim(-1, -3)


def _infer_range(x, data_range):
    if data_range is not None:
        return float(data_range)
    if isinstance(x, torch.Tensor):
        return 1.0 if x.dtype.is_floating_point else 255.0
    return 255.0 if np.issubdtype(np.asarray(x).dtype, np.integer) else 1.0


def _scalar_or_batch(values: torch.Tensor, like):
    if values.ndim == 0:
        return float(values)
    return values if isinstance(like, torch.Tensor) else values.numpy()


def psnr(a, b, data_range: float | None = None):
    """PSNR in dB between images; identical images give ``float('inf')``.

    Accepts numpy ``(..., H, W, 3)`` or torch ``(..., 3, H, W)``.  ``data_range`` defaults to 255 for
    integer inputs and 1.0 for float inputs.  One image -> ``float``; a batch -> one value per image
    (a tensor for torch inputs, an array for numpy inputs).  Computed in float64.
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    r = _infer_range(a, data_range)
    x, y = _as_float_tensor(a), _as_float_tensor(b)
    mse = ((x - y) ** 2).mean(dim=(-3, -2, -1))
    out = 10.0 * torch.log10(r * r / mse)  # mse == 0 -> +inf
    return _scalar_or_batch(out, a)


def ms_ssim(a, b, data_range: float | None = None):
    """Standard 5-scale MS-SSIM (``pytorch_msssim``); 1.0 for identical images.

    Same input conventions as :func:`psnr`.  Raises ``ValueError`` if the shorter side is < 161 px,
    where 5-scale MS-SSIM is undefined (see the module docstring: no silent fall-back to SSIM).
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    if a.shape != b.shape:
        raise ValueError(f"ms_ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    r = _infer_range(a, data_range)
    x, y = _as_float_tensor(a), _as_float_tensor(b)
    h, w = x.shape[-2:]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM (5 scales, 11-px window) needs both image sides >= {MS_SSIM_MIN_SIDE} px, got {h}x{w}; "
            "use psnr() for small images")
    single = x.ndim == 3
    x4, y4 = x.reshape(-1, *x.shape[-3:]).float(), y.reshape(-1, *y.shape[-3:]).float()
    out = _ms_ssim(x4, y4, data_range=r, size_average=False).to(torch.float64)
    out = out[0] if single else out.reshape(x.shape[:-3])
    return _scalar_or_batch(out, a)


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def accuracy(logits_or_preds, labels) -> float:
    """Top-1 accuracy in [0, 1]; 2-D input is treated as logits (argmax over the last axis)."""
    p, y = _tensor(logits_or_preds), _tensor(labels)
    if p.ndim == 2:
        p = p.argmax(dim=-1)
    if p.shape != y.shape:
        raise ValueError(f"accuracy: predictions of shape {tuple(p.shape)} for labels of shape {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError("accuracy: no labels")
    return float((p.cpu().long() == y.cpu().long()).double().mean())


def mean_ap(preds: Sequence[Mapping], targets: Sequence[Mapping]) -> dict[str, float]:
    """COCO box mAP via ``torchmetrics`` ``MeanAveragePrecision(iou_type="bbox")``.

    ``preds``: one dict per image with ``boxes`` (K, 4) xyxy pixels, ``scores`` (K,), ``labels`` (K,);
    ``targets``: dicts with ``boxes`` and ``labels``.  Returns ``{"map": ..., "map_50": ...}``
    (mAP@[.5:.95] and mAP@.5; -1 when there are no ground-truth boxes, as in COCO).
    """
    from torchmetrics.detection import MeanAveragePrecision

    def tens(d, keys):
        return {k: _tensor(d[k]) for k in keys}

    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy")
    metric.update([tens(p, ("boxes", "scores", "labels")) for p in preds],
                  [tens(t, ("boxes", "labels")) for t in targets])
    res = metric.compute()
    return {"map": float(res["map"]), "map_50": float(res["map_50"])}


# --------------------------------------------------------------------------- curves


def _codec_qualities(codec, qualities):
    qs = list(codec.qualities if qualities is None else qualities)
    if not qs:
        raise ValueError(f"no qualities to sweep for codec {codec.name!r}")
    return qs


def _roundtrip(codec, images, quality, same_size: bool):
    if same_size:
        streams = codec.encode_batch(images, quality)
        return streams, codec.decode_batch(streams)
    streams = [codec.encode(im, quality) for im in images]
    return streams, [codec.decode(s) for s in streams]


def rd_curve(codec, images: Sequence[np.ndarray], qualities=None, progress: bool = True) -> pd.DataFrame:
    """Rate-distortion curve of ``codec`` on ``images`` (list of ``uint8 (H, W, 3)``).

    One row per quality: ``codec, label, quality, bpp, bpp_payload, psnr, ms_ssim, n_images, note``.
    ``bpp`` is the mean over images of ``8 * len(stream) / (H * W)`` (container included);
    ``bpp_payload`` subtracts the container header.  ``psnr``/``ms_ssim`` are means of per-image values
    on uint8 (data range 255).  ``ms_ssim`` is NaN, with ``note`` saying why, when any image has a side
    < 161 px (averaging over a subset would not be comparable to the PSNR column).
    """
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("rd_curve: no images")
    for im in images:
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"rd_curve: expected uint8 (H, W, 3) images, got {im.dtype} {im.shape}")
    same_size = len({im.shape for im in images}) == 1
    ms_ok = min(min(im.shape[:2]) for im in images) >= MS_SSIM_MIN_SIDE
    note = "" if ms_ok else f"ms_ssim undefined: an image side is < {MS_SSIM_MIN_SIDE} px"
    rows = []
    for q in tqdm(_codec_qualities(codec, qualities), desc=f"rd {codec.name}", disable=not progress):
        streams, decoded = _roundtrip(codec, images, q, same_size)
        hw = [im.shape[0] * im.shape[1] for im in images]
        rows.append({
            "codec": codec.name,
            "label": codec.label or codec.name,
            "quality": q,
            "bpp": float(np.mean([8.0 * len(s) / n for s, n in zip(streams, hw)])),
            "bpp_payload": float(np.mean([8.0 * (len(s) - _header_bytes(s)) / n for s, n in zip(streams, hw)])),
            "psnr": float(np.mean([psnr(a, b, 255) for a, b in zip(images, decoded)])),
            "ms_ssim": float(np.mean([ms_ssim(a, b, 255) for a, b in zip(images, decoded)])) if ms_ok else math.nan,
            "n_images": len(images),
            "note": note,
        })
    return pd.DataFrame(rows)


TAIL_LIKELIHOOD = 1e-6  # below this a latent lies in the far tails, where rANS sends escape codes


@torch.no_grad()
def stream_report(codec, images: Sequence[np.ndarray], qualities=None, progress: bool = False) -> pd.DataFrame:
    """Real bytes against the model's own estimate, per (rate point, image), for a learned codec.

    Columns: ``quality, image, pixels, bytes, header_bytes, payload_bits, estimated_bits, tail_latents,
    latents``.  ``payload_bits`` counts the entropy-coded strings (container header apart);
    ``estimated_bits`` is ``-sum log2 p`` over every latent of the same model on the same padded input;
    ``tail_latents`` counts latents with likelihood below :data:`TAIL_LIKELIHOOD`.
    """
    from .codecs.learned import pad_to, to_tensor

    if not hasattr(codec, "models"):
        raise ValueError(f"stream_report needs a learned codec (with .models); got {codec.name!r}")
    rows = []
    for q in tqdm(_codec_qualities(codec, qualities), desc=f"streams {codec.name}", disable=not progress):
        model = codec.models[q].eval()
        for i, img in enumerate(images):
            data = codec.encode(img, q)
            header, strings = unpack(data)
            x, _, _ = pad_to(to_tensor([img]), codec.stride)
            lik = model(x)["likelihoods"]
            rows.append({"quality": q, "image": i, "pixels": img.shape[0] * img.shape[1], "bytes": len(data),
                         "header_bytes": header.size, "payload_bits": 8 * sum(map(len, strings)),
                         "estimated_bits": float(sum(-torch.log2(v).sum() for v in lik.values())),
                         "tail_latents": int(sum((v < TAIL_LIKELIHOOD).sum() for v in lik.values())),
                         "latents": sum(v.numel() for v in lik.values())})
    return pd.DataFrame(rows)


def _as_image_batch(images) -> np.ndarray:
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


@torch.no_grad()
def _classify(classifier: Callable, images: np.ndarray, batch_size: int) -> torch.Tensor:
    """Class predictions for uint8 (N, H, W, 3) images; modules are run in eval mode on their device."""
    module = classifier if isinstance(classifier, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    param = next(module.parameters(), None) if module is not None else None
    device = param.device if param is not None else torch.device("cpu")
    if module is not None:
        module.eval()
    try:
        preds = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            preds.append(torch.as_tensor(classifier(x)).argmax(dim=-1).cpu())
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(preds)


def _images_and_labels(images, labels):
    """uint8 (N, H, W, 3) images and int64 labels of the same length."""
    images = _as_image_batch(images)
    labels = _tensor(labels).long()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def rate_accuracy_curve(codec, images, labels, classifier: Callable, qualities=None,
                        batch_size: int = 256, progress: bool = True) -> pd.DataFrame:
    """Decode-then-classify curve: one row per quality with
    ``codec, label, quality, bpp, bpp_payload, accuracy, psnr, n_images``.

    ``images``: uint8 ``(N, H, W, 3)``; ``classifier`` maps a float ``(B, 3, H, W)`` batch in [0, 1]
    to logits (an ``nn.Module`` is run in eval mode under ``no_grad`` on its own device).
    """
    images, labels = _images_and_labels(images, labels)
    h, w = images.shape[1:3]
    rows = []
    for q in tqdm(_codec_qualities(codec, qualities), desc=f"rate-acc {codec.name}", disable=not progress):
        streams, decoded = [], []
        for i in range(0, len(images), batch_size):
            s, d = _roundtrip(codec, list(images[i:i + batch_size]), q, same_size=True)
            streams += s
            decoded += d
        decoded = np.stack(decoded)
        rows.append({
            "codec": codec.name,
            "label": codec.label or codec.name,
            "quality": q,
            "bpp": float(np.mean([bpp_from_bytes(s, h, w) for s in streams])),
            "bpp_payload": float(np.mean([bpp_from_bytes(len(s) - _header_bytes(s), h, w) for s in streams])),
            "accuracy": accuracy(_classify(classifier, decoded, batch_size), labels),
            "psnr": float(np.mean(psnr(images, decoded, 255))),
            "n_images": len(images),
        })
    return pd.DataFrame(rows)


def raw_rgb_point(images, labels, classifier: Callable, batch_size: int = 256) -> dict:
    """Accuracy on uncompressed input, at 24 bpp (raw 8-bit RGB): the anchor for "bit-rate saving
    against raw RGB".  Returns ``{"codec": "raw", "label": "raw RGB", "bpp": 24.0, "accuracy", "n_images"}``."""
    images = _as_image_batch(images)
    acc = accuracy(_classify(classifier, images, batch_size), labels)
    return {"codec": "raw", "label": "raw RGB", "bpp": 24.0, "accuracy": acc, "n_images": len(images)}


def compressed_domain_curve(codec, images, labels, qualities=None, progress: bool = True,
                            decode: bool = True) -> pd.DataFrame:
    """Rate-accuracy of a codec that classifies from its own bitstream (``codec.classify_batch``), e.g.
    ``bai2022``: the same columns as :func:`rate_accuracy_curve` plus ``classify_s`` (seconds to classify all
    streams without decoding) and ``decode_s`` (seconds to decode them to pixels, for comparison).
    ``decode=False`` skips the pixel decoding (``psnr`` and ``decode_s`` are then NaN)."""
    if not callable(getattr(codec, "classify_batch", None)):
        raise TypeError(f"codec {codec.name!r} cannot classify from its bitstream (no classify_batch)")
    images, labels = _images_and_labels(images, labels)
    h, w = images.shape[1:3]
    rows = []
    for q in tqdm(_codec_qualities(codec, qualities), desc=f"compressed-domain {codec.name}", disable=not progress):
        streams = codec.encode_batch(list(images), q)
        t0 = time.perf_counter()
        preds = codec.classify_batch(streams).argmax(1)
        t1 = time.perf_counter()
        decoded = codec.decode_batch(streams) if decode else None
        t2 = time.perf_counter()
        rows.append({
            "codec": codec.name, "label": codec.label or codec.name, "quality": q,
            "bpp": float(np.mean([bpp_from_bytes(s, h, w) for s in streams])),
            "bpp_payload": float(np.mean([bpp_from_bytes(len(s) - _header_bytes(s), h, w) for s in streams])),
            "accuracy": accuracy(preds, labels),
            "psnr": float(np.mean(psnr(images, np.stack(decoded), 255))) if decode else math.nan,
            "n_images": len(images), "classify_s": t1 - t0, "decode_s": t2 - t1 if decode else math.nan,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- BD metrics


def clean_curve(rate, quality, monotone: str = "envelope", index=None) -> dict:
    """Make a curve usable for BD interpolation: rate and quality both strictly increasing.

    Points with NaN/inf values are always removed.  Then, by ``monotone``:

    * ``"envelope"`` (default): walk the points by increasing rate and drop every point whose quality
      is not strictly higher than the best quality seen at a lower (or equal) rate, i.e. keep the
      upper-left Pareto envelope.  This is the usual MPEG practice of fitting only the monotonic part
      of a curve; the dropped points are reported.
    * ``"isotonic"``: isotonic (non-decreasing) regression of quality on rate (``scipy``); points in a
      block with one fitted value are merged into one point at the block's geometric-mean rate.
    * ``"raise"``: raise ``ValueError`` naming the offending points.

    Returns ``{"rate", "quality"}`` (numpy arrays of the cleaned points), ``"dropped"`` (index labels
    removed) and ``"merged"`` (lists of index labels merged, isotonic only).
    """
    if monotone not in MONOTONE_MODES:
        raise ValueError(f"monotone must be one of {MONOTONE_MODES}, got {monotone!r}")
    rate, quality = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
    index = list(range(len(rate))) if index is None else list(index)
    finite = np.isfinite(rate) & np.isfinite(quality)
    dropped = [index[i] for i in np.flatnonzero(~finite)]
    if np.any(rate[finite] <= 0):
        raise ValueError("BD metrics need positive rates (they work on log10(rate))")
    keep = np.flatnonzero(finite)
    keep = keep[np.lexsort((-quality[keep], rate[keep]))]  # by rate, best quality first on ties
    r, q, ix = rate[keep], quality[keep], [index[i] for i in keep]
    merged: list[list] = []

    if monotone == "raise":
        bad = [ix[i] for i in range(1, len(r)) if not (r[i] > r[i - 1] and q[i] > q[i - 1])]
        if bad:
            raise ValueError(
                f"curve is not strictly increasing in rate and quality at points {bad}; "
                "use monotone='envelope' or 'isotonic' to clean it")
    elif monotone == "envelope":
        sel, best = [], -np.inf
        for i in range(len(r)):
            if q[i] > best and (not sel or r[i] > r[sel[-1]]):
                sel.append(i)
                best = q[i]
            else:
                dropped.append(ix[i])
        r, q = r[sel], q[sel]
    else:  # isotonic
        from scipy.optimize import isotonic_regression

        if len(r):
            fit = isotonic_regression(q).x
            groups: list[list[int]] = []
            for i in range(len(r)):  # one group per run of equal fitted values or equal rates
                if groups and (fit[i] == fit[groups[-1][-1]] or r[i] == r[groups[-1][-1]]):
                    groups[-1].append(i)
                else:
                    groups.append([i])
            merged = [[ix[i] for i in g] for g in groups if len(g) > 1]
            r = np.array([10 ** np.mean(np.log10(r[g])) for g in groups])
            q = np.array([np.mean(fit[g]) for g in groups])
    return {"rate": r, "quality": q, "dropped": dropped, "merged": merged}


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Length of the intersection of two ranges over the length of the narrower one (0..1)."""
    inter = min(a.max(), b.max()) - max(a.min(), b.min())
    narrow = min(np.ptp(a), np.ptp(b))
    return float(max(inter, 0.0) / narrow) if narrow > 0 else 0.0


def _bd(kind: str, anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info):
    import bjontegaard as bd

    anchor_df, test_df = pd.DataFrame(anchor_df), pd.DataFrame(test_df)
    for name, df in (("anchor", anchor_df), ("test", test_df)):
        missing = {rate, metric} - set(df.columns)
        if missing:
            raise ValueError(f"{name} curve lacks column(s) {sorted(missing)}; it has {list(df.columns)}")
    ca = clean_curve(anchor_df[rate], anchor_df[metric], monotone, anchor_df.index)
    ct = clean_curve(test_df[rate], test_df[metric], monotone, test_df.index)
    for name, c in (("anchor", ca), ("test", ct)):
        if len(c["rate"]) < min_points:
            raise ValueError(
                f"BD-{kind}: the {name} curve has {len(c['rate'])} usable points after cleaning "
                f"(monotone={monotone!r}, dropped {c['dropped']}); at least {min_points} are needed")
    if kind == "rate":  # integrate log-rate over the quality axis
        overlap = _overlap(ca["quality"], ct["quality"])
        axis = metric
    else:  # integrate quality over the log-rate axis
        overlap = _overlap(np.log10(ca["rate"]), np.log10(ct["rate"]))
        axis = f"log10({rate})"
    if overlap == 0:
        warnings.warn(f"BD-{kind}: the curves do not overlap along {axis}; result is NaN", stacklevel=3)
        value = math.nan
    else:
        if overlap < min_overlap:
            warnings.warn(
                f"BD-{kind}: the curves overlap on only {overlap:.0%} of the narrower {axis} range "
                f"(< {min_overlap:.0%}); the BD number is an extrapolation", stacklevel=3)
        fn = bd.bd_rate if kind == "rate" else bd.bd_psnr
        value = float(fn(ca["rate"], ca["quality"], ct["rate"], ct["quality"], method=method,
                         require_matching_points=False, min_overlap=0))
    if not return_info:
        return value
    info = {
        "overlap": overlap, "overlap_axis": axis,
        "anchor_points": len(ca["rate"]), "test_points": len(ct["rate"]),
        "anchor_dropped": ca["dropped"], "test_dropped": ct["dropped"],
        "anchor_merged": ca["merged"], "test_merged": ct["merged"],
        "anchor_curve": (ca["rate"], ca["quality"]), "test_curve": (ct["rate"], ct["quality"]),
    }
    return value, info


def bd_rate(anchor_df, test_df, metric: str = "psnr", method: str = "akima", *, rate: str = "bpp",
            monotone: str = "envelope", min_points: int = MIN_BD_POINTS, min_overlap: float = 0.5,
            return_info: bool = False):
    """BD-rate of ``test`` against ``anchor`` in percent (negative: test needs fewer bits for the
    same ``metric``), via ``bjontegaard.bd_rate``.

    Curves are DataFrames (or dicts of columns) with columns ``rate`` and ``metric``; they are
    cleaned with :func:`clean_curve` (``monotone``) and need ``min_points`` points afterwards.
    Warns when the quality ranges overlap on less than ``min_overlap`` of the narrower range.
    ``return_info=True`` returns ``(value, info)`` with the overlap and the dropped/merged points.
    """
    return _bd("rate", anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info)


def bd_quality(anchor_df, test_df, metric: str = "accuracy", method: str = "akima", *, rate: str = "bpp",
               monotone: str = "envelope", min_points: int = MIN_BD_POINTS, min_overlap: float = 0.5,
               return_info: bool = False):
    """BD-quality: mean ``metric`` gain of ``test`` over ``anchor`` at equal log-rate, in the metric's
    own units (BD-PSNR in dB for ``psnr``; BD-accuracy as a fraction for ``accuracy``, x100 for
    percentage points).  Uses ``bjontegaard.bd_psnr``; same options as :func:`bd_rate`.
    """
    return _bd("quality", anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info)


def bd_table(curves: Mapping[str, pd.DataFrame], anchor: str, metric: str = "psnr", method: str = "akima",
             *, rate: str = "bpp", monotone: str = "envelope") -> pd.DataFrame:
    """One row per curve against ``curves[anchor]``: ``name, bd_rate`` (%), ``bd_quality`` (metric
    units), ``overlap_quality``, ``overlap_rate``, ``points``, ``dropped`` and ``note`` (the error
    message when a BD number could not be computed, then NaN)."""
    if anchor not in curves:
        raise ValueError(f"anchor {anchor!r} is not one of the curves {list(curves)}")
    rows = []
    for name, df in curves.items():
        row = {"name": name, "anchor": anchor, "metric": metric, "bd_rate": math.nan, "bd_quality": math.nan,
               "overlap_quality": math.nan, "overlap_rate": math.nan, "points": 0, "dropped": [], "note": ""}
        try:
            row["bd_rate"], i1 = bd_rate(curves[anchor], df, metric, method, rate=rate, monotone=monotone,
                                         return_info=True)
            row["bd_quality"], i2 = bd_quality(curves[anchor], df, metric, method, rate=rate, monotone=monotone,
                                               return_info=True)
            row.update(overlap_quality=i1["overlap"], overlap_rate=i2["overlap"], points=i1["test_points"],
                       dropped=list(i1["test_dropped"]))
        except ValueError as exc:
            row["note"] = str(exc)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- bounds


def info_bound_bits(num_classes: int) -> float:
    """Bits per image needed to convey one of ``C`` equiprobable class labels: ``log2(C)``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return math.log2(num_classes)


def info_bound_bpp(num_classes: int, height: int, width: int) -> float:
    """:func:`info_bound_bits` spread over the pixels: ``log2(C) / (H * W)`` bpp."""
    return info_bound_bits(num_classes) / (int(height) * int(width))


# --------------------------------------------------------------------------- results files


def _jsonable(obj):
    if isinstance(obj, pd.DataFrame):
        return [_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _jsonable(np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(obj, path) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2), creating parent folders; atomic (temp + replace).

    DataFrames become lists of records, numpy/torch values become Python values, NaN and +-inf
    become ``null`` (strict JSON).  Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(obj), f, sort_keys=True, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_json(path):
    """Read a file written by :func:`save_json` (curves come back as lists of records:
    ``pd.DataFrame(obj["curve"])``)."""
    with open(path) as f:
        return json.load(f)


def results_dir(profile: str) -> Path:
    """``$CDLIB_RESULTS/<profile>`` (default ``results/<profile>``); not created here."""
    return Path(os.environ.get("CDLIB_RESULTS", "results")) / profile


# --------------------------------------------------------------------------- timing


def time_call(fn: Callable, *args, repeat: int = 3, warmup: int = 1, **kwargs) -> float:
    """Median wall time in seconds of ``fn(*args, **kwargs)`` over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
