"""Entropy coding, measured: what CompressAI's rANS coder does with its CDF tables, and where the real
bytes of a learned stream part from the model's estimate ``-sum log2 p``.

CompressAI codes every latent symbol with one row of an integer CDF table (``_quantized_cdf`` of an
entropy model after ``update()``; ``_offset`` and ``_cdf_length`` per row).  Row ``r`` covers the values
``offset[r] .. offset[r] + length[r] - 3``; its entries are cumulative counts out of ``2**16``, every
value having a count of at least 1, and its *last* interval (count ``>= 1``, the model's tail mass) is an
**escape**.  A symbol outside the row is coded as the escape followed by a "bypass" code of 4-bit digits
(``compressai/cpp_exts/rans/rans_interface.cpp``): ``raw = -2 v - 1`` below the row, ``2 (v - max)``
above it (``v`` relative to the row's start, ``max = length - 2``), then the count ``n`` of 4-bit digits of
``raw`` (as digits of 15 until the rest is under 15), then the ``n`` digits.  The coder keeps a 64-bit
state that starts at ``2**31``, writes 32-bit words and flushes its final state (8 bytes) at the end.

So the coded length of one string is, exactly up to a fraction of a word,

``8 * len(string) = table bits + escape bits + flush bits``

with ``table bits = sum -log2(count / 2**16)`` over the symbols' intervals (escape intervals included
in ``escape bits`` together with the 4-bit digits) and ``flush bits`` between about 32 and 64 (the state
ends anywhere in ``[2**31, 2**63)``).  The estimate differs from the table bits because the table is the
model's density rounded to 16-bit counts (and, for a Gaussian conditional, to the nearest table scale
*above* each predicted scale), and from the escape bits because the estimate clamps every likelihood at
``1e-9`` (about 30 bits) while an escape costs the tail interval plus a few 4-bit digits.

* :func:`cdf_row` - one row of a model's table, as a DataFrame (value, cdf, count, probability);
* :func:`model_bits`, :func:`worked_example` - a few symbols of one row: the model's bits, the table's, the bytes;
* :func:`symbol_costs` - per symbol: the table entry used, its count, its bits, escape digits;
* :func:`rans_encode` - CompressAI's own rANS encoder on symbols (the bytes a stream would hold);
* :func:`coded_symbols` - what a model's ``compress`` hands the coder (symbols, rows, the tables), per string;
* :func:`rate_breakdown` - per latent of a model on an image: estimate, table, escape, flush and coded bits;
  :func:`breakdown_table` the same for a list of images;
* :func:`side_information_ablation` - a hyperprior's real bits against an oracle factorized code of ``round(y)``.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import pandas as pd
import torch

RANS_PRECISION = 16  # bits of every CDF entry: probabilities are counts out of 2**16
BYPASS_BITS = 4  # bits of one digit of the bypass (escape) code
_BYPASS_MAX = (1 << BYPASS_BITS) - 1

__all__ = ["RANS_PRECISION", "BYPASS_BITS", "cdf_row", "symbol_costs", "rans_encode", "coded_symbols",
           "rate_breakdown", "breakdown_table", "model_bits", "worked_example", "side_information_ablation"]


def _ans():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from compressai import ans
    return ans


def _tables(em):
    """(cdfs, lengths, offsets) of an entropy model after ``update()``, as Python lists."""
    cdf = getattr(em, "_quantized_cdf", None)
    if cdf is None or cdf.numel() == 0:
        raise ValueError("the entropy model has no CDF table: call model.update(force=True) first")
    return (em._quantized_cdf.tolist(), em._cdf_length.reshape(-1).int().tolist(),
            em._offset.reshape(-1).int().tolist())


def cdf_row(em, row: int) -> pd.DataFrame:
    """Row ``row`` of an entropy model's quantised CDF table: one line per coded value (``value`` is the
    symbol, i.e. the rounded latent minus its mean or median) and a last line for the escape interval.
    Columns ``value, cdf, count, p, bits`` (``p = count / 2**16``, ``bits = -log2 p``, ``cdf`` the interval's
    start)."""
    cdfs, lengths, offsets = _tables(em)
    if not 0 <= row < len(cdfs):
        raise ValueError(f"row must be in 0..{len(cdfs) - 1}, got {row}")
    cdf, n, off = cdfs[row], lengths[row], offsets[row]
    rows = []
    for k in range(n - 1):
        count = cdf[k + 1] - cdf[k]
        rows.append({"value": "escape" if k == n - 2 else off + k, "cdf": cdf[k], "count": count,
                     "p": count / (1 << RANS_PRECISION), "bits": RANS_PRECISION - math.log2(count)})
    return pd.DataFrame(rows)


@torch.no_grad()
def model_bits(em, row: int, symbols: Sequence[int]) -> np.ndarray:
    """The model's own estimate ``-log2 p`` of each symbol coded with CDF row ``row``: for an
    ``EntropyBottleneck`` the learned density of channel ``row`` around its median, for a
    ``GaussianConditional`` the Gaussian of scale ``scale_table[row]`` (mean 0); with the model's
    likelihood lower bound (1e-9), as in training."""
    s = torch.tensor([float(v) for v in symbols], dtype=torch.float32, device=em._quantized_cdf.device)
    if hasattr(em, "scale_table") and hasattr(em, "build_indexes"):  # GaussianConditional
        scale = float(em.scale_table[row])
        lik = em._likelihood(s, torch.full_like(s, scale))
    else:  # EntropyBottleneck: (channels, 1, n) around the medians
        med = em._get_medians().detach().reshape(-1)
        vals = med.reshape(-1, 1, 1).repeat(1, 1, len(s))
        vals[row, 0] = med[row] + s
        lik = em._likelihood(vals)[0][row, 0]
    if getattr(em, "use_likelihood_bound", False):
        lik = em.likelihood_lower_bound(lik)
    return (-torch.log2(lik.double())).cpu().numpy()


def worked_example(em, row: int, symbols: Sequence[int]) -> tuple[pd.DataFrame, bytes]:
    """A handful of ``symbols`` coded with row ``row`` of ``em``'s table by CompressAI's rANS encoder:
    :func:`symbol_costs` plus ``model_bits`` (:func:`model_bits`) per symbol, and the string itself."""
    cdfs, lengths, offsets = _tables(em)
    idx = [row] * len(symbols)
    costs = symbol_costs(symbols, idx, cdfs, lengths, offsets)
    costs.insert(3, "model_bits", model_bits(em, row, symbols))
    return costs, rans_encode(symbols, idx, cdfs, lengths, offsets)


def symbol_costs(symbols: Sequence[int], indexes: Sequence[int], cdfs, lengths, offsets) -> pd.DataFrame:
    """What the rANS coder spends on each symbol, following CompressAI's ``encode_with_indexes``.

    Columns: ``symbol, row, entry`` (interval of the row used; the escape interval for a value outside the
    row), ``count`` (its width out of ``2**16``), ``table_bits`` (``-log2(count / 2**16)``), ``escape``
    (bool), ``bypass_bits`` (4 per digit of the bypass code, 0 when not escaped), ``bits`` (their sum)."""
    sym = np.asarray(symbols, dtype=np.int64).reshape(-1)
    idx = np.asarray(indexes, dtype=np.int64).reshape(-1)
    if sym.shape != idx.shape:
        raise ValueError(f"{sym.size} symbols but {idx.size} indexes")
    if idx.size and (idx.min() < 0 or idx.max() >= len(cdfs)):
        raise ValueError(f"a row index is outside the table (0..{len(cdfs) - 1})")
    width = max(len(c) for c in cdfs)
    table = np.zeros((len(cdfs), width), dtype=np.int64)
    for k, c in enumerate(cdfs):
        table[k, : len(c)] = c
    max_value = np.asarray(lengths, dtype=np.int64)[idx] - 2
    v = sym - np.asarray(offsets, dtype=np.int64)[idx]
    below, above = v < 0, v >= max_value
    raw = np.where(below, -2 * v - 1, np.where(above, 2 * (v - max_value), 0))
    escape = below | above
    entry = np.where(escape, max_value, v)
    count = table[idx, entry + 1] - table[idx, entry]
    # digits of raw in base 16 (0 for raw = 0), then the digit count as digits of 15 plus a last digit
    digits = np.where(raw > 0, (np.floor(np.log2(np.maximum(raw, 1))).astype(np.int64) + 1 + 3) // 4, 0)
    bypass = np.where(escape, BYPASS_BITS * (digits // _BYPASS_MAX + 1 + digits), 0)
    table_bits = RANS_PRECISION - np.log2(count.astype(np.float64))
    return pd.DataFrame({"symbol": sym, "row": idx, "entry": entry, "count": count, "table_bits": table_bits,
                         "escape": escape, "bypass_bits": bypass, "bits": table_bits + bypass})


def rans_encode(symbols: Sequence[int], indexes: Sequence[int], cdfs, lengths, offsets) -> bytes:
    """One rANS string of ``symbols`` (row ``indexes``) from CompressAI's own encoder (``compressai.ans``)."""
    return _ans().RansEncoder().encode_with_indexes([int(s) for s in symbols], [int(i) for i in indexes],
                                                     [list(map(int, c)) for c in cdfs], [int(n) for n in lengths],
                                                     [int(o) for o in offsets])


