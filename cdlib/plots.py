"""Seaborn figures for the book.  Every function returns the matplotlib ``Figure`` (never calls
``show``), so it works headless (Agg) and in notebooks alike.  Call :func:`set_style` once."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

BOUND_LABEL = "information bound log2(C)"


def set_style() -> None:
    """The book's figure style."""
    sns.set_theme(context="notebook", style="whitegrid")


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _frame(df) -> pd.DataFrame:
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)


def rd_plot(df, x: str = "bpp", y: str = "psnr", hue: str | None = "label", ax=None, title: str | None = None,
            logx: bool = False):
    """Rate-distortion curves: one line with markers per ``hue`` value, points joined in rate order."""
    df = _frame(df)
    fig, ax = _axes(ax)
    hue = hue if hue in df.columns else None
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", sort=True, estimator=None, ax=ax)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel({"bpp": "bits per pixel (bpp)"}.get(x, x))
    ax.set_ylabel({"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM"}.get(y, y))
    if title:
        ax.set_title(title)
    return fig


def rate_accuracy_plot(df, x: str = "bpp", y: str = "accuracy", hue: str | None = "label",
                       bound_bpp: float | None = None, raw_point: Mapping | None = None, ax=None,
                       title: str | None = None, logx: bool = True):
    """Rate-accuracy curves, with the ``log2(C)`` bound as a vertical line (``bound_bpp``) and the
    uncompressed accuracy (``raw_point``, e.g. :func:`cdlib.eval.raw_rgb_point`) as a star at 24 bpp."""
    fig = rd_plot(df, x=x, y=y, hue=hue, ax=ax, title=title, logx=logx)
    ax = fig.axes[0] if ax is None else ax
    if bound_bpp is not None:
        ax.axvline(bound_bpp, color="k", linestyle="--", linewidth=1, label=BOUND_LABEL)
    if raw_point is not None:
        ax.scatter([raw_point["bpp"]], [raw_point[y]], marker="*", s=200, color="k", zorder=5,
                   label=f"{raw_point.get('label', 'raw RGB')} ({raw_point['bpp']:g} bpp)")
    ax.set_ylabel(y)
    ax.legend()
    return fig


def _to_hwc(img) -> np.ndarray:
    if hasattr(img, "detach"):  # torch (3, H, W) in [0, 1]
        img = img.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(img)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4, size: float = 2.5):
    """Images (uint8 ``(H, W, 3)`` or tensors ``(3, H, W)``) in a grid, optional titles, no axes."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i]), interpolation="nearest")
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize="small")
    return fig


def loss_plot(history: Sequence[Mapping], terms: Sequence[str] | None = None, logy: bool = True):
    """Training curves: one panel per logged term against ``step`` (``history``: list of dicts)."""
    df = pd.DataFrame(list(history))
    if "step" not in df.columns:
        raise ValueError(f"history entries need a 'step' key; got keys {list(df.columns)}")
    if terms is None:
        terms = [c for c in df.columns if c != "step" and pd.api.types.is_numeric_dtype(df[c])]
    if not terms:
        raise ValueError("history has no numeric terms to plot")
    fig, axes = plt.subplots(1, len(terms), figsize=(3.5 * len(terms), 3), squeeze=False, layout="constrained")
    for ax, term in zip(axes.flat, terms):
        sns.lineplot(data=df, x="step", y=term, ax=ax)
        if logy and (df[term].dropna() > 0).all():
            ax.set_yscale("log")
        ax.set_title(term)
        ax.set_ylabel("")
    return fig


def bar_table(df, x: str, y: str, hue: str | None = None, ax=None, title: str | None = None, fmt: str = "%.2f"):
    """Bar chart of a results table with the value written on each bar (e.g. BD-rate per codec)."""
    df = _frame(df)
    fig, ax = _axes(ax)
    sns.barplot(data=df, x=x, y=y, hue=hue, ax=ax, errorbar=None)
    for container in ax.containers:
        ax.bar_label(container, fmt=fmt, fontsize="small")
    ax.axhline(0, color="k", linewidth=0.8)
    if title:
        ax.set_title(title)
    return fig
