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
from ...codecs.learned import LearnedCodec, _finite_output, _fingerprint, learned_codec
from ...images import as_rgb_uint8, pad_to, to_tensor, to_uint8
from .faceworld import ATTRIBUTES, CELEBAMASK_LABELS, LANDMARKS, MERGED_LABELS
from .recipes import ZHANG_LAMBDAS

N_STRINGS = 3  # y, z (structure layer), t (texture layer)
#: the zoo's rate points (codecs, lowest rate first) and, per rate point, its analysis network (whose ``codec``
#: is that rate point's codec)
RATE_POINTS = tuple(f"zhang2023_{q}" for q in ZHANG_LAMBDAS)
ANALYSIS_POINTS = tuple(f"zhang2023_analysis_{q}" for q in ZHANG_LAMBDAS)
#: attribute probability from which an attribute is reported present
ATTRIBUTE_THRESHOLD = 0.5
#: display colours of the parsing labels (CelebAMask-HQ's and the merged ones), RGB
LABEL_COLOURS = {
    "background": (0, 0, 0), "skin": (204, 0, 0), "nose": (76, 153, 0), "eye_g": (204, 204, 0),
    "l_eye": (51, 51, 255), "r_eye": (204, 0, 204), "eyes": (51, 51, 255), "l_brow": (0, 255, 255),
    "r_brow": (255, 204, 204), "brows": (0, 255, 255), "l_ear": (102, 51, 0), "r_ear": (255, 0, 0),
    "ears": (102, 51, 0), "mouth": (102, 204, 0), "u_lip": (255, 255, 0), "l_lip": (0, 0, 153),
    "hair": (0, 0, 204), "hat": (255, 51, 153), "ear_r": (0, 204, 204), "neck_l": (0, 51, 0),
    "neck": (255, 153, 51), "cloth": (0, 204, 0),
}
NO_WEIGHTS = ("codec 'zhang2023' has no weights: give a zhang2023 codec or zhang2023_analysis checkpoint "
              "(python -m cdlib ... --checkpoint FILE; in Python checkpoint=/checkpoints=/model=/analysis=), or run "
              "`make checkpoints` to build the zoo's rate points ({})")


def label_names(num_classes: int) -> tuple[str, ...]:
    """The names of a parsing output's ``num_classes`` labels: the merged set (12), CelebAMask-HQ's (19), else
    ``class_<i>``."""
    for names in (MERGED_LABELS, CELEBAMASK_LABELS):
        if len(names) == num_classes:
            return tuple(names)
    return tuple(f"class_{i}" for i in range(num_classes))


