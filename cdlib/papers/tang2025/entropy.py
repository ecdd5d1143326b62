"""Paper C's entropy model, Entroformer-style, wired into CompressAI's latent codecs so that it writes
real bitstreams.

- hyper-encoder ``h_a``: ``Linear(M -> D)`` tokens, one transformer block per scale with a 3x3 stride-2 conv
  between scales (two), then ``LayerNorm, Linear(D -> M)``: z at 1/4 of y's side;
- hyper-decoder ``h_s``: ``Linear(M -> D)``, one block per scale with a pixel-shuffle upsampling
  (3x3 conv D -> 4D, shuffle 2) between scales: D-channel hyper features at y's size;
- z is coded with a learned per-channel Gaussian (mean, log-scale per channel);
- context model: a bidirectional transformer (6 blocks at D) over the tokens of y_hat, of which only the
  *visible* ones carry their value: at test the checkerboard anchors (positions with i + j odd, as the
  official code), in training a random 50% of the positions; each token attends to the visible tokens and
  to itself; the output is zeroed at visible positions (they are coded from the hyperprior alone);
- parameter network: ``1x1 conv 2D -> 4D, LeakyReLU(0.2), 1x1 conv 4D -> 2M``: per element of y the
  (scale, mean) of a discretised Gaussian, scale = exp(max(log_scale, -7)).

Attention (all transformers here): pre-norm blocks, ``qkv`` and ``o`` without bias, scores
``(q.k + q.E[b(i, j)]) / sqrt(D)`` with learned *contextual* relative-position embeddings ``E`` (one table per
stack of blocks, shared by its blocks) indexed by "diamond" buckets: offsets ``(dv, dh)`` with
``|dv| + |dh| <= R // 2`` get their own bucket of an ``R x R`` table, all farther ones share bucket 0;
top-k filtering of the scores (k = 32 at test, random in [k/2, 2k) in training; the hyper stacks use k,
k/2, k/4 from fine to coarse, at least 2).  The FFN is ``Linear(D -> 4D), LeakyReLU(0.2), Linear``.

Bitstreams: :class:`TransformerCheckerboardLatentCodec` is CompressAI's ``CheckerboardLatentCodec`` (two
passes: anchors from the hyperprior, then the rest from the hyperprior and the context), inside a
``HyperpriorLatentCodec`` whose hyper branch is :class:`ChannelGaussianHyperLatentCodec`; every string is
CompressAI's rANS.  Three strings per image: y anchors, y non-anchors, z.

Exact decoding.  The decoder must compute bit-identical Gaussian parameters, or a scale index or a mean
can differ and the range decoder goes astray.  Float results of a matrix product can depend on the batch
size and on the number of threads, so inside :func:`cdlib.exact.exact_inference` (which the model's ``compress`` and
``decompress`` enter) the parameter path (``h_s``, the context model, the parameter network) runs one image
at a time on one thread.  Encoder and decoder then agree whatever their batch sizes and thread counts, on
the same kind of machine (decoding a CPU stream on a GPU is not supported).
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn as nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import GaussianConditional
    from compressai.latent_codecs import (CheckerboardLatentCodec, GaussianConditionalLatentCodec,
                                          HyperpriorLatentCodec, LatentCodec)

from ...exact import exact_inference, exactly

LOG_SCALE_MIN = -7.0

# --------------------------------------------------------------------------- transformer pieces

@functools.lru_cache(maxsize=64)
def diamond_buckets(h: int, w: int, num_buckets: int) -> torch.Tensor:
    """(h*w, h*w) bucket of each (query, key) pair of an h x w grid: offsets within L1 distance
    ``num_buckets // 2`` -> ``(dv + r) * num_buckets + (dh + r)``, farther ones -> 0."""
    r = num_buckets // 2
    iv, ih = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    iv, ih = iv.reshape(-1), ih.reshape(-1)
    dv, dh = iv[None, :] - iv[:, None], ih[None, :] - ih[:, None]  # key - query
    near = dv.abs() + dh.abs() <= r
    return torch.where(near, (dv + r) * num_buckets + (dh + r), torch.zeros_like(dv))


