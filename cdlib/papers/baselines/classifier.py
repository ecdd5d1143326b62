"""Pixel-domain classifier for decode-then-classify baselines (a timm model, from scratch)."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn

from ...losses import classification_loss
from ...registry import register_model


class PixelClassifier(nn.Module):
    """A timm classifier trained from scratch on decoded (or raw) pixels.

    ``backbone`` is any timm model name; no pretrained weights are ever loaded
    (nothing may be downloaded).  Inputs are ``[0, 1]`` RGB, normalised inside.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 10, img_size: int | None = None, **timm_kw):
        super().__init__()
        kw = dict(timm_kw)
        if img_size is not None and "vit" in backbone:
            kw["img_size"] = img_size
        self.net = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **kw)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.net((x - self.mean) / self.std)

    def loss_terms(self, batch: dict, cfg) -> dict:
        logits = self(batch["image"])
        return {"ce": classification_loss(logits, batch["label"], cfg.label_smoothing)}

    def loss_weights(self, cfg) -> dict:
        return {"ce": 1.0}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        return {"accuracy": (self(batch["image"]).argmax(1) == batch["label"]).float().mean().item()}


@register_model(
    "pixel_classifier",
    arch={
        # A half-width ResNet-10-T (1.3 M parameters, 2.5 MB in fp16) suits 64x64 ShapesWorld on a CPU and the
        # zoo's size budget; the paper-scale anchor is a ResNet-50.
        "laptop": {"backbone": "resnet10t", "num_classes": 10, "img_size": None, "channels": [32, 64, 128, 256]},
        "paper": {"backbone": "resnet50", "num_classes": 1000, "img_size": None, "channels": None},
    },
    train={
        "laptop": dict(dataset="shapes", image_size=64, batch_size=64, lr=2e-3, optimizer="adamw",
                       weight_decay=0.05, steps=2000, warmup_steps=100, num_train=8000),
        "paper": dict(dataset="imagefolder", image_size=224, batch_size=256, lr=1e-3, optimizer="adamw",
                      weight_decay=0.05, steps=450_000, warmup_steps=5000, label_smoothing=0.1,
                      num_classes=1000, num_workers=8),
    },
)
def pixel_classifier(backbone="resnet18", num_classes=10, img_size=None, channels=None):
    """Pixel-domain timm classifier (from scratch) for decode-then-classify curves; ``channels``: the
    widths of a timm ResNet's four stages (None: the model's own)."""
    kw = {} if channels is None else {"channels": tuple(channels)}
    return PixelClassifier(backbone, num_classes, img_size, **kw)
