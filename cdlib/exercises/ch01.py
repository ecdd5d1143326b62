"""Chapter 1 exercises: reference solutions, their checks and their independent oracles.

- 1.1 ``gaussian_likelihood``: the discretised Gaussian likelihood of a quantised latent (oracle: CompressAI's
  ``GaussianConditional``);
- 1.2 ``quantized_cdf``: the integer CDF that drives a range coder (oracle: CompressAI's
  ``pmf_to_quantized_cdf``; the check also runs CompressAI's rANS coder with the student's CDF).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .grading import expect, expect_close, expect_raises, register_exercise


def gaussian_likelihood(y, means, scales, scale_bound: float = 0.11, likelihood_bound: float = 1e-9):
    """Exercise 1.1: the likelihood of each quantised value of ``y`` under
    a Gaussian discretised to unit bins.

    ``P(y) = Phi((y - mu + 1/2) / s) - Phi((y - mu - 1/2) / s)``, with the
    scale ``s`` first raised to at least ``scale_bound`` and the result
    raised to at least ``likelihood_bound`` (so that no value costs
    infinitely many bits). Compute it on ``|y - mu|`` (the density is
    symmetric): the difference of two CDF values close to 1 loses every
    digit in float32, the one of two values close to 0 does not. Tensors of
    one shape in, one tensor of that shape out, differentiable in ``y``,
    ``means`` and ``scales``.
    """
    s = scales.clamp_min(scale_bound)
    v = (y - means).abs()

    def phi(x):  # the standard normal CDF
        return 0.5 * torch.erfc(-x / math.sqrt(2.0))

    p = phi((0.5 - v) / s) - phi((-0.5 - v) / s)
    return p.clamp_min(likelihood_bound)


def quantized_cdf(pmf, precision: int = 16) -> list[int]:
    """Exercise 1.2: the integer CDF of a probability mass function for a
    range coder of ``precision`` bits.

    ``pmf``: n non-negative numbers (normalise them: they need not sum to
    1). Return a list of n + 1 ints, ``cdf[0] = 0``, ``cdf[n] =
    2**precision``, in which every symbol has a frequency ``cdf[i+1] -
    cdf[i]`` of at least 1 (a symbol of probability 0 must stay codable)
    and the frequencies are as close to ``pmf * 2**precision`` as the
    expected code length ``sum_i p_i * -log2(freq_i / 2**precision)``
    allows: within 0.01 bit per symbol of the best. ``ValueError`` for an
    empty pmf, negative or non-finite entries, an all-zero pmf, or more
    symbols than ``2**precision``.
    """
    p = np.asarray(pmf, dtype=np.float64)
    total = 1 << int(precision)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"pmf must be a non-empty 1-D sequence, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("pmf entries must be finite, non-negative and not all zero")
    if p.size > total:
        raise ValueError(f"{p.size} symbols do not fit in {precision}-bit frequencies")
    p = p / p.sum()
    freq = np.maximum(1, np.round(p * total)).astype(np.int64)
    # Fix the total one count at a time, each time where it costs (or gains) the fewest (most) expected bits.
    while freq.sum() > total:
        cost = np.where(freq > 1, p * np.log2(freq / np.maximum(freq - 1, 1)), np.inf)
        freq[int(np.argmin(cost))] -= 1
    while freq.sum() < total:
        freq[int(np.argmax(p * np.log2((freq + 1) / freq)))] += 1
    return [0, *np.cumsum(freq).tolist()]


# ------------------------------------------------------------------------------------------------ checks
def _oracle_gaussian_likelihood():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # compressai's torch.jit.script on import
        from compressai.entropy_models import GaussianConditional

    def likelihood(y, means, scales, scale_bound=0.11, likelihood_bound=1e-9):
        gc = GaussianConditional(None, scale_bound=scale_bound, likelihood_bound=likelihood_bound)
        return gc.likelihood_lower_bound(gc._likelihood(y, scales, means))

    return likelihood


def _check_gaussian_likelihood(fn, against):
    zero = torch.zeros(3)
    # N(0, 1) on the bin [-1/2, 1/2]: 0.3829; N(0, 1/2): 0.6827; a scale of 1e-3 is raised to 0.11: ~1
    out = fn(zero, zero, torch.tensor([1.0, 0.5, 1e-3]))
    expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
    expect_close(out, [0.3829249, 0.6826895, 0.9999945], "P(0 | mean 0, scales 1, 0.5, 0.001)", atol=1e-6)
    # the bin of 1 under N(0.5, 1): Phi(1) - Phi(0) = 0.3413
    expect_close(fn(torch.ones(1), torch.full((1,), 0.5), torch.ones(1)), [0.3413447], "P(1 | 0.5, 1)", atol=1e-6)
    # far in the tail: the likelihood bound
    expect_close(fn(torch.tensor([40.0]), torch.zeros(1), torch.ones(1)), [1e-9], "P(40 | 0, 1) (the lower bound)",
                 rtol=1e-4)
    expect_close(fn(torch.tensor([3.0]), torch.zeros(1), torch.full((1,), 0.2), likelihood_bound=1e-3), [1e-3],
                 "P(3 | 0, 0.2) with likelihood_bound=1e-3", rtol=1e-4)
    g = torch.Generator().manual_seed(0)
    for scale_bound, bound in ((0.11, 1e-9), (0.5, 1e-4)):
        y = torch.round(torch.randn(2, 8, 5, 5, generator=g) * 3)
        mu = torch.randn(2, 8, 5, 5, generator=g)
        s = torch.rand(2, 8, 5, 5, generator=g) * 3 + 0.01  # some below the scale bound
        kw = dict(scale_bound=scale_bound, likelihood_bound=bound)
        out, ref = fn(y, mu, s, **kw), against(y, mu, s, **kw)
        expect(out.shape == y.shape and out.dtype == y.dtype, f"shape/dtype {tuple(out.shape)}/{out.dtype}, "
                                                              f"expected {tuple(y.shape)}/{y.dtype}")
        expect_close(out, ref, f"seeded latents (scale_bound={scale_bound}, likelihood_bound={bound})",
                     rtol=1e-4, atol=1e-8)
    # gradients of the rate, where neither bound is active
    y = torch.randn(64, generator=g).round()
    mu = (y + torch.rand(64, generator=g) - 0.5)
    s = torch.rand(64, generator=g) + 0.3
    grads = []
    for f in (fn, against):
        leaves = [t.clone().requires_grad_(True) for t in (y, mu, s)]
        (-torch.log2(f(*leaves))).sum().backward()
        grads.append([t.grad for t in leaves])
    for name, a, b in zip(("y", "means", "scales"), *grads):
        expect(a is not None, f"no gradient reaches {name}")
        expect_close(a, b, f"gradient of the rate with respect to {name}", rtol=1e-4, atol=1e-6)


def _oracle_quantized_cdf():
    from compressai._CXX import pmf_to_quantized_cdf

    def cdf(pmf, precision=16):
        p = np.asarray(pmf, dtype=np.float64)
        return list(pmf_to_quantized_cdf((p / p.sum()).tolist(), precision))

    return cdf


def _code_length(pmf, cdf, precision) -> float:
    """Expected bits per symbol of a pmf coded with an integer cdf."""
    p = np.asarray(pmf, dtype=np.float64)
    p = p / p.sum()
    freq = np.diff(np.asarray(cdf, dtype=np.float64))
    nz = p > 0
    return float(np.sum(p[nz] * -np.log2(freq[nz] / 2.0**precision)))


def _check_cdf_shape(cdf, n, precision, what):
    expect(isinstance(cdf, (list, tuple)) and all(isinstance(c, (int, np.integer)) for c in cdf),
           f"{what}: expected a list of ints, got {type(cdf).__name__}")
    expect(len(cdf) == n + 1, f"{what}: {len(cdf)} entries, expected n + 1 = {n + 1}")
    expect(cdf[0] == 0 and cdf[-1] == 1 << precision, f"{what}: starts at {cdf[0]} and ends at {cdf[-1]}, "
                                                       f"expected 0 and 2**{precision} = {1 << precision}")
    freq = np.diff(np.asarray(cdf, dtype=np.int64))
    expect(bool(np.all(freq >= 1)), f"{what}: symbol {int(np.argmin(freq))} has frequency {int(freq.min())}; "
                                    f"every symbol needs at least 1")


def _check_quantized_cdf(fn, against):
    expect(list(fn([0.5, 0.25, 0.25], 4)) == [0, 8, 12, 16], "quantized_cdf([0.5, 0.25, 0.25], 4) should be "
                                                              "[0, 8, 12, 16]")
    expect(list(fn([2, 1, 1], 4)) == [0, 8, 12, 16], "quantized_cdf([2, 1, 1], 4): normalise the pmf first")
    expect(list(fn([1.0, 0.0], 4)) == [0, 15, 16], "quantized_cdf([1, 0], 4) should be [0, 15, 16] (the symbol "
                                                   "of probability 0 keeps a frequency of 1)")
    expect(list(fn([0.0, 0.0, 1.0], 2)) == [0, 1, 2, 4], "quantized_cdf([0, 0, 1], 2) should be [0, 1, 2, 4]")
    rng = np.random.default_rng(0)
    for n, precision, zeros in ((5, 16, 0), (40, 16, 10), (200, 12, 50), (64, 8, 20), (3, 16, 1)):
        pmf = rng.dirichlet(np.full(n, 0.3))
        pmf[rng.choice(n, zeros, replace=False)] = 0.0
        what = f"a {n}-symbol pmf ({zeros} zeros) at precision {precision}"
        cdf = fn(pmf, precision)
        _check_cdf_shape(cdf, n, precision, what)
        mine, best = _code_length(pmf, cdf, precision), _code_length(pmf, against(pmf, precision), precision)
        expect(mine <= best + 0.01, f"{what}: {mine:.4f} bits per symbol, {mine - best:.4f} more than "
                                    f"{best:.4f}: round the frequencies, then fix their total where it costs least")
    for bad, what in (([], "an empty pmf"), ([0.5, -0.1, 0.6], "a negative entry"), ([0.0, 0.0], "an all-zero pmf"),
                      ([0.5, float("nan")], "a NaN entry"), ([0.2] * 5, "5 symbols at precision 2")):
        expect_raises(ValueError, fn, bad, 2 if "precision 2" in what else 16, what=f"quantized_cdf of {what}")
    # the CDF drives a real range coder (CompressAI's rANS, 16-bit): 2000 symbols round-trip, at the ideal length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from compressai.ans import RansDecoder, RansEncoder
    pmf = np.append(rng.dirichlet(np.full(12, 0.5)) * (1 - 1e-3), 1e-3)  # the last bin: CompressAI's escape symbol
    cdf = [int(c) for c in fn(pmf, 16)]
    _check_cdf_shape(cdf, 13, 16, "a 13-symbol pmf")
    symbols = rng.choice(12, size=2000, p=pmf[:12] / pmf[:12].sum()).tolist()
    stream = RansEncoder().encode_with_indexes(symbols, [0] * len(symbols), [cdf], [len(cdf)], [0])
    decoded = RansDecoder().decode_with_indexes(stream, [0] * len(symbols), [cdf], [len(cdf)], [0])
    expect(list(decoded) == symbols, "rANS with your CDF does not decode what it encoded")
    ideal = sum(-math.log2((cdf[s + 1] - cdf[s]) / 2**16) for s in symbols)
    expect(8 * len(stream) <= ideal + 64, f"rANS stream of {8 * len(stream)} bits for an ideal {ideal:.0f}")


register_exercise("1.1", gaussian_likelihood, check=_check_gaussian_likelihood, oracle=_oracle_gaussian_likelihood)
register_exercise("1.2", quantized_cdf, check=_check_quantized_cdf, oracle=_oracle_quantized_cdf)