class RelPosAttention(nn.Module):
    """Multi-head self-attention with contextual relative positions and optional top-k filtering."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.o = nn.Linear(inner, dim, bias=False)
        self.scale = dim ** -0.5  # the official code scales by the model width, not the head width

    def forward(self, x, buckets, rel_table, allowed=None, topk: int = -1):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        qe = q @ rel_table.t()  # (b, heads, n, R*R): q against every bucket's embedding
        scores = (scores + torch.gather(qe, -1, buckets.expand(b, self.heads, n, n))) * self.scale
        low = -torch.finfo(scores.dtype).max
        if allowed is not None:
            scores = scores.masked_fill(~allowed, low)
        if 0 < topk < n:
            thr = scores.topk(topk, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < thr, low)
        attn = scores.float().softmax(-1).to(v.dtype)
        return self.o((attn @ v).transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelPosAttention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x, buckets, rel_table, allowed=None, topk=-1):
        x = x + self.attn(self.norm1(x), buckets, rel_table, allowed, topk)
        return x + self.ffn(self.norm2(x))


class TransformerStack(nn.Module):
    """``depth`` blocks on an h x w token grid sharing one relative-position table of ``buckets``^2 rows."""

    def __init__(self, dim, depth, heads, dim_head, mlp_ratio=4, buckets=7):
        super().__init__()
        if buckets % 2 == 0:
            raise ValueError(f"relative-position buckets must be odd, got {buckets}")
        self.num_buckets = int(buckets)
        self.rel_embed = nn.Embedding(buckets * buckets, dim_head)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dim_head, mlp_ratio) for _ in range(depth))

    def forward(self, x, hw, allowed=None, topk=-1):
        buckets = diamond_buckets(int(hw[0]), int(hw[1]), self.num_buckets).to(x.device)
        for blk in self.blocks:
            x = blk(x, buckets, self.rel_embed.weight, allowed, topk)
        return x


def _train_topk(k: int, training: bool) -> int:
    """The official schedule: k at test, uniform in [k // 2, 2k) in training (from torch's generator)."""
    if k <= 0 or not training:
        return k
    return int(torch.randint(k // 2, 2 * k, ()).item())


def _next_buckets(b: int) -> int:
    """Bucket count of the next (coarser) hyper scale, as the official code: half, made odd, at least 5."""
    nxt = b // 2
    return max(nxt if nxt % 2 else nxt + 1, 5)


def _tokens(x):  # (B, C, H, W) -> (B, H*W, C)
    return x.flatten(2).transpose(1, 2)


def _grid(t, h, w):  # (B, H*W, C) -> (B, C, H, W)
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


class HyperEncoder(nn.Module):
    """y (M) -> z (M) at 1/2^scales of y's side: transformer stacks with stride-2 convs between them."""

    def __init__(self, cin=192, cout=192, dim=384, heads=6, dim_head=64, mlp_ratio=4, blocks=1, buckets=7,
                 scales=2, topk=32):
        super().__init__()
        self.embed = nn.Linear(cin, dim)
        sizes = [buckets]
        for _ in range(scales):
            sizes.append(_next_buckets(sizes[-1]))
        self.stacks = nn.ModuleList(TransformerStack(dim, blocks, heads, dim_head, mlp_ratio, b) for b in sizes)
        self.downs = nn.ModuleList(nn.Conv2d(dim, dim, 3, 2, 1) for _ in range(scales))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cout))
        self.topk = int(topk)

    def forward(self, y):
        h, w = y.shape[-2:]
        k = _train_topk(self.topk, self.training)
        ks = [max(k // 2 ** i, 2) if k > 0 else -1 for i in range(len(self.stacks))]
        t = self.embed(_tokens(y))
        for i, stack in enumerate(self.stacks):
            t = stack(t, (h, w), topk=ks[i])
            if i < len(self.downs):
                g = self.downs[i](_grid(t, h, w))
                h, w = g.shape[-2:]
                t = _tokens(g)
        return _grid(self.head(t), h, w)


class HyperDecoder(nn.Module):
    """z_hat (M) -> D-channel hyper features at y's size: stacks with pixel-shuffle x2 between them."""

    def __init__(self, cin=192, dim=384, heads=6, dim_head=64, mlp_ratio=4, blocks=1, buckets=7, scales=2,
                 topk=32):
        super().__init__()
        self.embed = nn.Linear(cin, dim)
        sizes = [buckets]
        for _ in range(scales):
            sizes.append(_next_buckets(sizes[-1]))
        self.stacks = nn.ModuleList(TransformerStack(dim, blocks, heads, dim_head, mlp_ratio, b)
                                    for b in reversed(sizes))  # coarse (z) first
        self.ups = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, 4 * dim, 3, 1, 1), nn.PixelShuffle(2))
                                 for _ in range(scales))
        self.topk = int(topk)
        self.out_channels = dim

    def forward(self, z_hat):
        return exactly(self._forward, z_hat)

    def _forward(self, z_hat):
        h, w = z_hat.shape[-2:]
        k = _train_topk(self.topk, self.training)
        n = len(self.stacks)
        ks = [max(k // 2 ** (n - 1 - i), 2) if k > 0 else -1 for i in range(n)]
        t = self.embed(_tokens(z_hat))
        for i, stack in enumerate(self.stacks):
            t = stack(t, (h, w), topk=ks[i])
            if i < len(self.ups):
                g = self.ups[i](_grid(t, h, w))
                h, w = g.shape[-2:]
                t = _tokens(g)
        return _grid(t, h, w)


def checkerboard(h: int, w: int, anchor_parity: str = "odd", device=None) -> torch.Tensor:
    """(h, w) bool, True at the anchors: (i + j) odd for ``"odd"`` (the official code), even for ``"even"``."""
    i, j = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return (i + j) % 2 == (1 if anchor_parity == "odd" else 0)


class ContextModel(nn.Module):
    """Bidirectional transformer context model over y_hat (see the module docstring).

    ``forward(y_hat, visible=None)``: ``visible`` an (h, w) bool map of the positions whose value is known;
    by default the checkerboard anchors.  Returns (B, D, h, w) context features, zero at visible positions."""

    def __init__(self, cin=192, dim=384, depth=6, heads=6, dim_head=64, mlp_ratio=4, buckets=7, topk=32,
                 anchor_parity="odd"):
        super().__init__()
        self.embed = nn.Linear(cin, dim)
        self.stack = TransformerStack(dim, depth, heads, dim_head, mlp_ratio, buckets)
        self.topk = int(topk)
        self.anchor_parity = anchor_parity
        self.out_channels = dim

    def forward(self, y_hat, visible=None):
        h, w = y_hat.shape[-2:]
        if visible is None:
            visible = checkerboard(h, w, self.anchor_parity, y_hat.device)
        return exactly(self._forward, y_hat, visible=visible)

    def _forward(self, y_hat, visible):
        h, w = y_hat.shape[-2:]
        vis = visible.reshape(-1)
        allowed = vis[None, :] | torch.eye(h * w, dtype=torch.bool, device=y_hat.device)
        t = self.embed(_tokens(y_hat * visible.to(y_hat.dtype)))
        t = self.stack(t, (h, w), allowed=allowed, topk=_train_topk(self.topk, self.training))
        return _grid(t, h, w).masked_fill(visible, 0.0)


class ParameterNet(nn.Module):
    """[context, hyper] (2D) -> (scales, means) of y (2M): 1x1 conv, LeakyReLU(0.2), 1x1 conv; pointwise
    (CompressAI's checkerboard codec runs it on half-width maps)."""

    def __init__(self, dim=384, mlp_ratio=4, M=192):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * dim, dim * mlp_ratio, 1), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Conv2d(dim * mlp_ratio, 2 * M, 1))

    def forward(self, x):
        return exactly(self._forward, x)

    def _forward(self, x):
        means, log_scales = self.net(x).chunk(2, 1)
        return torch.cat([log_scales.clamp(min=LOG_SCALE_MIN).exp(), means], 1)


