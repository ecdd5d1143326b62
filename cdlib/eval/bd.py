"""Bjontegaard-delta (BD) numbers between curves, the rate a curve needs to reach a target, and
information-theoretic rate bounds.

BD metrics come from the ``bjontegaard`` package (Akima interpolation by default).  Task curves
(accuracy, mAP) are often *not* monotonic in rate; see :func:`clean_curve` for how that is handled.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np
import pandas as pd

MIN_BD_POINTS = 4
MONOTONE_MODES = ("envelope", "isotonic", "raise")
# A bd_table note is at most this long: pandas shows a longer string cut to "..." (display.max_colwidth
# is 50 by default), and a table in the book must show the whole reason (scripts/check_site.py checks it).
NOTE_MAX = 50


class BDError(ValueError):
    """A BD number that cannot be computed.  ``str(exc)`` is the full explanation; ``note`` a short
    reason (at most :data:`NOTE_MAX` characters) for the ``note`` column of :func:`bd_table`."""

    def __init__(self, message: str, note: str):
        super().__init__(message)
        self.note = note


def clean_curve(rate, quality, monotone: str = "envelope", index=None) -> dict:
    """Make a curve usable for BD interpolation: rate and quality both strictly increasing.

    Points with NaN/inf values are always removed.  Then, by ``monotone``:

    * ``"envelope"`` (default): walk the points by increasing rate and drop every point whose quality
      is not strictly higher than the best quality seen at a lower (or equal) rate, i.e. keep the
      upper-left Pareto envelope.  This is the usual MPEG practice of fitting only the monotonic part
      of a curve; the dropped points are reported.
    * ``"isotonic"``: isotonic (non-decreasing) regression of quality on rate (``scipy``); points in a
      block with one fitted value are merged into one point at the block's geometric-mean rate.
    * ``"raise"``: raise ``ValueError`` naming the offending points.

    Returns ``{"rate", "quality"}`` (numpy arrays of the cleaned points), ``"dropped"`` (index labels
    removed) and ``"merged"`` (lists of index labels merged, isotonic only).
    """
    if monotone not in MONOTONE_MODES:
        raise BDError(f"monotone must be one of {MONOTONE_MODES}, got {monotone!r}", f"unknown monotone={monotone!r}")
    rate, quality = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
    index = list(range(len(rate))) if index is None else list(index)
    finite = np.isfinite(rate) & np.isfinite(quality)
    dropped = [index[i] for i in np.flatnonzero(~finite)]
    if np.any(rate[finite] <= 0):
        raise BDError("BD metrics need positive rates (they work on log10(rate))", "rates must be > 0")
    keep = np.flatnonzero(finite)
    keep = keep[np.lexsort((-quality[keep], rate[keep]))]  # by rate, best quality first on ties
    r, q, ix = rate[keep], quality[keep], [index[i] for i in keep]
    merged: list[list] = []

    if monotone == "raise":
        bad = [ix[i] for i in range(1, len(r)) if not (r[i] > r[i - 1] and q[i] > q[i - 1])]
        if bad:
            raise BDError(
                f"curve is not strictly increasing in rate and quality at points {bad}; "
                "use monotone='envelope' or 'isotonic' to clean it", "not monotone (monotone='raise')")
    elif monotone == "envelope":
        sel, best = [], -np.inf
        for i in range(len(r)):
            if q[i] > best and (not sel or r[i] > r[sel[-1]]):
                sel.append(i)
                best = q[i]
            else:
                dropped.append(ix[i])
        r, q = r[sel], q[sel]
    else:  # isotonic
        from scipy.optimize import isotonic_regression

        if len(r):
            fit = isotonic_regression(q).x
            groups: list[list[int]] = []
            for i in range(len(r)):  # one group per run of equal fitted values or equal rates
                if groups and (fit[i] == fit[groups[-1][-1]] or r[i] == r[groups[-1][-1]]):
                    groups[-1].append(i)
                else:
                    groups.append([i])
            merged = [[ix[i] for i in g] for g in groups if len(g) > 1]
            r = np.array([10 ** np.mean(np.log10(r[g])) for g in groups])
            q = np.array([np.mean(fit[g]) for g in groups])
    return {"rate": r, "quality": q, "dropped": dropped, "merged": merged}


def _fit(note: str, shorter: str) -> str:
    """``note`` if it fits in :data:`NOTE_MAX` characters, else ``shorter`` (never a cut string)."""
    return note if len(note) <= NOTE_MAX else shorter


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Length of the intersection of two ranges over the length of the narrower one (0..1)."""
    inter = min(a.max(), b.max()) - max(a.min(), b.min())
    narrow = min(np.ptp(a), np.ptp(b))
    return float(max(inter, 0.0) / narrow) if narrow > 0 else 0.0


