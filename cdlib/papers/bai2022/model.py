"""Paper A: one network that compresses an image and classifies it from the compressed latent.

Y. Bai, X. Yang, X. Liu, J. Jiang, Y. Wang, X. Ji, W. Gao, "Towards End-to-End Image Compression and
Analysis with Transformers", AAAI 2022.  The facts used here are those of
``shared/reference/papers.md`` (gathered from the authors' public code); this file is written from them,
not copied.

Pipeline (224x224 input, paper profile)::

    x -> g_a (4 conv5x5/2 + LeakyReLU) -> y 14x14x192 -> mean-scale hyperprior -> y_hat
    y_hat -> 196 tokens, Linear(192->384) + cls + position embedding -> 12 ViT blocks (DeiT-S shape)
        cls of the last block -> LayerNorm -> Linear -> logits              (analysis, no pixels needed)
        (tokens, blocks 1, 2, 3) -> aggregation -> g_s -> x_hat   (reconstruction; tokens: before the
        position embedding as the official code, or with it: ``agg_input0``)

So the transformer is shared: classification never needs the decoder g_s, and the decoder needs only the
first ``max(agg_blocks)`` blocks.  The CompressAI pieces (``EntropyBottleneck``, ``GaussianConditional``,
``conv``/``deconv``, the rANS coder) are used as they are.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import warnings

with warnings.catch_warnings():
    # compressai calls torch.jit.script when imported, which torch deprecates (a FutureWarning that names a
    # file of the machine): not the reader's business. Only that message is silenced, only here.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.models import CompressionModel
    from compressai.models.utils import conv, deconv
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from ...exact import mean_scale_compress, mean_scale_decompress, mean_scale_params
from ...losses import bpp_of_likelihoods, classification_loss, rd_metrics
from ...registry import Option, register_model
from .augment import AUGMENTS

# (alpha, beta) of the step-2 loss alpha*CE + beta*MSE_255 + bpp, per rate point (papers.md, Paper A).
# All three satisfy alpha = 100 * beta, so a config carries only beta, as ``lmbda``:
# weights are {"ce": 100 * lmbda, "mse": lmbda * 255**2, "bpp": 1} (MSE on [0, 1] times 255**2 = MSE_255).
QUALITIES = {"q1": (0.1, 0.001), "q2": (0.3, 0.003), "q3": (0.6, 0.006)}
ALPHA_PER_BETA = 100.0
STEP1_MSE_WEIGHT = 1e-3  # step 1: CE + 1e-3 * MSE_255, whatever the rate point

# Step 1 = the DeiT recipe (AdamW, wd 0.05, lr 5e-4 * total batch / 512, AMP); the registered profiles are
# step 2.  Use: make_config("bai2022", profile, **STEP1_OVERRIDES) (laptop; on the paper profile
# PAPER_STEP1_OVERRIDES), then step 2 with init_from=<step-1 checkpoint> and lmbda=QUALITIES[q][1].
# The laptop's lr 1e-3 is used as it is (optim="loop").
STEP1_OVERRIDES = {"stage": "step1", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "amp": True,
                   "augment": "deit"}  # RandAugment m9, erasing 0.25, mixup 0.8 / cutmix 1.0 (cdlib.augment)
# Paper profile (optim="official"): lr is DeiT's 5e-4 per 512 images, scaled by the total batch (batch_size x
# processes) / 512 in configure_optimizers, as the official main.py (1e-3 on 8 GPUs x 128).
PAPER_STEP1_OVERRIDES = {**STEP1_OVERRIDES, "lr": 5e-4}

# The official schedule (timm's CosineLRScheduler, stepped once per epoch): warm-up from WARMUP_LR, then a
# cosine over all the epochs down to the floor MIN_LR (both stages: --warmup-lr 1e-6, --min-lr 1e-5).
WARMUP_LR, MIN_LR = 1e-6, 1e-5
LR_BASE_BATCH = 512  # step 1: lr * batch_size * world_size / 512 (DeiT's linear scaling)
OPTIMS = ("loop", "official")

STAGES = ("step1", "step2")
AGG_INPUT0 = ("tokens", "tokens+pos")  # the aggregation's input 0: official (before the position embedding), legacy
PATCH = 16  # pixels per latent position (g_a has four stride-2 convs); also the ViT patch of `patchify`


def quality_overrides(quality: str) -> dict:
    """Config overrides of a rate point: ``{"lmbda": beta}`` (alpha follows as 100 * beta)."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown bai2022 quality {quality!r}; valid qualities: {', '.join(QUALITIES)}")
    return {"lmbda": QUALITIES[quality][1]}


