"""Paper B's codec (chapter 4): the structure layer (``y`` and ``z`` strings) and the texture layer (``t``
string) in one container; the structure layer decoded alone; texture swaps; and ``analyse`` (parsing,
attributes, landmarks) from the two decoded latents, without ``g_s`` or the generator.

Container: ``cdlib.bitstream`` with three strings, in the order ``[y, z, t]`` (``y``, the largest, carries no
stored length).  :meth:`Zhang2023Codec.layer_bytes` splits a stream's bytes into header, structure and texture.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...bitstream import BitstreamError, Header
from ...codecs.base import register_codec
from ...codecs.learned import LearnedCodec, _finite_output, learned_codec
from ...images import as_rgb_uint8, pad_to, to_tensor, to_uint8

N_STRINGS = 3  # y, z (structure layer), t (texture layer)


class Zhang2023Codec(LearnedCodec):
    """:class:`LearnedCodec` of :class:`~cdlib.papers.zhang2023.model.Zhang2023` models (one per rate point).

    ``analysers``: one :class:`~cdlib.papers.zhang2023.analysis.Zhang2023Analysis` per rate point (optional;
    needed by :meth:`analyse`); :meth:`from_analysis` builds the codec from analysis models, each bringing
    its own codec (so a jointly fine-tuned codec and its analysis network stay together)."""

    tasks = ("parsing", "attributes", "landmarks")

    def __init__(self, models, analysers=None, **kw):
        super().__init__(models, **kw)
        if analysers is not None:
            analysers = list(analysers) if isinstance(analysers, (list, tuple)) else [analysers]
            if len(analysers) != len(self.models):
                raise ValueError(f"{self.name}: {len(analysers)} analysis networks for {len(self.models)} rate "
                                 "points (give one per rate point)")
            for a in analysers:
                if not callable(getattr(a, "analyse_latents", None)):
                    raise ValueError(f"{self.name}: a {type(a).__name__} is not an analysis network of the latents "
                                     "(no analyse_latents)")
                a.eval()
        self.analysers = analysers

    @classmethod
    def from_analysis(cls, analysis_models, **kw) -> "Zhang2023Codec":
        """The codec of ``Zhang2023Analysis`` models: their ``codec`` parts as rate points, themselves as
        the analysers."""
        analysis_models = list(analysis_models) if isinstance(analysis_models, (list, tuple)) else [analysis_models]
        kw.setdefault("name", "zhang2023")
        kw.setdefault("model_name", "zhang2023")
        return cls([a.codec for a in analysis_models], analysers=analysis_models, **kw)

    # -- decoding -----------------------------------------------------------------------------------------
    def _split(self, strings, owner: str = "") -> list[list[bytes]]:
        per_latent = [list(s) for s in zip(*strings)]
        if len(per_latent) != N_STRINGS:
            raise BitstreamError(f"{self.name}: stream has {len(per_latent)} latent strings, the model needs "
                                 f"{N_STRINGS} (y, z: structure; t: texture)")
        return per_latent

    def _decompress(self, model, batch_strings, header: Header, texture=None, structure_only=False) -> torch.Tensor:
        shape = self.latent_grid(header)
        per_latent = self._split(batch_strings)
        if structure_only:
            per_latent = per_latent[:2]
        hook = model.generator.register_forward_hook(lambda m, i, o: _finite_output(self.name, m, i, o))
        try:
            x_hat = model.decompress(per_latent, shape, texture=texture)["x_hat"]
        finally:
            hook.remove()
        _finite_output(self.name, None, None, x_hat)
        return x_hat

    def _decode_with(self, data: bytes, **kw) -> np.ndarray:
        header, strings = self.parse(data)
        model = self._model(header.quality)
        try:
            with torch.no_grad():
                x_hat = self._decompress(model, [strings], header, **kw)
        except BitstreamError:
            raise
        except Exception as exc:
            raise BitstreamError(f"{self.name}: payload could not be decoded ({type(exc).__name__}: {exc})") from exc
        return np.ascontiguousarray(to_uint8(x_hat)[0][: header.height, : header.width])

    def decode_structure(self, data: bytes) -> np.ndarray:
        """The face decoded from its structure layer alone (``y``, ``z``), texture at its prior mean."""
        return self._decode_with(data, structure_only=True)

    def texture_of(self, data: bytes) -> torch.Tensor:
        """The decoded texture code ``(1, style_dim)`` of a stream (its ``t`` string only)."""
        header, strings = self.parse(data)
        model = self._model(header.quality)
        try:
            with torch.no_grad():
                return model.decode_texture([self._split([strings])[2][0]])
        except BitstreamError:
            raise
        except Exception as exc:
            raise BitstreamError(f"{self.name}: texture string could not be decoded ({exc})") from exc

    def decode_swapped(self, structure_stream: bytes, texture_stream: bytes) -> np.ndarray:
        """The structure of one stream with the texture of another (both of this codec, same rate point)."""
        hs, _ = self.parse(structure_stream)
        ht, _ = self.parse(texture_stream)
        if hs.quality != ht.quality:
            raise ValueError(f"{self.name}: the two streams are of rate points {hs.quality} and {ht.quality}; a "
                             "texture code is only meaningful with the model that made it")
        return self._decode_with(structure_stream, texture=self.texture_of(texture_stream))

    # -- accounting ---------------------------------------------------------------------------------------
    def layer_bytes(self, data: bytes) -> dict:
        """Bytes of a stream by part: ``header`` (container, CRC included), ``structure`` (y + z strings, also
        ``y`` and ``z``), ``texture`` (t string), ``total``."""
        header, strings = self.parse(data)
        y, z, t = self._split([strings])
        return {"header": header.size, "y": len(y[0]), "z": len(z[0]), "structure": len(y[0]) + len(z[0]),
                "texture": len(t[0]), "total": len(data)}

    @torch.no_grad()
    def estimated_bits(self, image, quality=0) -> dict:
        """The likelihood estimate of each string (bits) for ``image`` at ``quality``: ``y``, ``z``, ``t``,
        ``structure``, ``texture`` (what :meth:`layer_bytes` measures on the real stream)."""
        model = self._model(quality)
        x, _, _ = pad_to(to_tensor([as_rgb_uint8(image)]), self.stride)
        lk = model.eval()(x)["likelihoods"]
        bits = {k: float(-torch.log2(v).sum()) for k, v in lk.items()}
        bits["structure"], bits["texture"] = bits["y"] + bits["z"], bits["t"]
        return bits

    # -- analysis from the stream -------------------------------------------------------------------------
    @torch.no_grad()
    def analyse(self, streams: Sequence[bytes], task="parsing", batch_size: int = 64):
        """Task outputs of streams made by this codec, from ``(y_hat, t_hat)`` only (``g_s`` and the generator
        never run): ``parsing`` logits ``(N, K, H, W)`` (streams of one image size), ``attributes`` logits
        ``(N, A)``, ``landmarks`` ``(N, 5, 2)`` in [0, 1] of each image's width and height."""
        name = self.check_task(task)
        if self.analysers is None:
            raise ValueError(f"{self.name}: no analysis network: build the codec with analysers=[...] or "
                             "Zhang2023Codec.from_analysis(models)")
        parsed = [self.parse(d) for d in streams]
        if name == "parsing" and len({(h.height, h.width) for h, _ in parsed}) > 1:
            raise ValueError(f"{self.name}: parsing maps of streams of different image sizes cannot be stacked: "
                             "analyse each size apart")
        groups: dict[tuple, list[int]] = {}
        for i, (h, _) in enumerate(parsed):
            groups.setdefault((h.quality, self.latent_grid(h)), []).append(i)
        out: list = [None] * len(parsed)
        for (quality, shape), idx in groups.items():
            model, analyser = self._model(quality), self.analysers[int(quality)]
            for k in range(0, len(idx), batch_size):
                chunk = idx[k:k + batch_size]
                strings = self._split([parsed[i][1] for i in chunk])
                try:
                    y_hat, t_hat = model.decode_latents(strings, shape)
                    pred = analyser.analyse_latents(y_hat, t_hat)[name]
                except BitstreamError:
                    raise
                except Exception as exc:
                    raise BitstreamError(f"{self.name}: payload could not be decoded "
                                         f"({type(exc).__name__}: {exc})") from exc
                if not bool(torch.isfinite(pred).all()):
                    raise BitstreamError(f"{self.name}: the {name} output of a stream is not finite: the stream is "
                                         "corrupt or the model is broken")
                for i, row in zip(chunk, pred):
                    h = parsed[i][0]
                    if name == "parsing":
                        row = row[:, : h.height, : h.width]
                    elif name == "landmarks":  # from the padded image's frame to the image's
                        hp, wp = h.height + h.pad_h, h.width + h.pad_w
                        row = row * torch.tensor([wp / h.width, hp / h.height])
                    out[i] = row
        return torch.stack(out)


@register_codec("zhang2023")
def zhang2023_codec(**kw) -> Zhang2023Codec:
    """``get_codec("zhang2023", model=m | models=[...] | checkpoint=p | checkpoints=[...], analysers=[...])``;
    or ``analysis=[Zhang2023Analysis, ...]`` (their codecs and themselves).  No zoo entries yet: weights must
    be given."""
    analysis = kw.pop("analysis", None)
    kw.setdefault("label", "Zhang et al. (layered generative)")
    if analysis is not None:
        return Zhang2023Codec.from_analysis(analysis, name=kw.pop("name", "zhang2023"), **kw)
    return learned_codec(kw.pop("name", "zhang2023"), cls=Zhang2023Codec, model_name="zhang2023", **kw)
