"""Loss pieces every paper composes: cross-entropy (hard or soft targets), the rate term, and the
rate-distortion objective ``L = lmbda * 255^2 * MSE + bpp`` (CompressAI's convention for lambda).

Chapter 1 introduces the rate-distortion loss; chapter 3 the joint CE + MSE + rate loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, label: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with class indices, or with soft targets (B, C) from mixup/cutmix.

    Soft targets already carry the label smoothing (the batch transform that made them folds it in), so it
    is not applied twice."""
    if label.is_floating_point():
        if label.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(label.shape)} for logits of shape {tuple(logits.shape)}: "
                             "the config's num_classes must be the model's number of classes")
        return F.cross_entropy(logits, label)
    return F.cross_entropy(logits, label, label_smoothing=label_smoothing)


def bpp_of_likelihoods(likelihoods: dict, num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel: -sum(log2 p) over every latent, per image pixel."""
    return sum(-torch.log(lk).sum() for lk in likelihoods.values()) / (math.log(2) * num_pixels)


def rd_metrics(x: torch.Tensor, out: dict) -> dict:
    """PSNR of the clamped ``out["x_hat"]`` against ``x`` and the likelihood bpp of ``out["likelihoods"]``."""
    n, _, h, w = x.shape
    mse = F.mse_loss(out["x_hat"].clamp(0, 1), x).item()
    return {"psnr": 10 * math.log10(1 / max(mse, 1e-12)),
            "bpp_est": bpp_of_likelihoods(out["likelihoods"], n * h * w).item()}


class RateDistortionMixin:
    """``loss_terms``/``loss_weights``/``metrics`` of a plain learned codec: ``L = lmbda * 255^2 * MSE + bpp``."""

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
