"""Paper B: a layered generative face codec, structure and texture in two bitstreams.

Y. Zhang, C. Jia, J. Chang, S. Ma, "Machine Perception-Driven (Facial) Image Compression: A Layered
Generative Approach", IEEE TCSVT (arXiv 2304.06896).  No official code is public: this file follows what
``shared/reference/papers.md`` gathers from the abstract, the authors' patent (CN114519750A) and the first
author's precursor code (LCIC); every choice is marked in :data:`FIDELITY`.  Written from those facts,
nothing copied.

Pipeline (one image ``x``, ``(B, 3, H, W)`` in [0, 1])::

    structure layer   x -> g_a (n_down conv5x5/2) -> y (M, H/2^n) -> mean-scale hyperprior (h_a, z, h_s)
                      -> y_hat                        bitstream 1: the y string and the z string
    texture layer     x -> style_encoder -> (mu, logvar) -> code (mu at test, mu + std * eps in training)
                      -> code / texture_step -> EntropyBottleneck -> t_hat   bitstream 2: the t string
    decoder           y_hat -> g_s -> structure features at every scale (H/2^n ... H)
                      generator: one AdaIN residual block per scale, each fed the structure features of its
                      scale and modulated by t_hat (x -> IN(x) * (1 + gamma(t)) + beta(t)); per-block RGB
                      outputs upsampled and summed, (tanh + 1) / 2 -> x_hat
    auxiliary         edge_head(finest structure features) -> edge logits, trained against Canny edges
    adversary         discriminator: 2-scale PatchGAN (spectral norm), conditioned on the edge map, LSGAN

Machines read the two decoded latents ``(y_hat, t_hat)`` (:mod:`.analysis`); only people need ``g_s`` and
the generator.  Decoding the structure alone puts the texture at its prior mean (``t = 0``, the mean of the
VAE prior N(0, I)); swapping ``t_hat`` between two faces swaps their appearance.

Training (:meth:`Zhang2023.train_step`, through the trainer's hooks): per batch, a generator step (every
loss term but the discriminator's) with optimiser ``"g"``, then a discriminator step (LSGAN) with ``"d"``
on the same reconstruction, then the ``"aux"`` step of the entropy bottlenecks' quantiles.  All state lives
in parameters and buffers (spectral norm's power-iteration vectors included), so a killed run resumes
bit-exactly.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():
    # compressai calls torch.jit.script when imported, which torch deprecates: silenced here only.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.models import CompressionModel
    from compressai.models.utils import conv, deconv

from ...exact import mean_scale_compress, mean_scale_decompress, mean_scale_params
from ...losses import bpp_of_likelihoods
from ...registry import Option, register_model

# ------------------------------------------------------------------------------------------------ fidelity
#: Every design choice, with where it comes from: "stated" (abstract / patent), "from the precursor code"
#: (LCIC_plus, branch zyf, read for facts only), or "our choice".
FIDELITY = {
    "two layers, each entropy coded into its own bitstream (structure / texture)": "stated",
    "structure = content encoder latent, entropy coded with a hyperprior": "stated (patent); the mean-scale "
        "hyperprior layout of compressai's MeanScaleHyperprior is our choice",
    "texture = style encoder VAE code (mu, logvar), 64 dims at 256 px": "from the precursor code",
    "texture code entropy coded with an EntropyBottleneck, quantisation step texture_step": "our choice",
    "AdaIN fusion x * (1 + gamma(t)) + beta(t) after every InstanceNorm":
        "stated (AdaIN); form from the precursor code",
    "structure injected at every generator scale": "from the precursor code (edge map concatenated at every block)",
    "structure = learned latent instead of a DexiNed edge map; Canny edge head as auxiliary target":
        "our choice (DexiNed weights cannot be obtained; the precursor's later commit codes edge features)",
    "generator widths (1024, 512, 256, 128, 64) at 256 px": "from the precursor code (its last five of seven "
        "blocks: ours starts at the latent grid H/16, the precursor at H/128)",
    "per-block RGB outputs summed progressively, tanh": "from the precursor code",
    "discriminator: 2 scales, PatchGAN 4x4 kernels, 3 layers, spectral norm, conditioned on the edge map":
        "from the precursor code (conditioned on Canny edges of the input here)",
    "LSGAN": "from the precursor code",
    "L1 x10 (on [-1, 1] images: x20 on our [0, 1] images)": "from the precursor code",
    "GAN x1, latent regression x1, KL x0.01, SSIM x0.25": "from the precursor code",
    "discriminator feature matching x1 in place of VGG x0.3": "our choice (VGG needs downloaded weights)",
    "latent regression does not update the style encoder": "from the precursor code (BicycleGAN's convention)",
    "edge loss (BCE against Canny) x1": "our choice",
    "rate terms weighted by the option lambda_rate": "our choice (the paper's rate weights are not public)",
    "Adam betas (0, 0.9); generator lr x0.5, discriminator lr x2; batch 2, lr 5e-5 (paper profile)":
        "from the precursor code",
    "generator step then discriminator step on the same reconstruction (pix2pixHD order)": "our choice",
    "paper profile: M=192, N=128 (CompressAI's sizes), 4 downsamplings": "our choice",
    "laptop profile (64 px, every width)": "our choice (sized to one CPU core)",
    "multi-task analysis on the decoded latents (parsing, attributes, landmarks)": "stated (task list inferred)",
}

ADAM_BETAS = (0.0, 0.9)  # from the precursor code
STAGES = ("",)  # one stage: the codec trains as a whole (its analysis stages are zhang2023_analysis's)
TRAIN_PARTS = ("all", "rate")
#: frozen when a rate point is fine-tuned from a base (option ``train_parts="rate"``): the generator, the
#: largest part, which the rate points then share (the zoo stores it once)
RATE_FROZEN = ("generator",)


def _odd_window(size: int) -> int:
    """The SSIM window: 11 (pytorch-msssim's default) or the largest odd size that fits the image."""
    w = min(11, size)
    return w if w % 2 else w - 1


def canny_edges(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Canny edge maps ``(B, 1, H, W)`` float {0, 1} of images ``(B, 3, H, W)`` in [0, 1] (scikit-image).

    The grey conversion is vectorised; ``skimage.feature.canny`` runs per image (it has no batch form)."""
    from skimage.feature import canny

    grey = (x.detach().float().cpu() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).numpy()
    edges = np.stack([canny(g, sigma=sigma) for g in grey]).astype(np.float32)
    return torch.from_numpy(edges).unsqueeze(1).to(x.device)


class CannyTargets:
    """Batch transform (trainer hook ``batch_transform``): adds ``batch["edges"]`` from ``batch["image"]``.

    ``num_classes = None``: it makes no class targets, so the loop's class check does not apply."""

    num_classes = None

    def __init__(self, sigma: float):
        self.sigma = float(sigma)

    def __call__(self, batch: dict) -> dict:
        return {**batch, "edges": canny_edges(batch["image"], self.sigma)}


# ------------------------------------------------------------------------------------------------ parts
class AdaIN(nn.Module):
    """``IN(h) * (1 + gamma(t)) + beta(t)``: instance norm without affine, modulated by the texture code."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(t).unsqueeze(-1).unsqueeze(-1).chunk(2, 1)
        return self.norm(h) * (1 + gamma) + beta


class GeneratorBlock(nn.Module):
    """Residual block at one scale: ``[h, s]`` (previous features, structure features of this scale) ->
    (conv3x3, AdaIN, LeakyReLU) x 2 + a 1x1 skip."""

    def __init__(self, cin: int, cs: int, cout: int, style_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin + cs, cout, 3, padding=1)
        self.ada1 = AdaIN(cout, style_dim)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.ada2 = AdaIN(cout, style_dim)
        self.skip = nn.Conv2d(cin + cs, cout, 1)

    def forward(self, h, s, t):
        u = s if h is None else torch.cat([h, s], 1)
        r = F.leaky_relu(self.ada1(self.conv1(u), t), 0.2)
        r = self.ada2(self.conv2(r), t)
        return F.leaky_relu(r + self.skip(u), 0.2)


class Generator(nn.Module):
    """Structure features ``[s_0 (H/2^n), ..., s_n (H)]`` and texture ``t (B, D)`` -> ``x_hat`` in [0, 1]."""

    def __init__(self, struct_ch, gen_ch, style_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        prev = 0
        for cs, c in zip(struct_ch, gen_ch):
            self.blocks.append(GeneratorBlock(prev, cs, c, style_dim))
            self.to_rgb.append(nn.Conv2d(c, 3, 1))
            prev = c

    def forward(self, feats: list, t: torch.Tensor) -> torch.Tensor:
        h = rgb = None
        for k, (blk, to_rgb) in enumerate(zip(self.blocks, self.to_rgb)):
            if h is not None:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                rgb = F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = blk(h, feats[k], t)
            rgb = to_rgb(h) if rgb is None else rgb + to_rgb(h)
        return (torch.tanh(rgb) + 1) / 2


class StructureDecoder(nn.Module):
    """``y_hat`` -> structure features at every scale, coarse to fine (``len(struct_ch) = n_down + 1``)."""

    def __init__(self, M: int, struct_ch):
        super().__init__()
        self.stem = nn.Conv2d(M, struct_ch[0], 3, padding=1)
        self.ups = nn.ModuleList(deconv(a, b) for a, b in zip(struct_ch[:-1], struct_ch[1:]))

    def forward(self, y_hat):
        f = F.leaky_relu(self.stem(y_hat), 0.2)
        feats = [f]
        for up in self.ups:
            f = F.leaky_relu(up(f), 0.2)
            feats.append(f)
        return feats


class StyleEncoder(nn.Module):
    """``x`` -> ``(mu, logvar)`` of the texture code: strided convs, global average pool, two linear heads."""

    def __init__(self, ch: int, levels: int, style_dim: int, cap: int = 256):
        super().__init__()
        layers, c = [nn.Conv2d(3, ch, 3, padding=1), nn.LeakyReLU(0.2)], ch
        for _ in range(levels):
            c2 = min(2 * c, cap)
            layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = c2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(c, style_dim)
        self.logvar = nn.Linear(c, style_dim)

    def forward(self, x):
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN (4x4 kernels, ``layers`` strided convs, spectral norm); returns every layer's features."""

    def __init__(self, cin: int, ndf: int, layers: int):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        chans = [cin] + [min(ndf * 2 ** k, 512) for k in range(layers + 1)]
        self.convs = nn.ModuleList()
        for k in range(layers + 1):
            stride = 2 if k < layers else 1
            self.convs.append(sn(nn.Conv2d(chans[k], chans[k + 1], 4, stride=stride, padding=2)))
        self.out = sn(nn.Conv2d(chans[-1], 1, 4, padding=2))

    def forward(self, x):
        feats = []
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.2)
            feats.append(x)
        feats.append(self.out(x))
        return feats


class MultiScaleDiscriminator(nn.Module):
    """``scales`` PatchGANs on the input and its 2x, 4x ... average-pooled copies (pix2pixHD's layout)."""

    def __init__(self, cin: int, ndf: int, layers: int, scales: int):
        super().__init__()
        self.nets = nn.ModuleList(PatchDiscriminator(cin, ndf, layers) for _ in range(scales))

    def forward(self, x) -> list[list[torch.Tensor]]:
        out = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


# ------------------------------------------------------------------------------------------------ profiles
LAPTOP_ARCH = dict(N=48, M=64, Nh=32, n_down=3, struct_ch=(64, 32, 16, 8), gen_ch=(128, 64, 32, 16),
                   style_ch=16, style_levels=3, style_dim=16, texture_step=0.25, disc_ch=16, disc_layers=3,
                   disc_scales=2)
PAPER_ARCH = dict(N=128, M=192, Nh=128, n_down=4, struct_ch=(256, 128, 64, 32, 16),
                  gen_ch=(1024, 512, 256, 128, 64), style_ch=64, style_levels=5, style_dim=64, texture_step=0.25,
                  disc_ch=64, disc_layers=3, disc_scales=2)

#: Where each profile's size comes from (the chapter's fidelity table reads it).
PROFILE_SOURCES = {
    "image_size 256 (paper) / 64 (laptop)": "from the precursor code (CelebA-HQ 256) / our choice (FaceWorld 64)",
    "style_dim 64 (paper) / 16 (laptop)": "from the precursor code / our choice",
    "gen_ch (1024, 512, 256, 128, 64) (paper)": "from the precursor code (last five of its seven blocks)",
    "disc: 2 scales, 3 layers, 64 base channels (paper)": "from the precursor code",
    "N, M, Nh, n_down, struct_ch, style_ch, style_levels, texture_step": "our choice",
    "batch 2, lr 5e-5, Adam (0, 0.9) (paper)": "from the precursor code",
}

_TRAIN = {
    "laptop": dict(dataset="faceworld", image_size=64, num_classes=12, num_train=8000, batch_size=16,
                   lr=2e-4, aux_lr=1e-3, steps=3000, warmup_steps=0, schedule="constant", grad_clip=1.0,
                   log_every=50),
    "paper": dict(dataset="celebamask_hq", image_size=256, num_classes=19, batch_size=2, lr=5e-5, aux_lr=1e-3,
                  steps=200_000, warmup_steps=0, schedule="constant", grad_clip=0.0, amp=False, num_workers=4,
                  canny_sigma=2.0),
}

_OPTIONS = {
    "gan": Option(True, bool, help="adversarial training (False: the 'no GAN' ablation: no D step, no GAN or "
                                   "feature-matching terms)"),
    "lambda_rate": Option(1.0, float, help="weight of the two rate terms bpp_structure and bpp_texture "
                                           "(the rate point: larger = fewer bits)"),
    "g_lr_ratio": Option(0.5, float, help="generator lr = lr * g_lr_ratio (precursor: 0.5)"),
    "d_lr_ratio": Option(2.0, float, help="discriminator lr = lr * d_lr_ratio (precursor: 2)"),
    "canny_sigma": Option(1.0, float, help="Gaussian sigma of the Canny edge targets (scikit-image)"),
    "train_parts": Option("all", str, help="'all', or 'rate' (fine-tuning a rate point from a base): the "
                                           "generator stays frozen, so the rate points share it and the zoo "
                                           "stores it once"),
}


@register_model("zhang2023", arch={"laptop": LAPTOP_ARCH, "paper": PAPER_ARCH}, train=_TRAIN, options=_OPTIONS,
                size_multiple=32)
class Zhang2023(CompressionModel):
    r"""Zhang et al.: a two-layer (structure + texture) generative face codec.

    Y. Zhang, C. Jia, J. Chang, S. Ma, `"Machine Perception-Driven (Facial) Image Compression: A Layered
    Generative Approach" <https://arxiv.org/abs/2304.06896>`_, IEEE TCSVT.

    Args (profiles: :data:`LAPTOP_ARCH`, :data:`PAPER_ARCH`; sources: :data:`PROFILE_SOURCES`):
        N, M, Nh: channels of the content encoder, of the structure latent ``y``, of the hyperprior.
        n_down: stride-2 convolutions of the content encoder (``y`` at ``H / 2**n_down``).
        struct_ch: widths of the structure features at each of the ``n_down + 1`` scales, coarse to fine.
        gen_ch: widths of the generator's AdaIN blocks, one per scale.
        style_ch, style_levels, style_dim: the style encoder (first width, strided convs, code size).
        texture_step: quantisation step of the texture code (the bottleneck codes ``code / texture_step``).
        disc_ch, disc_layers, disc_scales: the multi-scale PatchGAN.

    ``forward(x)`` -> ``{"x_hat", "likelihoods": {"y", "z", "t"}, "mu", "logvar", "y_hat", "t_hat",
    "edge_logits"}``.  ``compress(x)`` -> ``{"strings": [y, z, t], "shape"}``; ``decompress(strings, shape)``
    with 3 strings, or 2 (the structure layer alone: texture at its prior mean), or ``texture=`` a code.
    """

    #: trained, not served: the zoo's files leave the discriminator out (cdlib.checkpoint.export_checkpoint)
    serving_drop = ("discriminator",)
    #: h_s runs stream by stream in compress/decompress (cdlib.exact): batches encode safely
    exact_entropy_parameters = True

    def __init__(self, N=48, M=64, Nh=32, n_down=3, struct_ch=(64, 32, 16, 8), gen_ch=(128, 64, 32, 16),
                 style_ch=16, style_levels=3, style_dim=16, texture_step=0.25, disc_ch=32, disc_layers=3,
                 disc_scales=2):
        super().__init__()
        if not (len(struct_ch) == len(gen_ch) == n_down + 1):
            raise ValueError(f"struct_ch and gen_ch need n_down + 1 = {n_down + 1} widths (one per scale), got "
                             f"{len(struct_ch)} and {len(gen_ch)}")
        self.M, self.n_down, self.style_dim = int(M), int(n_down), int(style_dim)
        self.texture_step = float(texture_step)
        self.downsampling_factor = 2 ** (n_down + 2)  # g_a, then the hyperprior's two strides
        self.ddp_find_unused_parameters = True  # the discriminator is idle in the 'no GAN' ablation

        # structure layer: content encoder + mean-scale hyperprior (compressai's MeanScaleHyperprior layout)
        layers = []
        for k in range(n_down):
            layers += [conv(3 if k == 0 else N, M if k == n_down - 1 else N)]
            if k < n_down - 1:
                layers += [nn.LeakyReLU(0.2)]
        self.g_a = nn.Sequential(*layers)
        self.h_a = nn.Sequential(conv(M, Nh, 3, 1), nn.LeakyReLU(inplace=True), conv(Nh, Nh, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(Nh, Nh, 5, 2))
        self.h_s = nn.Sequential(deconv(Nh, M, 5, 2), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(M * 3 // 2, M * 2, 3, 1))
        self.entropy_bottleneck = EntropyBottleneck(Nh)
        self.gaussian_conditional = GaussianConditional(None)

        # texture layer: style encoder (VAE) + its own entropy bottleneck
        self.style_encoder = StyleEncoder(style_ch, style_levels, style_dim)
        self.texture_bottleneck = EntropyBottleneck(style_dim)

        # decoder: structure features at every scale, the AdaIN generator; the auxiliary edge head
        self.g_s = StructureDecoder(M, struct_ch)
        self.generator = Generator(struct_ch, gen_ch, style_dim)
        self.edge_head = nn.Conv2d(struct_ch[-1], 1, 3, padding=1)

        # adversary (training only): conditioned on the edge map
        self.discriminator = MultiScaleDiscriminator(3 + 1, disc_ch, disc_layers, disc_scales)

    # -- the two layers ------------------------------------------------------------------------------------
    def _check_input(self, x):
        s = self.downsampling_factor
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"zhang2023 takes (B, 3, H, W) images with H and W multiples of {s}, got "
                             f"{tuple(x.shape)} (pad first, e.g. cdlib.images.pad_to)")

    def _means_scales(self, z_hat):
        # outside training stream by stream, as compress/decompress compute them (cdlib.exact): forward's
        # y_hat is then the very y_hat that the streams code
        if self.training:
            return self.h_s(z_hat).chunk(2, 1)
        return mean_scale_params(self, z_hat)

    def texture_code(self, x, sample: bool = False):
        """``(code, mu, logvar)``: ``mu``, or ``mu + std * eps`` when ``sample`` (training)."""
        mu, logvar = self.style_encoder(x)
        code = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        return code, mu, logvar

    def prior_texture(self, batch: int, device=None) -> torch.Tensor:
        """The texture at its prior mean: zeros ``(B, style_dim)`` (the VAE prior is N(0, I))."""
        return torch.zeros(batch, self.style_dim, device=device)

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_hat, t_hat)`` exactly as a decoder recovers them from the streams (rounding around the
        hyperprior's means and the bottlenecks' medians), with straight-through gradients (for joint
        training); neither ``g_s`` nor the generator runs."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_med = self.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        z_hat = torch.round(z - z_med) + z_med
        _, means = self._means_scales(z_hat)
        y_q = torch.round(y - means) + means
        y_hat = y + (y_q - y).detach()
        mu, _ = self.style_encoder(x)
        s = mu / self.texture_step
        t_med = self.texture_bottleneck._get_medians().reshape(1, -1)
        s_q = torch.round(s - t_med) + t_med
        t_hat = (s + (s_q - s).detach()) * self.texture_step
        return y_hat, t_hat

    def synthesize(self, y_hat: torch.Tensor, t_hat: torch.Tensor) -> torch.Tensor:
        """``x_hat`` from the two decoded latents: ``g_s`` (structure features) then the AdaIN generator."""
        return self.generator(self.g_s(y_hat), t_hat)

    # -- CompressAI interface ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict:
        """Training: ``y + noise`` and a sampled texture code; eval: the quantised latents of the streams."""
        self._check_input(x)
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_lk = self.entropy_bottleneck(z)
        scales_hat, means_hat = self._means_scales(z_hat)
        y_hat, y_lk = self.gaussian_conditional(y, scales_hat, means=means_hat)
        code, mu, logvar = self.texture_code(x, sample=self.training)
        s_hat, t_lk = self.texture_bottleneck((code / self.texture_step)[..., None, None])
        t_hat = s_hat.flatten(1) * self.texture_step
        feats = self.g_s(y_hat)
        x_hat = self.generator(feats, t_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lk, "z": z_lk, "t": t_lk}, "mu": mu, "logvar": logvar,
                "y_hat": y_hat, "t_hat": t_hat, "feats": feats, "edge_logits": self.edge_head(feats[-1])}

    def compress(self, x: torch.Tensor) -> dict:
        """``{"strings": [y_strings, z_strings, t_strings], "shape": z grid}`` (one string per image in each)."""
        self._check_input(x)
        (y_strings, z_strings), shape = mean_scale_compress(self, self.g_a(x))
        mu, _ = self.style_encoder(x)
        t_strings = self.texture_bottleneck.compress((mu / self.texture_step)[..., None, None])
        return {"strings": [y_strings, z_strings, t_strings], "shape": shape}

    def decode_structure(self, strings, shape) -> torch.Tensor:
        """``y_hat`` from ``[y_strings, z_strings]`` and the z grid ``shape``."""
        return mean_scale_decompress(self, strings[:2], shape)

    def decode_texture(self, t_strings) -> torch.Tensor:
        """``t_hat (B, style_dim)`` from the texture strings."""
        return self.texture_bottleneck.decompress(t_strings, (1, 1)).flatten(1) * self.texture_step

    def decode_latents(self, strings, shape) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(y_hat, t_hat)`` from 3 strings; ``t_hat`` is ``None`` when only the structure strings are given."""
        if len(strings) not in (2, 3):
            raise ValueError(f"zhang2023 needs 3 latent strings (y, z, t) or 2 (y, z: structure only), "
                             f"got {len(strings)}")
        y_hat = self.decode_structure(strings[:2], shape)
        t_hat = self.decode_texture(strings[2]) if len(strings) == 3 else None
        return y_hat, t_hat

    def decompress(self, strings, shape, texture: torch.Tensor | None = None) -> dict:
        """``{"x_hat", "y_hat", "t_hat"}``.  Texture: ``texture`` if given (e.g. another face's code), else the
        stream's, else (2 strings: the structure layer alone) the prior mean."""
        y_hat, t_hat = self.decode_latents(strings, shape)
        if texture is not None:
            t_hat = texture.to(y_hat).expand(y_hat.shape[0], -1)
        elif t_hat is None:
            t_hat = self.prior_texture(y_hat.shape[0], y_hat.device)
        x_hat = self.synthesize(y_hat, t_hat)
        return {"x_hat": x_hat.clamp_(0, 1), "y_hat": y_hat, "t_hat": t_hat}

    # -- losses --------------------------------------------------------------------------------------------
    def discriminate(self, image: torch.Tensor, edges: torch.Tensor) -> list[list[torch.Tensor]]:
        """Features of every scale and layer of the conditional discriminator on ``[edges, image]``."""
        return self.discriminator(torch.cat([edges, image], 1))

    def discriminator_loss(self, x: torch.Tensor, fake: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """LSGAN: ``mean over scales of 0.5 * ((D(real) - 1)^2 + D(fake)^2)``."""
        real_out, fake_out = self.discriminate(x, edges), self.discriminate(fake.detach(), edges)
        terms = [0.5 * (F.mse_loss(r[-1], torch.ones_like(r[-1])) + F.mse_loss(f[-1], torch.zeros_like(f[-1])))
                 for r, f in zip(real_out, fake_out)]
        return sum(terms) / len(terms)

    def _edges(self, batch: dict, cfg) -> torch.Tensor:
        edges = batch.get("edges")
        if edges is None:
            edges = canny_edges(batch["image"], cfg.model_options.get("canny_sigma", 1.0))
        return edges

    def generator_terms(self, batch: dict, cfg, return_fake: bool = False):
        """Unweighted terms of the generator step: ``l1, ssim, kl, latent, edge, bpp_structure, bpp_texture``
        and, with the option ``gan``, ``gan`` (LSGAN, generator side) and ``fm`` (discriminator feature
        matching).  ``return_fake``: also return ``x_hat`` (for the discriminator step)."""
        from pytorch_msssim import ssim

        x = batch["image"]
        edges = self._edges(batch, cfg)
        n, _, h, w = x.shape
        out = self(x)
        x_hat = out["x_hat"]
        lk = out["likelihoods"]
        terms = {
            "l1": F.l1_loss(x_hat, x),
            "ssim": 1 - ssim(x_hat, x, data_range=1.0, size_average=True, win_size=_odd_window(min(h, w))),
            # KL(N(mu, sigma) || N(0, I)), summed over the code, averaged over the batch
            "kl": (-0.5 * (1 + out["logvar"] - out["mu"] ** 2 - out["logvar"].exp())).sum(1).mean(),
            "edge": F.binary_cross_entropy_with_logits(out["edge_logits"], edges),
            "bpp_structure": bpp_of_likelihoods({"y": lk["y"], "z": lk["z"]}, n * h * w),
            "bpp_texture": bpp_of_likelihoods({"t": lk["t"]}, n * h * w),
        }
        # latent regression (BicycleGAN's cLR): a random code through the generator and back through the
        # style encoder; the encoder's weights are detached, so only the generator learns from it
        z_rand = torch.randn_like(out["mu"])
        x_rand = self.generator(out["feats"], z_rand)
        enc = {k: v.detach() for k, v in self.style_encoder.named_parameters()}
        mu_rand, _ = torch.func.functional_call(self.style_encoder, enc, (x_rand,))
        terms["latent"] = F.l1_loss(mu_rand, z_rand)
        if cfg.model_options.get("gan", True):
            fake_out = self.discriminate(x_hat, edges)
            with torch.no_grad():
                real_out = self.discriminate(x, edges)
            terms["gan"] = sum(F.mse_loss(f[-1], torch.ones_like(f[-1])) for f in fake_out) / len(fake_out)
            fm = [F.l1_loss(f, r) for fo, ro in zip(fake_out, real_out) for f, r in zip(fo[:-1], ro[:-1])]
            terms["fm"] = sum(fm) / len(fake_out)
        return (terms, x_hat) if return_fake else terms

    def loss_terms(self, batch: dict, cfg) -> dict:
        """The generator-side terms (:meth:`generator_terms`); the discriminator's are in :meth:`train_step`."""
        return self.generator_terms(batch, cfg)

    def loss_weights(self, cfg) -> dict:
        """Precursor's weights (L1 x10 on [-1, 1] = x20 here, SSIM 0.25, KL 0.01, latent 1, GAN 1), feature
        matching 1 and edge 1 (our choice), rates ``lambda_rate`` (our choice)."""
        rate = cfg.model_options.get("lambda_rate", 1.0)
        w = {"l1": 20.0, "ssim": 0.25, "kl": 0.01, "latent": 1.0, "edge": 1.0, "bpp_structure": rate,
             "bpp_texture": rate}
        if cfg.model_options.get("gan", True):
            w.update({"gan": 1.0, "fm": 1.0})
        return w

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """PSNR of the reconstruction and the likelihood bpp per layer (eval-mode quantisation)."""
        x = batch["image"]
        was = self.training
        self.eval()
        try:
            out = self(x)
        finally:
            self.train(was)
        n, _, h, w = x.shape
        mse = F.mse_loss(out["x_hat"], x).item()
        lk = out["likelihoods"]
        return {"psnr": 10 * math.log10(1 / max(mse, 1e-12)),
                "bpp_structure_est": bpp_of_likelihoods({"y": lk["y"], "z": lk["z"]}, n * h * w).item(),
                "bpp_texture_est": bpp_of_likelihoods({"t": lk["t"]}, n * h * w).item()}

    # -- training hooks (cdlib.train) ----------------------------------------------------------------------
    def frozen_parts(self, cfg) -> list[str]:
        if cfg.stage not in STAGES:
            raise ValueError(f"bad value {cfg.stage!r} for 'stage' of zhang2023; valid values: {STAGES}")
        parts = cfg.model_options.get("train_parts", "all")
        if parts not in TRAIN_PARTS:
            raise ValueError(f"bad value {parts!r} for option 'train_parts' of zhang2023; valid values: "
                             f"{TRAIN_PARTS}")
        return [] if parts == "all" else list(RATE_FROZEN)

    def batch_transform(self, cfg):
        """Canny edge targets of every training batch (``batch["edges"]``)."""
        return CannyTargets(cfg.model_options.get("canny_sigma", 1.0))

    def configure_optimizers(self, cfg) -> dict:
        """``"g"``: everything but the discriminator and the quantiles, Adam(0, 0.9) at ``lr * g_lr_ratio``;
        ``"d"``: the discriminator at ``lr * d_lr_ratio``; ``"aux"``: the quantiles of both entropy
        bottlenecks (Adam, ``aux_lr``).  ``g`` and ``d`` follow the loop's schedule (:func:`warmup_cosine`)."""
        from ...train import warmup_cosine

        opts = cfg.model_options
        g, d, aux = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (aux if name.endswith("quantiles") else d if name.startswith("discriminator.") else g).append(p)
        optimizers = {"g": torch.optim.Adam(g, lr=cfg.lr * opts.get("g_lr_ratio", 0.5), betas=ADAM_BETAS)}
        if d:
            optimizers["d"] = torch.optim.Adam(d, lr=cfg.lr * opts.get("d_lr_ratio", 2.0), betas=ADAM_BETAS)
        if aux:
            optimizers["aux"] = torch.optim.Adam(aux, lr=cfg.aux_lr)
        schedulers = {k: warmup_cosine(optimizers[k], cfg) for k in ("g", "d") if k in optimizers}
        return {"optimizers": optimizers, "schedulers": schedulers}

    def train_step(self, batch: dict, ctx) -> dict:
        """One generator step (``"g"``), then one LSGAN discriminator step (``"d"``) on the same
        reconstruction, then the quantiles (``"aux"``).  Each forward is followed by its backward (DDP)."""
        cfg = ctx.cfg
        weights = ctx.loss_weights
        if "edges" not in batch:
            batch = {**batch, "edges": self._edges(batch, cfg)}
        g_opt, d_opt = ctx.optimizers["g"], ctx.optimizers.get("d")
        with ctx.autocast():
            terms, fake = ctx.forward("generator_terms", batch, cfg, True)
            missing = [k for k in weights if k not in terms]
            if missing:
                raise ValueError(f"loss weight(s) {missing} name no loss term of zhang2023; its terms are "
                                 f"{sorted(terms)}")
            g_loss = sum(weights[k] * terms[k] for k in weights)
        record = ctx.reduce({"g_loss": g_loss, **terms})
        ctx.optimizer_step(g_loss, g_opt)
        if cfg.model_options.get("gan", True) and d_opt is not None:
            with ctx.autocast():
                d_loss = ctx.forward("discriminator_loss", batch["image"], fake.detach(), batch["edges"])
            record.update(ctx.reduce({"d_loss": d_loss}))
            # zeroing D's gradients also drops what the generator step left on D
            ctx.optimizer_step(d_loss, d_opt, clip=False)
        ctx.scaler.update()
        for sched in ctx.schedulers.values():
            sched.step()
        record.update(ctx.aux_step())
        return record

    # -- reading ------------------------------------------------------------------------------------------
    def diagram_blocks(self) -> list:
        """The stages for :func:`cdlib.diagrams.model_diagram` (shapes from a run on a dummy input): the
        structure layer on rows 0-1, the texture layer on row 2, the decoder on the right."""
        from ...diagrams import Block, layer_summary

        D = self.style_dim
        return [
            Block("input", "image", (0, 0), kind="input", out="x"),
            Block("g_a", "g_a", (1, 0), "content encoder\n" + layer_summary(self.g_a), inputs=("input",), out="y"),
            Block("h_a", "h_a", (1, 1), layer_summary(self.h_a), inputs=("g_a",), out="z"),
            Block("entropy_bottleneck", "Q", (2, 1), "factorized\nentropy model", inputs=("h_a",), kind="entropy",
                  out="ẑ"),
            Block("h_s", "h_s", (3, 1), layer_summary(self.h_s), inputs=("entropy_bottleneck",), out="μ,σ"),
            Block("gaussian_conditional", "Q", (3, 0), "Gaussian\nentropy model\n(structure layer)",
                  inputs=("g_a", "h_s"), kind="entropy", out="ŷ"),
            Block("style_encoder", "style encoder", (1, 2), f"VAE code\n{D} dims", inputs=("input",), out="μ"),
            Block("texture_bottleneck", "Q", (3, 2), "factorized\nentropy model\n(texture layer)",
                  inputs=("style_encoder",), kind="entropy", out="t̂"),
            Block("g_s", "g_s", (4, 0), f"structure\nfeatures at\n{self.n_down + 1} scales",
                  inputs=("gaussian_conditional",), pick=-1, out="s"),
            Block("edge_head", "edge head", (5, 0), "Canny target\n(training)", inputs=("g_s",), kind="task",
                  out="e"),
            Block("generator", "generator", (4, 2), f"{len(self.generator.blocks)} AdaIN\nblocks",
                  inputs=("g_s", "texture_bottleneck"), out="x̂"),
        ]

    def part_parameters(self) -> dict[str, int]:
        """Parameter count of each part (the chapter's table)."""
        parts = {"structure encoder (g_a)": self.g_a, "hyperprior (h_a, h_s, z bottleneck)":
                 [self.h_a, self.h_s, self.entropy_bottleneck], "style encoder": self.style_encoder,
                 "texture bottleneck": self.texture_bottleneck, "structure decoder (g_s)": self.g_s,
                 "generator": self.generator, "edge head": self.edge_head, "discriminator": self.discriminator}
        out = {}
        for k, mods in parts.items():
            mods = mods if isinstance(mods, list) else [mods]
            out[k] = sum(p.numel() for m in mods for p in m.parameters())
        return out
