"""Learned baselines (chapter 1): the factorized prior and the mean-scale hyperprior.

Both are thin subclasses of CompressAI's reference models, so the transforms,
the entropy models (``EntropyBottleneck``, ``GaussianConditional``) and the rANS
coders behind ``compress``/``decompress`` are the library's.  What this file
adds is the training protocol of :mod:`cdlib.train` (``loss_terms`` and
``loss_weights``, from :class:`cdlib.losses.RateDistortionMixin`) and the two profiles.
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # compressai calls torch.jit.script when imported, which torch deprecates (a FutureWarning that names a
    # file of the machine): not the reader's business. Only that message is silenced, only here.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.models import FactorizedPrior, MeanScaleHyperprior

from ...exact import mean_scale_compress, mean_scale_decompress
from ...losses import RateDistortionMixin
from ...registry import register_model


# Training profiles shared by both baselines.  Paper: the CompressAI/Balle recipe
# (256x256 crops, batch 16, Adam 1e-4, aux 1e-3, ~1.5M steps on a large photo set).
_TRAIN = {
    "laptop": dict(dataset="photos", image_size=64, batch_size=16, lr=1e-3, aux_lr=1e-3, steps=2000,
                   warmup_steps=100, schedule="cosine", lmbda=0.013, grad_clip=1.0),
    "paper": dict(dataset="flatfolder", image_size=256, batch_size=16, lr=1e-4, aux_lr=1e-3, steps=1_500_000,
                  warmup_steps=0, schedule="cosine", lmbda=0.013, grad_clip=1.0, num_workers=8),
}


@register_model("factorized", arch={"laptop": {"N": 64, "M": 96}, "paper": {"N": 128, "M": 192}}, train=_TRAIN,
                size_multiple=16)
class Factorized(RateDistortionMixin, FactorizedPrior):
    """Factorized prior. J. Balle, V. Laparra, E. P. Simoncelli, "End-to-end optimized image
    compression", ICLR 2017 (architecture as in Balle et al. 2018's baseline)."""


@register_model("hyperprior", arch={"laptop": {"N": 64, "M": 96}, "paper": {"N": 128, "M": 192}}, train=_TRAIN,
                size_multiple=64)
class Hyperprior(RateDistortionMixin, MeanScaleHyperprior):
    """Mean-scale hyperprior. D. Minnen, J. Balle, G. Toderici, "Joint autoregressive and
    hierarchical priors for learned image compression", NeurIPS 2018 (the model without context).

    ``compress`` and ``decompress`` code as CompressAI's, except that the Gaussian parameters ``h_s(z_hat)``
    are computed stream by stream (:func:`cdlib.exact.mean_scale_compress`), so that a batch encodes to
    streams that a one-stream decoder reads exactly."""

    exact_entropy_parameters = True

    def compress(self, x):
        strings, shape = mean_scale_compress(self, self.g_a(x))
        return {"strings": strings, "shape": shape}

    def decompress(self, strings, shape):
        if not isinstance(strings, list) or len(strings) != 2:
            raise ValueError("hyperprior needs 2 latent strings (y, z)")
        y_hat = mean_scale_decompress(self, strings, shape)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}

    def diagram_blocks(self) -> list:
        """The stages of the model for :func:`cdlib.diagrams.model_diagram` (shapes come from a run)."""
        from ...diagrams import Block, layer_summary

        return [
            Block("input", "image", (0, 0), kind="input", out="x"),
            Block("g_a", "g_a", (1, 0), layer_summary(self.g_a), inputs=("input",), out="y"),
            Block("h_a", "h_a", (1, 1), layer_summary(self.h_a), inputs=("g_a",), out="z"),
            Block("entropy_bottleneck", "Q + factorized", (2, 1), "entropy model", inputs=("h_a",),
                  kind="entropy", out="ẑ"),
            Block("h_s", "h_s", (3, 1), layer_summary(self.h_s), inputs=("entropy_bottleneck",),
                  out="μ,σ"),
            Block("gaussian_conditional", "Q + Gaussian", (3, 0), "entropy model", inputs=("g_a", "h_s"),
                  kind="entropy", out="ŷ"),
            Block("g_s", "g_s", (4, 0), layer_summary(self.g_s), inputs=("gaussian_conditional",), out="x̂"),
        ]
