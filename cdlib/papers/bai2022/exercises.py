"""Chapter 3 exercises: reference solutions."""
from __future__ import annotations

import torch


def latent_to_tokens(y: torch.Tensor) -> torch.Tensor:
    """Exercise 3.1: a ``(B, M, h, w)`` latent as ``(B, h*w, M)`` tokens, row-major over the grid."""
    if y.ndim != 4:
        raise ValueError(f"expected a (B, M, h, w) latent, got shape {tuple(y.shape)}")
    return y.flatten(2).transpose(1, 2)


def step2_loss(ce, mse, bpp, alpha: float, beta: float):
    """Exercise 3.2: ``alpha * CE + beta * 255^2 * MSE + bpp`` (MSE of images in [0, 1])."""
    return alpha * ce + beta * 255.0**2 * mse + bpp
