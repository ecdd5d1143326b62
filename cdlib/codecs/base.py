"""One interface for every codec: ``encode`` an RGB image to bytes, ``decode`` it back.

Images at this interface are ``numpy.uint8`` arrays of shape ``(H, W, 3)``.  Every
stream is wrapped in the :mod:`cdlib.bitstream` container, so the original size
is restored exactly and a corrupt stream raises :class:`BitstreamError`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from ..bitstream import BitstreamError, Header, pack, unpack


def as_rgb_uint8(image) -> np.ndarray:
    """Validate/convert an image to ``uint8 (H, W, 3)``; clear error on anything else."""
    if hasattr(image, "detach"):  # torch tensor (C,H,W) in [0,1]
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(t.shape)}")
        image = (t.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8).permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8, got {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


class Codec(ABC):
    """Base class.  Subclasses implement ``_encode``/``_decode`` on payload strings."""

    name: str = ""
    label: str = ""                 # honest display name, e.g. "HEVC (x265)"
    qualities: Sequence = ()        # default sweep, from low to high rate

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

    def decode(self, data: bytes) -> np.ndarray:
        header, strings = unpack(data)
        if header.codec != self.name:
            raise BitstreamError(f"stream was made by codec {header.codec!r}, not {self.name!r}")
        expected = self.cfg_hash(header.quality)
        if header.cfg_hash != expected:
            raise BitstreamError(
                f"stream needs model {header.cfg_hash.hex()} but this {self.name!r} codec is "
                f"{expected.hex()}: use the checkpoint the stream was made with")
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

    def decode_batch(self, streams: Sequence[bytes]) -> list[np.ndarray]:
        return [self.decode(s) for s in streams]

    def roundtrip(self, image, quality=None) -> tuple[np.ndarray, bytes]:
        data = self.encode(image, quality)
        return self.decode(data), data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_CODECS: dict[str, Callable[..., Codec]] = {}


def register_codec(name: str):
    def deco(factory):
        _CODECS[name] = factory
        return factory
    return deco


def list_codecs() -> list[str]:
    from . import classical, learned  # noqa: F401  (registration side effects)
    return sorted(_CODECS)


def get_codec(name: str, **kwargs) -> Codec:
    """Codec by name. Learned codecs take ``checkpoint=`` or ``model=`` keyword arguments."""
    names = list_codecs()
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r}; available codecs: {', '.join(names)}")
    return _CODECS[name](**kwargs)
