"""Learned baselines: the factorized prior and the mean-scale hyperprior.

Both are thin subclasses of CompressAI's reference models, so the transforms,
the entropy models (``EntropyBottleneck``, ``GaussianConditional``) and the rANS
coders behind ``compress``/``decompress`` are the library's.  What this file
adds is the training protocol of :mod:`cdlib.train` (``loss_terms`` and
``loss_weights``) and the two profiles.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from compressai.models import FactorizedPrior, MeanScaleHyperprior

from ..registry import register_model


def classification_loss(logits: torch.Tensor, label: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with class indices, or with soft targets (B, C) from mixup/cutmix.

    Soft targets already carry the label smoothing (:class:`cdlib.augment.BatchMixup`), so it is not
    applied twice."""
    if label.is_floating_point():
        if label.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(label.shape)} for logits of shape {tuple(logits.shape)}: "
                             "the config's num_classes must be the model's number of classes")
        return F.cross_entropy(logits, label)
    return F.cross_entropy(logits, label, label_smoothing=label_smoothing)


def bpp_of_likelihoods(likelihoods: dict, num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel: -sum(log2 p) over every latent, per image pixel."""
    return sum(-torch.log(lk).sum() for lk in likelihoods.values()) / (math.log(2) * num_pixels)


class RateDistortionMixin:
    """``L = lmbda * 255^2 * MSE + bpp`` (the CompressAI convention for lmbda)."""

    def loss_terms(self, batch: dict, cfg) -> dict:
        x = batch["image"]
        out = self(x)
        n, _, h, w = x.shape
        return {
            "mse": F.mse_loss(out["x_hat"], x),
            "bpp": bpp_of_likelihoods(out["likelihoods"], n * h * w),
        }

    def loss_weights(self, cfg) -> dict:
        return {"mse": cfg.lmbda * 255.0**2, "bpp": 1.0}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        x = batch["image"]
        return rd_metrics(x, self(x))


def rd_metrics(x: torch.Tensor, out: dict) -> dict:
    """PSNR of the clamped ``out["x_hat"]`` against ``x`` and the likelihood bpp of ``out["likelihoods"]``."""
    n, _, h, w = x.shape
    mse = F.mse_loss(out["x_hat"].clamp(0, 1), x).item()
    return {"psnr": 10 * math.log10(1 / max(mse, 1e-12)),
            "bpp_est": bpp_of_likelihoods(out["likelihoods"], n * h * w).item()}


# Training profiles shared by both baselines.  Paper: the CompressAI/Balle recipe
# (256x256 crops, batch 16, Adam 1e-4, aux 1e-3, ~1.5M steps on a large photo set).
_TRAIN = {
    "laptop": dict(dataset="photos", image_size=64, batch_size=16, lr=1e-3, aux_lr=1e-3, steps=2000,
                   warmup_steps=100, schedule="cosine", lmbda=0.013, grad_clip=1.0),
    "paper": dict(dataset="flatfolder", image_size=256, batch_size=16, lr=1e-4, aux_lr=1e-3, steps=1_500_000,
                  warmup_steps=0, schedule="cosine", lmbda=0.013, grad_clip=1.0, num_workers=8),
}


@register_model("factorized", arch={"laptop": {"N": 64, "M": 96}, "paper": {"N": 128, "M": 192}}, train=_TRAIN)
class Factorized(RateDistortionMixin, FactorizedPrior):
    """Factorized prior. J. Balle, V. Laparra, E. P. Simoncelli, "End-to-end optimized image
    compression", ICLR 2017 (architecture as in Balle et al. 2018's baseline)."""


@register_model("hyperprior", arch={"laptop": {"N": 64, "M": 96}, "paper": {"N": 128, "M": 192}}, train=_TRAIN)
class Hyperprior(RateDistortionMixin, MeanScaleHyperprior):
    """Mean-scale hyperprior. D. Minnen, J. Balle, G. Toderici, "Joint autoregressive and
    hierarchical priors for learned image compression", NeurIPS 2018 (the model without context)."""
