"""The site check (scripts/check_site.py, `make site-check`) fails on each defect a program can see.

Each test feeds the check a synthetic page (shaped like myst-nb's HTML under sphinx-book-theme) with
exactly one defect and asserts that the check reports it, and a clean page that passes. The rules that
need a layout (widths in the browser, MathJax) are tested through their decision functions on numbers
measured in Chromium; none of these tests needs a browser or a built book.
"""
from __future__ import annotations

import base64
import io
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import check_site as cs  # noqa: E402

sys.path.pop(0)


# ----------------------------------------------------------------------------------------- pages
def page(*cells: str, prose: str = "<p>Prose with $x$, a price of $5 and /tmp/ is fine.</p>",
         code: str = "x = 1") -> str:
    """A chapter page: ``prose``, then one code cell per argument (its source ``code``, the argument
    the inner HTML of its cell_output)."""
    body = "".join(
        '<div class="cell docutils container"><div class="cell_input docutils container">'
        f'<div class="highlight-ipython3 notranslate"><div class="highlight"><pre><span></span>{code}\n</pre></div></div>'
        f'</div><div class="cell_output docutils container">{c}</div></div>' for c in cells)
    return ('<html><head><title>Chapter</title><script>window.MathJax = {tex: {inlineMath: [["\\\\(", "\\\\)"]]}}'
            '</script></head><body><div class="bd-page"><main><article class="bd-article">'
            f'<h1>Chapter</h1>{prose}{body}</article></main></div></body></html>')


def stream(text: str, kind: str = "stream") -> str:
    return (f'<div class="output {kind} highlight-myst-ansi notranslate"><div class="highlight"><pre>'
            f'<span></span>{text}\n</pre></div></div>')


def markdown(html: str) -> str:
    return f'<div class="output text_markdown">{html}</div>'


def table(df: pd.DataFrame) -> str:
    """A DataFrame as Jupyter shows it (pandas' default display options), in a cell output."""
    return f'<div class="output text_html">{df._repr_html_()}</div>'


CLEAN_MATH = ('<p>The rate is <span class="math notranslate nohighlight">\\(R = -\\log_2 p(\\hat y)\\)</span>, '
              'and</p><div class="math notranslate nohighlight">\\[D = \\|x - \\hat x\\|^2\\]</div>')


def test_a_clean_page_passes():
    p = page(stream("parameters: {'factorized': 2968963}"), stream("a"), stream("a"),
             markdown("<p>Measured here: 3.1 dB.</p>"),
             '<div class="output text_html"><img src="x.png"></div><div class="output text_html"><img src="y.png"></div>',
             prose=CLEAN_MATH + "<p>It costs $5 and $10; see <code>$HOME/x_1$</code>.</p>",
             code="y = model(x)  # " + "c" * (cs.MAX_CODE_CHARS - len("y = model(x)  # ")))
    assert cs.check_html(p) == []