class _Recorder:
    """Stands in for an entropy model's ``entropy_coder``: records each call, then codes as before."""

    def __init__(self, coder, log: list, name: str):
        self._coder, self._log, self._name = coder, log, name

    def encode_with_indexes(self, symbols, indexes, cdfs, lengths, offsets):
        string = self._coder.encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
        self._log.append({"latent": self._name, "symbols": list(symbols), "indexes": list(indexes),
                          "cdfs": cdfs, "lengths": list(lengths), "offsets": list(offsets), "string": string})
        return string

    def __getattr__(self, name):
        return getattr(self._coder, name)


def _latent_names(model) -> dict:
    """Entropy modules of a CompressAI model and the likelihood key each codes."""
    gc = getattr(model, "gaussian_conditional", None)
    eb = getattr(model, "entropy_bottleneck", None)
    out = {}
    if gc is not None:
        out["y"] = gc
    if eb is not None:
        out["z" if gc is not None else "y"] = eb
    if not out:
        raise ValueError(f"{type(model).__name__} has neither an entropy_bottleneck nor a gaussian_conditional")
    return out


@contextmanager
def _recording(model, log: list):
    modules = _latent_names(model)
    saved = {name: em.entropy_coder for name, em in modules.items()}
    try:
        for name, em in modules.items():
            em.entropy_coder = _Recorder(saved[name], log, name)
        yield
    finally:
        for name, em in modules.items():
            em.entropy_coder = saved[name]


