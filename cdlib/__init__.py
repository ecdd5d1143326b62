"""cdlib: image coding for machines, the library behind the book.

>>> import cdlib
>>> model = cdlib.create_model("hyperprior", profile="laptop")
>>> codec = cdlib.get_codec("jpeg")
"""
from .bitstream import BitstreamError
from .config import TrainConfig, make_config
from .registry import create_model, list_models

__version__ = "0.1.0"


def get_codec(name: str, **kwargs):
    """Codec by name: the classical ones and every learned codec a paper package registers (``cdlib.codecs.list_codecs()``)."""
    from .codecs import get_codec as _get

    return _get(name, **kwargs)


__all__ = ["BitstreamError", "TrainConfig", "make_config", "create_model", "list_models", "get_codec"]