def _parse_agg(agg_blocks, depth: int) -> tuple[int, ...]:
    """``agg_blocks`` -> sorted tuple of indices; 0 = the projected tokens (block input), k = block k."""
    if agg_blocks is None or agg_blocks == "last":
        return ()
    if isinstance(agg_blocks, str):
        raise ValueError(f"agg_blocks must be 'last' or a sequence of block indices in 0..{depth}, got {agg_blocks!r}")
    idx = tuple(int(i) for i in agg_blocks)
    bad = [i for i in idx if not 0 <= i <= depth]
    if bad or len(set(idx)) != len(idx):
        raise ValueError(f"agg_blocks must be distinct block indices in 0..{depth} (0 = projected tokens), "
                         f"got {list(agg_blocks)}")
    return tuple(sorted(idx))


_TRAIN = {
    # ShapesWorld 64x64 (4x4 latent), 10 classes; CPU-sized.
    "laptop": dict(dataset="shapes", image_size=64, num_classes=10, num_train=8000, batch_size=32,
                   optimizer="adam", lr=1e-3, aux_lr=1e-3, steps=3000, warmup_steps=100, schedule="cosine",
                   lmbda=QUALITIES["q2"][1], stage="step2", grad_clip=1.0, augment=""),
    # Step 2 of the paper: Adam 1e-4 (aux 1e-3), cosine, 5 warm-up epochs of 300, label smoothing 0.1, fp32,
    # random-resized crops and flips only (the official build_transform passes color_jitter=None: augment="").
    # batch_size is per process (the paper: 8 GPUs x 128).  The run counts epochs: the loop turns 300 (5 of
    # warm-up) into steps from the training set's size and the number of processes (steps= is then unused;
    # an explicit steps= override counts steps instead).  optim="official": the official optimisers and
    # per-epoch schedule (configure_optimizers).
    "paper": dict(dataset="imagefolder", image_size=224, num_classes=1000, batch_size=128, optimizer="adam",
                  lr=1e-4, aux_lr=1e-3, weight_decay=0.0, epochs=300.0, warmup_epochs=5.0, steps=300 * 1251,
                  warmup_steps=5 * 1251, schedule="cosine", lmbda=QUALITIES["q2"][1], stage="step2",
                  label_smoothing=0.1, amp=False, grad_clip=1.0, num_workers=8, augment="", optim="official"),
}