# --------------------------------------------------------------------------- latent codecs

class ChannelGaussianHyperLatentCodec(LatentCodec):
    """The hyper branch: ``z = h_a(y)`` coded with a learned Gaussian per channel (mean ``mu``, scale
    ``exp(log_sigma)``, the same at every position), ``params = h_s(z_hat)``."""

    def __init__(self, h_a: nn.Module, h_s: nn.Module, channels: int):
        super().__init__()
        self.h_a, self.h_s = h_a, h_s
        self.gaussian_conditional = GaussianConditional(None)
        self.mu = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_sigma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _scales_means(self, n: int, shape):
        size = (n, self.mu.shape[1], *shape)
        return self.log_sigma.exp().expand(size).contiguous(), self.mu.expand(size).contiguous()

    def forward(self, y):
        z = self.h_a(y)
        scales, means = self._scales_means(z.shape[0], z.shape[-2:])
        z_hat, z_likelihoods = self.gaussian_conditional(z, scales, means=means)
        return {"likelihoods": {"z": z_likelihoods}, "params": self.h_s(z_hat)}

    def compress(self, y):
        z = self.h_a(y)
        shape = tuple(z.shape[-2:])
        scales, means = self._scales_means(z.shape[0], shape)
        indexes = self.gaussian_conditional.build_indexes(scales)
        strings = self.gaussian_conditional.compress(z, indexes, means)
        z_hat = self.gaussian_conditional.decompress(strings, indexes, means=means)
        return {"strings": [strings], "shape": shape, "params": self.h_s(z_hat)}

    def decompress(self, strings, shape, **kwargs):
        (z_strings,) = strings
        scales, means = self._scales_means(len(z_strings), tuple(shape))
        indexes = self.gaussian_conditional.build_indexes(scales)
        z_hat = self.gaussian_conditional.decompress(z_strings, indexes, means=means)
        return {"params": self.h_s(z_hat)}


