"""Codecs: ``get_codec(name)`` for every classical and learned codec (see :mod:`cdlib.codecs.base`)."""
from .base import Codec, get_codec, list_codecs, register_codec
from . import classical, learned  # noqa: F401  (registration of the classical codecs)

__all__ = ["Codec", "get_codec", "list_codecs", "register_codec"]
