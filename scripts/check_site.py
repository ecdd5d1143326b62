#!/usr/bin/env python3
"""Check the built book in headless Chromium and take a screenshot of every page.

    python scripts/check_site.py [--html _build/html] [--out _build/screenshots]   (= make site-check)
    python scripts/check_site.py --code-lines [book/ch01_learned_compression.md ...]   (no build, no browser)

Serves ``_build/html`` on a free local port, loads ``index.html`` and every page under ``book/``
in headless Chromium (Debian package ``chromium``) and

* fails if a page shows an error: a rendered traceback, a Python error name in a cell output, a
  Sphinx/docutils error box (``system-message``, ``problematic``);
* fails if a cell output is not clean: any stderr output block, a path of the building machine
  (``/tmp/``, ``/home/``, ``/root/``, ``/work/``), a cell whose output is shown twice, ``$...$`` math left
  unrendered, MathJax loaded from the internet (these checks need only the HTML: :func:`check_html`,
  which the tests call directly);
* fails if math is left as TeX source: ``$$``, ``\\(``, ``\\[``, ``\\begin{`` or ``$...$`` with TeX in it in the
  page text outside code and outside the ``math`` elements Sphinx emits (in the HTML and again in the DOM
  after MathJax ran), or a ``math`` element that MathJax did not typeset in the browser (MathJax is served
  from the build);
* fails if code is wider than the column: a line of a code block longer than :data:`MAX_CODE_CHARS`
  characters in the HTML, and any ``<pre>`` in the article that scrolls sideways in Chromium at
  :data:`WIDTH` px (``scrollWidth > clientWidth``; code cells and cell outputs);
  ``--code-lines`` lists the offending source lines of ``book/*.md`` instead;
* fails if a figure's text is too small to read: every figure (an ``<img>`` of a cell output or under
  ``_images/``) must be a PNG with a ``tEXt`` chunk ``cdlib:min_font_px`` (the smallest text in the
  figure, in pixels of the PNG, written by :mod:`cdlib.plots`), and that size scaled to the width the
  page shows the figure at (measured in Chromium; :data:`COLUMN_PX` without a browser) must be at least
  :data:`MIN_FONT_PX` px: a figure wider than the column is shrunk, and its legend with it;
* fails if a BD table (a pandas table with a ``note`` column and ``BD...`` columns) has a row whose BD
  number is missing (NaN, empty) and whose note is empty, or a note cut short (``...``, ``…``);
* fails if an ``<img>`` points at a file that is not in the build, or did not load in the browser
  (``naturalWidth == 0``; measured by a small script the local server adds to each page, read back
  with ``--dump-dom``);
* fails if a chapter page (``book/ch*.html``) has no figure, or its Colab link does not point at
  ``notebooks/<chapter>.ipynb`` of the repository in ``_config.yml``;
* saves a full-page screenshot per page in ``_build/screenshots/``.

Prints a table (page, images, figures, Colab link, screenshot, status). Exit status: 0 all good,
1 a page failed, 2 the check could not run (no build, no Chromium).
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import math
import os
import struct
import zlib
import http.server
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
]
VIRTUAL_TIME_MS = 15000
WIDTH = 1280
MAX_HEIGHT = 16000
MIN_HEIGHT = 900

# Code wider than the column. Measured in Chromium at WIDTH = 1280 px (a laptop) on the book's
# sphinx-book-theme pages: a code cell's <pre> is 666 px wide (clientWidth) with 16 px padding on each
# side, its font 14 px monospace at 8.43 px per character (0.602 em: DejaVu Sans Mono, Menlo, Consolas
# alike), so (666 - 32) / 8.43 = 75.2 characters fit; at 1440 px, 87. A longer line scrolls sideways.
MAX_CODE_CHARS = 75
# A scrollWidth this much over clientWidth counts as overflow (sub-pixel rounding).
OVERFLOW_TOL_PX = 2
# Figures. The width at which the main column shows a wide image at WIDTH (max-width: 100%; measured:
# 688 px for an <img> of a cell output, 672 px for one in a <figure>, e.g. {glue:figure}); the estimate
# when the browser gives no width (a figure in a collapsed cell, no browser).
COLUMN_PX = 672
# The smallest text (tick labels, legend) a figure may show on the page, in CSS px. Body text is 16 px;
# 9 px is about the smallest a reader can still read on a laptop without zooming.
MIN_FONT_PX = 9.0
# PNG text chunk with the smallest font size in a figure, in pixels of the PNG (written by cdlib.plots).
FONT_KEY = "cdlib:min_font_px"

# Text that must never appear in a rendered page (anywhere in the HTML source).
PAGE_ERROR_PATTERNS = [
    (re.compile(r"Traceback \(most recent call last\)"), "rendered Python traceback"),
    (re.compile(r'class="[^"]*\boutput traceback\b'), "cell error output (traceback)"),
    (re.compile(r'class="[^"]*\bsystem-message\b'), "Sphinx/docutils error box (system-message)"),
    (re.compile(r'class="[^"]*\bproblematic\b'), "unresolved markup (problematic)"),
]
# Inside cell outputs only (prose may legitimately name an exception).
OUTPUT_ERROR_RE = re.compile(
    r"\b(ModuleNotFoundError|ImportError|NameError|AttributeError|TypeError|ValueError|KeyError|"
    r"IndexError|RuntimeError|FileNotFoundError|AssertionError|ZeroDivisionError|NotImplementedError|"
    r"CalledProcessError|OSError)\b"
)
STDERR_ERROR_RE = re.compile(r"(Error|Exception|Traceback)")
# A path of the machine that built the book (a temporary folder, a home, the checkout) in a cell output.
MACHINE_PATH_RE = re.compile(r"(?<![\w.~-])/(?:tmp|home|root|work|Users|var/folders)/[^\s'\"<>)]*")
# $...$ left as text in a cell's Markdown output: it was not parsed as MyST (nb_render_markdown_format).
RAW_MATH_RE = re.compile(r"\$[^$\s][^$]{0,200}?\$")
# MathJax must come from the build (_static/mathjax/, book/_ext/mathjax_local.py), not from the internet.
REMOTE_MATHJAX_RE = re.compile(r'<script[^>]+src="(?:https?:)?//[^"]*mathjax[^"]*"', re.I)
# Math that MathJax typesets (sphinx.ext.mathjax marks it with these classes).
MATH_NODE_RE = re.compile(r'class="[^"]*\bmath\b[^"]*"')
# TeX left as text in the page outside code and outside the math elements: display math, \( \[ \begin{,
# or $...$ with a TeX character in it ($x$ alone may be a price or a shell variable: not reported).
PROSE_MATH_RE = re.compile(r"\$\$|\\\(|\\\[|\\begin\{|\$(?=[^$]*[\\^_{}])[^$\s][^$]{0,200}?\$")
# A BD table: a column whose header looks like a BD number; a cell that shows no number; a cut note.
BD_HEADER_RE = re.compile(r"^\s*(BD\b|BD[-_ ]|bd_)", re.I)
MISSING_CELL_RE = re.compile(r"^\s*(|nan|NaN|None|<NA>|NaT|-|\u2014|\u2013)\s*$")
TRUNCATED_RE = re.compile(r"(\.\.\.|\u2026)\s*$")
REDIRECT_RE = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.I)

# Added by the local server before </body>: waits for every image, then records naturalWidth and the
# page height as attributes that --dump-dom prints.
PROBE = """<script>
(function () {
  function done() {
    var imgs = Array.prototype.slice.call(document.images);
    imgs.forEach(function (im) {
      im.setAttribute("data-icm-nw", String(im.naturalWidth));
      im.setAttribute("data-icm-dw", String(Math.round(im.getBoundingClientRect().width)));
    });
    var art = document.querySelector(".bd-article") || document.querySelector("article") || document.body;
    Array.prototype.slice.call(art.querySelectorAll("pre")).forEach(function (p) {
      if (p.clientWidth > 0) {
        p.setAttribute("data-icm-sw", String(p.scrollWidth));
        p.setAttribute("data-icm-cw", String(p.clientWidth));
      }
    });
    var code = art.querySelector(".cell_input pre");
    if (code && code.clientWidth > 0) {
      var st = getComputedStyle(code), probe = document.createElement("span");
      probe.textContent = "0123456789".repeat(10);
      code.appendChild(probe);
      var cw = probe.getBoundingClientRect().width / 100;
      code.removeChild(probe);
      var inner = code.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
      document.body.setAttribute("data-icm-code-chars", String(Math.floor(inner / cw + 0.01)));
    }
    var math = Array.prototype.slice.call(document.querySelectorAll(".math"));
    var raw = math.filter(function (m) { return !m.querySelector("mjx-container"); });
    document.body.setAttribute("data-icm-math", String(math.length));
    document.body.setAttribute("data-icm-math-raw", String(raw.length));
    if (raw.length) { document.body.setAttribute("data-icm-math-raw-text", raw[0].textContent.slice(0, 60)); }
    var h = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);
    document.body.setAttribute("data-icm-height", String(h));
    document.body.setAttribute("data-icm-checked", "1");
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    imgs.forEach(function (im) { if (im.loading === "lazy") { im.loading = "eager"; } });
    var mj = (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) || Promise.resolve();
    Promise.all(imgs.map(function (im) {
      if (im.complete) { return Promise.resolve(); }
      return new Promise(function (r) { im.addEventListener("load", r); im.addEventListener("error", r); });
    }).concat([mj.catch(function () {})])).then(function () { setTimeout(done, 200); });
  });
})();
</script>"""


# ----------------------------------------------------------------------------------------- server
class ProbeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files; HTML pages get the PROBE script when the query string has ?icm-probe."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        parsed = urlparse(self.path)
        if "icm-probe" in parsed.query and parsed.path.endswith(".html"):
            local = Path(self.translate_path(parsed.path))
            if local.is_file():
                text = local.read_text(encoding="utf-8", errors="replace")
                idx = text.lower().rfind("</body>")
                text = text[:idx] + PROBE + text[idx:] if idx >= 0 else text + PROBE
                data = text.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        super().do_GET()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    port = free_port()
    handler = functools.partial(ProbeHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{port}/"


# ----------------------------------------------------------------------------------------- chromium
def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(chromium: str, extra: list[str], url: str, timeout: float = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="icm-chromium-")
    try:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# ----------------------------------------------------------------------------------------- parsing
class PageParser(HTMLParser):
    """Collects <img> (src, data-icm-* of the probe, inside <article>?, in a cell output?), <a href>,
    cell-output text, the page's prose, its <pre> blocks, its pandas tables and the body attributes.

    Cell outputs: every element with class ``cell_output`` (myst-nb's container of one code cell's
    outputs) starts a cell; each of its child elements is one output of that cell, recorded in
    ``outputs`` as ``{"cell": <cell number>, "text": ..., "stderr": <class "stderr">}``.

    Prose: text outside <head>, code (``pre``, ``code``, ``script``, ``style``, ``textarea``), math
    (class ``math``, ``mjx-container``) and cell outputs. ``pres``: one dict per <pre> (``text``,
    ``output``, ``input``: in a cell_input, ``article``, ``sw``/``cw``: the probe's scrollWidth and
    clientWidth). ``tables``: every ``<table class="dataframe">`` as ``{"head": rows, "body": rows}``,
    a row being its cells' texts (th and td, in order).
    """

    RAW_TAGS = {"head", "pre", "code", "script", "style", "textarea", "mjx-container", "svg", "math"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[dict] = []
        self.links: list[str] = []
        self.body_attrs: dict = {}
        # one dict per open element: tag, article, output, stderr, raw, input (flags inherited from the
        # parents), cell (the cell number when the element is a cell_output), out (index into
        # self.outputs), pre (index into self.pres), table/row/cell_i (the table being read)
        self._stack: list[dict] = []
        self.output_text: list[str] = []
        self.stderr_text: list[str] = []
        self.outputs: list[dict] = []
        self.prose: list[str] = []
        self.pres: list[dict] = []
        self.tables: list[dict] = []
        self._cells = 0

    VOID = {"img", "br", "hr", "meta", "link", "input", "source", "area", "base", "col", "embed", "wbr"}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        words = cls.split()
        parent = self._stack[-1] if self._stack else {"article": False, "output": False, "stderr": False,
                                                       "cell": None, "out": None, "raw": False, "input": False,
                                                       "pre": None, "table": None, "tcell": None}
        entry = {
            "tag": tag,
            "article": parent["article"] or tag == "article" or "bd-article" in words,
            "output": parent["output"] or bool(re.search(r"\b(cell_output|output)\b", cls)),
            "stderr": parent["stderr"] or ("output" in words and "stderr" in words),
            "raw": parent["raw"] or tag in self.RAW_TAGS or "math" in words,
            "input": parent["input"] or "cell_input" in words,
            "cell": None,
            "out": parent["out"],
            "pre": parent["pre"],
            "table": parent["table"],
            "tcell": parent["tcell"],
        }
        if parent["cell"] is not None:  # a direct child of a cell_output: one output of that cell
            self.outputs.append({"cell": parent["cell"], "text": [], "stderr": "stderr" in words})
            entry["out"] = len(self.outputs) - 1
        if "cell_output" in words:
            self._cells += 1
            entry["cell"] = self._cells
        if tag == "body":
            self.body_attrs = a
        if tag == "pre":
            self.pres.append({"text": [], "output": entry["output"], "input": entry["input"],
                              "article": entry["article"], "sw": _int(a.get("data-icm-sw")),
                              "cw": _int(a.get("data-icm-cw"))})
            entry["pre"] = len(self.pres) - 1
        if tag == "table" and "dataframe" in words:
            self.tables.append({"head": [], "body": []})
            entry["table"] = len(self.tables) - 1
            entry["section"] = "body"
        elif entry["table"] is not None:
            table = self.tables[entry["table"]]
            if tag in ("thead", "tbody"):
                entry["section"] = "head" if tag == "thead" else "body"
            elif tag == "tr":
                section = next((e["section"] for e in reversed(self._stack) if "section" in e), "body")
                table[section].append([])
                entry["row"] = table[section][-1]
            elif tag in ("th", "td"):
                row = next((e["row"] for e in reversed(self._stack) if "row" in e), None)
                if row is not None:
                    row.append([])
                    entry["tcell"] = row[-1]
        if tag == "img":
            self.images.append({"src": a.get("src", ""), "nw": a.get("data-icm-nw"), "dw": _num(a.get("data-icm-dw")),
                                "width": _num(a.get("width")), "in_article": entry["article"],
                                "in_output": entry["output"]})
            if entry["out"] is not None:  # an image output: its source tells it apart from other outputs
                self.outputs[entry["out"]]["text"].append(f"<img {a.get('src', '')}>")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag not in self.VOID:
            self._stack.append(entry)

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i]["tag"] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not self._stack:
            return
        top = self._stack[-1]
        if top["output"]:
            self.output_text.append(data)
        elif not top["raw"]:
            self.prose.append(data)
        if top["stderr"]:
            self.stderr_text.append(data)
        if top["out"] is not None:
            self.outputs[top["out"]]["text"].append(data)
        if top["pre"] is not None:
            self.pres[top["pre"]]["text"].append(data)
        if top["tcell"] is not None:
            top["tcell"].append(data)

    def table_rows(self) -> list[tuple[list[list[str]], list[list[str]]]]:
        """Each pandas table as (header rows, body rows), every cell's text joined and stripped."""
        def rows(rs):
            return [["".join(c).strip() for c in r] for r in rs]
        return [(rows(t["head"]), rows(t["body"])) for t in self.tables]


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _num(v) -> float | None:
    try:
        x = float(str(v).strip().removesuffix("px"))
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def parse(text: str) -> PageParser:
    p = PageParser()
    p.feed(text)
    p.close()
    return p


