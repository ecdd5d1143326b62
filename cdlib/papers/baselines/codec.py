"""The learned baselines as codecs (chapter 1): one CompressAI model per rate point, real rANS streams."""
from __future__ import annotations

from ... import zoo
from ...codecs.base import register_codec
from ...codecs.learned import LearnedCodec, learned_codec


def _with_weights(name: str, kw: dict) -> dict:
    """``kw`` with the zoo's rate points of ``name`` when no weights are given."""
    if not any(kw.get(k) is not None for k in ("model", "models", "checkpoint", "checkpoints")):
        kw["models"] = zoo.rate_points(name)
    return kw


@register_codec("factorized")
def factorized_codec(**kw) -> LearnedCodec:
    """``get_codec("factorized", model=... | checkpoint=...)``; with neither, the zoo's factorized entries."""
    kw.setdefault("label", "Factorized (Balle 2017)")
    return learned_codec("factorized", **_with_weights("factorized", kw))


@register_codec("hyperprior")
def hyperprior_codec(**kw) -> LearnedCodec:
    """``get_codec("hyperprior", model=... | checkpoint=...)``; with neither, the zoo's hyperprior rate points."""
    kw.setdefault("label", "Mean-scale hyperprior")
    return learned_codec("hyperprior", **_with_weights("hyperprior", kw))
