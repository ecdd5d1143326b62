"""The compression network of Paper C: f2 (the RE module's features) -> y -> f3, built from HorNet blocks
(Rao et al., "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions").

gnConv of order n on a (B, C, H, W) map: ``proj_in`` (1x1, C -> 2C) splits into ``p0`` (C / 2^(n-1)
channels) and ``q`` (the widths C/2^(n-1), ..., C/2, C concatenated); ``q`` goes through a depthwise 7x7
conv (or the *global filter*: half the channels through a 3x3 depthwise conv, the other half multiplied by
a learned complex filter in the 2-D Fourier domain, interpolated to the map's size), scaled by ``s = 1/3``,
and split into ``q_0..q_{n-1}``; then ``p_{k+1} = pw_k(p_k) * q_{k+1}`` (``p_0 * q_0`` first), and a 1x1
``proj_out``.  Each order doubles the width and adds one more multiplicative ("spatial") interaction.

Encoder (paper, 256 px, f2 256x64x64): gnConv-2 block @256, conv5x5/2 256->128 + LeakyReLU, gnConv-3 block
@128, conv3x3 128->192, gnConv-4 block with the global filter @192, conv5x5/2 192->192 + LeakyReLU: y
192x16x16.  Decoder, as the official code (not a mirror): convT5x5/2 192->192 + LeakyReLU, gnConv-2 @192,
conv3x3 192->128, gnConv-3 @128, convT5x5/2 128->256 + LeakyReLU, gnConv-4 with the global filter @256:
f3 256x64x64.  Drop-path rates 0, 0.25, 0.5 over the three blocks of each.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .layers import LayerNorm2d, trunc_normal_init


class GlobalLocalFilter(nn.Module):
    """Half the channels: 3x3 depthwise conv; the other half: ``irfft2(rfft2(x) * W)`` with a learned complex
    filter ``W`` of ``h x w`` frequencies (bilinearly resized to the map's ``H x (W/2 + 1)``).  Pre and post
    LayerNorm.  ``channels`` must be even."""

    def __init__(self, channels: int, h: int = 24, w: int = 13):
        super().__init__()
        if channels % 2:
            raise ValueError(f"GlobalLocalFilter needs an even number of channels, got {channels}")
        half = channels // 2
        self.dw = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.complex_weight = nn.Parameter(torch.empty(half, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(channels)
        self.post_norm = LayerNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        b, c, h, w = glob.shape
        spec = torch.fft.rfft2(glob.float(), dim=(2, 3), norm="ortho")
        weight = self.complex_weight
        if weight.shape[1:3] != spec.shape[2:4]:
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=spec.shape[2:4], mode="bilinear",
                                   align_corners=True).permute(1, 2, 3, 0)
        glob = torch.fft.irfft2(spec * torch.view_as_complex(weight.contiguous()), s=(h, w), dim=(2, 3),
                                norm="ortho").to(x.dtype)
        # interleave the two halves channel by channel (local_0, global_0, local_1, ...), as HorNet
        x = torch.stack([local, glob], dim=2).reshape(b, 2 * c, h, w)
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution of order ``order`` (see the module docstring)."""

    def __init__(self, dim: int, order: int = 2, global_filter: bool = False, s: float = 1.0 / 3.0,
                 filter_size=(24, 13)):
        super().__init__()
        if dim % (2 ** (order - 1)):
            raise ValueError(f"gnConv of order {order} needs a width divisible by {2 ** (order - 1)}, got {dim}")
        self.order = int(order)
        self.dims = [dim // 2 ** i for i in range(order)][::-1]  # C/2^(n-1), ..., C/2, C
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        total = sum(self.dims)
        self.dwconv = (GlobalLocalFilter(total, *filter_size) if global_filter
                       else nn.Conv2d(total, total, 7, padding=3, groups=total))
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.scale = float(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        qs = torch.split(self.dwconv(q) * self.scale, self.dims, dim=1)
        p = p * qs[0]
        for pw, qk in zip(self.pws, qs[1:]):
            p = pw(p) * qk
        return self.proj_out(p)


class HorNetBlock(nn.Module):
    """x + gamma1 * gnConv(LN(x)); x + gamma2 * MLP(LN(x)) (MLP ratio 4, GELU; layer scale 1e-6)."""

    def __init__(self, dim: int, order: int, global_filter: bool = False, drop_path: float = 0.0,
                 layer_scale: float = 1e-6, filter_size=(24, 13)):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.gnconv = GnConv(dim, order, global_filter, filter_size=filter_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1.view(-1, 1, 1) * self.gnconv(self.norm1(x)))
        h = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + self.drop_path((self.gamma2 * h).permute(0, 3, 1, 2))


def _drop_rates(drop_path: float) -> list[float]:
    return torch.linspace(0, drop_path, 3).tolist()


class CodecEncoder(nn.Module):
    """f2 (C) -> y (M) at 1/4 of f2's side (see the module docstring); ``N`` the middle width."""

    def __init__(self, in_channels=256, N=128, M=192, drop_path=0.5, filter_size=(24, 13)):
        super().__init__()
        dp = _drop_rates(drop_path)
        self.block1 = HorNetBlock(in_channels, 2, drop_path=dp[0])
        self.down1 = nn.Sequential(nn.Conv2d(in_channels, N, 5, 2, 2), nn.LeakyReLU(inplace=True))
        self.block2 = HorNetBlock(N, 3, drop_path=dp[1])
        self.conv = nn.Conv2d(N, M, 3, 1, 1)
        self.block3 = HorNetBlock(M, 4, global_filter=True, drop_path=dp[2], filter_size=filter_size)
        self.down2 = nn.Sequential(nn.Conv2d(M, M, 5, 2, 2), nn.LeakyReLU(inplace=True))
        trunc_normal_init(self)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.down1(self.block1(f))
        x = self.block3(self.conv(self.block2(x)))
        return self.down2(x)


class CodecDecoder(nn.Module):
    """y_hat (M) -> f3 (C) at 4x y's side, as the official decoder (orders 2, 3, 4 from y upwards)."""

    def __init__(self, out_channels=256, N=128, M=192, drop_path=0.5, filter_size=(24, 13)):
        super().__init__()
        dp = _drop_rates(drop_path)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(M, M, 5, 2, 2, output_padding=1), nn.LeakyReLU(inplace=True))
        self.block1 = HorNetBlock(M, 2, drop_path=dp[0])
        self.conv = nn.Conv2d(M, N, 3, 1, 1)
        self.block2 = HorNetBlock(N, 3, drop_path=dp[1])
        self.up2 = nn.Sequential(nn.ConvTranspose2d(N, out_channels, 5, 2, 2, output_padding=1),
                                 nn.LeakyReLU(inplace=True))
        self.block3 = HorNetBlock(out_channels, 4, global_filter=True, drop_path=dp[2], filter_size=filter_size)
        trunc_normal_init(self)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.up1(y_hat))
        x = self.up2(self.block2(self.conv(x)))
        return self.block3(x)