class TransformerCheckerboardLatentCodec(CheckerboardLatentCodec):
    """CompressAI's checkerboard codec with the transformer context model.  Coding (and eval ``forward``,
    "twopass": the rate of the very symbols coded) is CompressAI's; training with ``mask_ratio > 0`` is the
    official one: y plus uniform noise, a random set of visible positions (``1 - mask_ratio`` of them, the same
    for the whole batch), the rest predicted from them and the hyperprior, all rated."""

    def __init__(self, *args, mask_ratio: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_ratio = float(mask_ratio)

    def forward(self, y, side_params):
        if not (self.training and self.mask_ratio > 0):
            return super().forward(y, side_params)
        h, w = y.shape[-2:]
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        visible = (torch.rand(h * w, device=y.device) > self.mask_ratio).view(h, w)
        ctx = self.context_prediction(y_tilde, visible=visible)
        scales, means = self.y._chunk(self.entropy_parameters(self.merge(ctx, side_params)))
        gc = self.y.gaussian_conditional
        likelihoods = gc._likelihood(y_tilde, scales, means)
        if gc.use_likelihood_bound:
            likelihoods = gc.likelihood_lower_bound(likelihoods)
        return {"likelihoods": {"y": likelihoods}, "y_hat": y_tilde}


class EntropyModel(nn.Module):
    """The whole entropy model of y: ``forward(y)`` -> ``{"y_hat", "likelihoods": {"y", "z"}}``,
    ``compress(y)`` -> ``{"strings": [y anchors, y non-anchors, z], "shape", "y_hat"}``,
    ``decompress(strings, z_shape)`` -> ``{"y_hat"}``.  Parts: :attr:`h_a`, :attr:`h_s`, :attr:`context`,
    :attr:`param_net` (for the parameter table), :attr:`z_prior`."""

    def __init__(self, M=192, dim=384, heads=6, dim_head=64, mlp_ratio=4, ctx_depth=6, hyper_blocks=1,
                 buckets=7, topk=32, mask_ratio=0.5, hyper_scales=2):
        super().__init__()
        self.M, self.hyper_scales = int(M), int(hyper_scales)
        kw = dict(dim=dim, heads=heads, dim_head=dim_head, mlp_ratio=mlp_ratio)
        h_a = HyperEncoder(M, M, blocks=hyper_blocks, buckets=buckets, scales=hyper_scales, topk=topk, **kw)
        h_s = HyperDecoder(M, blocks=hyper_blocks, buckets=buckets, scales=hyper_scales, topk=topk, **kw)
        context = ContextModel(M, depth=ctx_depth, buckets=buckets, topk=topk, anchor_parity="odd", **kw)
        y_codec = TransformerCheckerboardLatentCodec(
            latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
            entropy_parameters=ParameterNet(dim, mlp_ratio, M), context_prediction=context,
            anchor_parity="odd", forward_method="twopass", mask_ratio=mask_ratio)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={"y": y_codec, "hyper": ChannelGaussianHyperLatentCodec(h_a, h_s, M)})
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # the parts, for the parameter table and the chapter
    h_a = property(lambda self: self.latent_codec.hyper.h_a)
    h_s = property(lambda self: self.latent_codec.hyper.h_s)
    z_prior = property(lambda self: self.latent_codec.hyper)
    context = property(lambda self: self.latent_codec.y.context_prediction)
    param_net = property(lambda self: self.latent_codec.y.entropy_parameters)

    def forward(self, y):
        return self.latent_codec(y)

    def compress(self, y):
        self._check_size(y.shape[-2:])
        with exact_inference():
            return self.latent_codec.compress(y)

    def decompress(self, strings, z_shape):
        if len(strings) != 3:
            raise ValueError(f"the entropy model needs 3 strings (y anchors, y non-anchors, z), got {len(strings)}")
        f = 2 ** self.hyper_scales
        hz, wz = (int(v) for v in z_shape)
        self._check_size((hz * f, wz * f))
        shape = {"y": (self.M, hz * f, wz * f), "hyper": (hz, wz)}
        with exact_inference():
            return self.latent_codec.decompress(strings, shape)

    def _check_size(self, hw):
        f = 2 ** self.hyper_scales
        if hw[0] % f or hw[1] % f:
            raise ValueError(f"y must have sides that are multiples of {f} (z at 1/{f}), got {tuple(hw)}")
