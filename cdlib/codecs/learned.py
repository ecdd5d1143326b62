"""Learned codecs behind the :class:`~cdlib.codecs.base.Codec` interface.

A :class:`LearnedCodec` holds one CompressAI model per rate point; ``quality`` is
the index of the rate point (0 = lowest rate).  Streams carry the fingerprint of
the exact weights used, so decoding with another checkpoint is refused instead
of producing a wrong image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream import BitstreamError, Header, unpack
from .base import Codec, register_codec


def _fingerprint(model) -> str:
    fp = getattr(model, "fingerprint", None)
    if not fp:
        from ..train import fingerprint

        fp = model.fingerprint = fingerprint(model)
    return fp


def pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Replicate-pad (B, C, H, W) at the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # replicate needs pad < size for reflect only; replicate works for any size
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, ph, pw


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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
        from ..train import load_model

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
        from ..bitstream import pack
        from .base import as_rgb_uint8

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


def _from_kwargs(name: str, model=None, models=None, checkpoint=None, checkpoints=None, **kw) -> LearnedCodec:
    if model is not None:
        return LearnedCodec([model], name=name, **kw)
    if models is not None:
        return LearnedCodec(models, name=name, **kw)
    if checkpoint is not None:
        return LearnedCodec.from_checkpoints([checkpoint], name=name, **kw)
    if checkpoints is not None:
        return LearnedCodec.from_checkpoints(checkpoints, name=name, **kw)
    from .. import zoo

    ids = [e["id"] for e in zoo.entries(model=name)]
    if not ids:
        raise ValueError(f"codec {name!r} needs model=, checkpoint= or a zoo entry for {name!r} (run `make checkpoints`)")
    models_ = [zoo.load(i) for i in ids]
    # order rate points from low to high rate
    models_.sort(key=lambda m: m.checkpoint_meta["config"]["lmbda"])
    return LearnedCodec(models_, name=name, **kw)


@register_codec("factorized")
def factorized_codec(**kw) -> LearnedCodec:
    return _from_kwargs("factorized", label=kw.pop("label", "Factorized (Balle 2017)"), **kw)


@register_codec("hyperprior")
def hyperprior_codec(**kw) -> LearnedCodec:
    return _from_kwargs("hyperprior", label=kw.pop("label", "Mean-scale hyperprior"), **kw)


# ----------------------------------------------------------------------------------------------------------
# Codec: real bitstreams, plus classification straight from a stream
# ----------------------------------------------------------------------------------------------------------
class Bai2022Codec(LearnedCodec):
    """:class:`LearnedCodec` of :class:`Bai2022` models with ``classify(stream) -> logits`` (no decoding)."""

    @torch.no_grad()
    def classify(self, data: bytes) -> torch.Tensor:
        """Logits ``(1, num_classes)`` of a stream made by this codec; ``g_s`` never runs (see
        :meth:`Bai2022.classify_from_strings`).  Raises :class:`BitstreamError` on a bad stream."""
        header, strings = unpack(data)
        if header.codec != self.name:
            raise BitstreamError(f"stream was made by codec {header.codec!r}, not {self.name!r}")
        if header.cfg_hash != self.cfg_hash(header.quality):
            raise BitstreamError(f"stream needs model {header.cfg_hash.hex()}, this {self.name!r} codec has "
                                 f"{self.cfg_hash(header.quality).hex()}: use the checkpoint the stream was made with")
        model = self._model(header.quality)
        hp, wp = header.height + header.pad_h, header.width + header.pad_w
        if hp % self.stride or wp % self.stride:
            raise BitstreamError(f"{self.name}: padded size {hp}x{wp} is not a multiple of the model stride {self.stride}")
        if len(strings) != 2:
            raise BitstreamError(f"{self.name}: stream has {len(strings)} latent strings, the model needs 2")
        try:
            return model.classify_from_strings([[strings[0]], [strings[1]]], (hp // self.stride, wp // self.stride))
        except Exception as exc:  # the range decoder failed on a corrupt payload
            raise BitstreamError(f"{self.name}: payload could not be decoded ({type(exc).__name__}: {exc})") from exc


    @torch.no_grad()
    def classify_batch(self, streams: Sequence[bytes], batch_size: int = 64) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of many streams of one rate point and image size, decoded in
        batches (rANS per stream, the transformer once per batch).  ``g_s`` never runs."""
        from ..bitstream import unpack

        parsed = [unpack(d) for d in streams]
        keys = {(h.codec, h.quality, h.height, h.width, h.pad_h, h.pad_w) for h, _ in parsed}
        if len(keys) != 1:
            return torch.cat([self.classify(d) for d in streams])
        header = parsed[0][0]
        if header.codec != self.name or header.cfg_hash != self.cfg_hash(header.quality):
            return self.classify(streams[0])  # raises the precise BitstreamError
        model = self._model(header.quality)
        hp, wp = header.height + header.pad_h, header.width + header.pad_w
        shape = (hp // self.stride, wp // self.stride)
        out = []
        for i in range(0, len(parsed), batch_size):
            chunk = [strings for _, strings in parsed[i:i + batch_size]]
            if any(len(st) != 2 for st in chunk):
                raise BitstreamError(f"{self.name}: a stream does not hold the 2 latent strings the model needs")
            try:
                out.append(model.classify_from_strings([[st[0] for st in chunk], [st[1] for st in chunk]], shape))
            except Exception as exc:
                raise BitstreamError(f"{self.name}: payload could not be decoded ({type(exc).__name__}: {exc})") \
                    from exc
        return torch.cat(out)


@register_codec("bai2022")
def bai2022_codec(model=None, models=None, checkpoint=None, checkpoints=None, **kw) -> Bai2022Codec:
    """``get_codec("bai2022", model=m | models=[...] | checkpoint=p | checkpoints=[...])``; with none of them,
    the zoo's step-2 bai2022 checkpoints, ordered by rate."""
    kw.setdefault("label", "Bai et al. 2022 (ViT on latents)")
    kw.setdefault("name", "bai2022")
    if model is not None or models is not None:
        return Bai2022Codec([model] if model is not None else models, **kw)
    if checkpoint is not None or checkpoints is not None:
        return Bai2022Codec.from_checkpoints([checkpoint] if checkpoint is not None else checkpoints, **kw)
    from .. import zoo

    ids = [e["id"] for e in zoo.entries(model="bai2022", stage="step2")]
    if not ids:
        raise ValueError("codec 'bai2022' needs model=, checkpoint= or a step-2 zoo entry for 'bai2022' "
                         "(run `make checkpoints`)")
    loaded = sorted((zoo.load(i) for i in ids), key=lambda m: m.checkpoint_meta["config"]["lmbda"])
    return Bai2022Codec(loaded, **kw)
