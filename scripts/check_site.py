#!/usr/bin/env python3
"""Check the built book in headless Chromium and take a screenshot of every page.

    python scripts/check_site.py [--html _build/html] [--out _build/screenshots]   (= make site-check)

Serves ``_build/html`` on a free local port, loads ``index.html`` and every page under ``book/``
in headless Chromium (Debian package ``chromium``) and

* fails if a page shows an error: a rendered traceback, a Python error name in a cell output, a
  Sphinx/docutils error box (``system-message``, ``problematic``);
* fails if a cell output is not clean: any stderr output block, a path of the building machine
  (``/tmp/``, ``/home/``, ``/root/``, ``/work/``), a cell whose output is shown twice, ``$...$`` math left
  unrendered, MathJax loaded from the internet (these checks need only the HTML: :func:`check_html`,
  which the tests call directly);
* fails if a page with math shows none typeset by MathJax in the browser (MathJax is served from the build);
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
import functools
import html
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
REDIRECT_RE = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.I)

# Added by the local server before </body>: waits for every image, then records naturalWidth and the
# page height as attributes that --dump-dom prints.
PROBE = """<script>
(function () {
  function done() {
    var imgs = Array.prototype.slice.call(document.images);
    imgs.forEach(function (im) { im.setAttribute("data-icm-nw", String(im.naturalWidth)); });
    var h = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);
    document.body.setAttribute("data-icm-height", String(h));
    document.body.setAttribute("data-icm-checked", "1");
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    imgs.forEach(function (im) { if (im.loading === "lazy") { im.loading = "eager"; } });
    Promise.all(imgs.map(function (im) {
      if (im.complete) { return Promise.resolve(); }
      return new Promise(function (r) { im.addEventListener("load", r); im.addEventListener("error", r); });
    })).then(function () { setTimeout(done, 200); });
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
    """Collects <img> (src, data-icm-nw, inside <article>?), <a href>, cell-output text, body attrs.

    Cell outputs: every element with class ``cell_output`` (myst-nb's container of one code cell's
    outputs) starts a cell; each of its child elements is one output of that cell, recorded in
    ``outputs`` as ``{"cell": <cell number>, "text": ..., "stderr": <class "stderr">}``.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[dict] = []
        self.links: list[str] = []
        self.body_attrs: dict = {}
        # one dict per open element: tag, article, output, stderr (flags inherited from the parents),
        # cell (the cell number when the element is a cell_output), out (index into self.outputs)
        self._stack: list[dict] = []
        self.output_text: list[str] = []
        self.stderr_text: list[str] = []
        self.outputs: list[dict] = []
        self._cells = 0

    VOID = {"img", "br", "hr", "meta", "link", "input", "source", "area", "base", "col", "embed", "wbr"}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        words = cls.split()
        parent = self._stack[-1] if self._stack else {"article": False, "output": False, "stderr": False,
                                                       "cell": None, "out": None}
        entry = {
            "tag": tag,
            "article": parent["article"] or tag == "article" or "bd-article" in words,
            "output": parent["output"] or bool(re.search(r"\b(cell_output|output)\b", cls)),
            "stderr": parent["stderr"] or ("output" in words and "stderr" in words),
            "cell": None,
            "out": parent["out"],
        }
        if parent["cell"] is not None:  # a direct child of a cell_output: one output of that cell
            self.outputs.append({"cell": parent["cell"], "text": [], "stderr": "stderr" in words})
            entry["out"] = len(self.outputs) - 1
        if "cell_output" in words:
            self._cells += 1
            entry["cell"] = self._cells
        if tag == "body":
            self.body_attrs = a
        if tag == "img":
            self.images.append({"src": a.get("src", ""), "nw": a.get("data-icm-nw"), "in_article": entry["article"]})
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
        if top["stderr"]:
            self.stderr_text.append(data)
        if top["out"] is not None:
            self.outputs[top["out"]]["text"].append(data)


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
    * ``$...$`` left as text in a cell output (math that was not rendered).
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
    return errors


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
        proc = run_chromium(chromium, [f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom"], page_url + "?icm-probe=1")
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
    args = ap.parse_args(argv)

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