def _bd(kind: str, anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info):
    import bjontegaard as bd

    anchor_df, test_df = pd.DataFrame(anchor_df), pd.DataFrame(test_df)
    for name, df in (("anchor", anchor_df), ("test", test_df)):
        missing = {rate, metric} - set(df.columns)
        if missing:
            raise BDError(f"{name} curve lacks column(s) {sorted(missing)}; it has {list(df.columns)}",
                          _fit(f"{name} curve has no {', '.join(sorted(missing))}", f"{name} curve: column missing"))
    cleaned = {}
    for name, df in (("anchor", anchor_df), ("test", test_df)):
        try:
            cleaned[name] = clean_curve(df[rate], df[metric], monotone, df.index)
        except BDError as exc:
            raise BDError(f"{name} curve: {exc}", _fit(f"{name} curve: {exc.note}", exc.note)) from exc
    ca, ct = cleaned["anchor"], cleaned["test"]
    for name, c in (("anchor", ca), ("test", ct)):
        if len(c["rate"]) < min_points:
            raise BDError(
                f"BD-{kind}: the {name} curve has {len(c['rate'])} usable points after cleaning "
                f"(monotone={monotone!r}, dropped {c['dropped']}); at least {min_points} are needed",
                f"{name} curve: {len(c['rate'])} points after cleaning, need {min_points}")
    if kind == "rate":  # integrate log-rate over the quality axis
        overlap = _overlap(ca["quality"], ct["quality"])
        axis = metric
    else:  # integrate quality over the log-rate axis
        overlap = _overlap(np.log10(ca["rate"]), np.log10(ct["rate"]))
        axis = f"log10({rate})"
    if overlap == 0:
        warnings.warn(f"BD-{kind}: the curves do not overlap along {axis}; result is NaN", stacklevel=3)
        value = math.nan
    else:
        if overlap < min_overlap:
            warnings.warn(
                f"BD-{kind}: the curves overlap on only {overlap:.0%} of the narrower {axis} range "
                f"(< {min_overlap:.0%}); the BD number is an extrapolation", stacklevel=3)
        fn = bd.bd_rate if kind == "rate" else bd.bd_psnr
        value = float(fn(ca["rate"], ca["quality"], ct["rate"], ct["quality"], method=method,
                         require_matching_points=False, min_overlap=0))
    if not return_info:
        return value
    info = {
        "overlap": overlap, "overlap_axis": axis,
        "anchor_points": len(ca["rate"]), "test_points": len(ct["rate"]),
        "anchor_dropped": ca["dropped"], "test_dropped": ct["dropped"],
        "anchor_merged": ca["merged"], "test_merged": ct["merged"],
        "anchor_curve": (ca["rate"], ca["quality"]), "test_curve": (ct["rate"], ct["quality"]),
    }
    return value, info


def bd_rate(anchor_df, test_df, metric: str = "psnr", method: str = "akima", *, rate: str = "bpp",
            monotone: str = "envelope", min_points: int = MIN_BD_POINTS, min_overlap: float = 0.5,
            return_info: bool = False):
    """BD-rate of ``test`` against ``anchor`` in percent (negative: test needs fewer bits for the
    same ``metric``), via ``bjontegaard.bd_rate``.

    Curves are DataFrames (or dicts of columns) with columns ``rate`` and ``metric``; they are
    cleaned with :func:`clean_curve` (``monotone``) and need ``min_points`` points afterwards.
    Warns when the quality ranges overlap on less than ``min_overlap`` of the narrower range.
    ``return_info=True`` returns ``(value, info)`` with the overlap and the dropped/merged points.
    """
    return _bd("rate", anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info)


def bd_quality(anchor_df, test_df, metric: str = "accuracy", method: str = "akima", *, rate: str = "bpp",
               monotone: str = "envelope", min_points: int = MIN_BD_POINTS, min_overlap: float = 0.5,
               return_info: bool = False):
    """BD-quality: mean ``metric`` gain of ``test`` over ``anchor`` at equal log-rate, in the metric's
    own units (BD-PSNR in dB for ``psnr``; BD-accuracy as a fraction for ``accuracy``, x100 for
    percentage points).  Uses ``bjontegaard.bd_psnr``; same options as :func:`bd_rate`.
    """
    return _bd("quality", anchor_df, test_df, metric, rate, method, monotone, min_points, min_overlap, return_info)


