"""The analysis tasks of Paper C on features at stride 4 (f1 of the backbone, f2 after the RE module, or f3
decoded from a stream): never on pixels.

- :func:`pooled_features`: the tail's pooled layer4 vector of every image of a dataset, from any of the three;
- :func:`fit_probe` / :func:`probe_accuracy`: a linear classifier on frozen pooled features (the linear probe).
  The quick probe here (full-batch, standardised features, L-BFGS, weight decay) is what the zoo's manifest and
  the chapter report; the official probe recipe (SGD lr 30, 130 epochs) is :data:`OFFICIAL_PROBE`, run by
  :func:`train_probe` in the paper profile.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...progress import progress_bar

# The official linear-probe recipe (MoCo's main_lincls.py as used by the paper): SGD momentum 0.9, lr 30,
# weight decay 0, batch 256, 130 epochs, lr x 0.1 at epochs 65, 90 and 110.
OFFICIAL_PROBE = dict(lr=30.0, momentum=0.9, weight_decay=0.0, batch_size=256, epochs=130, milestones=(65, 90, 110))

WHERE = ("f1", "f2", "f3")


def features_at(model, x: torch.Tensor, where: str) -> torch.Tensor:
    """Stride-4 features of images ``x``: ``f1`` (head), ``f2`` (head + RE module, in eval: rounded latent) or
    ``f3`` (head + RE + the codec's round trip through its quantised latent; in eval mode the y_hat that the
    stream decodes to, computed without the range coder).  Call it on a model in eval mode."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    f = model.head(x)
    if where == "f1":
        return f
    f = model.re.filter(f)
    if where == "f2":
        return f
    return model.g_s(model.entropy(model.g_a(f))["y_hat"])  # eval: what the decoder gets from the stream


@torch.no_grad()
def pooled_features(model, dataset, where: str = "f1", batch_size: int = 100, features=None,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled layer4 vectors (N, C4), labels (N,)) of ``dataset``; ``features``: the stride-4 feature maps
    of the dataset's images (e.g. decoded from streams) in place of computing them from pixels at ``where``."""
    model = model.eval()
    out, labels = [], []
    bar = progress_bar()(range(0, len(dataset), batch_size), desc=f"features ({where})", leave=False,
                         disable=not progress)
    for s in bar:
        idx = range(s, min(len(dataset), s + batch_size))
        if features is None:
            x = torch.stack([dataset[i]["image"] for i in idx])
            f = features_at(model, x, where)
        else:
            f = torch.stack([features[i] for i in idx])
        out.append(model.tail.pool(model.tail(f)))
        labels.append(torch.stack([torch.as_tensor(dataset[i]["label"]) for i in idx]))
    return torch.cat(out), torch.cat(labels)


class LinearProbe(nn.Module):
    """Standardisation (fitted on the training features) + one linear layer."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc((v - self.mean) / self.std)


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
              iters: int = 200, seed: int = 0) -> LinearProbe:
    """A linear probe fitted by full-batch L-BFGS on cross-entropy + ``weight_decay`` * |W|^2 (deterministic
    for a seed)."""
    g = torch.Generator().manual_seed(seed)
    probe = LinearProbe(train_x.shape[1], num_classes)
    with torch.no_grad():
        probe.mean.copy_(train_x.mean(0))
        probe.std.copy_(train_x.std(0).clamp_min(1e-6))
        probe.fc.weight.copy_(torch.randn(probe.fc.weight.shape, generator=g) * 0.01)
        probe.fc.bias.zero_()
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(train_x), train_y) + weight_decay * probe.fc.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((probe(x).argmax(1) == y).float().mean())


def standard_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` test images."""
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1)))


# ----------------------------------------------------------------------------------------------------------
# The task heads as one model trained by cdlib.train: linear probe + Mask R-CNN on frozen features
# ----------------------------------------------------------------------------------------------------------
from ...registry import Option, register_model  # noqa: E402
from .detection import FeatureMaskRCNN  # noqa: E402
from .model import LAPTOP_ARCH, PAPER_ARCH, Tang2025  # noqa: E402

TASKS = ("probe", "detection", "probe+detection")

_LAPTOP_DETECTOR = dict(fpn_channels=64, anchor_sizes=(8, 16, 32, 64, 128), box_hidden=128, mask_channels=64,
                        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                        rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=128,
                        box_detections_per_img=20)
_TASKS_TRAIN = {
    "laptop": dict(dataset="shapes", image_size=128, num_classes=10, num_train=4000, batch_size=16, optimizer="adam",
                   lr=1e-3, steps=1500, warmup_steps=50, schedule="cosine", grad_clip=5.0, tasks="probe+detection"),
    # paper scale: one run per task (the probe on ImageNet with the official recipe, OFFICIAL_PROBE;
    # detection on COCO or VOC): set tasks= and the dataset
    "paper": dict(dataset="imagefolder", image_size=256, num_classes=1000, batch_size=256, optimizer="sgd",
                  lr=OFFICIAL_PROBE["lr"], momentum=0.9, weight_decay=0.0, epochs=130.0, steps=130 * 5005,
                  schedule="cosine", grad_clip=0.0, num_workers=8, tasks="probe"),
}


