"""Learned codecs behind the :class:`~cdlib.codecs.base.Codec` interface.

A :class:`LearnedCodec` holds one CompressAI model per rate point; ``quality`` is
the index of the rate point (0 = lowest rate).  Streams carry the fingerprint of
the exact weights used, so decoding with another checkpoint is refused instead
of producing a wrong image.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..bitstream import BitstreamError, Header, pack
from ..images import as_rgb_uint8, pad_to, to_tensor, to_uint8
from .base import Codec


def _fingerprint(model) -> str:
    fp = getattr(model, "fingerprint", None)
    if not fp:
        from ..checkpoint import fingerprint

        fp = model.fingerprint = fingerprint(model)
    return fp


class LearnedCodec(Codec):
    """A CompressAI model (or a list of them, one per rate point) as a codec."""

    def __init__(self, models, name: str | None = None, label: str | None = None):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not models:
            raise ValueError("LearnedCodec needs at least one model")
        for m in models:
            m.eval()
            m.update(force=True)  # build the CDF tables the range coder uses
        self.models = models
        self.name = name or getattr(models[0], "model_name", type(models[0]).__name__.lower())
        self.label = label or self.name
        self.qualities = tuple(range(len(models)))
        self.stride = int(getattr(models[0], "downsampling_factor", 64))

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str], **kw) -> "LearnedCodec":
        from ..checkpoint import load_model

        return cls([load_model(p) for p in paths], **kw)

    def _model(self, quality) -> torch.nn.Module:
        q = int(quality)
        if not 0 <= q < len(self.models):
            raise ValueError(f"{self.name}: quality must be a rate-point index in 0..{len(self.models) - 1}, got {quality}")
        return self.models[q]

    def cfg_hash(self, quality=None) -> bytes:
        try:
            model = self._model(0 if quality is None else quality)
        except ValueError:
            raise BitstreamError(f"{self.name}: stream asks for rate point {quality}, this codec has "
                                 f"{len(self.models)}") from None
        return bytes.fromhex(_fingerprint(model))[:8]

    # -- single image --------------------------------------------------------
    def _encode(self, image, quality):
        return self._encode_tensor(to_tensor([image]), quality)[0]

    @torch.no_grad()
    def _encode_tensor(self, x: torch.Tensor, quality):
        model = self._model(quality)
        xp, ph, pw = pad_to(x, self.stride)
        out = model.compress(xp)
        # one list of strings per latent ([y, z] or [y]); one string per image in each
        return [([s[i] for s in out["strings"]], ph, pw) for i in range(x.shape[0])]

    @torch.no_grad()
    def _decode(self, strings, header: Header):
        model = self._model(header.quality)
        return to_uint8(self._decompress(model, [strings], header))[0]

    def _decompress(self, model, batch_strings, header: Header) -> torch.Tensor:
        hp, wp = header.height + header.pad_h, header.width + header.pad_w
        if hp % self.stride or wp % self.stride:
            raise BitstreamError(f"{self.name}: padded size {hp}x{wp} is not a multiple of the model stride {self.stride}")
        shape = (hp // self.stride, wp // self.stride)
        per_latent = [list(s) for s in zip(*batch_strings)]
        expected = 2 if hasattr(model, "gaussian_conditional") else 1
        if len(per_latent) != expected:
            raise BitstreamError(f"{self.name}: stream has {len(per_latent)} latent strings, the model needs {expected}")
        return model.decompress(per_latent, shape)["x_hat"]

    # -- batches: one forward pass for many same-size images -------------------
    def encode_batch(self, images, quality=None, batch_size: int = 32) -> list[bytes]:
        imgs = [as_rgb_uint8(im) for im in images]
        if len({im.shape for im in imgs}) != 1:
            return super().encode_batch(imgs, quality)
        q = self.qualities[len(self.qualities) // 2] if quality is None else quality
        h, w = imgs[0].shape[:2]
        out = []
        for i in range(0, len(imgs), batch_size):
            for strings, ph, pw in self._encode_tensor(to_tensor(imgs[i:i + batch_size]), q):
                out.append(pack(self.name, strings, h, w, ph, pw, float(q), self.cfg_hash(q)))
        return out


def learned_codec(name: str, model=None, models=None, checkpoint=None, checkpoints=None, cls=None,
                  **kw) -> LearnedCodec:
    """A codec of model ``name`` from ``model=``, ``models=[...]``, ``checkpoint=`` or ``checkpoints=[...]``
    (rate points from low to high rate).  ``cls``: the codec class (default :class:`LearnedCodec`); paper
    packages pass their own subclass, and their zoo rate points (``cdlib.zoo.rate_points``) when no weights
    are given."""
    cls = cls or LearnedCodec
    if model is not None:
        return cls([model], name=name, **kw)
    if models is not None:
        return cls(models, name=name, **kw)
    if checkpoint is not None:
        return cls.from_checkpoints([checkpoint], name=name, **kw)
    if checkpoints is not None:
        return cls.from_checkpoints(checkpoints, name=name, **kw)
    raise ValueError(f"codec {name!r} needs model=, models=, checkpoint= or checkpoints=")