# ------------------------------------------------------------------------ one defect per page
DEFECTS = {
    "stderr": (page(stream("  0%|          | 0/5 [00:00<?, ?it/s]", "stderr")), "stderr output"),
    "machine path": (page(stream("results in /home/ana/icm/results")), "machine path"),
    "shown twice": (page(stream("test images per class: {'circle': 250}") * 2), "shown twice"),
    "raw $ math in an output": (page(markdown("<p>The bound is $\\log_2 10$ bits.</p>")), "unrendered math"),
    "raw $$ in the text": (page(prose="<p>$$D = \\|x - \\hat x\\|^2$$</p>"), "unrendered math in the text"),
    "raw \\( in the text": (page(prose="<p>the latent \\(\\hat y\\) is coded</p>"), "unrendered math in the text"),
    "raw $..$ TeX in the text": (page(prose="<p>the latent $\\hat y$ is coded</p>"), "unrendered math in the text"),
    "raw \\begin in the text": (page(prose="<p>\\begin{align} a \\end{align}</p>"), "unrendered math in the text"),
    "MathJax from a CDN": (page().replace(
        "</head>", '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script></head>'),
        "MathJax loaded from the internet"),
    "code wider than the column": (page(stream("ok"), code="y = " + "x" * (cs.MAX_CODE_CHARS - 3)),
                                   "code wider than the column"),
    "traceback": (page(stream("Traceback (most recent call last):\nValueError: boom", "traceback")), "traceback"),
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_each_defect_fails_the_check(name):
    source, expected = DEFECTS[name]
    errors = cs.check_html(source)
    assert any(expected in e for e in errors), (name, errors)


def test_math_in_the_math_elements_and_in_code_passes():
    prose = CLEAN_MATH + "<pre>s = '$$' + r'\\(x\\)'</pre><p><code>\\begin{x}</code></p>"
    assert cs.prose_math_errors(cs.parse(page(prose=prose))) == []


def test_code_width_limit_is_the_measured_column():
    # 1280 px: the code cell's <pre> is 666 px wide with 16 px padding each side, 14 px monospace at
    # 8.43 px per character (measured in Chromium on the built book)
    assert cs.MAX_CODE_CHARS == math.floor((666 - 2 * 16) / 8.42875)
    at_limit = page(stream("ok"), code="a" * cs.MAX_CODE_CHARS + "\n" + "b" * 10)
    assert cs.long_code_errors(cs.parse(at_limit)) == []
    over = cs.long_code_errors(cs.parse(page(stream("ok"), code="a" * (cs.MAX_CODE_CHARS + 1))))
    assert len(over) == 1 and f"the longest {cs.MAX_CODE_CHARS + 1}" in over[0]
    # a long line in a cell output is not code (the browser check measures outputs)
    assert cs.long_code_errors(cs.parse(page(stream("o" * 200)))) == []
    # a tab counts to the next multiple of 8, as the browser shows it
    assert cs.long_code_lines("\t" * 9 + "x" * 4) == [(1, 76, "\t" * 9 + "x" * 4)]


def test_long_code_source_lines(tmp_path):
    long = "z = " + "1 + " * 20 + "1"
    assert len(long) > cs.MAX_CODE_CHARS
    md = tmp_path / "ch09_demo.md"
    md.write_text("\n".join([
        "---", "jupytext:", "  formats: book//md:myst", "---", "",
        "# Demo", "",
        "Prose lines are wrapped by the browser: " + "word " * 30, "",
        "```{code-cell} ipython3",                      # 10
        ":tags: [hide-input]",
        "",
        long,                                           # 13: in a collapsed cell
        "short = 1",
        "```", "",
        "```{code-cell} ipython3",                      # 17
        ":tags: [remove-input]",
        long,                                           # 19: not shown
        "```", "",
        "```{code-cell} ipython3",
        "---",
        "tags: [" + "x, " * 40 + "y]",                  # a long option line is not code
        "---",
        long,                                           # 26
        "```", "",
        "````{note}",
        "A note with code:",
        "```python",
        long,                                           # 32: code inside a directive
        "```",
        "````", "",
        "Term",
        ": ```bash",
        "  make book",
        "  ```", "",
        "```{math}",
        "\\int " * 30,                                   # math, not code
        "```", "",
        "```",
        long,                                           # 46: a plain fence
        "```",
    ]) + "\n")
    found = cs.long_code_source_lines([md])
    assert [(line, hidden) for _, line, _, _, hidden in found] == [(13, True), (26, False), (32, False), (46, False)]
    assert all(n == len(long) and text == long for _, _, n, text, _ in found)


def test_code_lines_cli(tmp_path, capsys):
    md = tmp_path / "a.md"
    md.write_text("```{code-cell} ipython3\n" + "x" * 80 + "\n```\n")
    assert cs.main(["--code-lines", str(md)]) == 1
    assert f"a.md:2: 80 > {cs.MAX_CODE_CHARS} characters" in capsys.readouterr().out
    md.write_text("```{code-cell} ipython3\nx = 1\n```\n")
    assert cs.main(["--code-lines", str(md)]) == 0


# ----------------------------------------------------------------------------------------- browser
def test_overflow_decision_on_measured_widths():
    # measured at 1280 px on the built book: a code cell <pre> 666 px wide, its content 985 px
    assert cs.overflows(985, 666)
    assert not cs.overflows(666, 666) and not cs.overflows(667, 666)  # sub-pixel rounding
    assert not cs.overflows(None, 666) and not cs.overflows(985, None)


def test_overflow_errors_from_the_dumped_dom():
    def pre(text, sw, cw, output=False):
        inner = f'<div class="highlight"><pre data-icm-sw="{sw}" data-icm-cw="{cw}">{text}</pre></div>'
        if output:
            return f'<div class="cell_output docutils container"><div class="output stream">{inner}</div></div>'
        return f'<div class="cell_input docutils container">{inner}</div>'
    dom = ('<html><body><article class="bd-article">'
           + pre("fits", 600, 666) + pre("narrow font fallback", 700, 666)
           + pre("o" * 90, 1043, 688, output=True) + pre("x" * 90, 985, 666)  # reported by the static rule
           + "</article></body></html>")
    errors = cs.overflow_errors(cs.parse(dom))
    assert len(errors) == 2, errors
    assert "code wider than the column in the browser (700 > 666 px)" in errors[0]
    assert "cell output wider than the column in the browser (1043 > 688 px)" in errors[1]


def test_math_typeset_decision():
    assert cs.math_errors({"data-icm-math": "18", "data-icm-math-raw": "0"}) == []
    errors = cs.math_errors({"data-icm-math": "18", "data-icm-math-raw": "2", "data-icm-math-raw-text": "\\(x\\)"})
    assert errors and "2 of 18" in errors[0]
    # in the DOM after MathJax: TeX left in the text is reported like in the HTML
    dom = page(prose='<p><span class="math"><mjx-container>x</mjx-container></span> and $$x^2$$</p>')
    assert cs.prose_math_errors(cs.parse(dom))


# ----------------------------------------------------------------------------------------- figures
def png(width: int, height: int = 40, min_font_px: float | None = None, via: str = "pil") -> bytes:
    """A PNG of the given size, with the text chunk cdlib:min_font_px when given."""
    if via == "matplotlib":  # the way cdlib.plots writes it: savefig(metadata=...)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
        buf = io.BytesIO()
        meta = {cs.FONT_KEY: f"{min_font_px:g}"} if min_font_px is not None else {}
        fig.savefig(buf, format="png", dpi=100, metadata=meta)
        plt.close(fig)
        return buf.getvalue()
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "test")
    if min_font_px is not None:
        info.add_text(cs.FONT_KEY, f"{min_font_px:g}")
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_png_min_font_px():
    assert cs.png_min_font_px(png(100, min_font_px=12.5)) == 12.5
    assert cs.png_min_font_px(png(300, 200, min_font_px=13.9, via="matplotlib")) == pytest.approx(13.9)
    assert cs.png_min_font_px(png(100)) is None
    assert cs.png_min_font_px(png(100, min_font_px=math.inf)) == math.inf  # a figure without text
    assert cs.figure_font_error("_images/a.png", math.inf, 1184, 688) is None
    assert cs.png_min_font_px(b"not a png") is None
    assert cs.png_size(png(123, 45)) == (123, 45)
    # compressed (zTXt) and international (iTXt) chunks are read too
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    for kw in ({"zip": True}, {"lang": "en"}):
        info = PngInfo()
        (info.add_itxt if "lang" in kw else info.add_text)(cs.FONT_KEY, "11", **kw)
        buf = io.BytesIO()
        Image.new("RGB", (10, 10)).save(buf, format="PNG", pnginfo=info)
        assert cs.png_min_font_px(buf.getvalue()) == 11.0


