"""Seaborn figures for the book.  Every figure function returns the matplotlib ``Figure`` (never calls
``plt.show``), so it works headless (Agg) and in notebooks alike.  Call :func:`set_style` once.

Chapters show a figure with :func:`show`: it renders the figure once as a PNG at :data:`DPI`, writes the
smallest font of the figure into the PNG (tEXt chunk ``cdlib:min_font_px``, see :func:`figure_png`), and
glues it under a name that a ``{glue:figure}`` directive of the chapter turns into a numbered figure with
a caption.  Figures are :data:`FIG_WIDTH` inches wide: at :data:`DPI` that is the width of the book's main
column, so the PNG is shown at its natural size and every text of at least :data:`MIN_FONT_PT` points is
at least :data:`MIN_FONT_PX` pixels on a laptop screen."""
from __future__ import annotations

import io
import warnings
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.text import Text
from matplotlib.ticker import LogFormatter

BOUND_LABEL = "information bound log2(C)"
FIG_WIDTH = 7.5  # inches: 750 px at DPI, the main column of the book at a 1280-px laptop window
DPI = 100
MIN_FONT_PT = 10.0  # no text of a book figure is smaller (tick labels, legends, annotations)
MIN_FONT_PX = 10.0  # ... and none is under this many pixels in the PNG (10 pt at DPI = 13.9 px)
PNG_FONT_KEY = "cdlib:min_font_px"  # tEXt chunk of every PNG that show() renders (the site check reads it)
# legend titles by column name: the thing the colours stand for
LEGEND_TITLES = {"label": "codec", "model": "model", "variant": "variant", "stage": "training step"}


def set_style() -> None:
    """The book's figure style: seaborn's notebook context (11-12 pt text), figures of the main column's width."""
    sns.set_theme(context="notebook", style="whitegrid",
                  rc={"figure.figsize": (FIG_WIDTH, 4.0), "figure.dpi": DPI, "savefig.dpi": DPI})


