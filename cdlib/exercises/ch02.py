"""Chapter 2 exercises: reference solutions, their checks and their independent oracles.

- 2.1 ``bd_rate``: the Bjontegaard-delta rate of two curves with piecewise cubic (PCHIP) interpolation
  (oracle: the ``bjontegaard`` package);
- 2.2 ``rate_for_accuracy``: the rate a (possibly non-monotonic) rate-accuracy curve needs to reach a target
  accuracy, interpolated on its upper envelope (oracle: ``cdlib.eval.clean_curve`` and ``numpy.interp``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .grading import expect, expect_close, expect_nan, expect_raises, register_exercise


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality) -> float:
    """Exercise 2.1: the BD-rate of a test curve against an anchor curve,
    in percent (negative: fewer bits).

    Each curve is at least 4 points (rate > 0, quality), in any order, with
    quality strictly increasing with rate (``ValueError`` otherwise).
    Interpolate ``log10(rate)`` as a function of quality for each curve
    with a piecewise cubic Hermite interpolant (PCHIP,
    ``scipy.interpolate.PchipInterpolator``), average the difference test -
    anchor over the overlap of the two quality ranges, and return ``100 *
    (10**mean - 1)``; ``nan`` when the quality ranges do not overlap.
    """
    from scipy.interpolate import PchipInterpolator

    fits = []
    for name, r, q in (("anchor", anchor_rate, anchor_quality), ("test", test_rate, test_quality)):
        r, q = np.asarray(r, dtype=np.float64), np.asarray(q, dtype=np.float64)
        if r.ndim != 1 or r.shape != q.shape or len(r) < 4:
            raise ValueError(f"the {name} curve needs at least 4 (rate, quality) points, got {r.shape}, {q.shape}")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))) or np.any(r <= 0):
            raise ValueError(f"the {name} curve needs finite positive rates and finite qualities")
        order = np.argsort(r)
        r, q = r[order], q[order]
        if np.any(np.diff(r) <= 0) or np.any(np.diff(q) <= 0):
            raise ValueError(f"the {name} curve's quality must increase strictly with its rate")
        fits.append((PchipInterpolator(q, np.log10(r)), q[0], q[-1]))
    (fa, a_lo, a_hi), (ft, t_lo, t_hi) = fits
    lo, hi = max(a_lo, t_lo), min(a_hi, t_hi)
    if hi <= lo:
        return math.nan
    mean = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float(100.0 * (10.0**mean - 1.0))


def rate_for_accuracy(bpp, accuracy, target: float) -> float:
    """Exercise 2.2: the rate (bpp) at which a rate-accuracy curve reaches
    ``target`` accuracy.

    Drop the points with a NaN or infinite value; keep the upper envelope:
    by increasing rate (the best accuracy first among equal rates), a point
    stays only if its accuracy is strictly higher than that of every point
    kept before it. Interpolate ``log10(bpp)`` linearly in accuracy between
    the two envelope points around ``target`` and return ``10**`` of it;
    ``nan`` when ``target`` is outside the envelope's accuracy range (or no
    point is left). ``ValueError`` for a rate <= 0 or inputs of different
    lengths.
    """
    r, a = np.asarray(bpp, dtype=np.float64).ravel(), np.asarray(accuracy, dtype=np.float64).ravel()
    if r.shape != a.shape:
        raise ValueError(f"bpp and accuracy differ in length: {r.size} and {a.size}")
    ok = np.isfinite(r) & np.isfinite(a)
    r, a = r[ok], a[ok]
    if np.any(r <= 0):
        raise ValueError("rates must be positive (the interpolation is in log10(bpp))")
    env_r: list[float] = []
    env_a: list[float] = []
    for i in np.lexsort((-a, r)):
        if not env_a or (a[i] > env_a[-1] and r[i] > env_r[-1]):
            env_r.append(r[i])
            env_a.append(a[i])
    if not env_a or not env_a[0] <= target <= env_a[-1]:
        return math.nan
    return float(10.0 ** np.interp(target, env_a, np.log10(env_r)))


# ------------------------------------------------------------------------------------------------ checks
def _oracle_bd_rate():
    import bjontegaard

    def bd(ar, aq, tr, tq):
        args = []
        for r, q in ((ar, aq), (tr, tq)):
            order = np.argsort(np.asarray(r, dtype=np.float64))
            args += [np.asarray(r, dtype=np.float64)[order], np.asarray(q, dtype=np.float64)[order]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "curves do not overlap" comes back as nan
            return float(bjontegaard.bd_rate(*args, method="pchip", require_matching_points=False, min_overlap=0))

    return bd


def _check_bd_rate(fn, against):
    r, q = np.array([0.1, 0.2, 0.4, 0.8]), np.array([30.0, 32.0, 34.0, 36.0])
    expect_close(fn(r, q, r / 2, q), -50.0, "the anchor's qualities at half its rates", atol=1e-6)
    expect_close(fn(r, q, r * 1.2, q), 20.0, "the anchor's qualities at 1.2 x its rates", atol=1e-6)
    # 1 dB better at every rate: the rate doubles every 2 dB, so the same quality costs 2**-0.5 as much,
    # over the overlap [31, 36] only
    expect_close(fn(r, q, r, q + 1), 100 * (2**-0.5 - 1), "1 dB better at every rate", atol=1e-6)
    expect_close(fn(list(r[::-1]), list(q[::-1]), r / 2, q), -50.0, "points given in decreasing order", atol=1e-6)
    expect_nan(fn(r, q, r, q + 10), "quality ranges that do not overlap")
    expect_raises(ValueError, fn, r[:3], q[:3], r, q, what="an anchor of 3 points")
    expect_raises(ValueError, fn, r, q, r, [30.0, 33.0, 32.0, 36.0], what="a test curve whose quality drops")
    rng = np.random.default_rng(0)
    for _ in range(5):
        curves = []
        for _ in range(2):
            n = int(rng.integers(4, 8))
            rates = np.exp(np.cumsum(rng.uniform(0.2, 0.9, n))) * 0.01
            quality = 28 + np.cumsum(rng.uniform(0.3, 3.0, n))
            perm = rng.permutation(n)
            curves += [rates[perm], quality[perm]]
        expect_close(fn(*curves), against(*curves), "seeded random curves", rtol=1e-6, atol=1e-6)


def _oracle_rate_for_accuracy():
    from ..eval import clean_curve

    def rate(bpp, accuracy, target):
        r, a = np.asarray(bpp, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
        if r.shape != a.shape:
            raise ValueError("lengths differ")
        c = clean_curve(r, a, monotone="envelope")
        if not len(c["rate"]) or not c["quality"][0] <= target <= c["quality"][-1]:
            return math.nan
        return float(10 ** np.interp(target, c["quality"], np.log10(c["rate"])))

    return rate


def _check_rate_for_accuracy(fn, against):
    bpp, acc = [0.1, 0.2, 0.4, 0.8], [0.5, 0.7, 0.65, 0.9]  # (0.4, 0.65) is not on the envelope
    expect_close(fn(bpp, acc, 0.7), 0.2, "a target on a measured point", rtol=1e-9)
    expect_close(fn(bpp, acc, 0.8), 0.4, "halfway between (0.2, 0.7) and (0.8, 0.9), in log-rate", rtol=1e-9)
    expect_close(fn(bpp, acc, 0.6), math.sqrt(0.02), "halfway between (0.1, 0.5) and (0.2, 0.7)", rtol=1e-9)
    expect_close(fn(bpp[::-1], acc[::-1], 0.8), 0.4, "points in decreasing order of rate", rtol=1e-9)
    expect_close(fn([0.1, 0.1, 0.2], [0.6, 0.5, 0.8], 0.7), math.sqrt(0.02), "two points at the same rate",
                 rtol=1e-9)
    expect_close(fn([0.1, float("nan"), 0.4], [0.5, 0.9, 0.7], 0.6), 0.2, "a NaN point is dropped", rtol=1e-9)
    expect_nan(fn(bpp, acc, 0.95), "a target above every accuracy")
    expect_nan(fn(bpp, acc, 0.4), "a target below every accuracy")
    expect_raises(ValueError, fn, [0.0, 0.2], [0.5, 0.6], 0.55, what="a rate of 0")
    rng = np.random.default_rng(1)
    for _ in range(10):
        n = int(rng.integers(3, 12))
        b, a = rng.uniform(0.01, 2, n), rng.uniform(0.2, 1.0, n)
        for t in (0.3, 0.5, 0.7, 0.9):
            expect_close(fn(b, a, t), against(b, a, t), f"seeded random curve, target {t}", rtol=1e-9)


register_exercise("2.1", bd_rate, check=_check_bd_rate, oracle=_oracle_bd_rate)
register_exercise("2.2", rate_for_accuracy, check=_check_rate_for_accuracy, oracle=_oracle_rate_for_accuracy)
