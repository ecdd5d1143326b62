"""Curves: rate-distortion, stream size against the model's estimate, and rate-task curves.

A rate-task curve measures a **pipeline** at every rate point of its codec:

* :class:`DecodeThenAnalyse` ``(codec, model)``: decode each stream to pixels, run a pixel ``model``;
* :class:`DecodeFree` ``(codec)``: the codec analyses its own streams (``codec.analyse``), the pixel
  decoder never runs.

:func:`task_curve` measures either for any :mod:`task <cdlib.eval.tasks>`; :func:`raw_rgb_point` is
the uncompressed anchor.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..bitstream import unpack
from .metrics import MS_SSIM_MIN_SIDE, _header_bytes, bpp_from_bytes, ms_ssim, psnr
from .tasks import Task, _as_image_batch, get_task
from ..progress import progress_bar

tqdm = progress_bar()


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


# --------------------------------------------------------------------------- rate-distortion


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
    from ..images import pad_to, to_tensor

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


# --------------------------------------------------------------------------- pipelines


class DecodeThenAnalyse:
    """Decode every stream to pixels, then run the pixel ``model`` of the task on them.

    ``model`` maps a float ``(B, 3, H, W)`` batch in ``[0, 1]`` to the task's raw output (an ``nn.Module``
    runs in eval mode under ``no_grad`` on its own device; see :meth:`cdlib.eval.Task.predict`).
    """

    kind = "decode-then-analyse"

    def __init__(self, codec, model: Callable):
        self.codec, self.model = codec, model

    def analyse(self, streams: Sequence[bytes], task, batch_size: int = 256):
        """Task predictions for ``streams`` (decoded to pixels first)."""
        task = get_task(task)
        return task.predict(self.model, np.stack(self.codec.decode_batch(list(streams))), batch_size)

    def run(self, images: np.ndarray, quality, task: Task, batch_size: int = 256, decode: bool = True,
            decode_only: bool = False) -> dict:
        """Encode ``images`` at ``quality``, decode, predict: ``{"streams", "preds", "decoded", "timings"}``
        (``decode_only``: no prediction, ``preds`` is None)."""
        if not decode:
            raise ValueError("decode=False: a decode-then-analyse pipeline has to decode the streams")
        streams, decoded = [], []
        for i in range(0, len(images), batch_size):
            s, d = _roundtrip(self.codec, list(images[i:i + batch_size]), quality, same_size=True)
            streams += s
            decoded += d
        decoded = np.stack(decoded)
        preds = None if decode_only else task.predict(self.model, decoded, batch_size)
        return {"streams": streams, "preds": preds, "decoded": decoded, "timings": {}}

    def __repr__(self) -> str:
        return f"DecodeThenAnalyse({self.codec!r}, {type(self.model).__name__})"


class DecodeFree:
    """The codec analyses its own streams (``codec.analyse(streams, task)``); no pixels are decoded for
    the analysis.  Refuses, at construction, a codec without an analysis head."""

    kind = "decode-free"

    def __init__(self, codec):
        if not getattr(codec, "tasks", ()):
            codec.check_task("classification")  # raises AnalysisNotSupported with the codec's message
        self.codec = codec

    def analyse(self, streams: Sequence[bytes], task):
        """Task predictions for ``streams``, from the codec's analysis head."""
        task = get_task(task)
        self.codec.check_task(task.name)
        return task.postprocess(self.codec.analyse(list(streams), task.name))

    #: streams per call when decoding for PSNR: the codecs' analysis batches 64 streams a call, so the two
    #: timings of :meth:`run` compare like with like
    decode_batch_size = 64

    def run(self, images: np.ndarray, quality, task: Task, batch_size: int = 256, decode: bool = True) -> dict:
        """Encode, analyse the streams (timed as ``task.time_column``) and, when ``decode``, decode them
        for PSNR (timed as ``decode_s``) after the analysis, :attr:`decode_batch_size` streams a call
        (pixels may differ from one-stream decoding in the last float bit before rounding).  ``batch_size``
        is not used: the codec batches its own analysis."""
        self.codec.check_task(task.name)
        streams = self.codec.encode_batch(list(images), quality)
        t0 = time.perf_counter()
        preds = task.postprocess(self.codec.analyse(streams, task.name))
        t1 = time.perf_counter()
        decoded = np.stack(self.codec.decode_batch(streams, batch_size=self.decode_batch_size)) if decode else None
        t2 = time.perf_counter()
        return {"streams": streams, "preds": preds, "decoded": decoded,
                "timings": {task.time_column: t1 - t0, "decode_s": t2 - t1 if decode else math.nan}}

    def __repr__(self) -> str:
        return f"DecodeFree({self.codec!r})"


