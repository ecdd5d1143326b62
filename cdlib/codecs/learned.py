"""Learned codecs behind the :class:`~cdlib.codecs.base.Codec` interface.

A :class:`LearnedCodec` holds one CompressAI model per rate point; ``quality`` is
the index of the rate point (0 = lowest rate).  Streams carry the fingerprint of
the exact weights used, so decoding with another checkpoint is refused instead
of producing a wrong image.

Hostile and broken inputs.  CompressAI's rANS coder trusts its inputs: a non-finite latent makes the
encoder loop forever, and a string shorter than its latent needs makes the decoder read past the end of
the string (a segmentation fault for a large latent).  So a learned codec

- refuses a model with a NaN or infinite weight or buffer when it is built (``ValueError``), and a model
  of another kind than the codec's (``get_codec("hyperprior", checkpoint=<a checkpoint of another model>)``);
- checks, before the entropy coder runs, that every latent it codes is finite and that each coded symbol
  ``round(latent - mean)`` is within ``+-LATENT_LIMIT`` (``ValueError``: nothing is coded);
- refuses, with :class:`~cdlib.bitstream.BitstreamError` and before anything large is allocated, a stream
  whose padded image has more than :attr:`LearnedCodec.max_pixels` pixels, whose padding is not the
  encoder's (each pad is less than the model stride), or whose strings are too short for the latent the
  header implies (:func:`min_string_bytes`, a sound lower bound: every genuine stream passes it);
- hands the rANS decoder its strings followed by padding words it can read instead of foreign memory
  (:func:`rans_padding`), checks the decoded symbols are in range, and refuses a non-finite reconstruction.

The entropy-coder checks are installed on the model's entropy modules (``compress``/``decompress`` of each
``compressai.entropy_models.EntropyModel`` become checking wrappers, see :func:`guard_entropy_models`);
on genuine inputs they change no byte and no value.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import warnings

with warnings.catch_warnings():
    # compressai calls torch.jit.script when imported, which torch deprecates (a FutureWarning that names a
    # file of the machine): not the reader's business. Only that message is silenced, only here.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, EntropyModel

from ..bitstream import BitstreamError, Header, pack
from ..checkpoint import check_finite_state
from ..images import as_rgb_uint8, pad_to, to_tensor, to_uint8
from .base import Codec

# A coded symbol is round(latent - mean) (mean: the Gaussian mean, or the EntropyBottleneck's median).  The
# rANS coder codes an out-of-table symbol in "bypass" mode, which loops forever on a negative int32 (NaN
# and values beyond int32 become INT_MIN); 2**23 keeps every symbol an exact float32 integer, far from it.
LATENT_LIMIT = 1 << 23
# CompressAI's rANS: 16-bit probabilities, 64-bit state kept in [2**31, 2**63), 32-bit output words.
RANS_PRECISION = 16
# Per coded symbol, the state's information (log2 state + 32 * words out) grows by at least
# log2(2**16 / freq) - 2 * log2(1 / (1 - 2**-15)) > log2(2**16 / freq) - 9e-5 bits (floor rounding); 1e-4 is safe.
RANS_SLACK_BITS = 1e-4
_PAD_WORD = (1 << 31).to_bytes(4, "little")  # read as 0x80000000: a state >= 2**31, no all-ones nibble


def _is_ans(em) -> bool:
    return getattr(getattr(em, "entropy_coder", None), "name", "ans") == "ans"


def symbol_bits(em: EntropyModel) -> torch.Tensor:
    """Per CDF row of an entropy model (after ``update()``): ``-log2(max freq / 2**16)``, the fewest bits
    that any symbol coded with that row adds to a rANS string (float64, one value per row)."""
    cdf = em._quantized_cdf.long()
    lengths = em._cdf_length.reshape(-1, 1).long()
    freq = cdf[:, 1:] - cdf[:, :-1]
    cols = torch.arange(freq.shape[1]).reshape(1, -1)
    fmax = freq.masked_fill(cols >= lengths - 1, 0).amax(1).clamp(1, 1 << RANS_PRECISION)
    return RANS_PRECISION - torch.log2(fmax.double())


def min_string_bytes(min_bits: float, n_symbols: int) -> int:
    """The fewest bytes a CompressAI rANS string of ``n_symbols`` symbols whose least costly choices add up to
    ``min_bits`` bits can have (at least the 8 bytes of the flushed state).

    Sound: the encoder starts from a state of 2**31 and ends below 2**63, writes 32-bit words and flushes
    8 bytes, and each symbol of frequency ``f`` adds at least ``log2(2**16 / f) - RANS_SLACK_BITS`` bits of
    state; so ``8 * len >= min_bits - RANS_SLACK_BITS * n_symbols + 32``.  The bound drops the 32."""
    return max(8, int(math.floor((min_bits - RANS_SLACK_BITS * n_symbols) / 8)))


def rans_padding(n_symbols: int, n_bytes: int) -> bytes:
    """Words appended to a ``n_bytes`` rANS string of ``n_symbols`` symbols before CompressAI decodes it.

    The decoder reads 2 words to start and at most one word per symbol, plus the words of "bypass"
    (escape) values, whose count a forged string controls: an escape reads a 4-bit count, then that many
    4-bit digits, and a run of all-ones nibbles adds 15 digits per nibble.  The padding word 0x80000000 has
    no all-ones nibble and refills the state to at least 2**59 after the first of two reads, so padding never
    extends a count, and the digits a count from the string asks for cost one word per 8 (15 * 8 / 8 = 15
    words per word of the string; 20 are given).  An all-ones string, the worst case found, uses two
    thirds of this padding.  Genuine strings are never read past their end, so the padding changes
    nothing; it costs 4 bytes per symbol plus 20 per byte of the string, during the call."""
    return _PAD_WORD * (n_symbols + 2 + 20 * (n_bytes // 4 + 1) + 256)


def _check_strings(em, owner: str, what: str, strings, min_bits, counts) -> list[bytes]:
    """The strings, checked against the shapes they must code, each followed by :func:`rans_padding`."""
    out = []
    for s, bits, n in zip(strings, min_bits, counts):
        if not isinstance(s, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"{owner}: the {what} string is {type(s).__name__}, not bytes")
        s = bytes(s)
        if _is_ans(em):
            if len(s) % 4 or len(s) < 8:
                raise BitstreamError(f"{owner}: the {what} string has {len(s)} bytes; a rANS string is a whole "
                                     "number of 32-bit words, at least 2 (the stream is corrupt)")
            need = min_string_bytes(float(bits), int(n))
            if len(s) < need:
                raise BitstreamError(f"{owner}: the {what} string has {len(s)} bytes, but the {n} latent symbols "
                                     f"of the header's image size need at least {need}: the header does not "
                                     "match the payload (forged or corrupt stream)")
            s += rans_padding(int(n), len(s))
        out.append(s)
    return out


def _check_symbols(owner: str, what: str, values: torch.Tensor, means: torch.Tensor | None) -> None:
    sym = values if means is None else values - means
    if not bool(torch.isfinite(sym).all()):
        raise BitstreamError(f"{owner}: the decoded {what} latent is not finite (NaN or inf): the stream is corrupt "
                             "or the model is broken")
    if sym.numel() and float(sym.abs().max()) > LATENT_LIMIT:
        raise BitstreamError(f"{owner}: the decoded {what} latent has symbols beyond +-{LATENT_LIMIT}, which no "
                             "encoder writes (corrupt stream)")


def _check_latent(owner: str, what: str, latent: torch.Tensor, means) -> None:
    """Before the rANS encoder: the latent, its means and the symbols must be finite and in range."""
    sym = latent if means is None else latent - means
    if not bool(torch.isfinite(latent).all()) or (means is not None and not bool(torch.isfinite(means).all())):
        raise ValueError(f"{owner}: the latent {what} of this image is not finite (NaN or inf) before entropy "
                         "coding: the model is broken (non-finite weights or overflowing activations); "
                         "nothing was coded")
    if sym.numel() and not float(sym.abs().max()) <= LATENT_LIMIT:
        raise ValueError(f"{owner}: the latent {what} of this image has values beyond +-{LATENT_LIMIT} (max "
                         f"{float(sym.abs().max()):.3g}) before entropy coding: the model is broken; nothing "
                         "was coded")


def _medians(em: EntropyBottleneck, ndim: int) -> torch.Tensor:
    return em._get_medians().detach().reshape(1, -1, *([1] * (ndim - 2)))


def _eb_compress(em, owner, what, x, *args, **kw):
    _check_latent(owner, what, x, _medians(em, x.dim()))
    return type(em).compress(em, x, *args, **kw)


def _eb_decompress(em, owner, what, strings, size, *args, **kw):
    if not isinstance(strings, (list, tuple)):
        raise BitstreamError(f"{owner}: the {what} strings must be a list")
    size = tuple(int(v) for v in size)
    positions, channels = math.prod(size), int(em._quantized_cdf.shape[0])
    bits = positions * float(symbol_bits(em).sum()) if _is_ans(em) else 0.0
    padded = _check_strings(em, owner, what, strings, [bits] * len(strings), [positions * channels] * len(strings))
    out = type(em).decompress(em, padded, size, *args, **kw)
    _check_symbols(owner, what, out, _medians(em, out.dim()))
    return out


def _em_compress(em, owner, what, inputs, indexes, means=None, *args, **kw):
    _check_latent(owner, what, inputs, means)
    return type(em).compress(em, inputs, indexes, means, *args, **kw)


def _em_decompress(em, owner, what, strings, indexes, dtype=torch.float, means=None, *args, **kw):
    if not isinstance(strings, (list, tuple)) or indexes.dim() < 2 or len(strings) != indexes.shape[0]:
        raise BitstreamError(f"{owner}: {len(strings) if isinstance(strings, (list, tuple)) else '?'} {what} "
                             f"strings for a latent of shape {tuple(indexes.shape)}")
    if means is not None and not bool(torch.isfinite(means).all()):
        raise BitstreamError(f"{owner}: the means the model predicts for the decoded {what} latent are not finite "
                             "(NaN or inf): the model is broken or the stream corrupt")
    flat = indexes.reshape(indexes.shape[0], -1).long()
    if _is_ans(em):
        rows = symbol_bits(em)
        bits = rows[flat.clamp(0, rows.numel() - 1)].sum(1).tolist()
    else:
        bits = [0.0] * len(strings)
    padded = _check_strings(em, owner, what, strings, bits, [flat.shape[1]] * len(strings))
    out = type(em).decompress(em, padded, indexes, dtype, means, *args, **kw)
    _check_symbols(owner, what, out, means)
    return out


def guard_entropy_models(model: torch.nn.Module, owner: str) -> torch.nn.Module:
    """Make every CompressAI entropy module of ``model`` check what it codes (idempotent; returns ``model``).

    Its ``compress`` refuses a non-finite or out-of-range latent (``ValueError``); its ``decompress``
    refuses strings too short for the latent shape (:func:`min_string_bytes`) or decoding to out-of-range
    symbols (``BitstreamError``) and pads the strings it hands to the rANS decoder (:func:`rans_padding`).
    ``owner`` (the codec's name) starts the messages.  The wrappers are instance attributes; the
    ``state_dict`` and the coded bytes are unchanged."""
    has_hyper = any(isinstance(m, EntropyModel) and not isinstance(m, EntropyBottleneck) for m in model.modules())
    for path, em in model.named_modules():
        if not isinstance(em, EntropyModel) or "compress" in vars(em):
            continue
        if isinstance(em, EntropyBottleneck):
            what = "z" if has_hyper else "y"
            em.compress = functools.partial(_eb_compress, em, owner, what)
            em.decompress = functools.partial(_eb_decompress, em, owner, what)
        else:
            what = "y" if path == "gaussian_conditional" else f"{path!r}"
            em.compress = functools.partial(_em_compress, em, owner, what)
            em.decompress = functools.partial(_em_decompress, em, owner, what)
    return model


def _fingerprint(model) -> str:
    fp = getattr(model, "fingerprint", None)
    if not fp:
        from ..checkpoint import fingerprint

        fp = model.fingerprint = fingerprint(model)
    return fp


def _source(model) -> str | None:
    meta = getattr(model, "checkpoint_meta", None)
    return meta.get("path") if isinstance(meta, dict) else None


def check_model_kind(model, needed: str, codec: str) -> None:
    """Raise ``ValueError`` unless ``model`` is a ``needed`` model (its ``model_name``, or for a model built
    without the registry, an instance of the registered class)."""
    found = getattr(model, "model_name", None)
    if found == needed:
        return
    if found is None:
        from ..registry import get_entry

        try:
            factory = get_entry(needed).factory
        except KeyError:
            factory = None
        if isinstance(factory, type) and isinstance(model, factory):
            return
        found = type(model).__name__
    src = _source(model)
    where = f"checkpoint {src} holds" if src else "the model given (model=/models=) is"
    raise ValueError(f"{where} a {found!r} model; codec {codec!r} needs {needed!r}")


class LearnedCodec(Codec):
    """A CompressAI model (or a list of them, one per rate point) as a codec.

    ``max_pixels``: the largest padded image (height x width, padded to the model stride) this codec
    encodes or decodes; a stream above it is refused before anything is allocated.  A stream of a few
    kilobytes can honestly describe a large flat image, so this cap, not the stream's length, bounds what a
    decode may cost.  The default, 2048 * 2048, costs the laptop hyperprior about 0.9 GB and 5 s on one
    CPU core (4096 * 4096: 3.4 GB and 18 s; memory and time grow with the pixels); pass ``max_pixels=``
    (``get_codec(name, max_pixels=...)``) to decode larger images.
    ``model_name``: the registered model the codec needs (checked for every model; a checkpoint of another
    model is refused before it is built).
    """

    max_pixels: int = 2048 * 2048

    def __init__(self, models, name: str | None = None, label: str | None = None, max_pixels: int | None = None,
                 model_name: str | None = None):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not models:
            raise ValueError("LearnedCodec needs at least one model")
        self.name = name or getattr(models[0], "model_name", type(models[0]).__name__.lower())
        for m in models:
            if model_name is not None:
                check_model_kind(m, model_name, self.name)
            if not callable(getattr(m, "update", None)) or not callable(getattr(m, "compress", None)):
                raise ValueError(f"codec {self.name!r}: a {type(m).__name__} is not a compression model "
                                 "(no update()/compress())")
            src = _source(m)
            check_finite_state(m.state_dict(), f"the {getattr(m, 'model_name', type(m).__name__)!r} model given to "
                                               f"codec {self.name!r}" + (f" (loaded from {src})" if src else ""))
        for m in models:
            m.eval()
            m.update(force=True)  # build the CDF tables the range coder uses
            guard_entropy_models(m, self.name)
        self.models = models
        self.model_name = model_name
        self.label = label or self.name
        self.qualities = tuple(range(len(models)))
        self.stride = int(getattr(models[0], "downsampling_factor", 64))
        if max_pixels is not None:
            if int(max_pixels) != max_pixels or max_pixels < 1:
                raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
            self.max_pixels = int(max_pixels)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str], **kw) -> "LearnedCodec":
        from ..checkpoint import load_model

        needed = kw.get("model_name")
        who = f"codec {kw.get('name') or needed!r}"
        return cls([load_model(p, expect=needed, expected_by=who) for p in paths], **kw)

    def _model(self, quality) -> torch.nn.Module:
        try:
            q = int(quality)
            whole = float(quality) == q
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole or not 0 <= q < len(self.models):
            raise ValueError(f"{self.name}: quality must be a rate-point index in 0..{len(self.models) - 1}, got {quality}")
        return self.models[q]

    def cfg_hash(self, quality=None) -> bytes:
        try:
            model = self._model(0 if quality is None else quality)
        except ValueError:
            raise BitstreamError(f"{self.name}: stream asks for rate point {quality}, this codec has "
                                 f"{len(self.models)} (0..{len(self.models) - 1})") from None
        return bytes.fromhex(_fingerprint(model))[:8]

    def latent_grid(self, header: Header) -> tuple[int, int]:
        """The grid ``(H / stride, W / stride)`` that the model decodes for a stream's header (padded size),
        after checking the padding and the size against :attr:`max_pixels` (``BitstreamError``)."""
        s = self.stride
        if header.pad_h >= s or header.pad_w >= s:
            raise BitstreamError(f"{self.name}: padding {header.pad_h}x{header.pad_w} is not this codec's: it pads "
                                 f"each side by less than the model stride {s} (corrupt stream)")
        hp, wp = header.height + header.pad_h, header.width + header.pad_w
        if hp % s or wp % s:
            raise BitstreamError(f"{self.name}: padded size {hp}x{wp} is not a multiple of the model stride {s}")
        if hp * wp > self.max_pixels:
            raise BitstreamError(f"{self.name}: padded size {hp}x{wp} ({hp * wp} pixels) is above this codec's "
                                 f"max_pixels = {self.max_pixels}; pass max_pixels= to the codec to decode larger "
                                 "images")
        return hp // s, wp // s

    # -- single image --------------------------------------------------------
    def _encode(self, image, quality):
        return self._encode_tensor(to_tensor([image]), quality)[0]

    @torch.no_grad()
    def _encode_tensor(self, x: torch.Tensor, quality):
        model = self._model(quality)
        xp, ph, pw = pad_to(x, self.stride)
        if xp.shape[-2] * xp.shape[-1] > self.max_pixels:
            raise ValueError(f"{self.name}: image of {x.shape[-2]}x{x.shape[-1]} pixels (padded "
                             f"{xp.shape[-2]}x{xp.shape[-1]}) is above this codec's max_pixels = {self.max_pixels}; "
                             "downscale it or pass max_pixels= to the codec")
        out = model.compress(xp)
        # one list of strings per latent ([y, z] or [y]); one string per image in each
        return [([s[i] for s in out["strings"]], ph, pw) for i in range(x.shape[0])]

    @torch.no_grad()
    def _decode(self, strings, header: Header):
        model = self._model(header.quality)
        return to_uint8(self._decompress(model, [strings], header))[0]

    def _decompress(self, model, batch_strings, header: Header) -> torch.Tensor:
        shape = self.latent_grid(header)
        per_latent = [list(s) for s in zip(*batch_strings)]
        expected = 2 if hasattr(model, "gaussian_conditional") else 1
        if len(per_latent) != expected:
            raise BitstreamError(f"{self.name}: stream has {len(per_latent)} latent strings, the model needs {expected}")
        g_s = getattr(model, "g_s", None)
        hook = g_s.register_forward_hook(functools.partial(_finite_output, self.name)) \
            if isinstance(g_s, torch.nn.Module) else None
        try:
            x_hat = model.decompress(per_latent, shape)["x_hat"]
        finally:
            if hook is not None:
                hook.remove()
        _finite_output(self.name, None, None, x_hat)
        return x_hat


    # -- batches: one forward pass for many same-size images -------------------
    def encode_batch(self, images, quality=None, batch_size: int = 32) -> list[bytes]:
        """Streams of many images; same-size images are encoded ``batch_size`` at a time (one forward pass),
        except by a model with a Gaussian conditional that does not compute its entropy parameters stream by
        stream (``exact_entropy_parameters``, :mod:`cdlib.exact`): one at a time, as the decoder computes
        them."""
        imgs = [as_rgb_uint8(im) for im in images]
        if len({im.shape for im in imgs}) != 1:
            return super().encode_batch(imgs, quality)
        q = self.qualities[len(self.qualities) // 2] if quality is None else quality
        model = self._model(q)
        if hasattr(model, "gaussian_conditional") and not getattr(model, "exact_entropy_parameters", False):
            # the decoder recomputes the scales from z one stream at a time; a batched hyper-synthesis may
            # differ in the last float bits on some CPUs, flip a scale index and make the stream undecodable
            batch_size = 1
        h, w = imgs[0].shape[:2]
        out = []
        for i in range(0, len(imgs), batch_size):
            for strings, ph, pw in self._encode_tensor(to_tensor(imgs[i:i + batch_size]), q):
                out.append(pack(self.name, strings, h, w, ph, pw, float(q), self.cfg_hash(q)))
        return out

    def decode_batch(self, streams: Sequence[bytes], batch_size: int | None = None) -> list:
        """Images of many streams.  ``batch_size=None`` (default): stream by stream, as :meth:`decode`.  An
        integer: streams of one rate point and latent grid are decoded ``batch_size`` at a time, one
        ``decompress`` call each (the entropy decoding stays per stream; the transforms run once per batch), for
        throughput; the pixels may differ from :meth:`decode`'s in the last float bits before rounding."""
        if batch_size is None:
            return super().decode_batch(streams)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        parsed = [self.parse(d) for d in streams]
        groups: dict[tuple, list[int]] = {}
        for i, (h, _) in enumerate(parsed):
            groups.setdefault((h.quality, self.latent_grid(h)), []).append(i)
        out: list = [None] * len(parsed)
        with torch.no_grad():
            for (quality, _), idx in groups.items():
                model = self._model(quality)
                for k in range(0, len(idx), int(batch_size)):
                    chunk = idx[k:k + int(batch_size)]
                    try:
                        x_hat = self._decompress(model, [parsed[i][1] for i in chunk], parsed[chunk[0]][0])
                    except BitstreamError:
                        raise
                    except Exception as exc:  # the underlying decoder failed on a corrupt payload
                        raise BitstreamError(f"{self.name}: payload could not be decoded "
                                             f"({type(exc).__name__}: {exc})") from exc
                    for i, result in zip(chunk, self._results(x_hat, [parsed[i][0] for i in chunk])):
                        out[i] = result
        return out

    def _results(self, decoded: torch.Tensor, headers: Sequence) -> list:
        """One result per stream from a batch the decoder produced: here uint8 images cropped to their size (a
        codec that decodes something else, e.g. features, overrides this and nothing else of the batch path)."""
        return [np.ascontiguousarray(img[: h.height, : h.width]) for img, h in zip(to_uint8(decoded), headers)]


def _finite_output(owner: str, module, inputs, output) -> None:
    """Forward hook (and check) of the pixel decoder: a reconstruction with a NaN or inf is an error."""
    if isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
        raise BitstreamError(f"{owner}: the decoded image is not finite (NaN or inf): the stream is corrupt or "
                             "the model is broken")


def learned_codec(name: str, model=None, models=None, checkpoint=None, checkpoints=None, cls=None,
                  model_name: str | None = None, **kw) -> LearnedCodec:
    """A codec of model ``name`` from ``model=``, ``models=[...]``, ``checkpoint=`` or ``checkpoints=[...]``
    (rate points from low to high rate).  ``cls``: the codec class (default :class:`LearnedCodec`); paper
    packages pass their own subclass, and their zoo rate points (``cdlib.zoo.rate_points``) when no weights
    are given.  ``model_name`` (default ``name``): the registered model every rate point must be; another
    model (a checkpoint of another paper, a classifier) is a ``ValueError`` naming both."""
    cls = cls or LearnedCodec
    kw["model_name"] = model_name or name
    if model is not None:
        return cls([model], name=name, **kw)
    if models is not None:
        return cls(models, name=name, **kw)
    if checkpoint is not None:
        return cls.from_checkpoints([checkpoint], name=name, **kw)
    if checkpoints is not None:
        return cls.from_checkpoints(checkpoints, name=name, **kw)
    raise ValueError(f"codec {name!r} needs model=, models=, checkpoint= or checkpoints=")