# ----------------------------------------------------------------------------------------- config
def expected_colab_url(chapter: str) -> str | None:
    """The Colab URL the book should show for a chapter, from _config.yml (same rule as book/_ext/colab.py)."""
    try:
        import yaml

        cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
        sys.path.insert(0, str(ROOT / "book" / "_ext"))
        from colab import colab_url_for  # type: ignore

        repo = cfg.get("repository", {})
        nb_dir = (cfg.get("sphinx", {}).get("config", {}) or {}).get("colab_notebooks_dir", "notebooks")
        colab = (cfg.get("launch_buttons", {}) or {}).get("colab_url") or "https://colab.research.google.com"
        return colab_url_for(chapter, repo["url"], repo.get("branch") or "main", nb_dir, colab)
    except Exception as exc:  # pragma: no cover - reported, not fatal
        print(f"check_site: warning: cannot compute the expected Colab URL: {exc}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------- checks
@dataclass
class Result:
    page: str
    images: int = 0
    images_ok: int = 0
    figures: int = 0
    colab: str = "-"
    screenshot: str = ""
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_local(src: str) -> bool:
    return bool(src) and not src.startswith(("http://", "https://", "//", "data:"))


def _snippet(text: str, n: int = 100) -> str:
    return " ".join(text.split())[:n]


def check_html(source: str) -> list[str]:
    """The checks that need only a page's HTML (no browser): one message per defect found.

    * error boxes anywhere in the page (``PAGE_ERROR_PATTERNS``), a Python error name in a cell output;
    * a stderr output block (warnings, progress bars, errors: a page shows none);
    * a path of the building machine (``/tmp/...``, ``/home/...``, ``/root/...``, ``/work/...``) in an output;
    * a cell that shows the same output twice;
    * ``$...$`` left as text in a cell output, TeX left as text in the prose (:func:`prose_math_errors`);
    * a code line longer than MAX_CODE_CHARS (:func:`long_code_errors`);
    * a BD table row without a BD number and without a note, a note cut short (:func:`bd_table_errors`).

    The figure rules need the image files (:func:`check_figures`), the width rules the browser
    (:func:`overflow_errors`, :func:`math_errors` on the DOM that Chromium dumps).
    """
    errors: list[str] = []
    for pattern, what in PAGE_ERROR_PATTERNS:
        if pattern.search(source):
            errors.append(what)
    static = parse(source)
    out_text = "".join(static.output_text)
    m = OUTPUT_ERROR_RE.search(out_text)
    if m:
        errors.append(f"{m.group(1)} in a cell output")
    m = RAW_MATH_RE.search(out_text)
    if m:
        errors.append(f"unrendered math in a cell output: {m.group(0)[:60]!r}")
    err_text = "".join(static.stderr_text)
    if STDERR_ERROR_RE.search(err_text):
        errors.append(f"error on stderr output: {_snippet(err_text)!r}")
    m = REMOTE_MATHJAX_RE.search(source)
    if m:
        errors.append(f"MathJax loaded from the internet ({m.group(0)[:80]}): the page needs a network to show math")
    n_stderr = sum(1 for o in static.outputs if o["stderr"])
    if n_stderr or err_text.strip():
        errors.append(f"{max(n_stderr, 1)} stderr output block(s): {_snippet(err_text) or '(empty)'!r}")
    paths = sorted(set(MACHINE_PATH_RE.findall(out_text)))
    if paths:
        errors.append(f"machine path(s) in a cell output: {', '.join(paths[:3])}")
    seen: dict[tuple[int, str], int] = {}
    for o in static.outputs:
        text = " ".join("".join(o["text"]).split())
        if not text:
            continue
        key = (o["cell"], text)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            errors.append(f"cell output shown twice: {text[:60]!r}")
    errors.extend(prose_math_errors(static))
    errors.extend(long_code_errors(static))
    errors.extend(bd_table_errors(static))
    return errors


def prose_math_errors(page: PageParser) -> list[str]:
    """TeX left as text in the page's prose (outside code, math elements and cell outputs)."""
    text = "".join(page.prose)
    found = [m.group(0) for m in PROSE_MATH_RE.finditer(text)]
    if not found:
        return []
    m = PROSE_MATH_RE.search(text)
    context = _snippet(text[max(0, m.start() - 30):m.end() + 30], 80)
    return [f"unrendered math in the text ({len(found)}x), e.g. {context!r}"]


def long_code_lines(text: str, limit: int = MAX_CODE_CHARS) -> list[tuple[int, int, str]]:
    """(line number from 1, length, line) of each line of ``text`` longer than ``limit`` characters
    (tabs count to the next multiple of 8, as a browser shows them)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        n = len(line.rstrip().expandtabs(8))
        if n > limit:
            out.append((i, n, line.rstrip()))
    return out


def long_code_errors(page: PageParser, limit: int = MAX_CODE_CHARS) -> list[str]:
    """Code blocks of the article (code cells, literal blocks; not cell outputs) with a line longer
    than ``limit`` characters: wider than the column at WIDTH px, the reader scrolls sideways."""
    errors = []
    for pre in page.pres:
        if pre["output"] or not pre["article"]:
            continue
        lines = long_code_lines("".join(pre["text"]), limit)
        if lines:
            n, line = max((n, line) for _, n, line in lines)
            errors.append(f"code wider than the column: {len(lines)} line(s) over {limit} characters, "
                          f"the longest {n}: {line.strip()[:60]!r}")
    return errors


def bd_table_errors(page: PageParser) -> list[str]:
    """pandas tables with a ``note`` column and BD columns (header ``BD...``/``bd_...``): each row
    whose BD number is missing needs a note saying why, and no note may be cut short ("...", "…")."""
    errors = []
    for head, body in page.table_rows():
        header = next((r for r in head if any(c.strip().lower() == "note" for c in r)), None)
        if header is None:
            continue
        # body rows start with the index cells (th); align the columns from the right
        note_r = len(header) - 1 - [c.strip().lower() for c in header].index("note")
        bd_r = [len(header) - 1 - i for i, c in enumerate(header) if BD_HEADER_RE.match(c)]
        for row in body:
            if note_r >= len(row):
                continue
            note = row[len(row) - 1 - note_r]
            label = " / ".join(c for c in row[:max(1, len(row) - len(header) + 1)] if c) or "?"
            missing = [header[len(header) - 1 - r] for r in bd_r
                       if r < len(row) and MISSING_CELL_RE.match(row[len(row) - 1 - r])]
            if TRUNCATED_RE.search(note):
                errors.append(f"BD table row {label!r}: note cut short: {note[-60:]!r}")
            elif missing and not note.strip():
                errors.append(f"BD table row {label!r}: no BD number ({', '.join(missing)}) and an empty note")
    return errors


# ----------------------------------------------------------------------------------------- figures
def png_chunks(data: bytes):
    """(type, payload) of each chunk of a PNG; raises ValueError if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind.decode("latin-1"), data[pos + 8:pos + 8 + n]
        if kind == b"IEND":
            return
        pos += 12 + n


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG as {keyword: text}; {} if not a PNG."""
    out: dict[str, str] = {}
    try:
        for kind, payload in png_chunks(data):
            try:
                if kind == "tEXt":
                    k, _, v = payload.partition(b"\0")
                    out[k.decode("latin-1")] = v.decode("latin-1")
                elif kind == "zTXt":
                    k, _, v = payload.partition(b"\0")
                    out[k.decode("latin-1")] = zlib.decompress(v[1:]).decode("latin-1")
                elif kind == "iTXt":
                    k, _, rest = payload.partition(b"\0")
                    compressed, rest = rest[0], rest[2:]
                    _lang, _, rest = rest.partition(b"\0")
                    _tkey, _, v = rest.partition(b"\0")
                    out[k.decode("latin-1")] = (zlib.decompress(v) if compressed else v).decode("utf-8")
            except (zlib.error, UnicodeDecodeError, IndexError):
                continue
    except (ValueError, struct.error):
        return {}
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR; None if not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def png_min_font_px(png_bytes: bytes) -> float | None:
    """The smallest font size in the figure, in pixels of the PNG (its ``tEXt`` chunk
    ``cdlib:min_font_px``); ``inf`` for a figure without text (cdlib.plots writes ``"inf"``); None when
    the PNG has no such chunk, or it is not a positive number."""
    value = png_text(png_bytes).get(FONT_KEY)
    if value is not None and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    return _num(value)


def figure_font_error(src: str, min_font_px: float | None, natural_w: float, displayed_w: float,
                      min_px: float = MIN_FONT_PX) -> str | None:
    """The decision on one figure: None if its smallest text is readable on the page, else why not.

    ``min_font_px`` is in pixels of the PNG (``natural_w`` wide); the page shows it ``displayed_w`` CSS
    px wide, so the text is ``min_font_px * displayed_w / natural_w`` px tall there."""
    name = src.rsplit("/", 1)[-1][:24]
    if min_font_px is None:
        return f"figure {name} has no PNG text chunk {FONT_KEY} (save it with cdlib.plots)"
    shown = min_font_px * displayed_w / natural_w if natural_w > 0 else min_font_px
    if shown < min_px:
        scale = displayed_w / natural_w if natural_w > 0 else 1.0
        why = (f"shrunk to {displayed_w:.0f} of {natural_w:.0f} px" if scale < 0.995
               else f"shown at {displayed_w:.0f} px")
        return (f"figure {name}: smallest text {shown:.1f} px on the page < {min_px:g} px "
                f"({min_font_px:g} px in the PNG, {why}; larger fonts or a narrower figure)")
    return None


def _image_bytes(src: str, html_dir: Path, rel: str) -> bytes | None:
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        try:
            return base64.b64decode(payload) if head.endswith(";base64") else unquote(payload).encode("latin-1")
        except ValueError:
            return None
    target = Path(os.path.normpath(Path(rel).parent / unquote(urlparse(src).path)))
    path = html_dir / target
    return path.read_bytes() if path.is_file() else None


def is_figure(img: dict) -> bool:
    """A figure of the book: an image of a cell output, or one Sphinx copied to _images/ (not the
    theme's logos under _static/, not an external image)."""
    src = img["src"]
    if src.startswith(("http://", "https://", "//")) or "_static/" in src:
        return False
    return img.get("in_output", False) or (img.get("in_article", False) and "_images/" in src)


def check_figures(page: PageParser, html_dir: Path, rel: str, column_px: float = COLUMN_PX) -> list[str]:
    """The figure rules on one page: each figure (:func:`is_figure`) a PNG with ``cdlib:min_font_px``
    whose smallest text is at least MIN_FONT_PX on the page. The displayed width is the browser's
    (``data-icm-dw`` of the probe) when the page was dumped from Chromium, else ``width=`` of the
    <img>, else min(natural width, ``column_px``). A missing file is reported elsewhere."""
    errors = []
    for img in page.images:
        if not is_figure(img):
            continue
        data = _image_bytes(img["src"], html_dir, rel)
        if data is None:
            continue
        size = png_size(data)
        if size is None:
            errors.append(f"figure {img['src'].rsplit('/', 1)[-1][:24]} is not a PNG (it cannot carry {FONT_KEY})")
            continue
        natural = float(size[0])
        shown = img.get("dw") or img.get("width") or min(natural, column_px)
        err = figure_font_error(img["src"], png_min_font_px(data), natural, shown)
        if err:
            errors.append(err)
    return errors


# ----------------------------------------------------------------------------------------- browser
def overflows(scroll_w: int | None, client_w: int | None, tol: int = OVERFLOW_TOL_PX) -> bool:
    """The decision on a measured <pre>: it scrolls sideways (content wider than the box)."""
    return bool(scroll_w and client_w) and scroll_w > client_w + tol


def overflow_errors(page: PageParser) -> list[str]:
    """<pre> blocks of the article that scroll sideways in the browser (``data-icm-sw``/``-cw``);
    code blocks with a line over MAX_CODE_CHARS are left out (:func:`long_code_errors` reports them)."""
    errors = []
    for pre in page.pres:
        if not pre["article"] or not overflows(pre["sw"], pre["cw"]):
            continue
        if not pre["output"] and long_code_lines("".join(pre["text"])):
            continue
        what = "cell output" if pre["output"] else "code"
        first = max("".join(pre["text"]).splitlines() or [""], key=len).strip()
        errors.append(f"{what} wider than the column in the browser ({pre['sw']} > {pre['cw']} px): {first[:60]!r}")
    return errors


def math_errors(body_attrs: dict) -> list[str]:
    """The decision on the probe's math count: every ``math`` element typeset by MathJax."""
    total, raw = _int(body_attrs.get("data-icm-math")) or 0, _int(body_attrs.get("data-icm-math-raw")) or 0
    if raw:
        return [f"math not typeset in the browser: {raw} of {total} math element(s), e.g. "
                f"{body_attrs.get('data-icm-math-raw-text', '')!r} (MathJax did not load from the build?)"]
    return []


# ----------------------------------------------------------------------------------------- sources
CODE_INFO_RE = re.compile(r"^\{(code-cell|code-block|code|sourcecode)\}|^[\w+-]*$")
FENCE_RE = re.compile(r"^(\s*(?::\s+)?)(`{3,}|~{3,})\s*(.*?)\s*$")  # also ": ```bash" (a definition)


def long_code_source_lines(paths, limit: int = MAX_CODE_CHARS) -> list[tuple[Path, int, int, str, bool]]:
    """(file, line number, length, line, hidden) of every line longer than ``limit`` characters in the
    code the pages show: fenced code (```` ```{code-cell} ````, ```` ```python ````, plain ```` ``` ````) of
    MyST files, except code cells tagged remove-input or remove-cell (not shown) and cell options
    (``:tags:``, a leading ``---`` YAML block); ``hidden``: a cell tagged hide-input or hide-cell (shown
    collapsed; as wide as the others once opened). Lines inside other directives' fences are scanned too."""
    out = []
    for path in map(Path, paths):
        lines = path.read_text(encoding="utf-8").splitlines()
        stack: list[str] = []  # open non-code directive fences
        i = 0
        while i < len(lines):
            m = FENCE_RE.match(lines[i])
            if not m:
                i += 1
                continue
            fence, info = m.group(2), m.group(3)
            if not info and stack and stack[-1][0] == fence[0] and len(fence) >= len(stack[-1]):
                stack.pop()  # closes a directive
                i += 1
                continue
            if info and not CODE_INFO_RE.match(info):
                stack.append(fence)  # a directive ({note}, {figure}, {math}...): look inside
                i += 1
                continue
            # a code block: find its end
            j = i + 1
            close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            body = list(range(i + 1, j))
            k = 0  # skip cell options: ":key: value" lines or a --- YAML block
            if body and lines[body[0]].strip() == "---":
                k = next((n + 1 for n in range(1, len(body)) if lines[body[n]].strip() == "---"), 0)
            while k < len(body) and re.match(r"^:\w[\w-]*:", lines[body[k]]):
                k += 1
            options = "\n".join(lines[b] for b in body[:k])
            shown = not (info.startswith("{code-cell}") and re.search(r"remove[-_](input|cell)", options))
            hidden = bool(re.search(r"hide[-_](input|cell)", options))
            if shown:
                for b in body[k:]:
                    n = len(lines[b].rstrip().expandtabs(8))
                    if n > limit:
                        out.append((path, b + 1, n, lines[b].rstrip(), hidden))
            i = j + 1
    return out


def check_page(rel: str, html_dir: Path, base_url: str, chromium: str, shots: Path) -> Result:
    res = Result(rel)
    path = html_dir / rel
    source = path.read_text(encoding="utf-8", errors="replace")
    is_chapter = re.match(r"^book/ch\d+[^/]*\.html$", rel) is not None

    # 1. what the HTML as built shows (no browser needed)
    res.errors.extend(check_html(source))
    static = parse(source)

    # 2. images exist on disk
    page_url = urljoin(base_url, rel)
    for img in static.images:
        src = img["src"]
        if not is_local(src):
            if src.startswith(("http://", "https://", "//")):
                res.notes.append(f"external image not checked: {src}")
            continue
        target = urlparse(urljoin(page_url, src)).path
        if not (html_dir / unquote(target.lstrip("/"))).is_file():
            res.errors.append(f"missing image file {src}")

    # A redirect page (index.html -> book/intro.html): the target must exist; no probe.
    redirect = REDIRECT_RE.search(source)
    if redirect:
        target = urlparse(urljoin(page_url, html.unescape(redirect.group(1)))).path
        res.notes.append(f"redirects to {target.lstrip('/')}")
        if not (html_dir / unquote(target.lstrip("/"))).is_file():
            res.errors.append(f"redirect target {target} does not exist")

    # 3. in the browser: images loaded, page height (for the screenshot)
    height = 4000
    if redirect:
        dom = PageParser()
    else:
        proc = run_chromium(chromium, [f"--virtual-time-budget={VIRTUAL_TIME_MS}",
                                       f"--window-size={WIDTH},{MIN_HEIGHT}", "--dump-dom"], page_url + "?icm-probe=1")
        dom = parse(proc.stdout)
    if redirect:
        pass
    elif dom.body_attrs.get("data-icm-checked") != "1":
        res.errors.append("page did not finish loading in Chromium (no probe result)")
        if proc.returncode != 0:
            res.errors.append(f"chromium exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
    else:
        try:
            height = int(dom.body_attrs.get("data-icm-height", "4000"))
        except ValueError:
            pass
        if MATH_NODE_RE.search(source) and "mjx-container" not in proc.stdout:
            res.errors.append("math not typeset in the browser (MathJax did not load from the build)")
        else:
            res.errors.extend(math_errors(dom.body_attrs))
        res.errors.extend(e + " (after MathJax)" for e in prose_math_errors(dom))
        res.errors.extend(overflow_errors(dom))
        chars = _int(dom.body_attrs.get("data-icm-code-chars"))
        if chars is not None and chars < MAX_CODE_CHARS:
            res.notes.append(f"a code cell line of {chars + 1} characters already scrolls at {WIDTH} px "
                             f"(MAX_CODE_CHARS = {MAX_CODE_CHARS}: is the font or the theme different?)")
        for img in dom.images:
            res.images += 1
            if img["nw"] not in (None, "0"):
                res.images_ok += 1
            elif is_local(img["src"]):
                res.errors.append(f"image did not load in the browser: {img['src']}")
            else:
                res.notes.append(f"external image did not load (offline?): {img['src']}")
            loaded = img["nw"] not in (None, "0")
            if loaded and img["in_article"] and is_local(img["src"]) and "_static/" not in img["src"]:
                res.figures += 1

    # figures: the font size the page shows (the browser's displayed widths when it ran)
    figure_page = dom if dom.body_attrs.get("data-icm-checked") == "1" else static
    res.errors.extend(check_figures(figure_page, html_dir, rel))

    # 4. chapter pages: at least one figure; Colab link to notebooks/<chapter>.ipynb
    if is_chapter:
        if res.figures == 0:
            res.errors.append("chapter page has no figure")
        stem = Path(rel).stem
        want = expected_colab_url(stem)
        colab_links = sorted({html.unescape(h) for h in static.links if "colab.research.google.com" in h})
        if want is None:
            res.colab = "?"
        elif want in colab_links:
            res.colab = "ok"
        else:
            res.colab = "MISSING"
            res.errors.append(f"no Colab link to {want}")
        wrong = [u for u in colab_links if u != want]
        if wrong:
            res.colab = "WRONG"
            res.errors.append(f"Colab link(s) not pointing at the notebook: {', '.join(wrong)}")

    # 5. full-page screenshot
    shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    if shot.exists():
        shot.unlink()
    h = max(MIN_HEIGHT, min(height, MAX_HEIGHT))
    proc = run_chromium(
        chromium,
        [f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--window-size={WIDTH},{h}", f"--screenshot={shot}"],
        page_url,
    )
    if shot.is_file() and shot.stat().st_size > 0:
        res.screenshot = str(shot.relative_to(ROOT)) if shot.is_relative_to(ROOT) else str(shot)
        if height > MAX_HEIGHT:
            res.notes.append(f"page is {height}px tall; screenshot cut at {MAX_HEIGHT}px")
    else:
        res.errors.append(f"no screenshot (chromium exit {proc.returncode})")
    return res


def pages_to_check(html_dir: Path) -> list[str]:
    pages = ["index.html"]
    pages += sorted(str(p.relative_to(html_dir)) for p in (html_dir / "book").rglob("*.html"))
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=str(ROOT / "_build" / "html"), help="built HTML folder")
    ap.add_argument("--out", default=str(ROOT / "_build" / "screenshots"), help="screenshot folder")
    ap.add_argument("--code-lines", nargs="*", metavar="MD",
                    help=f"list the code lines of book/*.md (or these files) over {MAX_CODE_CHARS} characters, "
                         "then exit (1 if any); needs no build and no browser")
    args = ap.parse_args(argv)

    if args.code_lines is not None:
        files = args.code_lines or sorted((ROOT / "book").glob("*.md"))
        found = long_code_source_lines(files)
        for path, line, n, text, hidden in found:
            shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
            print(f"{shown}:{line}: {n} > {MAX_CODE_CHARS} characters{' (collapsed cell)' if hidden else ''}: "
                  f"{text.strip()[:60]}")
        print(f"check_site: {len(found)} code line(s) wider than the column ({MAX_CODE_CHARS} characters at "
              f"{WIDTH} px)", file=sys.stderr)
        return 1 if found else 0

    html_dir = Path(args.html).resolve()
    if not (html_dir / "index.html").is_file():
        print(f"check_site: {html_dir}/index.html not found; build the book first: make book", file=sys.stderr)
        return 2
    chromium = find_chromium()
    if chromium is None:
        print(
            "check_site: headless Chromium not found. Install it, then rerun:\n"
            "  Debian/Ubuntu: sudo apt-get install -y chromium\n"
            "  macOS:         brew install --cask chromium\n"
            "  (any Chrome/Chromium on PATH as chromium, chromium-browser or google-chrome works)",
            file=sys.stderr,
        )
        return 2

    shots = Path(args.out).resolve()
    server, base_url = serve(html_dir)
    start = time.time()
    try:
        results = [check_page(rel, html_dir, base_url, chromium, shots) for rel in pages_to_check(html_dir)]
    finally:
        server.shutdown()

    # table
    rows = [("page", "images ok/total", "figures", "colab", "screenshot", "status")]
    for r in results:
        rows.append((r.page, f"{r.images_ok}/{r.images}", str(r.figures), r.colab, r.screenshot or "-",
                     "ok" if not r.errors else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    failed = [r for r in results if r.errors]
    for r in results:
        for note in dict.fromkeys(r.notes):
            print(f"note: {r.page}: {note}")
    for r in failed:
        for err in dict.fromkeys(r.errors):
            print(f"FAIL: {r.page}: {err}", file=sys.stderr)
    print(f"{len(results)} pages checked in {time.time() - start:.0f} s with {chromium}; "
          f"screenshots in {shots}")
    if failed:
        print(f"check_site: {len(failed)} page(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
