"""Where the library writes: one cache directory and one results directory.

* :func:`cache_dir` - generated and downloaded-once material that can be rebuilt
  (ShapesWorld arrays, trained checkpoints): ``$CDLIB_CACHE``, default ``~/.cache/cdlib``.
* :func:`results_dir` - what a chapter or benchmark measured, per profile:
  ``$CDLIB_RESULTS/<profile>``, default ``results/<profile>`` (relative to the working directory).
* :func:`atomic_write` - the one way cdlib writes a file (checkpoints, streams, images, JSON): a temporary
  file next to the target, then ``os.replace``, so a reader never sees half a file.

Nothing is created here; callers ``mkdir`` what they write into.  The environment is read
on every call, so setting a variable (or ``monkeypatch.setenv`` in a test) takes effect at once.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable) -> Path:
    """``write(binary_file)`` into a temporary file next to ``path``, then ``os.replace`` it onto ``path``.

    The temporary file is removed whatever fails (the writer, a full disk, an interrupt); an ``OSError``
    is re-raised as one line naming ``path``.  The file gets the permissions a plain ``open()`` would give.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder {path.parent} of {path}: {exc.strerror or exc}") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except OSError as exc:  # the original error stays attached as __cause__ (its errno, strerror)
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return path
