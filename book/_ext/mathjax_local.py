"""Serve MathJax from the built book, so that pages read the same offline (Sphinx extension).

Sphinx's ``sphinx.ext.mathjax`` loads MathJax 3 from a CDN by default. This extension finds a local
MathJax 3 distribution (the ``es5`` folder shipped by the PyPI package ``django-static-mathjax``, which
installs the module ``mathjax``; no Django needed), copies it into ``<build>/_static/mathjax/`` and points
``mathjax_path`` at ``mathjax/tex-mml-chtml.js`` (relative to ``_static``). MathJax finds its fonts and
extensions next to that script, so nothing is fetched from the internet.

Without a local copy the build keeps the CDN and says so in the log (not a warning: ``-W`` would turn it
into an error on a machine that simply lacks the package). ``mathjax_local_dir`` in the Sphinx config
names another ``es5`` folder to copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

ENTRY = "tex-mml-chtml.js"
TARGET = "mathjax"  # folder inside _static


def find_local_mathjax(configured: str = "") -> Path | None:
    """The folder holding MathJax 3's ``tex-mml-chtml.js`` (and ``output/``, ``input/``), or None."""
    candidates = []
    if configured:
        candidates.append(Path(configured).expanduser())
    try:
        import importlib.util

        spec = importlib.util.find_spec("mathjax")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(loc) / "static" / "mathjax" / "es5")
    except (ImportError, ValueError):
        pass
    for c in candidates:
        if (c / ENTRY).is_file() and (c / "output").is_dir():
            return c
    return None


def use_local_mathjax(app: Sphinx, config) -> None:
    src = find_local_mathjax(config.mathjax_local_dir)
    app.env_mathjax_src = src  # type: ignore[attr-defined]
    if src is None:
        LOGGER.info("mathjax_local: no local MathJax 3 found (pip install django-static-mathjax); using the CDN")
        return
    config.mathjax_path = f"{TARGET}/{ENTRY}"


def copy_mathjax(app: Sphinx, exception) -> None:
    src = getattr(app, "env_mathjax_src", None)
    if exception is not None or src is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / TARGET
    shutil.copytree(src, dest, dirs_exist_ok=True)
    LOGGER.info(f"mathjax_local: MathJax copied into {dest.relative_to(Path(app.outdir))}")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("mathjax_local_dir", "", "html")
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
