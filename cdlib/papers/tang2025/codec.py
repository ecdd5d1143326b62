"""Paper C's codec: real rANS streams of the compressed features (three strings: y anchors, y non-anchors,
z) in cdlib's container.  There is no pixel decoder: :meth:`Tang2025Codec.decode` (alias ``decompress``)
returns the decoded stride-4 feature tensor f3 that the ResNet tail and the task heads read."""
from __future__ import annotations

import math

import torch

from ...bitstream import BitstreamError, Header
from ...codecs.base import register_codec
from ...codecs.learned import LearnedCodec, learned_codec

N_STRINGS = 3  # y anchors, y non-anchors, z


class Tang2025Codec(LearnedCodec):
    """:class:`LearnedCodec` of :class:`~cdlib.papers.tang2025.model.Tang2025` models whose decode gives
    features, not pixels: ``encode(img_uint8, quality) -> bytes`` as every codec, ``decode(bytes) ->
    FloatTensor (C1, ceil(H / 4), ceil(W / 4))`` (the features of the image's own area; the model saw it padded
    to a multiple of 64).  ``compress``/``decompress`` are aliases of ``encode``/``decode``.

    Bad streams raise :class:`~cdlib.bitstream.BitstreamError` (a ``ValueError``): a truncated or altered
    stream fails the container's CRC, a stream with another number of strings or strings too short for the
    header's size is refused before the range decoder runs, a decoder failure or a non-finite feature map is
    reported as such."""

    tasks = ()  # decode-free analysis (classification, detection, segmentation) comes with the task heads
    decodes_pixels = False  # decode() gives features: pixel metrics (PSNR, the bench's) do not apply

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
    """``get_codec("tang2025", model=m | models=[...] | checkpoint=p | checkpoints=[...])``.  The zoo holds no
    tang2025 rate points yet, so weights must be given."""
    if not any(kw.get(k) is not None for k in ("model", "models", "checkpoint", "checkpoints")):
        raise ValueError("codec 'tang2025' needs model=, models=, checkpoint= or checkpoints= (the zoo has no "
                         "tang2025 rate points yet)")
    kw.setdefault("label", "Tang et al. 2025 (DICM, features)")
    return learned_codec(kw.pop("name", "tang2025"), cls=Tang2025Codec, model_name="tang2025", **kw)
