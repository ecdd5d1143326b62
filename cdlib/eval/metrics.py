"""Rate and quality metrics: bits per pixel, PSNR, MS-SSIM, top-1 accuracy, box mAP.

MS-SSIM choice
--------------
:func:`ms_ssim` is the standard 5-scale MS-SSIM (11-tap Gaussian window) of ``pytorch_msssim``.
It is only defined when the shorter image side is larger than 160 px (four 2x down-samplings of an
11-tap window).  ``pytorch_msssim`` checks that bound whatever ``weights`` says, so "fewer scales" is
not available without changing the window too, which would be a different metric.  We therefore
**raise** ``ValueError`` for smaller images instead of silently computing something else (such as
SSIM).  :func:`~cdlib.eval.rd_curve` reports ``ms_ssim = NaN`` and fills the ``note`` column when any
image is that small.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..bitstream import bpp, unpack

MS_SSIM_MIN_SIDE = 161  # pytorch_msssim: smaller side must be > (11 - 1) * 2**4 = 160

# --------------------------------------------------------------------------- rate


# The one bpp function of cdlib: bits per pixel of a stream (or of a byte count), 8 * len / (H * W).
bpp_from_bytes = bpp


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


# --------------------------------------------------------------------------- task metrics


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
    :class:`cdlib.eval.Detection` scores the same way and also reports ``map_75``.
    """
    from torchmetrics.detection import MeanAveragePrecision

    def tens(d, keys):
        return {k: _tensor(d[k]) for k in keys}

    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy")
    metric.update([tens(p, ("boxes", "scores", "labels")) for p in preds],
                  [tens(t, ("boxes", "labels")) for t in targets])
    res = metric.compute()
    return {"map": float(res["map"]), "map_50": float(res["map_50"])}
