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


def encode_all(codec, images, qualities=None) -> dict:
    """``{quality: streams of images}`` at every rate point of ``codec`` (or ``qualities``): encode once, then
    share the streams between measurements (:func:`decode_free_curve`, :func:`stream_report`, ...)."""
    return {q: codec.encode_batch(list(images), q) for q in (codec.qualities if qualities is None else qualities)}


def _streams_of(codec, images, q, streams):
    """The streams of ``images`` at ``q``: the first ``len(images)`` of ``streams[q]`` when given (streams of
    these images first, from :func:`encode_all`), else freshly encoded."""
    if streams is None:
        return codec.encode_batch(list(images), q)
    if len(streams[q]) < len(images):
        raise ValueError(f"{len(streams[q])} streams at quality {q} for {len(images)} images")
    return list(streams[q][:len(images)])


def decode_free_curve(codec, heads, images, targets, labels, qualities=None, progress: bool = False,
                      streams: dict | None = None) -> pd.DataFrame:
    """One row per rate point of a tang2025 codec: the scenes' streams decoded to features, the heads on them.
    ``streams``: :func:`encode_all` of these images (or of more, these first), to reuse."""
    h, w = images.shape[1:3]
    rows = []
    for q in progress_bar()(list(codec.qualities if qualities is None else qualities), desc=codec.name,
                            disable=not progress):
        streams_q = _streams_of(codec, images, q, streams)
        feats = codec.decode_batch(streams_q, batch_size=100)
        rows.append(_row(codec, q, "decode-free", streams_q, h, w, score_features(heads, feats, targets, labels)))
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
def stream_report(codec, images, qualities=None, streams: dict | None = None) -> pd.DataFrame:
    """Per rate point: the streams' payload bytes (header left out) against the likelihood estimate of the same
    latents (both summed over the scenes), the header bytes, and bpp.  ``streams``: as in
    :func:`decode_free_curve`."""
    from ...losses import bpp_of_likelihoods

    h, w = images.shape[1:3]
    x = _images_tensor(images)
    rows = []
    for q in (codec.qualities if qualities is None else qualities):
        model = codec._model(q)
        streams_q = _streams_of(codec, images, q, streams)
        headers = [codec.parse(s)[0].size for s in streams_q]
        payload = sum(len(s) for s in streams_q) - sum(headers)
        est = 0.0
        for s in range(0, len(x), 100):
            xb = x[s: s + 100]
            y = model.g_a(model.re.filter(model.head(xb)))
            est += bpp_of_likelihoods(model.entropy(y)["likelihoods"], 1).item() / 8  # bits -> bytes
        rows.append({"quality": q, "payload_bytes": payload, "estimate_bytes": est,
                     "gap_percent": 100 * (payload - est) / est, "header_bytes": float(np.mean(headers)),
                     "bpp": float(np.mean([bpp_of_stream(s, h, w) for s in streams_q]))})
    return pd.DataFrame(rows)


@torch.no_grad()
def pipeline_timing(dicm, dicm_heads, pixel_codec, pixel_heads, dicm_streams, pixel_streams, batch_size: int = 64,
                    repeat: int = 3, per_stream_limit: int = 32) -> pd.DataFrame:
    """Seconds to classify every stream, both pipelines timed the same way: **per stream** (one at a time, on
    the first ``per_stream_limit`` streams, scaled to all) and **batched** (``batch_size`` at a time).

    DICM: entropy decoding + ``g_s`` to features, then the tail and the probe.  Pixel codec: decoding to
    pixels, then the stage-1 backbone (head and tail) and its probe.  Each time is the median of ``repeat``
    rounds (each round runs both pipelines in turn)."""
    import time

    def dicm_one(s):
        f = dicm.decode(s)
        dicm_heads.analyse_features(f[None], ("classification",))

    def pixel_one(s):
        x = _images_tensor([pixel_codec.decode(s)])
        pixel_heads.analyse_features(pixel_heads.features(x), ("classification",))

    def dicm_batch(chunk):
        f = torch.stack(dicm.decode_batch(chunk, batch_size=batch_size))
        dicm_heads.analyse_features(f, ("classification",))

    def pixel_batch(chunk):
        x = _images_tensor(pixel_codec.decode_batch(chunk))
        pixel_heads.analyse_features(pixel_heads.features(x), ("classification",))

    def timed(fn, items):
        t = time.perf_counter()
        for it in items:
            fn(it)
        return time.perf_counter() - t

    n = len(dicm_streams)
    if len(pixel_streams) != n:
        raise ValueError(f"pipeline_timing: {n} DICM streams but {len(pixel_streams)} pixel-codec streams")
    k = min(n, per_stream_limit)
    chunks = [range(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
    rounds = {"per stream": ([], []), "batched": ([], [])}
    for _ in range(repeat):
        rounds["per stream"][0].append(timed(dicm_one, dicm_streams[:k]) * n / k)
        rounds["per stream"][1].append(timed(pixel_one, pixel_streams[:k]) * n / k)
        rounds["batched"][0].append(timed(dicm_batch, [[dicm_streams[i] for i in c] for c in chunks]))
        rounds["batched"][1].append(timed(pixel_batch, [[pixel_streams[i] for i in c] for c in chunks]))
    rows = {}
    for mode, (d, p) in rounds.items():
        d, p = float(np.median(d)), float(np.median(p))
        rows[mode] = {"DICM, decode-free (s)": d, f"{pixel_codec.label}, decode-then-analyse (s)": p,
                      "time saved %": 100 * (1 - d / p)}
    out = pd.DataFrame(rows).T
    out.attrs.update(n_streams=n, batch_size=batch_size, per_stream_streams=k, repeat=repeat)
    return out
