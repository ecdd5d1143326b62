"""One interface for every codec: ``encode`` an RGB image to bytes, ``decode`` it back.

Images at this interface are ``numpy.uint8`` arrays of shape ``(H, W, 3)``.  Every
stream is wrapped in the :mod:`cdlib.bitstream` container, so the original size
is restored exactly and a corrupt stream raises :class:`BitstreamError`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from ..bitstream import BitstreamError, Header, pack, register_codec_name, same_model, unpack
from ..images import as_rgb_uint8


class AnalysisNotSupported(ValueError):
    """A codec was asked to analyse its streams for a task it has no analysis head for."""


class Codec(ABC):
    """Base class.  Subclasses implement ``_encode``/``_decode`` on payload strings.

    A codec that can analyse its own streams without decoding pixels (a learned codec with a task head
    on its latents) lists those tasks in :attr:`tasks` and implements :meth:`analyse`.
    """

    name: str = ""
    label: str = ""                 # honest display name, e.g. "HEVC (x265)"
    qualities: Sequence = ()        # default sweep, from low to high rate
    tasks: tuple[str, ...] = ()     # tasks analysed from the stream itself, no pixel decoding (see analyse)
    analysis_outputs: tuple[str, ...] = ()  # maps describe_analysis can return as images (e.g. "parsing")

    # -- to implement -------------------------------------------------------
    @abstractmethod
    def _encode(self, image: np.ndarray, quality) -> tuple[list[bytes], int, int]:
        """Return (payload strings, pad_h, pad_w) for a uint8 (H, W, 3) image."""

    @abstractmethod
    def _decode(self, strings: list[bytes], header: Header) -> np.ndarray:
        """Return the padded reconstruction, uint8 (H + pad_h, W + pad_w, 3)."""

    def cfg_hash(self, quality=None) -> bytes:
        """8 bytes that identify the exact model a stream at ``quality`` needs (zeros: classical codec)."""
        return b"\0" * 8

    # -- public API ---------------------------------------------------------
    def encode(self, image, quality=None) -> bytes:
        img = as_rgb_uint8(image)
        q = self.qualities[len(self.qualities) // 2] if quality is None else quality
        strings, pad_h, pad_w = self._encode(img, q)
        return pack(self.name, strings, img.shape[0], img.shape[1], pad_h, pad_w, float(q), self.cfg_hash(q))

    def parse(self, data: bytes) -> tuple[Header, list[bytes]]:
        """Unpack a stream and check that this codec, with these weights, made it (else BitstreamError)."""
        header, strings = unpack(data)
        if header.codec != self.name:
            raise BitstreamError(f"stream was made by codec {header.codec!r}, not {self.name!r}")
        expected = self.cfg_hash(header.quality)
        if not same_model(header.cfg_hash, expected):
            raise BitstreamError(
                f"stream needs model {header.cfg_hash.hex()} but this {self.name!r} codec is "
                f"{expected.hex()}: use the checkpoint the stream was made with")
        return header, strings

    def decode(self, data: bytes) -> np.ndarray:
        header, strings = self.parse(data)
        try:
            out = self._decode(strings, header)
        except BitstreamError:
            raise
        except Exception as exc:  # the underlying decoder failed on a corrupt payload
            raise BitstreamError(f"{self.name}: payload could not be decoded ({type(exc).__name__}: {exc})") from exc
        exp = (header.height + header.pad_h, header.width + header.pad_w, 3)
        if out.shape != exp:
            raise BitstreamError(f"{self.name}: decoded image has shape {out.shape}, header says {exp}")
        return np.ascontiguousarray(out[: header.height, : header.width])

    def encode_batch(self, images: Sequence, quality=None) -> list[bytes]:
        return [self.encode(im, quality) for im in images]

    def decode_batch(self, streams: Sequence[bytes], batch_size: int | None = None) -> list[np.ndarray]:
        """Images of many streams.  ``batch_size``: a hint, streams per call for a codec that decodes
        batches (:class:`cdlib.codecs.LearnedCodec`); here they are decoded one at a time."""
        return [self.decode(s) for s in streams]

    def roundtrip(self, image, quality=None) -> tuple[np.ndarray, bytes]:
        data = self.encode(image, quality)
        return self.decode(data), data

    # -- analysis from the stream, without decoding pixels -------------------
    def check_task(self, task) -> str:
        """The name of ``task`` (a name or a :class:`cdlib.eval.Task`) if this codec analyses it from its
        streams; else raise :class:`AnalysisNotSupported` saying what to do instead."""
        name = getattr(task, "name", task)
        if not self.tasks:
            raise AnalysisNotSupported(
                f"codec {self.name!r} cannot analyse its stream without decoding pixels: it has no analysis "
                "head; decode it and run an analysis network")
        if name not in self.tasks:
            raise AnalysisNotSupported(
                f"codec {self.name!r} cannot analyse {name!r} from its stream: it analyses only "
                f"{', '.join(self.tasks)}; decode it and run an analysis network for {name!r}")
        return name

    def analyse(self, streams: Sequence[bytes], task):
        """Task output for ``streams`` made by this codec, computed from the streams alone: the pixel
        decoder never runs.  For ``"classification"``: logits ``(N, num_classes)``; other tasks return
        what :meth:`cdlib.eval.Task.postprocess` of that task takes.  Codecs without an analysis head
        (``tasks == ()``) raise :class:`AnalysisNotSupported`."""
        self.check_task(task)
        raise NotImplementedError(f"codec {self.name!r} lists tasks {self.tasks} but does not implement analyse()")

    def describe_analysis(self, data: bytes, tasks: Sequence[str] | None = None,
                          images: Sequence[str] = ()) -> tuple[dict, dict]:
        """One stream's analysis for people (``python -m cdlib analyze``), from the stream alone as
        :meth:`analyse`: ``(summary, maps)``, a JSON-ready dict and ``{name: PIL.Image}`` for each name of
        ``images`` (names of :attr:`analysis_outputs`).

        ``tasks``: names of :attr:`tasks` (default: the first).  Here the summary is ``{"task": name,
        **Task.describe(prediction)}`` for one task, ``{"tasks": [...], **each describe}`` for several, and no
        codec writes maps; a codec whose outputs need more (label names, pixel coordinates, a legend, a
        parsing map as an image) overrides this."""
        names = [self.check_task(t) for t in (list(tasks or ()) or list(self.tasks[:1]) or ["classification"])]
        self.check_analysis_outputs(images)
        from ..eval.tasks import get_task

        summary: dict = {"task": names[0]} if len(names) == 1 else {"tasks": names}
        for name in names:
            task = get_task(name)
            summary.update(task.describe(task.postprocess(self.analyse([data], name))[0]))
        return summary, {}

    def check_analysis_outputs(self, images: Sequence[str]) -> list[str]:
        """``images`` if each is one of :attr:`analysis_outputs`; else :class:`AnalysisNotSupported`."""
        images = list(images or ())
        bad = [i for i in images if i not in self.analysis_outputs]
        if bad:
            has = f"it writes only {', '.join(self.analysis_outputs)}" if self.analysis_outputs else \
                "it writes no analysis maps"
            raise AnalysisNotSupported(f"codec {self.name!r} has no {', '.join(map(repr, bad))} map to write: {has}")
        return images

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_CODECS: dict[str, Callable[..., Codec]] = {}
_CODEC_ALIASES: dict[str, str] = {}  # alias -> codec name (streams carry the codec's own name)


def register_codec_alias(alias: str, name: str) -> None:
    """``get_codec(alias)`` is ``get_codec(name)``; the streams it writes carry ``name``."""
    if alias in _CODECS or _CODEC_ALIASES.get(alias, name) != name:
        raise ValueError(f"codec alias {alias!r} is already taken")
    _CODEC_ALIASES[alias] = name


def register_codec(name: str):
    register_codec_name(name)  # its 1-byte stream tag (refused if it collides with another codec name)
    def deco(factory):
        _CODECS[name] = factory
        return factory
    return deco


def list_codecs() -> list[str]:
    from ..registry import load_papers
    from . import classical  # noqa: F401  (registration side effects)

    load_papers()  # learned codecs are registered by their paper packages
    return sorted(_CODECS)


def get_codec(name: str, **kwargs) -> Codec:
    """Codec by name. Learned codecs take ``checkpoint=`` or ``model=`` keyword arguments."""
    names = list_codecs()
    name = _CODEC_ALIASES.get(name, name)
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r}; available codecs: {', '.join(names)}")
    return _CODECS[name](**kwargs)