def parsing_image(labels, names=None):
    """A label map ``(H, W)`` as an indexed (``"P"``) PIL image: pixel value = label index, palette =
    :data:`LABEL_COLOURS` (a label without a colour gets a fixed pseudo-random one)."""
    from PIL import Image

    arr = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64)
    n = int(arr.max()) + 1 if arr.size else 1
    names = list(names or [])
    if n > 256 or arr.min() < 0:
        raise ValueError(f"a parsing map with labels {int(arr.min())}..{n - 1} cannot be an indexed PNG (0..255)")
    rng = np.random.default_rng(0)
    palette = []
    for i in range(256):
        colour = LABEL_COLOURS.get(names[i]) if i < len(names) else None
        palette.extend(colour if colour is not None else rng.integers(0, 256, 3).tolist())
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr.astype(np.uint8)).tobytes())
    img.putpalette([int(c) for c in palette])
    return img


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
        self._zoo_analysis: list[str] | None = None  # zoo ids of the analysers, loaded when first needed
        self._loaded: dict[int, torch.nn.Module] = {}

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
    def _analyser(self, quality) -> torch.nn.Module:
        """The analysis network of rate point ``quality``: given, or (a codec of the zoo's rate points) the zoo's
        ``zhang2023_analysis_q<i>``, loaded when first needed and checked to hold this rate point's codec."""
        q = int(quality)
        if self.analysers is not None:
            return self.analysers[q]
        if q in self._loaded:
            return self._loaded[q]
        if self._zoo_analysis is None:
            raise ValueError(f"{self.name}: no analysis network: give a zhang2023_analysis checkpoint (python -m "
                             "cdlib analyze --checkpoint FILE; in Python analysers=[...] or "
                             "Zhang2023Codec.from_analysis(models))")
        from ... import zoo

        entry_id = self._zoo_analysis[q]
        if not zoo.entries(model="zhang2023_analysis", id=entry_id):
            raise ValueError(f"{self.name}: the zoo holds no analysis network {entry_id!r} for rate point {q}: give "
                             "a zhang2023_analysis checkpoint (python -m cdlib analyze --checkpoint FILE) or run "
                             "`make checkpoints`")
        a = zoo.load(entry_id).eval()
        a.codec.eval()
        a.codec.update(force=True)
        if _fingerprint(a.codec) != _fingerprint(self.models[q]):
            raise ValueError(f"{self.name}: the zoo's analysis network {entry_id!r} holds another codec than rate "
                             f"point {q} (trained jointly?): compress and analyse with its own codec "
                             f"(--checkpoint {zoo.path_of(entry_id)})")
        self._loaded[q] = a
        return a

    @torch.no_grad()
    def analyse_all(self, streams: Sequence[bytes], tasks: Sequence[str] = ("parsing", "attributes", "landmarks"),
                    batch_size: int = 64) -> dict:
        """``{task: output}`` for several tasks at once (each stream's latents decoded once): see
        :meth:`analyse`."""
        names = list(dict.fromkeys(self.check_task(t) for t in tasks))
        parsed = [self.parse(d) for d in streams]
        if "parsing" in names and len({(h.height, h.width) for h, _ in parsed}) > 1:
            raise ValueError(f"{self.name}: parsing maps of streams of different image sizes cannot be stacked: "
                             "analyse each size apart")
        groups: dict[tuple, list[int]] = {}
        for i, (h, _) in enumerate(parsed):
            groups.setdefault((h.quality, self.latent_grid(h)), []).append(i)
        out: dict[str, list] = {n: [None] * len(parsed) for n in names}
        for (quality, shape), idx in groups.items():
            model, analyser = self._model(quality), self._analyser(quality)
            for k in range(0, len(idx), batch_size):
                chunk = idx[k:k + batch_size]
                strings = self._split([parsed[i][1] for i in chunk])
                try:
                    y_hat, t_hat = model.decode_latents(strings, shape)
                    preds = analyser.analyse_latents(y_hat, t_hat)
                except BitstreamError:
                    raise
                except Exception as exc:
                    raise BitstreamError(f"{self.name}: payload could not be decoded "
                                         f"({type(exc).__name__}: {exc})") from exc
                for name in names:
                    pred = preds[name]
                    if not bool(torch.isfinite(pred).all()):
                        raise BitstreamError(f"{self.name}: the {name} output of a stream is not finite: the stream "
                                             "is corrupt or the model is broken")
                    for i, row in zip(chunk, pred):
                        h = parsed[i][0]
                        if name == "parsing":
                            row = row[:, : h.height, : h.width]
                        elif name == "landmarks":  # from the padded image's frame to the image's
                            hp, wp = h.height + h.pad_h, h.width + h.pad_w
                            row = row * torch.tensor([wp / h.width, hp / h.height])
                        out[name][i] = row
        return {n: torch.stack(rows) for n, rows in out.items()}

    @torch.no_grad()
    def analyse(self, streams: Sequence[bytes], task="parsing", batch_size: int = 64):
        """Task outputs of streams made by this codec, from ``(y_hat, t_hat)`` only (``g_s`` and the generator
        never run): ``parsing`` logits ``(N, K, H, W)`` (streams of one image size), ``attributes`` logits
        ``(N, A)``, ``landmarks`` ``(N, 5, 2)`` in [0, 1] of each image's width and height."""
        name = self.check_task(task)
        return self.analyse_all(streams, (name,), batch_size=batch_size)[name]

    analysis_outputs = ("parsing",)

    def describe_analysis(self, data: bytes, tasks=None, images=()) -> tuple[dict, dict]:
        """One stream's analysis (``python -m cdlib analyze``): by default all three tasks.

        Summary: ``tasks``; ``attributes``: ``{name: {"probability", "decision"}}`` (decision: 1 when the
        probability is at least :data:`ATTRIBUTE_THRESHOLD`); ``landmarks``: ``{name: {"x", "y"}}`` in pixels of
        the image (0 = its left or top edge; a point predicted in the padding is moved to the nearest edge); ``parsing``: ``num_classes``, ``legend`` (label index -> name)
        and ``fractions`` (name -> share of the pixels, labels present, largest first).  Maps:
        ``{"parsing": indexed PIL image}`` when ``images`` names it (:func:`parsing_image`)."""
        names = [self.check_task(t) for t in (list(tasks or ()) or list(self.tasks))]
        images = self.check_analysis_outputs(images)
        need = list(dict.fromkeys(names + (["parsing"] if "parsing" in images else [])))
        header, _ = self.parse(data)
        pred = {k: v[0] for k, v in self.analyse_all([data], need).items()}
        summary: dict = {"tasks": names}
        if "attributes" in names:
            probs = torch.sigmoid(pred["attributes"].double()).tolist()
            attr_names = ATTRIBUTES if len(probs) == len(ATTRIBUTES) else [f"attribute_{i}" for i in range(len(probs))]
            summary["attributes"] = {n: {"probability": p, "decision": int(p >= ATTRIBUTE_THRESHOLD)}
                                     for n, p in zip(attr_names, probs)}
        if "landmarks" in names:
            size = torch.tensor([header.width, header.height], dtype=torch.float64)
            # a landmark predicted in the padding (the network sees the padded image) is put on the image's edge
            pts = torch.minimum((pred["landmarks"].double() * size).clamp_min(0), size)
            lm_names = LANDMARKS if len(pts) == len(LANDMARKS) else [f"landmark_{i}" for i in range(len(pts))]
            summary["landmarks"] = {n: {"x": float(x), "y": float(y)} for n, (x, y) in zip(lm_names, pts.tolist())}
        maps = {}
        if "parsing" in need:
            k = int(pred["parsing"].shape[0])
            legend = label_names(k)
            labels = pred["parsing"].argmax(0)
            if "parsing" in names:
                values, counts = torch.unique(labels, return_counts=True)
                order = torch.argsort(counts, descending=True)
                summary["parsing"] = {
                    "num_classes": k, "legend": {str(i): n for i, n in enumerate(legend)},
                    "fractions": {legend[int(values[j])]: float(counts[j]) / labels.numel() for j in order}}
            if "parsing" in images:
                maps["parsing"] = parsing_image(labels, legend)
        return summary, maps