def test_figure_font_decision_on_measured_widths():
    # a 1184 px wide PNG shown 688 px wide at 1280 px (measured): its 10 pt text at 100 dpi (13.9 px)
    # is 8.1 px on the page
    err = cs.figure_font_error("_images/a.png", 13.9, 1184, 688)
    assert err and "8.1 px on the page" in err and "shrunk to 688 of 1184 px" in err
    assert cs.figure_font_error("_images/a.png", 16.0, 1184, 688) is None  # 9.3 px
    assert cs.figure_font_error("_images/a.png", 9.0, 611, 611) is None  # not shrunk
    assert "shown at 611 px" in cs.figure_font_error("_images/a.png", 8.0, 611, 611)
    assert "no PNG text chunk" in cs.figure_font_error("_images/a.png", None, 611, 611)


def _figure_page(tmp_path, *imgs: tuple[str, bytes | None, str]) -> tuple[cs.PageParser, Path]:
    """A built book in tmp_path with book/ch09.html showing each (name, PNG bytes, extra <img> attrs)
    as an image output; PNGs are written to _images/ (None: write nothing)."""
    (tmp_path / "_images").mkdir(exist_ok=True)
    outs = []
    for name, data, attrs in imgs:
        if data is not None:
            (tmp_path / "_images" / name).write_bytes(data)
        outs.append(f'<div class="output text_png"><img alt="" src="../_images/{name}" {attrs}/></div>')
    source = page(*outs).replace("</article>", '<img src="../_static/images/logo_colab.png"></article>')
    return cs.parse(source), tmp_path