@torch.no_grad()
def coded_symbols(model, x: torch.Tensor) -> list[dict]:
    """Run ``model.compress(x)`` (one image, ``(1, 3, H, W)``, already padded to the model's stride) and
    return what it handed the rANS coder, one dict per string in coding order: ``latent`` ("y" or "z"),
    ``symbols``, ``indexes`` (CDF rows), ``cdfs``, ``lengths``, ``offsets`` and the coded ``string``."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, 3, H, W) tensor, got {tuple(x.shape)}")
    log: list = []
    with _recording(model, log):
        model.compress(x)
    return log


@torch.no_grad()
def rate_breakdown(model, x: torch.Tensor, likelihoods: dict | None = None) -> pd.DataFrame:
    """Where the bits of one image's real rANS strings go, per latent (rows ``y`` and, for a hyperprior, ``z``).

    Columns: ``latent, symbols, escapes`` (symbols outside their CDF row), ``estimated_bits`` (the model's
    ``-sum log2 p``, its likelihoods clamped at 1e-9), ``estimated_escape_bits`` (the part of it on the
    escaped symbols), ``table_bits`` (16-bit table cost of the symbols that were not escaped),
    ``escape_bits`` (escape intervals plus bypass digits), ``coded_bits`` (``8 * len(string)``) and
    ``flush_bits = coded - table - escape`` (the final state, 32 to 64 bits); ``floor_symbols``, symbols
    inside their row whose interval has the minimum count 1 (16 bits, whatever the model says), with
    their ``estimated_floor_bits`` and ``table_floor_bits`` (part of ``table_bits``).
    ``x``: ``(1, 3, H, W)`` in [0, 1], padded to the model's stride; ``likelihoods``: ``model(x)["likelihoods"]``
    when the caller has them already (else the model runs once more)."""
    calls = coded_symbols(model, x)
    lik = model(x)["likelihoods"] if likelihoods is None else likelihoods
    rows = []
    for c in calls:
        costs = symbol_costs(c["symbols"], c["indexes"], c["cdfs"], c["lengths"], c["offsets"])
        est = -torch.log2(lik[c["latent"]].double()).flatten().cpu()
        # compress() codes in the latent's memory order (C, H, W) per image, as the likelihood tensor is laid out
        if est.numel() != len(costs):
            raise RuntimeError(f"{c['latent']}: {est.numel()} likelihoods but {len(costs)} coded symbols")
        esc = costs["escape"].to_numpy()
        floor = ~esc & (costs["count"].to_numpy() == 1)
        est = est.numpy()
        table = float(costs.loc[~esc, "table_bits"].sum())
        escape = float(costs.loc[esc, "bits"].sum())
        coded = 8 * len(c["string"])
        rows.append({"latent": c["latent"], "symbols": len(costs), "escapes": int(esc.sum()),
                     "estimated_bits": float(est.sum()), "estimated_escape_bits": float(est[esc].sum()),
                     "table_bits": table, "escape_bits": escape, "coded_bits": coded,
                     "flush_bits": coded - table - escape, "floor_symbols": int(floor.sum()),
                     "estimated_floor_bits": float(est[floor].sum()),
                     "table_floor_bits": float(costs.loc[floor, "table_bits"].sum())})
    return pd.DataFrame(rows).sort_values("latent").reset_index(drop=True)


def breakdown_table(model, images: Sequence[np.ndarray], stride: int) -> pd.DataFrame:
    """:func:`rate_breakdown` of every image (uint8 ``(H, W, 3)``, padded to ``stride`` as a codec does),
    one row per (image, latent) with an ``image`` column and ``pixels`` (unpadded)."""
    from ..images import pad_to, to_tensor

    out, device = [], next(model.parameters()).device
    for i, img in enumerate(images):
        x, _, _ = pad_to(to_tensor([img]), stride)
        x = x.to(device)
        out.append(rate_breakdown(model, x).assign(image=i, pixels=img.shape[0] * img.shape[1]))
    return pd.concat(out, ignore_index=True)


@torch.no_grad()
def side_information_ablation(model, images: Sequence[np.ndarray], stride: int) -> dict:
    """What a hyperprior's side information buys, measured on ``images`` (uint8, padded to ``stride``).

    With ``z``: the real rANS strings (``y_bits``, ``z_bits``) and the PSNR of ``g_s(y_hat)``.  Without it:
    ``round(y)`` coded by a static per-channel model that is the *empirical* distribution of those very
    symbols over all the images (an oracle factorized prior, fitted to the test set itself and sent for
    free: a lower bound for any factorized prior on this transform), ``factorized_bits`` its ideal code length,
    and the PSNR of ``g_s(round(y))``.  Bits are totals over the images; ``pixels`` their (unpadded) count;
    ``breakdown`` the :func:`breakdown_table` of the images (one row per image and latent)."""
    from ..images import pad_to, to_tensor

    y_bits = z_bits = 0
    psnr_hp, psnr_fact, symbols, pixels, parts = [], [], [], 0, []
    device = next(model.parameters()).device
    for i, img in enumerate(images):
        x, _, _ = pad_to(to_tensor([img]), stride)
        x = x.to(device)
        h, w = img.shape[:2]
        out = model(x)
        bd = rate_breakdown(model, x, out["likelihoods"])
        parts.append(bd.assign(image=i, pixels=h * w))
        for r in bd.itertuples():
            if r.latent == "z":
                z_bits += r.coded_bits
            else:
                y_bits += r.coded_bits
        y = model.g_a(x)
        yq = torch.round(y)
        symbols.append(yq[0].flatten(1).long().cpu())  # (C, positions)
        x_hp = out["x_hat"].clamp(0, 1)[..., :h, :w]
        x_fa = model.g_s(yq).clamp(0, 1)[..., :h, :w]
        ref = x[..., :h, :w]
        psnr_hp.append(float(10 * torch.log10(1 / torch.mean((x_hp - ref) ** 2))))
        psnr_fact.append(float(10 * torch.log10(1 / torch.mean((x_fa - ref) ** 2))))
        pixels += h * w
    sym = torch.cat(symbols, 1)
    fact_bits = 0.0
    for row in sym:
        _, counts = torch.unique(row, return_counts=True)
        p = counts.double() / counts.sum()
        fact_bits += float(-(counts.double() * torch.log2(p)).sum())
    return {"y_bits": float(y_bits), "z_bits": float(z_bits), "factorized_bits": fact_bits, "pixels": pixels,
            "psnr_hyperprior": float(np.mean(psnr_hp)), "psnr_factorized": float(np.mean(psnr_fact)),
            "breakdown": pd.concat(parts, ignore_index=True)}
