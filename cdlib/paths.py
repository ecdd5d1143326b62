"""Where the library writes: one cache directory and one results directory.

* :func:`cache_dir` - generated and downloaded-once material that can be rebuilt
  (ShapesWorld arrays, trained checkpoints): ``$CDLIB_CACHE``, default ``~/.cache/cdlib``.
* :func:`results_dir` - what a chapter or benchmark measured, per profile:
  ``$CDLIB_RESULTS/<profile>``, default ``results/<profile>`` (relative to the working directory).

Nothing is created here; callers ``mkdir`` what they write into.  The environment is read
on every call, so setting a variable (or ``monkeypatch.setenv`` in a test) takes effect at once.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CDLIB_CACHE"
RESULTS_ENV = "CDLIB_RESULTS"


def cache_dir(*parts: str) -> Path:
    """The library's cache directory, ``$CDLIB_CACHE`` or ``~/.cache/cdlib``, joined with ``parts``.

    Each user of the cache takes a sub-folder, e.g. ``cache_dir("shapesworld")``.
    """
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "cdlib"
    return base.joinpath(*parts)


def results_dir(profile: str) -> Path:
    """``$CDLIB_RESULTS/<profile>`` (default ``results/<profile>``); not created here."""
    return Path(os.environ.get(RESULTS_ENV, "results")) / profile


__all__ = ["CACHE_ENV", "RESULTS_ENV", "cache_dir", "results_dir"]