def test_figures_pass_with_readable_fonts(tmp_path):
    parsed, html_dir = _figure_page(
        tmp_path,
        ("wide.png", png(1184, min_font_px=16), ""),       # 16 * 672 / 1184 = 9.1 px
        ("small.png", png(611, min_font_px=9), ""),        # shown at its own width
        ("retina.png", png(1200, min_font_px=18), 'width="600"'),  # 2x PNG shown 600 px wide: 9 px
    )
    assert cs.check_figures(parsed, html_dir, "book/ch09.html") == []


def test_figure_without_font_metadata_fails(tmp_path):
    parsed, html_dir = _figure_page(tmp_path, ("old.png", png(984), ""))
    errors = cs.check_figures(parsed, html_dir, "book/ch09.html")
    assert len(errors) == 1 and "no PNG text chunk cdlib:min_font_px" in errors[0]


def test_figure_with_small_legend_fails(tmp_path):
    parsed, html_dir = _figure_page(tmp_path, ("tiny.png", png(611, min_font_px=7), ""))
    errors = cs.check_figures(parsed, html_dir, "book/ch09.html")
    assert len(errors) == 1 and "7.0 px on the page" in errors[0]


def test_figure_wider_than_the_column_fails(tmp_path):
    # readable at its own size (14 px) but shrunk into the 672 px column: 7.3 px
    assert cs.COLUMN_PX == 672  # a <figure> at 1280 px, measured in Chromium (688 px for a cell output)
    parsed, html_dir = _figure_page(tmp_path, ("wide.png", png(1280, min_font_px=14), ""))
    errors = cs.check_figures(parsed, html_dir, "book/ch09.html")
    assert len(errors) == 1 and "shrunk to 672 of 1280 px" in errors[0]
    # the width measured in the browser wins over the static estimate
    parsed, html_dir = _figure_page(tmp_path, ("wide.png", png(1280, min_font_px=14), 'data-icm-dw="1000"'))
    assert cs.check_figures(parsed, html_dir, "book/ch09.html") == []