@register_model(
    "tang2025_tasks",
    arch={"laptop": dict(codec=LAPTOP_ARCH, where="f2", probe_classes=10, det_classes=10,
                         detector=_LAPTOP_DETECTOR),
          "paper": dict(codec=PAPER_ARCH, where="f2", probe_classes=1000, det_classes=80, detector={})},
    train=_TASKS_TRAIN,
    options={"tasks": Option("probe+detection", str, choices=TASKS,
                             help="the heads that train: the linear probe (labels), the Mask R-CNN (boxes, "
                                  "masks), or both (ShapesWorld has all three)"),
             "supervised": Option(False, bool,
                                  help="train the backbone too (head and tail, from scratch or init_from) with the "
                                       "heads' losses: the supervised reference of the SSL backbone")},
    size_multiple=64,
)
class Tang2025Tasks(nn.Module):
    """Paper C's task heads on a frozen :class:`~.model.Tang2025` backbone (``self.codec``, initialised from a
    stage checkpoint with ``init_from=``: its keys are mapped under ``codec.``):

    - ``probe``: the linear probe (batch norm without affine + Linear, MoCo's linear-evaluation form) on the
      pooled layer4 vector of the frozen tail;
    - ``detector``: :class:`~.detection.FeatureMaskRCNN` on the same frozen tail + its own FPN and heads.

    Both train on clean features at ``where`` (``f1``: the stage-1 backbone, for the pixel codecs' pipelines;
    ``f2``: after the RE module, for the DICM streams, whose decoded f3 imitates f2) and are tested on whatever
    features a pipeline gives them (:meth:`analyse_features`).  Labels: ShapesWorld classes 0..9 (torchvision's
    detector counts the background as 0 inside; outputs are shifted back)."""

    serving_drop = ("codec.moco",)

    def __init__(self, codec: dict, where="f2", probe_classes=10, det_classes=10, detector: dict | None = None):
        super().__init__()
        if where not in ("f1", "f2"):
            raise ValueError(f"where must be 'f1' or 'f2' (clean features), got {where!r}")
        self.where = where
        self.codec = Tang2025(**codec)
        self.codec.model_name, self.codec.arch, self.codec.profile = "tang2025", dict(codec), "custom"
        self.downsampling_factor = self.codec.downsampling_factor
        c1, c4 = self.codec.head.out_channels, self.codec.tail.out_channels
        self.probe = nn.Sequential(nn.BatchNorm1d(c4, affine=False), nn.Linear(c4, int(probe_classes)))
        self.detector = FeatureMaskRCNN(self.codec.tail, c1, int(det_classes) + 1, **(detector or {}))

    # -- inference ---------------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clean features the heads train on (``where``) of images ``x``."""
        return features_at(self.codec, x, self.where)

    def analyse_features(self, f: torch.Tensor, tasks=("classification", "detection")) -> dict:
        """Task outputs from stride-4 features ``f``: ``{"logits": (B, K), "detections": [per image: boxes,
        scores, labels (0-based), masks (K, 1, H, W)]}`` (the heads in their current mode; call in eval)."""
        out = {}
        if "classification" in tasks:
            out["logits"] = self.probe(self.codec.tail.pool(self.codec.tail(f)))
        if "detection" in tasks:
            dets = self.detector(f)
            out["detections"] = [{**d, "labels": d["labels"] - 1} for d in dets]
        return out

    # -- trainer hooks -----------------------------------------------------------------------------------------
    def frozen_parts(self, cfg) -> list:
        """The whole backbone and codec (``supervised``: all but the head and the tail); the heads that do not
        train (``tasks``) too."""
        tasks = cfg.model_options.get("tasks", "probe+detection")
        backbone = ["codec"] if not cfg.model_options.get("supervised") else [
            f"codec.{p}" for p in ("proj", "re", "g_a", "g_s", "entropy", "moco") if getattr(self.codec, p, None)
            is not None]
        return backbone + (["detector"] if "detection" not in tasks else []) + (
            ["probe"] if "probe" not in tasks else [])

    def wrap_train_dataset(self, dataset, cfg):
        """ShapesWorld with its boxes and masks (a copy: the caller's dataset is unchanged)."""
        import copy

        if "detection" in cfg.model_options.get("tasks", "") and hasattr(dataset, "with_targets"):
            dataset = copy.copy(dataset)
            dataset.with_targets = True
        return dataset

    def loss_terms(self, batch: dict, cfg) -> dict:
        tasks = cfg.model_options.get("tasks", "probe+detection")
        with torch.set_grad_enabled(bool(cfg.model_options.get("supervised"))):
            f = self.features(batch["image"])
        terms = {}
        if "probe" in tasks:
            terms["probe_ce"] = F.cross_entropy(self.probe(self.codec.tail.pool(self.codec.tail(f))), batch["label"])
        if "detection" in tasks:
            targets = [{"boxes": b, "labels": lab + 1, "masks": m}
                       for b, lab, m in zip(batch["boxes"], batch["labels"], batch["masks"])]
            terms.update(self.detector(f, targets))
        return terms

    def loss_weights(self, cfg) -> dict:
        tasks = cfg.model_options.get("tasks", "probe+detection")
        w = {"probe_ce": 1.0} if "probe" in tasks else {}
        if "detection" in tasks:
            w.update({k: 1.0 for k in ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                                       "loss_rpn_box_reg")})
        return w

    # a backbone checkpoint (keys without the "codec." prefix) initialises self.codec
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = set(self.codec.state_dict())
        # a stage checkpoint's MoCo state (key encoder, queue, crop boxes of its training set) is training-only
        # state of that stage, never used here
        mapped = {(f"codec.{k}" if k in own else k): v for k, v in state_dict.items() if not k.startswith("moco.")}
        if any(k.startswith("codec.entropy.") for k in mapped):
            from compressai.models.utils import update_registered_buffers

            for name, module in self.codec.named_modules():
                names = {"EntropyBottleneck": ["_quantized_cdf", "_offset", "_cdf_length"],
                         "GaussianConditional": ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"]
                         }.get(type(module).__name__)
                if names and any(k.startswith(f"codec.{name}.") for k in mapped):
                    update_registered_buffers(module, f"codec.{name}", names, mapped)
        return nn.Module.load_state_dict(self, mapped, strict=strict, assign=assign)