def task_curve(pipeline, images, targets, task="classification", qualities=None, batch_size: int = 256,
               progress: bool = True, decode: bool = True, keep_outputs: bool = False) -> pd.DataFrame:
    """Rate-task curve of a pipeline (:class:`DecodeThenAnalyse` or :class:`DecodeFree`), one row per
    rate point of its codec.

    Columns: ``codec, label, quality, bpp, bpp_payload``, then the task's scores (:meth:`Task.score`,
    main metric first: ``accuracy`` for classification; ``map, map_50, map_75`` for detection and
    instance segmentation; ``miou, pixel_accuracy`` for parsing; ``mean_accuracy`` for attributes),
    then ``psnr, n_images``.  A :class:`DecodeFree` pipeline adds the seconds spent analysing all
    streams (``classify_s`` for classification, else ``analyse_s``) and ``decode_s``, the seconds to
    decode them to pixels for comparison; ``decode=False`` skips that decoding (``psnr`` and ``decode_s``
    are then NaN).  ``keep_outputs``: two more columns, ``streams`` (the list of streams) and
    ``predictions`` (the task's predictions, as :meth:`Task.score` takes them), one per rate point, for a
    per-image analysis without encoding again (pop them before saving the frame).

    ``images``: uint8 ``(N, H, W, 3)``; ``targets``: as the task expects (class indices for
    classification); ``bpp`` is the mean of ``8 * len(stream) / (H * W)``, ``bpp_payload`` leaves the
    container header out; ``psnr`` is the mean per-image PSNR of the decoded images.
    """
    task = get_task(task)
    images = _as_image_batch(images)
    targets = task.check_targets(targets, len(images))
    codec = pipeline.codec
    h, w = images.shape[1:3]
    rows = []
    desc = f"{task.name} {pipeline.kind} {codec.name}"
    for q in tqdm(_codec_qualities(codec, qualities), desc=desc, disable=not progress):
        res = pipeline.run(images, q, task, batch_size, decode)
        rows.append(_curve_row(codec, codec.label or codec.name, q, images, res["streams"], res["decoded"],
                               task.score(res["preds"], targets), res["timings"]))
        if keep_outputs:
            rows[-1].update(streams=res["streams"], predictions=res["preds"])
    return pd.DataFrame(rows)


def _curve_row(codec, label, quality, images, streams, decoded, scores: dict, timings: dict) -> dict:
    h, w = images.shape[1:3]
    return {
        "codec": codec.name,
        "label": label,
        "quality": quality,
        "bpp": float(np.mean([bpp_from_bytes(s, h, w) for s in streams])),
        "bpp_payload": float(np.mean([bpp_from_bytes(len(s) - _header_bytes(s), h, w) for s in streams])),
        **scores,
        "psnr": float(np.mean(psnr(images, decoded, 255))) if decoded is not None else math.nan,
        "n_images": len(images),
        **timings,
    }


def decode_then_analyse_curves(codec, models: dict, images, targets, task="classification", qualities=None,
                               batch_size: int = 256, progress: bool = True) -> dict:
    """Rate-task curves of ``codec`` followed by each pixel model of ``models`` (``{name: model}``): one
    :class:`DecodeThenAnalyse` curve per model, all from one encode and decode per rate point, so every
    model reads the very same decoded images (and the codec, often the slow part, runs once).

    Returns ``{f"{codec label} + {name}": DataFrame}`` with :func:`task_curve`'s columns; ``label`` is the
    key."""
    task = get_task(task)
    images = _as_image_batch(images)
    targets = task.check_targets(targets, len(images))
    if not models:
        raise ValueError("decode_then_analyse_curves: no models")
    base = codec.label or codec.name
    rows = {f"{base} + {name}": [] for name in models}
    desc = f"{task.name} decode-then-analyse {codec.name} x{len(models)}"
    for q in tqdm(_codec_qualities(codec, qualities), desc=desc, disable=not progress):
        res = DecodeThenAnalyse(codec, None).run(images, q, task, batch_size, decode_only=True)
        for (label, out), model in zip(rows.items(), models.values()):
            preds = task.predict(model, res["decoded"], batch_size)
            out.append(_curve_row(codec, label, q, images, res["streams"], res["decoded"],
                                  task.score(preds, targets), {}))
    return {label: pd.DataFrame(r) for label, r in rows.items()}


def raw_rgb_point(images, targets, model: Callable, batch_size: int = 256, task="classification") -> dict:
    """The task's scores on uncompressed input, at 24 bpp (raw 8-bit RGB): the anchor for "bit-rate
    saving against raw RGB".  For classification: ``{"codec": "raw", "label": "raw RGB", "bpp": 24.0,
    "accuracy", "n_images"}``; other tasks put their scores in place of ``accuracy``."""
    task = get_task(task)
    images = _as_image_batch(images)
    targets = task.check_targets(targets, len(images))
    scores = task.score(task.predict(model, images, batch_size), targets)
    return {"codec": "raw", "label": "raw RGB", "bpp": 24.0, **scores, "n_images": len(images)}