def _world_size() -> int:
    """Processes of the current run (1 without torch.distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def official_lr(step: int, cfg, base_lr: float, steps_per_epoch: float | None = None) -> float:
    """The official learning rate at optimiser step ``step``: timm's ``CosineLRScheduler`` (timm 0.4.9, as the
    official ``create_scheduler``: ``t_initial`` = epochs, ``warmup_t`` = warm-up epochs, ``warmup_lr_init`` =
    :data:`WARMUP_LR`, ``lr_min`` = :data:`MIN_LR`, no warm-up prefix, one cycle), stepped once per epoch with
    ``lr_scheduler.step(epoch)`` *after* each epoch, so epoch ``e`` trains at the value of ``t = max(e - 1, 0)``.

    ``steps_per_epoch``: ``None`` when the config counts steps: the same curve on a per-step clock
    (``t = step``, ``cfg.warmup_steps``, ``cfg.steps``), without the lag."""
    if steps_per_epoch:
        t, total, warm = max(int(step // steps_per_epoch) - 1, 0), cfg.epochs, cfg.warmup_epochs
    else:
        t, total, warm = step, cfg.steps, cfg.warmup_steps
    if warm and t < warm:
        return WARMUP_LR + t * (base_lr - WARMUP_LR) / warm
    if t >= total:
        return MIN_LR
    return MIN_LR + 0.5 * (base_lr - MIN_LR) * (1 + math.cos(math.pi * t / total))


def check_config(cfg) -> None:
    """Cross-field checks of a bai2022 config (registered with the model)."""
    if cfg.model_options.get("augment") == "deit" and cfg.batch_size % 2:
        raise ValueError(f"augment='deit' mixes pairs of images: batch_size must be even, got {cfg.batch_size}")


@register_model(
    "bai2022",
    arch={
        # both profiles feed the aggregation's input 0 the projected tokens alone, as the official code
        "laptop": dict(N=32, M=64, D=64, depth=4, heads=4, num_classes=10, ref_grid=4,
                       agg_blocks=(0, 1, 2, 3), patchify=False, drop_path=0.0, local_hyperprior=True,
                       agg_input0="tokens"),
        "paper": dict(N=128, M=192, D=384, depth=12, heads=6, num_classes=1000, ref_grid=14,
                      agg_blocks=(0, 1, 2, 3), patchify=False, drop_path=0.1, local_hyperprior=False,
                      agg_input0="tokens"),
    },
    # checkpoints stored before agg_input0 existed aggregated the tokens with their position embedding
    legacy_arch={"agg_input0": "tokens+pos"},
    train=_TRAIN,
    options={"augment": Option("", str, choices=AUGMENTS,
                               help='training augmentation: "" crops and flips only (step 2, as the official '
                                    'code); "timm" + colour jitter 0.4 (timm\'s default; compared); "deit" + '
                                    'RandAugment, erasing, mixup/cutmix (step 1, paper scale)'),
             "optim": Option("loop", str, choices=OPTIMS,
                             help='"loop": the training loop\'s optimisers and per-step warm-up + cosine to 0 '
                                  '(laptop); "official": the official code\'s (step 1: AdamW with timm\'s '
                                  'weight-decay groups, lr x total batch / 512; both steps: warm-up from 1e-6, '
                                  'per-epoch cosine to a floor of 1e-5)')},
    check_config=check_config,
    size_multiple=2 * PATCH,  # g_a has stride 16 and h_a one more stride 2
)
class Bai2022(CompressionModel):
    r"""Bai et al. 2022: one model that compresses and classifies, a ViT on the quantised latent.

    Y. Bai, X. Yang, X. Liu, J. Jiang, Y. Wang, X. Ji, W. Gao, `"Towards End-to-End Image Compression
    and Analysis with Transformers" <https://arxiv.org/abs/2112.09300>`_, AAAI 2022.

    Args:
        N, M: channels of the transforms and of the latent ``y`` (paper: 128, 192).
        D, depth, heads: transformer width, number of blocks, attention heads (paper: DeiT-S 384, 12, 6).
        num_classes: classifier outputs.
        ref_grid: side of the latent grid the position embedding is defined on (paper 14 = 224 / 16);
            it is bilinearly resized to any other latent grid, so any input multiple of 32 works.
        agg_blocks: token features that feed the decoder, each through its own ``Linear(D -> D // k)``,
            concatenated, then ``Linear -> D`` (paper: ``(0, 1, 2, 3)``, 0 = the projected tokens).
            ``"last"`` or ``()``: the decoder takes the last block's (normed) tokens only (ablation).
        patchify: ablation "decode, then analyse": ``g_s`` decodes ``y_hat`` directly and the transformer
            reads 16x16 patches of ``x_hat`` (``Linear(3*16*16 -> D)``) instead of latent tokens.
        drop_path: stochastic depth of the last block (linearly increasing), paper 0.1.
        local_hyperprior: laptop only.  ``h_a``/``h_s`` keep the paper's layers, widths and strides, but
            their kernels shrink to 1, 2 (stride 2, no padding), 1: each position of ``z`` then sees exactly
            one 2x2 block of ``y``, with no zero padding, so the hyperprior computes the same thing on any
            image size.  On 64-px training images ``z`` is 2x2 and the paper's 3x3/5x5 kernels see only
            borders; on larger images their interior predictions are off (chapter 3, exercise 5).
        agg_input0: what the aggregation's input 0 is: ``"tokens"``, the projected tokens ``Linear(y_hat)``
            *before* the position embedding is added (the official code: ``fusion0(chans_embed(y_hat))``;
            the paper profile), or ``"tokens+pos"``, the block input (tokens plus position embedding) without
            the cls token: what a checkpoint stored before the switch existed was trained with.

    ``forward(x)`` returns ``{"x_hat", "likelihoods": {"y", "z"}, "logits"}``; ``forward(x, entropy=False)`` is
    the step-1 path (no quantisation, no entropy model, empty likelihoods).  Training stages (``cfg.stage``):
    ``"step1"``: CE + 1e-3 * MSE_255 without the entropy model; ``"step2"`` (default): alpha * CE +
    beta * MSE_255 + bpp, with (alpha, beta) from :data:`QUALITIES` via ``cfg.lmbda = beta``.

    Fidelity notes: in training ``y_hat`` is ``y`` plus uniform noise (CompressAI's convention) for the
    rate, the transformer and the decoder alike (as the official code); the aggregation's input 0 is set by
    ``agg_input0`` (official: the tokens before the position embedding).  The hyperprior follows papers.md (z at 1/2 of y: ``h_a`` strides 1, 2, 1), so the
    whole model has stride 32, not CompressAI's 64.  The laptop profile sets ``local_hyperprior`` (see
    above): its 64-px training images give a 2x2 ``z``, too small for the paper's kernels to learn an interior.
    """

    #: h_s runs stream by stream in compress/decompress (cdlib.exact): batches encode safely
    exact_entropy_parameters = True

    def __init__(self, N=128, M=192, D=384, depth=12, heads=6, num_classes=1000, ref_grid=14,
                 agg_blocks=(0, 1, 2, 3), patchify=False, drop_path=0.1, mlp_ratio=4.0,
                 local_hyperprior=False, agg_input0="tokens"):
        super().__init__()
        if D % heads:
            raise ValueError(f"D={D} must be a multiple of heads={heads}")
        self.N, self.M, self.D, self.depth = int(N), int(M), int(D), int(depth)
        self.ref_grid = int(ref_grid)
        self.patchify = bool(patchify)
        self.agg_idx = () if self.patchify else _parse_agg(agg_blocks, depth)
        if agg_input0 not in AGG_INPUT0:
            raise ValueError(f"agg_input0 must be one of {', '.join(map(repr, AGG_INPUT0))}, got {agg_input0!r}")
        self.agg_input0 = agg_input0
        # step 1 leaves the hyperprior unused: DDP must be told
        self.ddp_find_unused_parameters = True

        self.g_a = nn.Sequential(
            conv(3, N), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, M),
        )
        # Hyperprior of papers.md: one stride 2 only (z of a 14x14 latent is 7x7); applied to y, not |y|.
        self.local_hyperprior = bool(local_hyperprior)
        if self.local_hyperprior:  # same layers, kernels 1 / 2 (stride 2, unpadded) / 1: no border effects
            self.h_a = nn.Sequential(
                nn.Conv2d(M, N, 1), nn.LeakyReLU(inplace=True),
                nn.Conv2d(N, N, 2, stride=2), nn.LeakyReLU(inplace=True),
                nn.Conv2d(N, N, 1),
            )
            self.h_s = nn.Sequential(
                nn.Conv2d(N, M, 1), nn.LeakyReLU(inplace=True),
                nn.ConvTranspose2d(M, M * 3 // 2, 2, stride=2), nn.LeakyReLU(inplace=True),
                nn.Conv2d(M * 3 // 2, M * 2, 1),
            )
        else:
            self.h_a = nn.Sequential(
                conv(M, N, kernel_size=3, stride=1), nn.LeakyReLU(inplace=True),
                conv(N, N, kernel_size=5, stride=2), nn.LeakyReLU(inplace=True),
                conv(N, N, kernel_size=5, stride=1),
            )
            self.h_s = nn.Sequential(
                conv(N, M, kernel_size=5, stride=1), nn.LeakyReLU(inplace=True),
                deconv(M, M * 3 // 2, kernel_size=5, stride=2), nn.LeakyReLU(inplace=True),
                conv(M * 3 // 2, M * 2, kernel_size=3, stride=1),
            )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

        # Transformer on latent tokens (or on pixel patches of x_hat for the patchify ablation).
        self.proj = nn.Linear(3 * PATCH * PATCH if self.patchify else M, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.ref_grid ** 2, D))
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(D, heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i]) for i in range(depth))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, num_classes)

        # Aggregation (feeds the decoder): one Linear(D -> D // k) per selected feature, concat, Linear.
        k = len(self.agg_idx)
        if k:
            self.agg_in = nn.ModuleList(nn.Linear(D, D // k) for _ in range(k))
            self.agg_out = nn.Linear(k * (D // k), D)

        c_in = M if self.patchify else D
        self.g_s = nn.Sequential(
            deconv(c_in, N), nn.LeakyReLU(inplace=True),
            deconv(N, N), nn.LeakyReLU(inplace=True),
            deconv(N, N), nn.LeakyReLU(inplace=True),
            deconv(N, 3),
        )
        self._init_transformer()

    def _init_transformer(self) -> None:
        # ViT/DeiT initialisation for the token parts; the convolutions keep PyTorch's (as CompressAI).
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        linears = [self.proj, self.head, *[m for m in self.blocks.modules() if isinstance(m, nn.Linear)]]
        if self.agg_idx:
            linears += [*self.agg_in, self.agg_out]
        for m in linears:
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def downsampling_factor(self) -> int:
        return PATCH * 2  # g_a: 16, h_a: 2 more

    # -- pieces ---------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        s = self.downsampling_factor
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"bai2022: height and width must be multiples of {s}, got {tuple(x.shape[-2:])} "
                             f"(pad first, e.g. cdlib.codecs.learned.pad_to)")

    def _pos(self, h: int, w: int) -> torch.Tensor:
        """Position embedding for an h x w grid: the reference grid, bilinearly resized if needed."""
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (h, w) != (self.ref_grid, self.ref_grid):
            r = self.ref_grid
            grid = grid.reshape(1, r, r, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            grid = grid.flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, grid], dim=1)

    def _embed(self, feat: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, h*w, D) projected tokens of y_hat (or of x_hat's 16x16 patches), no cls, no position; grid (h, w)."""
        if self.patchify:
            h, w = feat.shape[-2] // PATCH, feat.shape[-1] // PATCH
            seq = F.unfold(feat, PATCH, stride=PATCH).transpose(1, 2)  # (B, h*w, 3*16*16)
        else:
            h, w = feat.shape[-2:]
            seq = feat.flatten(2).transpose(1, 2)  # (B, h*w, M)
        return self.proj(seq), (h, w)

    def _with_cls_pos(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self._pos(*hw)

    def _tokens(self, feat: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 1 + h*w, D) input tokens of y_hat (or of x_hat's 16x16 patches) and the grid (h, w)."""
        t, hw = self._embed(feat)
        return self._with_cls_pos(t, hw), hw

    def _run_blocks(self, t: torch.Tensor, upto: int) -> list[torch.Tensor]:
        """Run blocks 1..upto; return [input, out_1, ..., out_upto] (index = block number)."""
        feats = [t]
        for blk in self.blocks[:upto]:
            t = blk(t)
            feats.append(t)
        return feats

    def _decoder_input(self, feats: list[torch.Tensor], hw: tuple[int, int],
                       tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregated token features (cls dropped) as a (B, D, h, w) map for g_s.

        ``tokens``: the projected tokens before the position embedding (:meth:`_embed`), input 0 when
        ``agg_input0="tokens"``; if not given, recovered as the block input minus the position embedding."""
        if self.agg_idx:
            def source(i):
                if i or self.agg_input0 == "tokens+pos":
                    return feats[i][:, 1:]
                return tokens if tokens is not None else feats[0][:, 1:] - self._pos(*hw)[:, 1:]

            parts = [lin(source(i)) for lin, i in zip(self.agg_in, self.agg_idx)]
            tok = self.agg_out(torch.cat(parts, dim=-1))
        else:  # ablation: the last block only
            tok = self.norm(feats[-1])[:, 1:]
        return tok.transpose(1, 2).reshape(tok.shape[0], -1, *hw)

    def _analyse_and_reconstruct(self, y_hat: torch.Tensor, need_logits: bool = True, need_image: bool = True):
        """(logits or None, x_hat or None) from y_hat; runs only the blocks that are needed."""
        logits = x_hat = None
        if self.patchify:  # decode, then analyse the decoded pixels
            x_hat = self.g_s(y_hat)
            if need_logits:
                t, _ = self._tokens(x_hat)
                logits = self.head(self.norm(self._run_blocks(t, self.depth)[-1][:, 0]))
            return logits, x_hat
        tokens, hw = self._embed(y_hat)
        upto = self.depth if (need_logits or not self.agg_idx) else max(self.agg_idx)
        feats = self._run_blocks(self._with_cls_pos(tokens, hw), upto)
        if need_logits:
            logits = self.head(self.norm(feats[-1][:, 0]))
        if need_image:
            x_hat = self.g_s(self._decoder_input(feats, hw, tokens))
        return logits, x_hat

    def _means_scales(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # outside training stream by stream, as compress/decompress compute them (cdlib.exact): forward's
        # y_hat is then the very y_hat that the streams code
        if self.training:
            return self.h_s(z_hat).chunk(2, 1)
        return mean_scale_params(self, z_hat)

    def diagram_blocks(self) -> list:
        """The stages of the model for :func:`cdlib.diagrams.model_diagram`, read from this instance (layers,
        widths, depth, heads, aggregated blocks); the shapes come from a run on a dummy input."""
        from ...diagrams import Block, layer_summary

        last = f"blocks.{self.depth - 1}"
        heads = self.blocks[0].attn.num_heads
        front = [
            Block("input", "image", (0, 0), kind="input", out="x"),
            Block("g_a", "g_a", (1, 0), layer_summary(self.g_a), inputs=("input",), out="y"),
            Block("h_a", "h_a", (1, 1), layer_summary(self.h_a), inputs=("g_a",), out="z"),
            Block("entropy_bottleneck", "Q", (2, 1), "factorized\nentropy model", inputs=("h_a",),
                  kind="entropy", out="ẑ"),
            Block("h_s", "h_s", (3, 1), layer_summary(self.h_s), inputs=("entropy_bottleneck",), out="μ,σ"),
            Block("gaussian_conditional", "Q", (3, 0), "Gaussian\nentropy model", inputs=("g_a", "h_s"),
                  kind="entropy", out="ŷ"),
        ]
        head = f"norm(cls)\nLinear {self.D}→{self.head.out_features}"
        blocks = f"{self.depth} blocks\n{heads} heads"
        if self.patchify:  # ablation: decode, then read 16x16 patches of the decoded image
            return [
                *front,
                Block("g_s", "g_s", (4, 0), layer_summary(self.g_s), inputs=("gaussian_conditional",), out="x̂"),
                Block("blocks.0", "patches", (5, 0), f"16×16, Linear\n+ cls, pos", inputs=("g_s",), io="input",
                      name="tokens", out="t"),
                Block(last, "transformer", (5, 1), blocks, inputs=("tokens",), name="transformer", out="t"),
                Block("head", "head", (5, 2), head, inputs=("transformer",), kind="task", out="logits"),
            ]
        used = ", ".join(str(i) for i in self.agg_idx if i)
        return [
            *front,
            Block("blocks.0", "tokens", (4, 0), f"Linear {self.M}→{self.D}\n+ cls, pos",
                  inputs=("gaussian_conditional",), io="input", name="tokens", out="t"),
            Block(last, "transformer", (5, 0), blocks, inputs=("tokens",), name="transformer", out="t"),
            Block("head", "head", (5, 1), head, inputs=("transformer",), kind="task", out="logits"),
            Block("g_s", "aggregation", (4, 1),
                  (f"tokens +\nblocks {used}" if used else "tokens") if self.agg_idx else "last block\n(normed)",
                  inputs=("tokens", "transformer"), io="input", name="aggregation", out="a"),
            Block("g_s", "g_s", (4, 2), layer_summary(self.g_s), inputs=("aggregation",), out="x̂"),
        ]

    # -- CompressAI interface -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, entropy: bool = True) -> dict:
        """``{"x_hat", "likelihoods": {"y", "z"}, "logits"}``; ``entropy=False``: step 1 (y_hat = y, no rate)."""
        self._check_input(x)
        y = self.g_a(x)
        if not entropy:
            logits, x_hat = self._analyse_and_reconstruct(y)
            return {"x_hat": x_hat, "likelihoods": {}, "logits": logits}
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self._means_scales(z_hat)
        # training: y + noise; eval: round(y - means) + means, the very y_hat that compress/decompress code
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        logits, x_hat = self._analyse_and_reconstruct(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "logits": logits}

    def compress(self, x: torch.Tensor) -> dict:
        self._check_input(x)
        strings, shape = mean_scale_compress(self, self.g_a(x))
        return {"strings": strings, "shape": shape}

    def decode_latent(self, strings, shape) -> torch.Tensor:
        """Entropy-decode ``y_hat`` from ``[y_strings, z_strings]`` and the z grid ``shape``."""
        if len(strings) != 2:
            raise ValueError(f"bai2022 needs 2 latent strings (y, z), got {len(strings)}")
        return mean_scale_decompress(self, strings, shape)

    def decompress(self, strings, shape) -> dict:
        """``{"x_hat"}`` in [0, 1]; runs only the transformer blocks that the aggregation reads."""
        y_hat = self.decode_latent(strings, shape)
        _, x_hat = self._analyse_and_reconstruct(y_hat, need_logits=False)
        return {"x_hat": x_hat.clamp_(0, 1)}

    def classify_from_strings(self, strings, shape) -> torch.Tensor:
        """Logits (B, num_classes) from the bitstream strings, without pixels: y_hat -> transformer -> head.

        Decode-free: ``g_s`` (and the aggregation) never run, except in the ``patchify`` ablation, whose
        whole point is to analyse decoded pixels."""
        y_hat = self.decode_latent(strings, shape)
        logits, _ = self._analyse_and_reconstruct(y_hat, need_image=False)
        return logits

    def classify_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images through the step-1 path: ``g_a``, the transformer and the head on
        the unquantised ``y``; neither the entropy model nor ``g_s`` runs.  This is the classifier that a fair
        decode-then-classify pipeline puts behind every codec (chapter 3): the same network as Bai's
        decode-free path, without its codec (:class:`PixelPath`)."""
        self._check_input(x)
        if self.patchify:
            raise ValueError("bai2022 patchify ablation: its transformer reads decoded pixels, there is no "
                             "step-1 path from y")
        logits, _ = self._analyse_and_reconstruct(self.g_a(x), need_image=False)
        return logits

    # -- training protocol (cdlib.train) --------------------------------------------------------------------
    @staticmethod
    def _stage(cfg) -> str:
        stage = getattr(cfg, "stage", "") or "step2"
        if stage not in STAGES:
            raise ValueError(f"bad value {stage!r} for 'stage' of bai2022; valid values: {', '.join(STAGES)}")
        return stage

    def loss_terms(self, batch: dict, cfg) -> dict:
        """step1: {"ce", "mse"} without the entropy model; step2: {"ce", "mse", "bpp"}."""
        if "label" not in batch:
            raise ValueError("bai2022 trains on labelled images: the batch has no 'label' "
                             "(use dataset=shapes or imagefolder)")
        stage = self._stage(cfg)
        x = batch["image"]
        out = self(x, entropy=stage == "step2")
        terms = {"ce": classification_loss(out["logits"], batch["label"], cfg.label_smoothing),
                 "mse": F.mse_loss(out["x_hat"], x)}
        if stage == "step2":
            n, _, h, w = x.shape
            terms["bpp"] = bpp_of_likelihoods(out["likelihoods"], n * h * w)
        return terms

    def loss_weights(self, cfg) -> dict:
        """step1: CE + 1e-3 * MSE_255; step2: alpha * CE + beta * MSE_255 + bpp (beta = cfg.lmbda)."""
        if self._stage(cfg) == "step1":
            return {"ce": 1.0, "mse": STEP1_MSE_WEIGHT * 255.0**2}
        return {"ce": ALPHA_PER_BETA * cfg.lmbda, "mse": cfg.lmbda * 255.0**2, "bpp": 1.0}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """accuracy (when labelled), psnr of the clamped x_hat, bpp_est from the likelihoods."""
        x = batch["image"]
        out = self(x)
        res = rd_metrics(x, out)
        if "label" in batch:
            res["accuracy"] = (out["logits"].argmax(1) == batch["label"]).float().mean().item()
        return res

    # -- optimisers (trainer hook): the model option ``optim`` ----------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """timm's convention (as the official model): parameters that weight-decay groups never decay."""
        return {"pos_embed", "cls_token"}

    def configure_optimizers(self, cfg) -> dict:
        """``optim="loop"``: the loop's default (:func:`cdlib.train.default_optimizers`).  ``optim="official"``:
        the official code's optimisers and schedule (:func:`official_lr`).

        - step 1 (``pretrained_model/main.py``, timm ``create_optimizer``): ``cfg.optimizer`` (AdamW) over
          timm's weight-decay groups (no decay for biases, norm weights and other 1-D parameters,
          ``pos_embed``, ``cls_token``), at ``cfg.lr * batch_size * world_size / 512``;
        - step 2 (``full_model/optim.py``): ``cfg.optimizer`` (Adam) at ``cfg.lr``, one group, weight decay
          ``cfg.weight_decay`` (0), no lr scaling;
        - both: an ``"aux"`` Adam at ``cfg.aux_lr`` for the entropy bottleneck's quantiles (not scheduled), and
          the main lr warmed up from :data:`WARMUP_LR`, then a cosine to the floor :data:`MIN_LR`, stepped once
          per epoch with the official one-epoch lag (per step when the config counts steps, not epochs).
        """
        from ...train import default_optimizers, make_optimizer, weight_decay_groups

        optim = cfg.model_options.get("optim", "loop")
        if optim not in OPTIMS:
            raise ValueError(f"bad value {optim!r} for option 'optim' of bai2022; valid values: {', '.join(OPTIMS)}")
        if optim == "loop":
            return default_optimizers(self, cfg)
        is_aux = lambda n: n.endswith("quantiles")  # noqa: E731
        if self._stage(cfg) == "step1":
            lr = cfg.lr * cfg.batch_size * _world_size() / LR_BASE_BATCH
            main = make_optimizer(weight_decay_groups(self, cfg.weight_decay, exclude=is_aux), cfg, lr=lr)
        else:
            lr = cfg.lr
            main = make_optimizer([p for n, p in self.named_parameters() if p.requires_grad and not is_aux(n)], cfg)
        aux = [p for n, p in self.named_parameters() if p.requires_grad and is_aux(n)]
        optimizers = {"main": main}
        if aux:
            optimizers["aux"] = torch.optim.Adam(aux, lr=cfg.aux_lr)
        per_epoch = cfg.steps / cfg.epochs if cfg.epochs > 0 else None
        sched = torch.optim.lr_scheduler.LambdaLR(
            main, lambda step: official_lr(step, cfg, lr, per_epoch) / lr)
        return {"optimizers": optimizers, "schedulers": {"main": sched}}

    # -- training data (trainer hooks): the model option ``augment`` (augment.py) ---------------------------
    def wrap_train_dataset(self, dataset, cfg):
        """Per-image part of ``augment``: timm's colour jitter ("timm"), RandAugment and erasing ("deit")."""
        from .augment import wrap_dataset

        return wrap_dataset(dataset, cfg.model_options["augment"], cfg.seed)

    def batch_transform(self, cfg):
        """Per-batch part of ``augment``: mixup/cutmix with label smoothing ("deit"), else None."""
        from .augment import batch_transform

        return batch_transform(cfg.model_options["augment"], cfg.num_classes, cfg.label_smoothing)



class PixelPath(nn.Module):
    """A :class:`Bai2022` model seen as a pixel classifier, ``images -> logits`` (:meth:`Bai2022.classify_pixels`):
    what ``DecodeThenAnalyse(codec, PixelPath(step1))`` runs on every codec's decoded images, so that each
    pipeline of the comparison ends in the same network.  Images whose sides are not multiples of 32 are
    padded by edge replication (as the codec pads)."""

    def __init__(self, model: Bai2022):
        super().__init__()
        if getattr(model, "patchify", False):
            raise ValueError("PixelPath needs a model with a step-1 path (not the patchify ablation)")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ...images import pad_to

        return self.model.classify_pixels(pad_to(x, self.model.downsampling_factor)[0])
