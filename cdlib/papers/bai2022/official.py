"""Parameter names of Paper A's official code, mapped one-to-one onto :class:`~.model.Bai2022`.

The official repository (``BYchao100/Towards-Image-Compression-and-Analysis-with-Transformers``,
``full_model/model.py``, class ``JCCTransformer``) names its modules differently; the tensors are the same,
with the same shapes and meanings, at the paper profile's sizes.  The mapping is by name prefix, and every
other name is the same on both sides:

=========================================  =================================================================
this book (:class:`Bai2022`)               official ``JCCTransformer``
=========================================  =================================================================
``g_a.{0,2,4,6}.*``                        ``patch_embed.proj.{0,2,4,6}.*`` (``Img2Embed``: 4 conv5x5/2)
``proj.*``                                 ``chans_embed.*`` (``Linear(192 -> 384)`` of the latent tokens)
``agg_in.{k}.*``, k = 0..3                 ``fusion{k}.*`` (aggregation inputs: tokens, blocks 1, 2, 3)
``agg_out.*``                              ``fusion.*`` (``Linear(384 -> 384)`` after the concatenation)
``g_s.{0,2,4,6}.*``                        ``head_rec.proj.{0,2,4,6}.*`` (``Embed2Img``: 4 deconv5x5/2)
``cls_token``, ``pos_embed``               the same
``blocks.{i}.{norm1,attn.qkv,attn.proj,    the same (timm's ``Block`` and the official copy of it share
norm2,mlp.fc1,mlp.fc2}.*``                 every name)
``norm.*``, ``head.*``                     the same
``h_a.{0,2,4}.*``, ``h_s.{0,2,4}.*``       the same
``entropy_bottleneck.matrices.{i}``,      ``entropy_bottleneck._matrix{i}``, ``._bias{i}``, ``._factor{i}``
``.biases.{i}``, ``.factors.{i}``          (CompressAI 1.1.4, the official version, held them as separate
                                           attributes; 1.2 holds them in ``ParameterList`` s)
``entropy_bottleneck.quantiles``, the      the same
entropy models' buffers, and
``gaussian_conditional.*``
=========================================  =================================================================

Names map, not behaviour: an official checkpoint loaded this way also needs the official input convention
(the official model reads ImageNet-normalised images and reconstructs in that space, with a denormalised
MSE; this book's reads and writes pixels in [0, 1], and zero padding differs between the two spaces, so the
normalisation cannot be folded exactly into ``g_a``), ``agg_input0="tokens"`` (the paper profile) and the
paper profile's sizes.  The official weights are on a private drive; ``tests/test_paper_bai2022.py`` checks
the mapping on this model's own weights, both ways.
"""
from __future__ import annotations

# (this book's prefix, the official prefix); every other name is the same on both sides.  agg_in.k <-> fusionk
# is spelled out for the four aggregation inputs of the paper (agg_blocks = (0, 1, 2, 3)).
PREFIXES = (
    ("g_a.", "patch_embed.proj."),
    ("proj.", "chans_embed."),
    ("agg_out.", "fusion."),
    ("g_s.", "head_rec.proj."),
    *((f"agg_in.{k}.", f"fusion{k}.") for k in range(4)),
)


# CompressAI 1.2's EntropyBottleneck parameter lists against 1.1.4's attributes (whole names; up to 8 filters)
EXACT = tuple((f"entropy_bottleneck.{ours}.{i}", f"entropy_bottleneck._{theirs}{i}")
              for ours, theirs in (("matrices", "matrix"), ("biases", "bias"), ("factors", "factor"))
              for i in range(8))


def _rename(name: str, pairs, exact=()) -> str:
    for src, dst in exact:
        if name == src:
            return dst
    for src, dst in pairs:
        if name.startswith(src):
            return dst + name[len(src):]
    return name


def official_name(name: str) -> str:
    """The official code's name of a parameter or buffer of :class:`Bai2022`."""
    if name.startswith("agg_in.") and not any(name.startswith(p) for p, _ in PREFIXES):
        raise ValueError(f"{name!r}: the official model has four aggregation inputs (fusion0..3), not more")
    return _rename(name, PREFIXES, EXACT)


def our_name(name: str) -> str:
    """This book's name of a parameter or buffer named ``name`` in the official code."""
    return _rename(name, [(b, a) for a, b in PREFIXES], [(b, a) for a, b in EXACT])


def _mapped(state: dict, fn, what: str) -> dict:
    out = {}
    for key, value in state.items():
        new = fn(key)
        if new in out:
            raise ValueError(f"{what}: two tensors map to {new!r}: the mapping must be one-to-one")
        out[new] = value
    return out


def to_official(state: dict) -> dict:
    """A :class:`Bai2022` state dict in the official code's names (the same tensors)."""
    return _mapped(state, official_name, "to_official")


def from_official(state: dict) -> dict:
    """An official-layout state dict (``JCCTransformer``'s names) in this book's names (the same tensors).

    Load the result with :func:`cdlib.checkpoint.load_state_dict` into a paper-profile model with
    ``agg_input0="tokens"`` (see the module docstring for the input convention)."""
    return _mapped(state, our_name, "from_official")
