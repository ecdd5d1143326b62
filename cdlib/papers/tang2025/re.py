"""The RE module (the official code calls it "IF", information filtering): an autoencoder on f1 whose
bottleneck is quantised and rate-penalised, so that the features f2 it hands to the codec keep only
what the analysis needs.  Its latent is *never transmitted*: its rate is a training regulariser only
(the reported bpp is that of the codec's y and z).

Blocks are Conv2Former blocks (Hou et al., "Conv2Former: A Simple Transformer-Style ConvNet for Visual
Recognition"): *convolutional modulation* ``proj(a(x) * v(x))`` with ``a = 1x1 -> GELU -> 11x11 depthwise``
and ``v = 1x1``, then an MLP (1x1, GELU, a residual 3x3 depthwise "position" conv, 1x1), each with a
layer scale.  This is not timm's ``convformer_*`` (MetaFormer's ConvFormer, a different block).

Shapes (paper, 256 px): f1 256x64x64 -> 1x1 -> 128 -> [block, conv3x3/2]x3 -> latent 192x8x8
-> [convT5x5/2, blocks]x3 -> 1x1 -> f2 256x64x64.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from timm.layers import DropPath

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck

from .layers import LayerNorm2d, trunc_normal_init


class ConvModulation(nn.Module):
    """``proj(a(x) * v(x))`` on the normalised input, ``a = 1x1 -> GELU -> kxk depthwise`` (k = 11)."""

    def __init__(self, dim: int, kernel: int = 11):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.a = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, kernel, padding=kernel // 2,
                                                                          groups=dim))
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.proj(self.a(x) * self.v(x))


class ConvMLP(nn.Module):
    """LayerNorm, 1x1 (x ratio), GELU, + GELU(3x3 depthwise), 1x1 back."""

    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        hid = dim * ratio
        self.norm = LayerNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hid, 1)
        self.pos = nn.Conv2d(hid, hid, 3, padding=1, groups=hid)
        self.fc2 = nn.Conv2d(hid, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.norm(x)))
        return self.fc2(x + self.act(self.pos(x)))


class Conv2FormerBlock(nn.Module):
    """x + s1 * ConvModulation(x); x + s2 * ConvMLP(x) (layer scales s initialised at 1e-6)."""

    def __init__(self, dim: int, mlp_ratio: int = 4, kernel: int = 11, drop_path: float = 0.0,
                 layer_scale: float = 1e-6):
        super().__init__()
        self.attn = ConvModulation(dim, kernel)
        self.mlp = ConvMLP(dim, mlp_ratio)
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale1 * self.attn(x))
        return x + self.drop_path(self.scale2 * self.mlp(x))


class REEncoder(nn.Module):
    """f1 (C_in) -> 1x1 -> dim; three stages of [blocks at dim, conv3x3 stride 2 + LayerNorm] (the last one
    to ``latent`` channels): stride 8."""

    def __init__(self, in_channels=256, dim=128, latent=192, depths=(1, 1, 2), kernel=11):
        super().__init__()
        self.proj_in = nn.Conv2d(in_channels, dim, 1)
        outs = [dim, dim, latent]
        self.stages = nn.ModuleList(nn.Sequential(*[Conv2FormerBlock(dim, kernel=kernel) for _ in range(d)])
                                    for d in depths)
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, c, 3, 2, 1), LayerNorm2d(c)) for c in outs)
        trunc_normal_init(self)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(f)
        for stage, down in zip(self.stages, self.down):
            x = down(stage(x))
        return x


class REDecoder(nn.Module):
    """latent -> three stages of [convT5x5 stride 2 + LayerNorm, blocks at dim] -> 1x1 -> f2 (C_out)."""

    def __init__(self, out_channels=256, dim=128, latent=192, depths=(1, 1, 2), kernel=11):
        super().__init__()
        ins = [latent, dim, dim]
        self.up = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(c, dim, 5, 2, 2, output_padding=1), LayerNorm2d(dim))
                                for c in ins)
        self.stages = nn.ModuleList(nn.Sequential(*[Conv2FormerBlock(dim, kernel=kernel) for _ in range(d)])
                                    for d in depths)
        self.proj_out = nn.Conv2d(dim, out_channels, 1)
        trunc_normal_init(self)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        for up, stage in zip(self.up, self.stages):
            y = stage(up(y))
        return self.proj_out(y)


class REModule(nn.Module):
    """Encoder, factorized density of the latent (rate regulariser only), decoder.

    ``forward(f1)`` -> ``{"f2", "latent", "likelihoods"}``: in training the decoder reads the latent rounded
    with a straight-through gradient and the rate is that of the latent plus uniform noise (CompressAI's
    ``EntropyBottleneck``, an auxiliary loss fits its quantiles); in eval both read the rounded latent.
    """

    stride = 8

    def __init__(self, in_channels=256, dim=128, latent=192, depths=(1, 1, 2), kernel=11):
        super().__init__()
        self.encoder = REEncoder(in_channels, dim, latent, depths, kernel)
        self.decoder = REDecoder(in_channels, dim, latent, depths, kernel)
        self.entropy_bottleneck = EntropyBottleneck(latent)

    def forward(self, f1: torch.Tensor) -> dict:
        latent = self.encoder(f1)
        _, likelihoods = self.entropy_bottleneck(latent)
        latent_hat = latent + (torch.round(latent) - latent).detach()  # straight-through rounding
        return {"f2": self.decoder(latent_hat), "latent": latent, "likelihoods": {"re": likelihoods}}

    def filter(self, f1: torch.Tensor) -> torch.Tensor:
        """f2 alone (inference: the rounded latent through the decoder, no rate)."""
        return self.decoder(torch.round(self.encoder(f1)))
