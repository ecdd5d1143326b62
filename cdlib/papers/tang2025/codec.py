"""Paper C's codec: real rANS streams of the compressed features (three strings: y anchors, y non-anchors,
z) in cdlib's container.  There is no pixel decoder: :meth:`Tang2025Codec.decode` (alias ``decompress``)
returns the decoded stride-4 feature tensor f3 that the ResNet tail and the task heads read."""
from __future__ import annotations

import math

import torch

from ...bitstream import BitstreamError, Header
from ...codecs.base import register_codec, register_codec_alias
from ...codecs.learned import LearnedCodec, learned_codec

N_STRINGS = 3  # y anchors, y non-anchors, z
#: the zoo's rate points of the default codec, lowest rate first, and the task heads its analysis uses
RATE_POINTS = ("tang2025_q1", "tang2025_q2", "tang2025_q3", "tang2025_q4")
HEADS_ENTRY = "tang2025_tasks_dicm"


class Tang2025Codec(LearnedCodec):
    """:class:`LearnedCodec` of :class:`~cdlib.papers.tang2025.model.Tang2025` models whose decode gives
    features, not pixels: ``encode(img_uint8, quality) -> bytes`` as every codec, ``decode(bytes) ->
    FloatTensor (C1, ceil(H / 4), ceil(W / 4))`` (the features of the image's own area; the model saw it padded
    to a multiple of 64).  ``compress``/``decompress`` are aliases of ``encode``/``decode``.

    Bad streams raise :class:`~cdlib.bitstream.BitstreamError` (a ``ValueError``): a truncated or altered
    stream fails the container's CRC, a stream with another number of strings or strings too short for the
    header's size is refused before the range decoder runs, a decoder failure or a non-finite feature map is
    reported as such."""

    tasks = ("classification", "detection", "instance_segmentation")  # from decoded features, with ``heads``
    analysis_outputs = ("masks",)
    decodes_pixels = False  # decode() gives features: pixel metrics (PSNR, the bench's) do not apply
    #: score from which a detection counts in :meth:`describe_analysis` (the JSON and the masks image)
    min_score = 0.5

    def __init__(self, *args, heads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._heads = heads

    @property
    def heads(self):
        """The task heads (:class:`~cdlib.papers.tang2025.tasks.Tang2025Tasks`): given, or the zoo's
        :data:`HEADS_ENTRY`, loaded when first needed."""
        from ...codecs.base import AnalysisNotSupported

        if self._heads is None:
            from ... import zoo

            try:
                zoo.get_entry(HEADS_ENTRY)
            except (KeyError, ValueError):
                raise AnalysisNotSupported(f"codec {self.name!r} has no task heads: give heads= (a tang2025_tasks "
                                           f"model) or build the zoo entry {HEADS_ENTRY!r} (make checkpoints)") from None
            self._heads = zoo.load(HEADS_ENTRY)
        # the heads read the tail of the backbone the rate points were trained on: it must be the same one
        mine, theirs = self.models[0].tail.state_dict(), self._heads.codec.tail.state_dict()
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k].to(mine[k])) for k in mine):
            raise AnalysisNotSupported(f"codec {self.name!r}: the task heads were trained on another backbone than "
                                       "its rate points (their ResNet tails differ): give the heads trained with them")
        return self._heads.eval()

    @torch.no_grad()
    def analyse(self, streams, task="classification", batch_size: int = 64):
        """Task outputs of streams made by this codec, from their decoded features (no pixels exist):
        ``classification`` logits ``(N, K)``; ``detection`` and ``instance_segmentation``: one dict per
        stream (boxes in the image's pixels, scores, labels, masks ``(K, 1, H', W')`` over the 4x feature grid,
        which covers the image)."""
        name = self.check_task(task)
        heads = self.heads
        feats = [self.decode(s) for s in streams]
        logits, dets = [None] * len(feats), [None] * len(feats)
        groups: dict = {}
        for i, f in enumerate(feats):
            groups.setdefault(tuple(f.shape), []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                part = idx[s: s + batch_size]
                out = heads.analyse_features(torch.stack([feats[i] for i in part]),
                                             ("classification",) if name == "classification" else ("detection",))
                for j, i in enumerate(part):
                    if name == "classification":
                        logits[i] = out["logits"][j]
                    else:
                        dets[i] = out["detections"][j]
        return torch.stack(logits) if name == "classification" else dets

    def describe_analysis(self, data: bytes, tasks=None, images=()) -> tuple[dict, dict]:
        """One stream's analysis (``python -m cdlib analyze``): by default the class and the detections.

        Summary: ``classification``: ``{"label", "class", "probability", "top3"}``; ``detections``: those
        scoring at least :attr:`min_score`, best first, ``{"label", "class", "score", "box", "mask_area"}``.
        Maps: ``{"masks": indexed PIL image}`` (pixel = 1 + index in ``detections``, 0 = none) when ``images``
        names it."""
        import numpy as np
        from PIL import Image

        from ...data import ShapesWorld

        names = [self.check_task(t) for t in (list(tasks or ()) or ["classification", "detection"])]
        images = self.check_analysis_outputs(images)
        header, _ = self.parse(data)
        classes = ShapesWorld.CLASSES

        def cname(i):
            return classes[i] if len(classes) > i >= 0 else f"class_{i}"

        summary: dict = {"tasks": names}
        if "classification" in names:
            p = torch.softmax(self.analyse([data], "classification")[0].double(), 0)
            top = torch.argsort(p, descending=True)[:3].tolist()
            summary["classification"] = {"label": top[0], "class": cname(top[0]), "probability": float(p[top[0]]),
                                         "top3": [{"class": cname(i), "probability": float(p[i])} for i in top]}
        maps = {}
        if {"detection", "instance_segmentation"} & set(names) or images:
            d = self.analyse([data], "detection")[0]
            keep = [int(j) for j in torch.argsort(d["scores"], descending=True) if float(d["scores"][j]) >= self.min_score]
            masks = d["masks"][:, 0, : header.height, : header.width] > 0.5
            summary["detections"] = [{"label": int(d["labels"][j]), "class": cname(int(d["labels"][j])),
                                      "score": float(d["scores"][j]),
                                      "box": [min(float(v), lim) for v, lim in zip(d["boxes"][j].tolist(),
                                              (header.width, header.height) * 2)],
                                      "mask_area": int(masks[j].sum())} for j in keep]
            if "masks" in images:
                index = np.zeros((header.height, header.width), np.uint8)
                for k, j in reversed(list(enumerate(keep))):  # the best detection painted last, on top
                    index[masks[j].numpy()] = k + 1
                img = Image.fromarray(index, mode="P")
                rng = np.random.default_rng(0)
                palette = [0, 0, 0] + rng.integers(64, 256, 3 * 255).tolist()
                img.putpalette(palette)
                maps["masks"] = img
        return summary, maps

    def _decompress(self, model, batch_strings, header: Header) -> torch.Tensor:
        shape = self.latent_grid(header)
        per_latent = [list(s) for s in zip(*batch_strings)]
        if len(per_latent) != N_STRINGS:
            raise BitstreamError(f"{self.name}: stream has {len(per_latent)} latent strings, the model needs "
                                 f"{N_STRINGS} (y anchors, y non-anchors, z)")
        feats = model.decompress(per_latent, shape)["features"]
        if not bool(torch.isfinite(feats).all()):
            raise BitstreamError(f"{self.name}: the decoded features are not finite (NaN or inf): the stream is "
                                 "corrupt or the model is broken")
        return feats

    @staticmethod
    def _crop(feats: torch.Tensor, header: Header) -> torch.Tensor:
        return feats[..., : math.ceil(header.height / 4), : math.ceil(header.width / 4)].contiguous()

    @torch.no_grad()
    def _decode(self, strings, header: Header) -> torch.Tensor:
        return self._decompress(self._model(header.quality), [strings], header)[0]

    def decode(self, data: bytes) -> torch.Tensor:
        """The decoded features (C1, ceil(H / 4), ceil(W / 4)) of one stream."""
        header, strings = self.parse(data)
        try:
            feats = self._decode(strings, header)
        except BitstreamError:
            raise
        except Exception as exc:  # the range decoder failed on a corrupt payload
            raise BitstreamError(f"{self.name}: payload could not be decoded ({type(exc).__name__}: {exc})") from exc
        return self._crop(feats, header)

    def _results(self, decoded: torch.Tensor, headers) -> list:
        """A decoded batch as one feature tensor per stream, cropped to its image's feature grid (the batch
        path of :meth:`LearnedCodec.decode_batch`; the entropy parameters are computed image by image, so the
        latents are the same either way)."""
        return [self._crop(f, h) for f, h in zip(decoded, headers)]

    def compress(self, image, quality=None) -> bytes:
        return self.encode(image, quality)

    def decompress(self, data: bytes) -> torch.Tensor:
        return self.decode(data)


@register_codec("tang2025")
def tang2025_codec(**kw) -> Tang2025Codec:
    """``get_codec("tang2025", model=m | models=[...] | checkpoint=p | checkpoints=[...], heads=tasks_model)``;
    with no weights, the zoo's :data:`RATE_POINTS` (those it holds, lowest rate first) and, for analysis, its
    task heads :data:`HEADS_ENTRY`.  Among ``checkpoints``, a ``tang2025_tasks`` checkpoint gives the heads (its
    backbone must be the rate points')."""
    paths = kw.pop("checkpoints", None) or ([kw.pop("checkpoint")] if kw.get("checkpoint") is not None else None)
    kw.pop("checkpoint", None)
    if paths:
        from ...checkpoint import load_model, read_checkpoint

        kinds = {str(p): read_checkpoint(p).get("model") for p in paths}
        heads = [p for p, k in kinds.items() if k == "tang2025_tasks"]
        if len(heads) > 1:
            raise ValueError(f"codec 'tang2025': give one task-heads checkpoint, got {', '.join(heads)}")
        if heads:
            kw["heads"] = load_model(heads[0])
        rest = [p for p, k in kinds.items() if k != "tang2025_tasks"]
        if rest:
            kw["checkpoints"] = rest
    if not any(kw.get(k) is not None for k in ("model", "models", "checkpoint", "checkpoints")):
        from ... import zoo

        held = [i for i in RATE_POINTS if any(e["id"] == i for e in zoo.entries("tang2025"))]
        if not held:
            raise ValueError("codec 'tang2025' needs model=, models=, checkpoint= or checkpoints=, or the zoo's rate "
                             f"points {', '.join(RATE_POINTS)} (run `make checkpoints`)")
        kw["models"] = [zoo.load(i) for i in held]
    kw.setdefault("label", "Tang et al. 2025 (DICM, features)")
    return learned_codec(kw.pop("name", "tang2025"), cls=Tang2025Codec, model_name="tang2025", **kw)


register_codec_alias("dicm", "tang2025")
