"""Paper C: a split ResNet whose features are filtered (RE module), compressed (gnConv codec with a
transformer entropy model) and analysed without ever reconstructing pixels.

W. Tang, S. Yi, Y. Wang, "Towards Learned Image Compression for Multiple Semantic Analysis Tasks",
IEEE Transactions on Broadcasting, 2025 ("DICM").  Facts from ``shared/reference/papers.md`` (checked against
the official code, Tongji-MIC-Lab/DICM, read for facts; nothing copied).

Pipeline (paper profile, 256 x 256 input)::

    x -> head (ResNet-50 stem + layer1)            -> f1      256 x 64 x 64
    f1 -> RE encoder (Conv2Former) -> Q            -> latent  192 x 8 x 8   (rate: regulariser, never sent)
       -> RE decoder                               -> f2      256 x 64 x 64
    f2 -> g_a (HorNet gnConv 2, 3, 4+FFT)          -> y       192 x 16 x 16
    y  -> h_a (transformer)                        -> z       192 x 4 x 4   (per-channel Gaussian)
    z_hat -> h_s; y_hat anchors | context -> (mean, scale) -> y_hat (checkerboard, 3 rANS strings)
    y_hat -> g_s (gnConv 2, 3, 4+FFT)              -> f3      256 x 64 x 64
    f3 -> tail (layer2..4) -> tasks (classification, detection, segmentation)

Parts and files: :mod:`.backbone`, :mod:`.re`, :mod:`.compression`, :mod:`.entropy`.  Every difference from
the official code is in :data:`FIDELITY`; :func:`parameter_table` compares the parts with :data:`OFFICIAL_PARAMS`.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.models import CompressionModel

from ...losses import bpp_of_likelihoods
from ...registry import Option, register_alias, register_model
from .backbone import ProjectionHead, build_backbone
from .compression import CodecDecoder, CodecEncoder
from .entropy import EntropyModel
from .moco import MoCoState, TwoViews, heatmap_boxes, info_nce
from .re import REModule

# Parameters (millions) of each part of the official model, built from its code (papers.md, paper C).
# "resnet50" is torchvision's ResNet-50 with MoCo's fc 2048 -> 128 (stem, layer1..4, fc).
OFFICIAL_PARAMS = {"resnet50": 23.8, "re_enc": 1.36, "re_dec": 2.28, "codec_enc": 3.49, "codec_dec": 3.53,
                   "hyper_enc": 8.13, "hyper_dec": 16.02, "context": 10.71, "param_net": 1.77}

STAGES = ("moco", "re", "joint", "codec")
_STAGE_CODE = {"moco": 1, "joint": 3}
# stage 4 with train_parts="rate": what a rate point fine-tuned from another keeps (so the zoo stores only the rest)
RATE_FROZEN = ["g_s", "entropy.latent_codec.hyper.h_s", "entropy.latent_codec.y.context_prediction"]  # MoCoState.ready: the stage whose query the key encoder was synced with

# Every difference from the official code (model only; training and tasks come with their own tables).
FIDELITY = {
    "backbone (laptop)": "a narrow BasicBlock ResNet (widths 32/64/128/256, one block per layer) with the "
                         "standard stem instead of ResNet-50: f1 keeps stride 4; the paper profile is "
                         "torchvision's resnet50(weights=None).",
    "projection head": "MoCo v2's MLP (2048 -> 2048 -> 128 in the paper profile) is part of the model "
                       "(proj); the official count of 23.8 M has only the last Linear, so the hidden layer "
                       "is reported on its own row (proj_hidden).",
    "RE rate model": "CompressAI's EntropyBottleneck (filters 3,3,3, with quantiles fitted by the aux loss) "
                     "instead of the official re-implementation of the same factorized density; the RE "
                     "latent is not clamped to [-128, 127] (it is never coded).",
    "RE unused norms": "the official RE encoder and decoder each hold an unused LayerNorm(128) (256 "
                       "parameters); not built here.",
    "z prior": "the per-channel Gaussian of z is CompressAI's GaussianConditional with learned per-channel "
               "mean and log-scale: z_hat = round(z - mu) + mu at test (official: round(z)), scales "
               "lower-bounded at 0.11 (official: exp(log_sigma), no bound).",
    "y quantisation at test": "y_hat = round(y - mean) + mean (CompressAI's GaussianConditional; what the "
                              "rANS coder codes) instead of round(y); the codec decoder reads that y_hat.",
    "y scale bound": "scales lower-bounded at 0.11 and coded with CompressAI's 64-scale table (0.11..256); "
                     "the official likelihood bounds log-scale at -7 and its table spans 0.1..256.",
    "y training noise": "as the official code: y + U(-0.5, 0.5) for the context, the rate and the decoder; "
                        "no clamp to [-128, 127].",
    "random token masking": "as the official code (50% of positions visible, one draw per batch); drawn from "
                            "torch's generator (seeded) instead of numpy's.",
    "top-k in training": "k drawn uniformly in [k/2, 2k) per call from torch's generator (official: numpy).",
    "qkv layout": "q, k, v are contiguous thirds of the qkv projection (official: interleaved); a "
                  "permutation of the same weights, same function class.",
    "contextual positions": "q . E[bucket] computed as a gather of q @ E^T (official: materialises the "
                            "(n, n, d) embeddings); the same sums in another order.",
    "checkerboard": "CompressAI's CheckerboardLatentCodec (anchors at i + j odd, as the official test "
                    "mask) with real rANS strings; the official code only estimates bpp from likelihoods.",
    "exact decoding": "in compress/decompress the entropy parameters are computed image by image on one "
                      "thread so that decoding is exact whatever the batch size and thread count.",
    "bitstream": "three strings (y anchors, y non-anchors, z) in cdlib's container (header, CRC-32).",
    "shuffled BN": "the key encoder's batch norm sees the batch shuffled and split into groups of bn_chunk "
                   "images in every process (official: MoCo's shuffle across GPUs, one group per GPU); the "
                   "same guard against the positive pair sharing batch statistics, on one device too.",
    "key encoder across stages": "exports leave out the key encoder and the queue: a stage started from an "
                                 "exported checkpoint copies the query into the key encoder and starts a "
                                 "fresh random queue (official stage 3 loads both from stage 2's file).",
    "ContrastiveCrop boxes": "refreshed when an epoch starts, from the query encoder in eval mode on the "
                             "uncropped training images; a crop clipped at the image border is smaller, as "
                             "the official crop.",
    "joint stage distortion": "L1(f1, f2) with gradients into both the head and the RE module (our "
                              "reading; the official weights 1 / 0.1 / 0.1 for InfoNCE / RE rate / L1).",
}


# Stage options (``--set name=value``); the paper profile's values are the official ones (papers.md).
OPTIONS = {
    "moco_m": Option(0.999, float, help="momentum of MoCo's key encoder (MoCo v2: 0.999)"),
    "moco_t": Option(0.2, float, help="InfoNCE temperature (MoCo v2: 0.2)"),
    "ccrop": Option(True, bool, help="ContrastiveCrop: crops centred inside heatmap boxes (False: plain "
                                     "random-resized crops, the ablation)"),
    "box_warmup": Option(20, int, help="epochs of plain boxes (the whole image) before the first heatmap boxes"),
    "box_every": Option(20, int, help="epochs between box refreshes"),
    "train_parts": Option("all", str, choices=("all", "rate"),
                          help='stage 4: "all" trains g_a, g_s and the entropy model; "rate" (a rate point '
                               'fine-tuned from another) keeps g_s, the hyper-decoder and the context model '
                               'and trains g_a, the hyper-encoder, the z prior and the parameter net'),
    "bn_chunk": Option(32, int, help="images per batch-norm group of the key encoder (the batch is shuffled "
                                     "first; MoCo's shuffled BN)"),
}

# Training defaults per profile: stage 1 (MoCo v2 + ContrastiveCrop).  Every stage's official settings are
# recipes.PAPER_STAGES (what the zoo recipes run on the paper profile); ``--set stage=...`` alone keeps these
# optimiser values.
_TRAIN = {
    "laptop": dict(dataset="shapes", image_size=128, num_classes=10, num_train=4000, batch_size=64, stage="moco",
                   optimizer="sgd", lr=0.06, momentum=0.9, weight_decay=1e-4, steps=3000, warmup_steps=0,
                   schedule="cosine", grad_clip=0.0, moco_m=0.99, box_warmup=8, box_every=8, bn_chunk=16),
    # ContrastiveCrop's MoCo v2 config: SGD lr 0.03 (batch 256), wd 1e-4, cosine, 100 epochs, fp32 here
    "paper": dict(dataset="imagefolder", image_size=256, num_classes=1000, batch_size=32, stage="moco",
                  optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=1e-4, epochs=100.0, steps=100 * 5005,
                  schedule="cosine", grad_clip=0.0, num_workers=8, moco_m=0.999, box_warmup=20, box_every=20,
                  bn_chunk=32),
}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def parameter_table(model: "Tang2025") -> dict:
    """Parameters per part: ``{part: {"ours": int, "official_M": float | None}}``, parts as in
    :data:`OFFICIAL_PARAMS` plus the ones the official count leaves out (``proj_hidden``, ``re_prior``,
    ``z_prior``, and ``moco_key``, the training-only key encoder); ``"total"`` at the end."""
    e = model.entropy
    ours = {
        "resnet50": _count(model.head) + _count(model.tail) + _count(model.proj.out),
        "re_enc": _count(model.re.encoder),
        "re_dec": _count(model.re.decoder),
        "codec_enc": _count(model.g_a),
        "codec_dec": _count(model.g_s),
        "hyper_enc": _count(e.h_a),
        "hyper_dec": _count(e.h_s),
        "context": _count(e.context),
        "param_net": _count(e.param_net),
        "proj_hidden": _count(model.proj.hidden),
        "moco_key": _count(getattr(model, "moco", None)),
        "re_prior": _count(model.re.entropy_bottleneck),
        "z_prior": _count(e.z_prior) - _count(e.h_a) - _count(e.h_s),
    }
    table = {k: {"ours": v, "official_M": OFFICIAL_PARAMS.get(k)} for k, v in ours.items()}
    table["total"] = {"ours": _count(model), "official_M": None}
    assert sum(ours.values()) == table["total"]["ours"], "parameter_table misses a part"
    return table


# ShapesWorld-sized: 128 px (f1 32x32, RE latent 4x4, y 8x8, z 2x2) or 64 px for CI (y 4x4, z 1x1)
LAPTOP_ARCH = dict(backbone="basic", widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1), re_dim=32, re_latent=48,
                   re_depths=(1, 1, 2), N=32, M=48, dim=64, heads=2, dim_head=32, mlp_ratio=2, ctx_depth=2,
                   hyper_blocks=1, buckets=7, topk=32, mask_ratio=0.5, drop_path=0.1, filter_size=(24, 13),
                   proj_dim=64, proj_hidden=256, queue=4096)
# the official shapes: f1 256x64x64, RE latent 192x8x8, y 192x16x16, z 192x4x4 at 256 px
PAPER_ARCH = dict(backbone="resnet50", widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), re_dim=128, re_latent=192,
                  re_depths=(1, 1, 2), N=128, M=192, dim=384, heads=6, dim_head=64, mlp_ratio=4, ctx_depth=6,
                  hyper_blocks=1, buckets=7, topk=32, mask_ratio=0.5, drop_path=0.5, filter_size=(24, 13),
                  proj_dim=128, proj_hidden=2048, queue=65536)


@register_model(
    "tang2025",
    arch={"laptop": LAPTOP_ARCH, "paper": PAPER_ARCH},
    options=OPTIONS,
    train=_TRAIN,
    size_multiple=64,  # f1 at 1/4, y at 1/16, z at 1/64
)
class Tang2025(CompressionModel):
    """Tang, Yi, Wang 2025 ("DICM"): split ResNet + RE module + gnConv feature codec + transformer entropy
    model (see the module docstring for the tensors, :data:`FIDELITY` for the differences).

    ``forward(x, codec=True)`` -> ``{"f1", "f2", "re_likelihoods", "y_hat", "f3", "likelihoods": {"y", "z"},
    "feat", "embedding"}``: ``likelihoods`` holds only what is transmitted (y, z); ``re_likelihoods`` the RE
    latent's (a training regulariser).  ``codec=False`` (stages 1-3) skips the codec: the tail reads f2.
    ``compress(x)`` -> ``{"strings": [y anchors, y non-anchors, z], "shape": z grid}``;
    ``decompress(strings, shape)`` -> ``{"features": f3}`` (no pixel decoder exists)."""

    downsampling_factor = 64
    serving_drop = ("moco",)  # training-only state of stages 1 and 3

    def __init__(self, backbone="resnet50", widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), re_dim=128,
                 re_latent=192, re_depths=(1, 1, 2), N=128, M=192, dim=384, heads=6, dim_head=64, mlp_ratio=4,
                 ctx_depth=6, hyper_blocks=1, buckets=7, topk=32, mask_ratio=0.5, drop_path=0.5,
                 filter_size=(24, 13), proj_dim=128, proj_hidden=2048, queue=65536):
        super().__init__()
        self.head, self.tail = build_backbone(backbone, widths, blocks)
        c1 = self.head.out_channels
        self.proj = ProjectionHead(self.tail.out_channels, proj_dim, proj_hidden)
        self.re = REModule(c1, re_dim, re_latent, tuple(re_depths))
        fs = tuple(filter_size)
        self.g_a = CodecEncoder(c1, N, M, drop_path, fs)
        self.g_s = CodecDecoder(c1, N, M, drop_path, fs)
        self.entropy = EntropyModel(M, dim, heads, dim_head, mlp_ratio, ctx_depth, hyper_blocks, buckets, topk,
                                    mask_ratio)
        # stages 1 and 3 only (MoCo's key encoder, queue, ContrastiveCrop boxes); left out of exports
        self.moco = MoCoState(self._query_parts(), proj_dim, queue)

    def _check_input(self, x):
        s = self.downsampling_factor
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"tang2025: input must be (B, 3, H, W) with H and W multiples of {s}, got "
                             f"{tuple(x.shape)} (pad first, e.g. cdlib.images.pad_to)")

    def analyse_features(self, f: torch.Tensor) -> dict:
        """The tail on features at stride 4 (f1, f2 or f3): ``{"feat": pooled (B, C4), "embedding": proj}``."""
        feat = self.tail.pool(self.tail(f))
        return {"feat": feat, "embedding": self.proj(feat)}

    def forward(self, x: torch.Tensor, codec: bool = True) -> dict:
        self._check_input(x)
        f1 = self.head(x)
        re = self.re(f1)
        out = {"f1": f1, "f2": re["f2"], "re_likelihoods": re["likelihoods"], "y_hat": None, "f3": None,
               "likelihoods": {}}
        f = re["f2"]
        if codec:
            ent = self.entropy(self.g_a(re["f2"]))
            f = self.g_s(ent["y_hat"])
            out.update(y_hat=ent["y_hat"], f3=f, likelihoods=ent["likelihoods"])
        out.update(self.analyse_features(f))
        return out

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> dict:
        self._check_input(x)
        y = self.g_a(self.re.filter(self.head(x)))
        out = self.entropy.compress(y)
        return {"strings": out["strings"], "shape": tuple(out["shape"]["hyper"]), "y_hat": out["y_hat"]}

    @torch.no_grad()
    def decode_latent(self, strings, shape) -> torch.Tensor:
        """y_hat from the three string lists and the z grid ``shape``."""
        return self.entropy.decompress(strings, shape)["y_hat"]

    @torch.no_grad()
    def decompress(self, strings, shape) -> dict:
        """``{"features": f3}`` (B, C1, 16 h_z, 16 w_z): the decoded stride-4 features."""
        return {"features": self.g_s(self.decode_latent(strings, shape))}

    # -- training protocol (cdlib.train): the four stages --------------------------------------------------
    @staticmethod
    def _stage(cfg) -> str:
        stage = getattr(cfg, "stage", "") or "codec"
        if stage not in STAGES:
            raise ValueError(f"bad value {stage!r} for 'stage' of tang2025; valid values: {', '.join(STAGES)}")
        return stage

    def _query_parts(self) -> dict:
        return {"head": self.head, "re": self.re, "tail": self.tail, "proj": self.proj}

    @staticmethod
    def _embed(parts, x: torch.Tensor, with_re: bool) -> dict:
        """MoCo's encoder: head (-> RE module in stage 3) -> tail -> pool -> projection."""
        f1 = parts["head"](x)
        out = {"f1": f1}
        f = f1
        if with_re:
            out.update(parts["re"](f1))
            f = out["f2"]
        feat = parts["tail"].pool(parts["tail"](f))
        out["embedding"] = parts["proj"](feat)
        return out

    def frozen_parts(self, cfg) -> list:
        """Stage 1 ("moco"): head, tail and projection train; 2 ("re"): the RE module; 3 ("joint"): head, RE,
        tail, projection; 4 ("codec"): g_a, g_s and the entropy model (``train_parts="rate"``: not g_s, the
        hyper-decoder, the context model).  The key encoder (``moco``) never
        trains by gradient: it follows the query as a moving average in stages 1 and 3."""
        stage = self._stage(cfg)
        parts = {"moco": ["re", "g_a", "g_s", "entropy"],
                 "re": ["head", "tail", "proj", "g_a", "g_s", "entropy", "moco"],
                 "joint": ["g_a", "g_s", "entropy"],
                 "codec": ["head", "tail", "proj", "re", "moco"]}[stage]
        if stage == "codec" and getattr(cfg, "model_options", {}).get("train_parts", "all") == "rate":
            parts = parts + RATE_FROZEN
        return parts

    def wrap_train_dataset(self, dataset, cfg):
        """Stages 1 and 3: two MoCo v2 views per image with ContrastiveCrop (boxes kept in ``self.moco``)."""
        if self._stage(cfg) not in _STAGE_CODE:
            return dataset
        o = cfg.model_options
        return TwoViews(dataset, self.moco, lambda data: self.crop_boxes(data, self._stage(cfg) == "joint"),
                        seed=cfg.seed, size=cfg.image_size, ccrop=o["ccrop"], box_warmup=o["box_warmup"],
                        box_every=o["box_every"])

    @torch.no_grad()
    def crop_boxes(self, dataset, with_re: bool = False, batch_size: int = 64) -> torch.Tensor:
        """ContrastiveCrop's boxes (N, 4) of every image of ``dataset`` from the query encoder in eval mode
        (layer4 map, :func:`~cdlib.papers.tang2025.moco.heatmap_boxes`); under torch.distributed each
        process computes a share and the shares are gathered."""
        import torch.distributed as dist

        from ...progress import progress_bar

        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() \
            else (1, 0)
        device = next(self.parameters()).device
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            n = len(dataset)
            share = -(-n // world)
            mine = list(range(rank * share, min(n, (rank + 1) * share)))
            boxes = torch.zeros(share, 4, device=device)
            bar = progress_bar()(range(0, len(mine), batch_size), desc="ContrastiveCrop boxes", leave=False,
                                 disable=rank != 0)
            for s in bar:
                idx = mine[s: s + batch_size]
                x = torch.stack([dataset[i]["image"] for i in idx]).to(device)
                f = self.head(x)
                if with_re:
                    f = self.re.filter(f)
                boxes[s: s + len(idx)] = heatmap_boxes(self.tail(f), x.shape[-2:])
            if world > 1:
                parts = [torch.empty_like(boxes) for _ in range(world)]
                dist.all_gather(parts, boxes)
                boxes = torch.cat(parts)
            return boxes[:n].cpu()
        finally:
            for m, flag in modes:
                m.training = flag

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, with_re: bool, chunk: int) -> torch.Tensor:
        """Normalised keys of the key encoder; the batch is shuffled and split into groups of ``chunk`` for
        batch norm, then put back in order (MoCo's shuffled BN, within the process)."""
        perm = torch.randperm(x.shape[0], device=x.device)
        xs = x[perm]
        k = torch.cat([self._embed(self.moco.key, xs[i: i + chunk], with_re)["embedding"]
                       for i in range(0, xs.shape[0], max(1, chunk))])
        return F.normalize(k, dim=1)[torch.argsort(perm)]

    def train_step(self, batch: dict, ctx) -> dict:
        """Stages 1 and 3: sync or momentum-update the key encoder, compute the keys of the second view,
        the default step on :meth:`loss_terms` (InfoNCE of the first view against key and queue), then
        enqueue the keys of every process.  Stages 2 and 4: the default step."""
        stage = self._stage(ctx.cfg)
        if stage not in _STAGE_CODE:
            return ctx.default_step(batch)
        o, parts = ctx.cfg.model_options, self._query_parts()
        if int(self.moco.ready) != _STAGE_CODE[stage]:
            self.moco.sync(parts)
            self.moco.ready.fill_(_STAGE_CODE[stage])
        else:
            self.moco.momentum_update(parts, o["moco_m"])
        keys = self._keys(batch["image2"], stage == "joint", o["bn_chunk"])
        record = ctx.default_step({**batch, "key": keys})
        self.moco.enqueue(ctx.all_gather(keys))
        return record

    def loss_terms(self, batch: dict, cfg) -> dict:
        """"moco": {"contrast": InfoNCE}; "re": {"dist": L1(f1, f2), "rate": RE bpp}; "joint": the three;
        "codec": {"dist": MSE(f2, f3), "rate": bpp of y and z, "feat2", "feat3", "feat4": MSE of the tail's
        layer outputs on f3 against f2}."""
        x = batch["image"]
        n, _, h, w = x.shape
        stage = self._stage(cfg)
        if stage in _STAGE_CODE:
            self._check_input(x)
            out = self._embed(self._query_parts(), x, stage == "joint")
            q = F.normalize(out["embedding"], dim=1)
            terms = {"contrast": info_nce(q, batch["key"], self.moco.queue, cfg.model_options["moco_t"])}
            if stage == "joint":
                terms.update(dist=F.l1_loss(out["f2"], out["f1"]),
                             rate=bpp_of_likelihoods(out["likelihoods"], n * h * w))
            return terms
        if stage == "re":
            out = self(x, codec=False)
            return {"dist": F.l1_loss(out["f2"], out["f1"]),
                    "rate": bpp_of_likelihoods(out["re_likelihoods"], n * h * w)}
        out = self(x)
        with torch.no_grad():
            ref = self.tail(out["f2"], return_all=True)
        got = self.tail(out["f3"], return_all=True)
        terms = {"dist": F.mse_loss(out["f3"], out["f2"].detach()),
                 "rate": bpp_of_likelihoods(out["likelihoods"], n * h * w)}
        terms.update({f"feat{i + 2}": F.mse_loss(g, r) for i, (g, r) in enumerate(zip(got, ref))})
        return terms

    def loss_weights(self, cfg) -> dict:
        """The official weights (papers.md): stage 1: InfoNCE; stage 2: 128 * L1 + 1 * rate; stage 3: 1 *
        InfoNCE + 0.1 * rate + 0.1 * L1; stage 4: 2048 * MSE + 0.08 * rate + 384 / 256 / 192 * MSE of layer2 /
        3 / 4 against the tail's outputs on f2 (no gradient), as the official ``main_moco_cf.py``; rates are
        bits / (B H W), as there."""
        return {"moco": {"contrast": 1.0},
                "re": {"dist": 128.0, "rate": 1.0},
                "joint": {"contrast": 1.0, "rate": 0.1, "dist": 0.1},
                "codec": {"dist": 2048.0, "rate": 0.08, "feat2": 384.0, "feat3": 256.0,
                          "feat4": 192.0}}[self._stage(cfg)]


register_alias("dicm", "tang2025")  # the paper's name for its method