def _axes(ax, figsize=(FIG_WIDTH, 4.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _frame(df) -> pd.DataFrame:
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)


# --------------------------------------------------------------------------- rendering with metadata


def _drawn_texts(fig, dpi: float) -> tuple[bytes, list[Text]]:
    """Render ``fig`` as PNG bytes; return them and every text artist that was actually drawn
    (visible, non-empty, inside a visible parent: hidden tick labels and empty titles do not count)."""
    drawn: list[Text] = []
    original = Text.draw

    def draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    Text.draw = draw  # Annotation.draw and every container call Text.draw: one hook sees them all
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        Text.draw = original
    return buf.getvalue(), drawn


def min_font_px(fig, dpi: float = DPI) -> float:
    """The smallest font size, in pixels of a PNG rendered at ``dpi``, of any text the figure draws
    (tick labels, axis labels, legend texts and titles, titles, annotations); ``inf`` if it draws none."""
    return _min_px(_drawn_texts(fig, dpi)[1], dpi)


def _min_px(texts: Sequence[Text], dpi: float) -> float:
    return min((t.get_fontsize() * dpi / 72.0 for t in texts), default=float("inf"))


def figure_png(fig, dpi: float = DPI) -> tuple[bytes, float]:
    """``(png_bytes, min_font_px)``: the figure rendered once at ``dpi`` (its natural size, no cropping), with
    a PNG tEXt chunk ``cdlib:min_font_px`` = the smallest font in pixels of any drawn text (``"inf"`` when
    the figure has no text)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    png, texts = _drawn_texts(fig, dpi)
    px = _min_px(texts, dpi)
    with Image.open(io.BytesIO(png)) as im:
        info = PngInfo()
        for key, value in getattr(im, "text", {}).items():  # matplotlib's Software chunk
            info.add_text(key, value)
        info.add_text(PNG_FONT_KEY, f"{px:.2f}" if np.isfinite(px) else "inf")
        out = io.BytesIO()
        im.save(out, format="PNG", pnginfo=info)
    return out.getvalue(), px


def png_min_font_px(png: bytes) -> float:
    """Read ``cdlib:min_font_px`` back from PNG bytes (``ValueError`` if the chunk is missing)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        text = getattr(im, "text", {})
    if PNG_FONT_KEY not in text:
        raise ValueError(f"PNG has no tEXt chunk {PNG_FONT_KEY!r}; render it with cdlib.plots.figure_png")
    return float(text[PNG_FONT_KEY])


def show(fig, name: str, caption: str | None = None, dpi: float = DPI) -> None:
    """Show ``fig`` in a chapter as a numbered figure: render it with :func:`figure_png`, close it, and glue
    the PNG as ``name`` (MyST-NB ``glue``).  In the chapter a ``{glue:figure} name`` directive with
    ``:name: name`` places it with its caption and number; the code cell carries the ``remove-output`` tag,
    so the book shows the figure once, where the directive is.  In Jupyter or Colab the cell shows the
    PNG, then ``caption`` (if given) in italics.  Warns when a text is under :data:`MIN_FONT_PX` pixels."""
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise ValueError(f"bad figure name {name!r}: expected a label such as 'fig-ch01-rd' (no spaces)")
    png, px = figure_png(fig, dpi)
    plt.close(fig)
    if px < MIN_FONT_PX:
        warnings.warn(f"figure {name}: smallest text is {px:.1f} px (< {MIN_FONT_PX:g} px at {dpi:g} dpi); "
                      f"use fonts of at least {MIN_FONT_PT:g} pt", stacklevel=2)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to display
        return
    if get_ipython() is None:
        return
    from IPython.display import Image, Markdown, display

    image = Image(data=png, format="png")
    try:
        from myst_nb import glue
    except ImportError:  # Colab without the book tools: the same output, without the glue key
        display(image)
    else:
        glue(name, image, display=True)
    if caption:
        display(Markdown(f"*{caption}*"))


# --------------------------------------------------------------------------- figures


def _legend(ax, title: str | None, outside: bool = False, **kw):
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if outside:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, **kw}
    return ax.legend(handles, labels, title=title, **kw)