@register_codec("zhang2023")
def zhang2023_codec(**kw) -> Zhang2023Codec:
    """``get_codec("zhang2023", model=m | models=[...] | checkpoint=p | checkpoints=[...], analysers=[...])``;
    or ``analysis=[Zhang2023Analysis, ...]`` (their codecs and themselves).  A checkpoint may hold a codec
    (``zhang2023``) or an analysis network (``zhang2023_analysis``: its ``codec`` is the codec, itself the
    analyser); give the rate points of one kind, lowest rate first.

    With no weights: the zoo's rate points :data:`RATE_POINTS` (those it holds), whose analysis networks
    :data:`ANALYSIS_POINTS` are loaded when :meth:`~Zhang2023Codec.analyse` first needs them; a zoo with only
    analysis networks gives their codecs."""
    analysis = kw.pop("analysis", None)
    kw.setdefault("label", "Zhang et al. (layered generative)")
    name = kw.pop("name", "zhang2023")
    if analysis is not None:
        return Zhang2023Codec.from_analysis(analysis, name=name, **kw)
    paths = kw.pop("checkpoints", None)
    one = kw.pop("checkpoint", None)
    if paths is None and one is not None:
        paths = [one]
    if paths is not None:
        return _from_checkpoints(list(paths), name, kw)
    if kw.get("model") is None and kw.get("models") is None:
        return _from_zoo(name, kw)
    return learned_codec(name, cls=Zhang2023Codec, model_name="zhang2023", **kw)


def _from_checkpoints(paths, name: str, kw: dict) -> Zhang2023Codec:
    from ...checkpoint import read_checkpoint, load_model

    kinds = []
    for p in paths:
        kind = read_checkpoint(p).get("model")
        if kind not in ("zhang2023", "zhang2023_analysis"):
            raise ValueError(f"checkpoint {p} holds a {kind!r} model; codec {name!r} needs 'zhang2023' (a codec) or "
                             "'zhang2023_analysis' (an analysis network and its codec)")
        kinds.append(kind)
    if len(set(kinds)) > 1:
        raise ValueError(f"codec {name!r}: give the checkpoints of one kind, codecs (zhang2023) or analysis networks "
                         f"(zhang2023_analysis, which hold their codecs), not both: {', '.join(map(str, paths))}")
    models = [load_model(p) for p in paths]
    if kinds[0] == "zhang2023_analysis":
        return Zhang2023Codec.from_analysis(models, name=name, **kw)
    return Zhang2023Codec(models, name=name, model_name="zhang2023", **kw)


def _from_zoo(name: str, kw: dict) -> Zhang2023Codec:
    from ... import zoo

    held = {e["id"] for e in zoo.entries(model="zhang2023")}
    codec_ids = [i for i in RATE_POINTS if i in held]
    if codec_ids:
        codec = Zhang2023Codec([zoo.load(i) for i in codec_ids], name=name, model_name="zhang2023", **kw)
        codec._zoo_analysis = [ANALYSIS_POINTS[RATE_POINTS.index(i)] for i in codec_ids]
        return codec
    held = {e["id"] for e in zoo.entries(model="zhang2023_analysis")}
    analysis_ids = [i for i in ANALYSIS_POINTS if i in held]
    if analysis_ids:
        return Zhang2023Codec.from_analysis([zoo.load(i) for i in analysis_ids], name=name, **kw)
    raise ValueError(NO_WEIGHTS.format(f"{RATE_POINTS[0]}..{RATE_POINTS[-1][-2:]}, "
                                       f"{ANALYSIS_POINTS[0]}..{ANALYSIS_POINTS[-1][-2:]}; none in {zoo.manifest_path()}"))
