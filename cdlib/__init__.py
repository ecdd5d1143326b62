"""cdlib: image coding for machines, the library behind the book.

>>> import cdlib
>>> model = cdlib.create_model("hyperprior", profile="laptop")
>>> codec = cdlib.get_codec("jpeg")
"""
from .progress import settle_tqdm_auto as _settle_tqdm_auto

_settle_tqdm_auto()  # no 'IProgress not found' warning in notebooks without ipywidgets (cdlib.progress)

from .bitstream import BitstreamError  # noqa: E402
from .config import TrainConfig, make_config  # noqa: E402
from .registry import create_model, list_models  # noqa: E402

__version__ = "0.1.0"


def get_codec(name: str, **kwargs):
    """Codec by name: the classical ones and every learned codec a paper package registers (``cdlib.codecs.list_codecs()``)."""
    from .codecs import get_codec as _get

    return _get(name, **kwargs)


__all__ = ["BitstreamError", "TrainConfig", "make_config", "create_model", "list_models", "get_codec"]
