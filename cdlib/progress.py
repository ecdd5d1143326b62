"""Progress bars that read cleanly everywhere.

``tqdm.auto`` picks the Jupyter widget bar inside a notebook; without ``ipywidgets`` that bar cannot be
drawn and tqdm warns ``TqdmWarning: IProgress not found`` (with the path of tqdm's file) the first time
``tqdm.auto`` is imported, by cdlib or by a dependency (``huggingface_hub``, which ``timm`` imports).

* :func:`progress_bar` returns the widget bar only when ``ipywidgets`` is importable, tqdm's plain text
  bar otherwise;
* :func:`settle_tqdm_auto` (run when ``cdlib`` is imported) does the first import of ``tqdm.autonotebook``
  itself when ``ipywidgets`` is missing, silencing only that one warning: tqdm then falls back to its plain
  bar for everyone, without a word.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
import warnings


def _have_ipywidgets() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


@functools.lru_cache(maxsize=None)
def progress_bar():
    """The ``tqdm`` class to use: ``tqdm.auto.tqdm`` with ipywidgets installed, else ``tqdm.std.tqdm``."""
    if _have_ipywidgets():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def settle_tqdm_auto() -> None:
    """Import ``tqdm.autonotebook`` once, quietly, when ipywidgets is missing (see the module docstring)."""
    if "tqdm.autonotebook" in sys.modules or _have_ipywidgets():
        return
    try:
        from tqdm.std import TqdmWarning
    except ImportError:  # no tqdm: nothing to settle
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
        import tqdm.autonotebook  # noqa: F401