def rd_plot(df, x: str = "bpp", y: str = "psnr", hue: str | None = "label", ax=None, title: str | None = None,
            logx: bool = False, legend_title: str | None = None, legend: str | bool = "inside"):
    """Rate-distortion curves: one line with markers per ``hue`` value, points joined in rate order.

    ``legend_title``: what the colours are (default from :data:`LEGEND_TITLES`, e.g. ``"codec"`` for
    ``label``); ``legend``: ``"inside"``, ``"outside"`` (right of the axes) or ``False``."""
    df = _frame(df)
    fig, ax = _axes(ax)
    hue = hue if hue in df.columns else None
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", sort=True, estimator=None, ax=ax)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel({"bpp": "bits per pixel (bpp)"}.get(x, x))
    ax.set_ylabel({"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "accuracy": "accuracy"}.get(y, y))
    if title:
        ax.set_title(title)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if legend and hue is not None:
        _legend(ax, legend_title or LEGEND_TITLES.get(hue, hue), outside=legend == "outside")
    return fig


def rd_panels(df, metrics: Sequence[str] = ("psnr", "ms_ssim"), x: str = "bpp", hue: str | None = "label",
              legend_title: str | None = None, height: float = 3.9):
    """The same curves on one panel per metric (e.g. PSNR and MS-SSIM), side by side in one figure of the
    main column's width, with one legend for both under the panels."""
    df = _frame(df)
    metrics = [m for m in metrics if m in df.columns and df[m].notna().any()]
    if not metrics:
        raise ValueError(f"none of the metrics is in the table; columns: {list(df.columns)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(FIG_WIDTH, height), squeeze=False, layout="constrained")
    for ax, m in zip(axes.flat, metrics):
        rd_plot(df, x=x, y=m, hue=hue, ax=ax, legend=False)
    hue = hue if hue in df.columns else None
    if hue is not None:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, title=legend_title or LEGEND_TITLES.get(hue, hue), loc="outside lower center",
                   ncols=min(len(labels), 4))
    return fig


def rate_accuracy_plot(df, x: str = "bpp", y: str = "accuracy", hue: str | None = "label",
                       bound_bpp: float | None = None, raw_point: Mapping | None = None, ax=None,
                       title: str | None = None, logx: bool = True, legend_title: str | None = None):
    """Rate-accuracy curves with the uncompressed accuracy (``raw_point``, e.g. :func:`cdlib.eval.raw_rgb_point`)
    as a star at 24 bpp, and the ``log2(C)`` information bound (``bound_bpp``).  The bound is usually orders of
    magnitude left of every codec: then it is *annotated* just above the axes (an arrow pointing to the left
    edge, with its value) instead of widening the axis; a bound inside the axis range is a dashed vertical line."""
    df = _frame(df)
    fig, ax = _axes(ax, figsize=(FIG_WIDTH, 4.2))
    rd_plot(df, x=x, y=y, hue=hue, ax=ax, title=title, logx=logx, legend=False)
    if raw_point is not None:
        ax.scatter([raw_point["bpp"]], [raw_point[y]], marker="*", s=200, color="k", zorder=5,
                   label=f"{raw_point.get('label', 'raw RGB')} ({raw_point['bpp']:g} bpp)")
    if bound_bpp is not None:
        lo, hi = ax.get_xlim()
        if lo <= bound_bpp <= hi:
            ax.axvline(bound_bpp, color="k", linestyle="--", linewidth=1, label=BOUND_LABEL)
        else:
            # above the axes, where no curve runs: an arrow along the top edge towards the bound's side
            left = bound_bpp < lo
            text = f"{BOUND_LABEL} = {bound_bpp:.2g} bpp, off the axis to the {'left' if left else 'right'}"
            ax.annotate(text, xy=(0.0 if left else 1.0, 1.035), xycoords="axes fraction",
                        xytext=(0.07 if left else 0.93, 1.035), textcoords="axes fraction",
                        ha="left" if left else "right", va="center", fontsize=MIN_FONT_PT,
                        gid="information-bound", annotation_clip=False,
                        arrowprops=dict(arrowstyle="->", color="k", linewidth=1.2, shrinkA=2, shrinkB=0))
            if title:
                ax.set_title(title, pad=22)
    ax.set_ylabel(y)
    hue_ok = hue is not None and hue in df.columns
    _legend(ax, legend_title or (LEGEND_TITLES.get(hue, hue) if hue_ok else None), outside=True)
    return fig


def _to_hwc(img) -> np.ndarray:
    if hasattr(img, "detach"):  # torch (3, H, W) in [0, 1]
        img = img.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(img)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4, size: float | None = None):
    """Images (uint8 ``(H, W, 3)`` or tensors ``(3, H, W)``) in a grid, optional titles (10 pt), no axes.
    ``size``: inches per image (default: the main column's width split into ``ncols``)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    size = FIG_WIDTH / ncols if size is None else size
    title_lines = max((str(t).count("\n") + 1 for t in (titles or [])), default=0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.22 * title_lines) * nrows),
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i]), interpolation="nearest")
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=MIN_FONT_PT)
    return fig


class _PlainLog(LogFormatter):
    """Log-axis tick labels as plain numbers (0.06, 0.2, 3), with matplotlib's choice of which to label."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


def loss_plot(history, terms: Sequence[str] | None = None, logy: bool = True, hue: str | None = None,
              switch_step: float | None = None, switch_label: str = "step 2 starts"):
    """Training curves: one panel per logged term against ``step``, stacked with a shared step axis
    (``history``: list of dicts or a DataFrame).  ``hue``: a column that tells runs apart (one line each);
    ``switch_step``: where training switches stage (a dotted line on every panel, labelled once)."""
    df = pd.DataFrame(list(history)) if not isinstance(history, pd.DataFrame) else history.reset_index(drop=True)
    if "step" not in df.columns:
        raise ValueError(f"history entries need a 'step' key; got keys {list(df.columns)}")
    if terms is None:
        terms = [c for c in df.columns if c not in ("step", hue) and pd.api.types.is_numeric_dtype(df[c])]
    if not terms:
        raise ValueError("history has no numeric terms to plot")
    hue = hue if hue in df.columns else None
    fig, axes = plt.subplots(len(terms), 1, figsize=(FIG_WIDTH, 0.7 + 1.75 * len(terms)), squeeze=False,
                             sharex=True, layout="constrained")
    for i, (ax, term) in enumerate(zip(axes.flat, terms)):
        sns.lineplot(data=df, x="step", y=term, hue=hue, ax=ax, legend=i == 0)
        values = df[term].dropna()
        if logy and len(values) and (values > 0).all() and values.max() > 3 * values.min():
            ax.set_yscale("log")  # only for a term that spans a factor of 3 or more
            ax.yaxis.set_major_formatter(_PlainLog())  # 0.2, 0.06 rather than 2 x 10^-1
            ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.set_ylabel(term)
        if switch_step is not None:
            ax.axvline(switch_step, color="k", linestyle=":", linewidth=1.5)
    top = axes.flat[0]
    if switch_step is not None:
        top.annotate(f" {switch_label}", xy=(switch_step, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, 2), textcoords="offset points", ha="left", va="bottom", fontsize=MIN_FONT_PT)
    if hue is not None and top.get_legend() is not None:
        top.get_legend().remove()
        _legend(top, LEGEND_TITLES.get(hue, hue), outside=True)
    return fig


def bar_table(df, x: str, y: str, hue: str | None = None, ax=None, title: str | None = None,
              fmt: str = "%.2f", zero: bool = True):
    """Bar chart of a results table with the value written on each bar (e.g. BD-rate per codec).

    Vertical bars when ``y`` is the numeric column, horizontal ones when ``x`` is.  ``zero=False``: the value
    axis covers the values (with a margin) instead of starting at zero, for quantities such as PSNR whose zero
    means nothing; the bars then start at the axis edge."""
    df = _frame(df)
    horizontal = pd.api.types.is_numeric_dtype(df[x]) and not pd.api.types.is_numeric_dtype(df[y])
    value = x if horizontal else y
    fig, ax = _axes(ax, figsize=(FIG_WIDTH, 0.9 + 0.45 * df[y].nunique()) if horizontal else (FIG_WIDTH, 4.0))
    sns.barplot(data=df, x=x, y=y, hue=hue, ax=ax, errorbar=None, orient="h" if horizontal else "v")
    for container in ax.containers:
        ax.bar_label(container, fmt=fmt, fontsize=MIN_FONT_PT, padding=2)
    v = df[value].astype(float)
    v = v[np.isfinite(v)]
    if zero:
        (ax.axvline if horizontal else ax.axhline)(0, color="k", linewidth=0.8)
        if len(v):  # room for the value written past the longest bar
            lo, hi = (ax.get_xlim if horizontal else ax.get_ylim)()
            pad = 0.15 * max(abs(lo), abs(hi))
            (ax.set_xlim if horizontal else ax.set_ylim)(lo - pad * (lo < 0), hi + pad * (hi > 0))
    elif len(v):
        span = float(v.max() - v.min()) or max(abs(float(v.max())), 1.0) * 0.1
        lim = (float(v.min()) - 0.35 * span, float(v.max()) + 0.25 * span)
        (ax.set_xlim if horizontal else ax.set_ylim)(*lim)
    if title:
        ax.set_title(title)
    return fig
