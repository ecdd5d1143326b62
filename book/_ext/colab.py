"""Colab links that open ``notebooks/<chapter>.ipynb`` (Sphinx extension, loaded by ``_config.yml``).

Chapters are MyST Markdown notebooks in ``book/`` paired (Jupytext) with ``notebooks/<chapter>.ipynb``.
In Jupyter Book v1, sphinx-book-theme builds its Colab launch button from the *source* path
(``book/<chapter>.md``; it switches to ``.ipynb`` only when one sits beside the source), and Colab
cannot open Markdown. This extension

* rewrites the theme's Colab launch button on every chapter page to
  ``https://colab.research.google.com/github/<org>/<repo>/blob/<branch>/notebooks/<chapter>.ipynb``
  (the theme's button is removed on notebook pages that have no paired ``.ipynb``);
* inserts a visible "Open in Colab" link under the chapter title (same URL), so the link is on the
  page itself and not only in the header drop-down;
* warns (an error under ``-W``) when a notebook page under ``book/`` has no paired notebook.

A "chapter" is any page whose ``<colab_notebooks_dir>/<page stem>.ipynb`` exists under the book root.
``colab_url_for`` is a plain function so that tests can check the URL without building.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

DEFAULT_COLAB = "https://colab.research.google.com"


def split_github_url(url: str) -> tuple[str, str]:
    """``https://github.com/org/repo(.git)`` -> ``("org", "repo")``; ValueError otherwise."""
    if "github.com/" not in (url or ""):
        raise ValueError(f"repository url must be a GitHub URL (https://github.com/<org>/<repo>), got {url!r}")
    parts = [p for p in url.split("github.com/", 1)[1].split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"repository url must look like https://github.com/<org>/<repo>, got {url!r}")
    org, repo = parts[0], parts[1]
    if repo.endswith(".git"):
        repo = repo[:-4]
    return org, repo


def colab_url_for(
    chapter: str,
    repository_url: str,
    branch: str = "main",
    notebooks_dir: str = "notebooks",
    colab_url: str = DEFAULT_COLAB,
) -> str:
    """The Colab URL of a chapter: ``<colab>/github/<org>/<repo>/blob/<branch>/<dir>/<chapter>.ipynb``."""
    org, repo = split_github_url(repository_url)
    stem = Path(chapter).name
    for suffix in (".md", ".ipynb"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    nb_path = f"{notebooks_dir.strip('/')}/{stem}.ipynb" if notebooks_dir.strip("/") else f"{stem}.ipynb"
    return f"{colab_url.rstrip('/')}/github/{org}/{repo}/blob/{branch}/{nb_path}"


def _theme_options(app: Sphinx) -> dict[str, Any]:
    return dict(app.config.html_theme_options or {})


def _url_for_doc(app: Sphinx, docname: str) -> str | None:
    """Colab URL for ``docname`` if it has a paired notebook, else None."""
    nb_dir = app.config.colab_notebooks_dir
    stem = Path(docname).name
    if not (Path(app.srcdir) / nb_dir / f"{stem}.ipynb").is_file():
        return None
    opts = _theme_options(app)
    repo_url = opts.get("repository_url", "")
    if not repo_url:
        return None
    branch = opts.get("repository_branch") or "main"
    colab = (opts.get("launch_buttons") or {}).get("colab_url") or DEFAULT_COLAB
    try:
        return colab_url_for(stem, repo_url, branch, nb_dir, colab)
    except ValueError as exc:
        LOGGER.warning(f"[colab] {exc}", type="colab", subtype="repository")
        return None


def _is_notebook_doc(app: Sphinx, docname: str) -> bool:
    return "kernelspec" in app.env.metadata.get(docname, {})


def add_colab_link(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Insert an "Open in Colab" paragraph right after the first section title of a chapter."""
    url = _url_for_doc(app, docname)
    if url is None:
        if _is_notebook_doc(app, docname) and docname.startswith("book/"):
            stem = Path(docname).name
            LOGGER.warning(
                f"[colab] {docname} is a notebook but {app.config.colab_notebooks_dir}/{stem}.ipynb "
                "does not exist (run `make sync`)",
                location=docname,
                type="colab",
                subtype="unpaired",
            )
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    ref = nodes.reference("", "Open this chapter in Colab", refuri=url, classes=["colab-link"])
    para = nodes.paragraph("", "", classes=["colab-badge"])
    para += ref
    para += nodes.Text(
        " (runs the laptop profile on a free CPU runtime; the first cell installs cdlib there)"
    )
    title_index = 0
    for i, child in enumerate(section.children):
        if isinstance(child, nodes.title):
            title_index = i + 1
            break
    section.insert(title_index, para)


def fix_colab_button(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Point the theme's Colab launch button at notebooks/<chapter>.ipynb (runs after the theme)."""
    buttons = context.get("header_buttons")
    if not buttons:
        return
    url = _url_for_doc(app, pagename)
    if url is not None:
        context["colab_notebook_url"] = url
    for group in list(buttons):
        if group.get("label") != "launch-buttons":
            continue
        kept = []
        for b in group.get("buttons", []):
            if b.get("text") == "Colab":
                if url is None:
                    continue  # a Colab link to a Markdown file would not open
                b = dict(b, url=url)
            kept.append(b)
        group["buttons"] = kept
        if not kept:
            buttons.remove(group)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("colab_notebooks_dir", "notebooks", "env")
    app.connect("doctree-resolved", add_colab_link)
    # sphinx-book-theme adds its launch buttons at priority 501; run after it.
    app.connect("html-page-context", fix_colab_button, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
