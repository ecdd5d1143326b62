"""Paper A's codec (chapter 3): real rANS streams of ``y`` and ``z``, and classification straight from a
stream, without the pixel decoder ``g_s``."""
from __future__ import annotations

from typing import Sequence

import torch

from ... import zoo
from ...bitstream import BitstreamError
from ...codecs.base import register_codec
from ...codecs.learned import LearnedCodec, learned_codec


class Bai2022Codec(LearnedCodec):
    """:class:`LearnedCodec` of :class:`~cdlib.papers.bai2022.model.Bai2022` models that can also
    ``analyse`` its streams for classification: the range decoder recovers ``y_hat`` and the transformer
    classifies it; ``g_s`` never runs (:meth:`Bai2022.classify_from_strings`)."""

    tasks = ("classification",)
    # The transformer attends over every latent position (1/32 of the pixels per side): decoding or analysing
    # 2048 x 2048 (16384 tokens, laptop model) takes about 7 s and 0.5 GB on one CPU core, 4096 x 4096 about
    # 90 s and 2.8 GB (attention time grows with the square of the tokens).  Pass max_pixels= to go beyond.
    max_pixels = 2048 * 2048

    @torch.no_grad()
    def analyse(self, streams: Sequence[bytes], task="classification", batch_size: int = 64) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of streams made by this codec, without decoding pixels.

        Streams of one rate point and image size are decoded in batches (rANS per stream, the transformer
        once per batch).  Raises :class:`BitstreamError` on a bad stream: every header is checked
        (:meth:`latent_grid`: padding, ``max_pixels``) before any stream is decoded, and the strings against
        the latent size before the range decoder runs."""
        self.check_task(task)
        parsed = [self.parse(d) for d in streams]
        groups: dict[tuple, list[int]] = {}
        for i, (h, _) in enumerate(parsed):
            groups.setdefault((h.quality, self.latent_grid(h)), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(parsed)
        for (quality, shape), idx in groups.items():
            model = self._model(quality)
            for k in range(0, len(idx), batch_size):
                chunk = [parsed[i][1] for i in idx[k:k + batch_size]]
                if any(len(st) != 2 for st in chunk):
                    raise BitstreamError(f"{self.name}: a stream does not hold the 2 latent strings (y, z) "
                                         "the model needs")
                try:
                    logits = model.classify_from_strings([[st[0] for st in chunk], [st[1] for st in chunk]], shape)
                except BitstreamError:
                    raise
                except Exception as exc:  # the range decoder failed on a corrupt payload
                    raise BitstreamError(f"{self.name}: payload could not be decoded "
                                         f"({type(exc).__name__}: {exc})") from exc
                if not bool(torch.isfinite(logits).all()):
                    raise BitstreamError(f"{self.name}: the logits of a stream are not finite (NaN or inf): the "
                                         "stream is corrupt or the model is broken")
                for i, row in zip(idx[k:k + batch_size], logits):
                    out[i] = row
        return torch.stack(out)

    def classify(self, data: bytes) -> torch.Tensor:
        """Logits ``(1, num_classes)`` of one stream (see :meth:`analyse`)."""
        return self.analyse([data])

    def classify_batch(self, streams: Sequence[bytes], batch_size: int = 64) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of many streams (see :meth:`analyse`)."""
        return self.analyse(streams, batch_size=batch_size)


@register_codec("bai2022")
def bai2022_codec(**kw) -> Bai2022Codec:
    """``get_codec("bai2022", model=m | models=[...] | checkpoint=p | checkpoints=[...] | entries=[ids])``.

    With no weights: the zoo's main rate points (:data:`~cdlib.papers.bai2022.recipes.RATE_POINTS`,
    q0..q4, those the zoo holds), ordered by rate.  The ablations share their stage and rate points, so they
    are never picked up by default: load them by name, ``entries=["bai2022_q2_last", ...]``."""
    from .recipes import RATE_POINTS

    kw.setdefault("label", "Bai et al. 2022 (ViT on latents)")
    kw = zoo.with_rate_points("bai2022", kw, ids=RATE_POINTS, stage="step2")
    return learned_codec(kw.pop("name", "bai2022"), cls=Bai2022Codec, model_name="bai2022", **kw)