def bd_table(curves: Mapping[str, pd.DataFrame], anchor: str, metric: str = "psnr", method: str = "akima",
             *, rate: str = "bpp", monotone: str = "envelope") -> pd.DataFrame:
    """One row per curve against ``curves[anchor]``: ``name, bd_rate`` (%), ``bd_quality`` (metric
    units), ``overlap_quality``, ``overlap_rate``, ``points``, ``dropped``, ``note`` and ``detail``.

    Every row with a NaN BD number has a ``note`` saying why (too few points after cleaning, curves
    that do not overlap, a missing column...); notes are at most :data:`NOTE_MAX` characters, so that
    pandas shows them whole, and ``detail`` has the full message."""
    if anchor not in curves:
        raise ValueError(f"anchor {anchor!r} is not one of the curves {list(curves)}")
    rows = []
    for name, df in curves.items():
        row = {"name": name, "anchor": anchor, "metric": metric, "bd_rate": math.nan, "bd_quality": math.nan,
               "overlap_quality": math.nan, "overlap_rate": math.nan, "points": 0, "dropped": [], "note": "",
               "detail": ""}
        try:
            row["bd_rate"], i1 = bd_rate(curves[anchor], df, metric, method, rate=rate, monotone=monotone,
                                         return_info=True)
            row["bd_quality"], i2 = bd_quality(curves[anchor], df, metric, method, rate=rate, monotone=monotone,
                                               return_info=True)
            row.update(overlap_quality=i1["overlap"], overlap_rate=i2["overlap"], points=i1["test_points"],
                       dropped=list(i1["test_dropped"]))
            no_rate, no_quality = not math.isfinite(row["bd_rate"]), not math.isfinite(row["bd_quality"])
            if no_rate or no_quality:
                # _bd gives NaN when the curves share no range on the integration axis
                r_why = f"no {metric} overlap" if i1["overlap"] == 0 else "NaN"
                q_why = "no rate overlap" if i2["overlap"] == 0 else "NaN"
                if no_rate and no_quality:
                    note = (f"{r_why}, {q_why}" if "NaN" not in (r_why, q_why)
                            else f"BD-rate {r_why}, BD-quality {q_why}")
                else:
                    note = f"BD-rate: {r_why}" if no_rate else f"BD-quality: {q_why}"
                row["note"] = _fit(note, "BD is NaN (see the column 'detail')")
                row["detail"] = (f"BD numbers of {name!r} against {anchor!r}: BD-rate "
                                 f"{r_why if no_rate else 'ok'}, BD-quality {q_why if no_quality else 'ok'}")
        except BDError as exc:
            row["note"], row["detail"] = exc.note, str(exc)
        except ValueError as exc:
            msg = str(exc)
            row["note"], row["detail"] = _fit(msg, "not computed (see the column 'detail')"), msg
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- reading a task curve


def min_rate_for_accuracy(rate, accuracy, target: float) -> float:
    """The lowest *measured* rate at which a curve's ``accuracy`` (or any task metric: mAP, mIoU...)
    reaches ``target``; NaN if no point does.  No interpolation between points; points with a NaN rate
    or metric are ignored."""
    r, q = np.asarray(rate, dtype=float).ravel(), np.asarray(accuracy, dtype=float).ravel()
    if r.shape != q.shape:
        raise ValueError(f"min_rate_for_accuracy: {r.size} rates for {q.size} metric values")
    reached = [x for x, y in zip(r, q) if math.isfinite(x) and y >= target]
    return float(min(reached)) if reached else math.nan


def saving_vs_raw(bpp: float, raw_bpp: float = 24.0) -> float:
    """Fraction of bits saved against sending raw 8-bit RGB (24 bpp): ``1 - bpp / raw_bpp`` (chapter 2)."""
    return 1.0 - float(bpp) / raw_bpp


# --------------------------------------------------------------------------- bounds


def info_bound_bits(num_classes: int) -> float:
    """Bits per image needed to convey one of ``C`` equiprobable class labels: ``log2(C)``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return math.log2(num_classes)


def info_bound_bpp(num_classes: int, height: int, width: int) -> float:
    """:func:`info_bound_bits` spread over the pixels: ``log2(C) / (H * W)`` bpp."""
    return info_bound_bits(num_classes) / (int(height) * int(width))