def test_figure_as_data_uri_and_not_a_png(tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(png(611, min_font_px=6)).decode()
    source = page(f'<div class="output text_png"><img src="{uri}"/></div>',
                  '<div class="output text_jpeg"><img src="../_images/photo.jpg"/></div>')
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    errors = cs.check_figures(cs.parse(source), tmp_path, "book/ch09.html")
    assert len(errors) == 2 and "6.0 px on the page" in errors[0] and "not a PNG" in errors[1]


# ----------------------------------------------------------------------------------------- BD tables
def _bd_frame(note_nan: str, **extra) -> pd.DataFrame:
    return pd.DataFrame({
        "BD-rate (PSNR) %": [12.5, 0.0, math.nan],
        "BD-accuracy (points)": [-3.1, 0.0, math.nan],
        "accuracy overlap": [0.97, 1.0, 0.0],
        "note": ["", "", note_nan], **extra,
    }, index=pd.Index(["JPEG (4:4:4)", "HEVC (x265)", "Bai 2022"], name="codec")).round(2)


def test_bd_table_with_notes_passes():
    assert cs.check_html(page(table(_bd_frame("BD-rate: no accuracy overlap")))) == []


def test_bd_table_row_without_a_number_and_an_empty_note_fails():
    errors = cs.check_html(page(table(_bd_frame(""))))
    assert len(errors) == 1 and "BD table row 'Bai 2022': no BD number" in errors[0], errors


def test_bd_table_with_a_truncated_note_fails():
    # pandas cuts a string longer than display.max_colwidth (50) to "..." in the HTML it shows
    long = "BD-rate: the test curve has 3 usable points after cleaning (monotone='envelope')"
    assert "..." in _bd_frame(long)._repr_html_()
    errors = cs.check_html(page(table(_bd_frame(long))))
    assert len(errors) == 1 and "note cut short" in errors[0], errors
    errors = cs.check_html(page(table(_bd_frame("BD-rate: too few points…"))))
    assert len(errors) == 1 and "note cut short" in errors[0], errors


def test_bd_table_without_an_index_name_and_with_raw_columns():
    df = pd.DataFrame({"bd_rate": [-2.95, math.nan], "bd_quality": [0.059, math.nan], "note": ["", ""]},
                      index=["psnr", "ms_ssim"])
    errors = cs.check_html(page(table(df)))
    assert len(errors) == 1 and "'ms_ssim'" in errors[0], errors
    other = pd.DataFrame({"value": [math.nan], "note": [""]})  # not a BD table
    assert cs.check_html(page(table(other))) == []


def test_cdlib_bd_table_renders_notes_that_pass_the_check():
    """The renderer side: every NaN row of cdlib.eval.bd_table has a note that pandas shows whole."""
    from cdlib.eval import bd

    rates, psnr = np.array([0.1, 0.2, 0.4, 0.8, 1.6]), np.array([25.0, 28.0, 31.0, 34.0, 37.0])

    def curve(r=rates, q=psnr):
        return pd.DataFrame({"bpp": r, "psnr": q})

    curves = {"anchor": curve(), "better": curve(rates * 0.9), "no psnr overlap": curve(q=psnr + 20),
              "no overlap at all": curve(rates * 100, psnr + 20), "three points": curve(rates[:3], psnr[:3]),
              "no psnr column": pd.DataFrame({"bpp": rates}),
              "a very long codec name that is longer than the note column": curve(q=psnr + 30)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = bd.bd_table(curves, anchor="anchor", metric="psnr")
    nan = t["bd_rate"].isna() | t["bd_quality"].isna()
    assert list(t.loc[nan, "name"]) == list(curves)[2:]
    assert (t.loc[nan, "note"].str.len() > 0).all() and (t["note"].str.len() <= bd.NOTE_MAX).all()
    assert (t.loc[nan, "detail"].str.len() > 0).all()
    assert t.set_index("name").loc["three points", "note"] == "test curve: 3 points after cleaning, need 4"
    shown = t.set_index("name")[["bd_rate", "bd_quality", "note"]].round(2)
    assert cs.check_html(page(table(shown))) == []
    # as a chapter shows it: its own columns around bd_table's
    ch = pd.DataFrame({"BD-rate (PSNR) %": t["bd_rate"], "BD-PSNR dB": t["bd_quality"], "note": t["note"]})
    assert cs.check_html(page(table(ch.round(2)))) == []


def test_the_figures_of_cdlib_plots_carry_the_font_size():
    """The contract with cdlib.plots: the PNG it renders has the chunk this check reads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cdlib import plots

    if not hasattr(plots, "figure_png"):
        pytest.skip("cdlib.plots.figure_png not there yet")
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_xlabel("rate (bpp)", fontsize=12)
    ax.tick_params(labelsize=9)
    ax.legend(fontsize=11)
    data, px = plots.figure_png(fig)
    plt.close(fig)
    assert cs.png_min_font_px(data) == pytest.approx(px, abs=0.01)
    assert px == pytest.approx(9 * 100 / 72, abs=0.05)  # the 9 pt tick labels at 100 dpi
    assert cs.png_size(data) == (400, 300)


def test_a_glued_figure_outside_the_cell_outputs_is_checked(tmp_path):
    # {glue:figure} puts the PNG in a <figure> of the article, not in a cell output
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "g.png").write_bytes(png(750, min_font_px=8))
    source = page(prose='<figure class="align-default" id="fig-ch09-rd"><img alt="" src="../_images/g.png" />'
                        '<figcaption><p>Rate-distortion.</p></figcaption></figure>')
    errors = cs.check_figures(cs.parse(source), tmp_path, "book/ch09.html")
    assert len(errors) == 1 and "7.2 px on the page" in errors[0], errors
    (tmp_path / "_images" / "g.png").write_bytes(png(750, min_font_px=13.9))  # 10 pt at 100 dpi
    assert cs.check_figures(cs.parse(source), tmp_path, "book/ch09.html") == []
