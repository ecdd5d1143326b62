"""The learned baselines as codecs (chapter 1): one CompressAI model per rate point, real rANS streams."""
from __future__ import annotations

from ... import zoo
from ...codecs.base import register_codec
from ...codecs.learned import LearnedCodec, learned_codec


@register_codec("factorized")
def factorized_codec(**kw) -> LearnedCodec:
    """``get_codec("factorized", model=... | checkpoint=...)``; with neither, the zoo's factorized entries."""
    kw.setdefault("label", "Factorized (Balle 2017)")
    return learned_codec("factorized", **zoo.with_rate_points("factorized", kw))


@register_codec("hyperprior")
def hyperprior_codec(**kw) -> LearnedCodec:
    """``get_codec("hyperprior", model=... | checkpoint=...)``; with neither, the zoo's hyperprior rate points."""
    kw.setdefault("label", "Mean-scale hyperprior")
    return learned_codec("hyperprior", **zoo.with_rate_points("hyperprior", kw))
