"""Paper B's machine side: multi-task analysis on the two decoded latents, and the same trunk on pixels.

- :class:`AnalysisTrunk`: features on the latent grid -> parsing logits ``(B, K, H, W)`` (upsampled back to the
  image), attribute logits ``(B, A)``, five landmarks ``(B, 5, 2)`` in [0, 1] of the image width and height;
- :class:`Zhang2023Analysis` (``zhang2023_analysis``): a :class:`~.model.Zhang2023` codec and a latent stem
  (``y_hat`` concatenated with ``t_hat`` broadcast over the grid, 1x1 conv) in front of the trunk.  It reads
  ``(y_hat, t_hat)`` exactly as decoded from the streams (:meth:`Zhang2023.latents`), never ``g_s`` or the
  generator.  Stages: ``"separate"`` (default; the codec frozen through ``frozen_parts``, the paper's separate
  schedule) and ``"joint"`` (the codec's encoders fine-tuned too, with its non-adversarial terms plus
  ``task_weight`` x tasks; its decoder side stays frozen, :data:`JOINT_FROZEN`: our choice);
- :class:`Zhang2023Pixel` (``zhang2023_pixel``): the same trunk behind a strided RGB stem, the pixel baseline;
- :class:`Landmarks`, a ``cdlib.eval`` task object (normalised mean error), and :func:`evaluate` (mIoU through
  torchmetrics' ``MulticlassJaccardIndex``, attribute mean accuracy, landmark NME).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...eval.tasks import Task
from ...registry import Option, register_model
from .faceworld import ATTRIBUTES, CELEBAMASK_LABELS, LANDMARKS, MERGED_LABELS
from .model import LAPTOP_ARCH, PAPER_ARCH, Zhang2023

TASKS = ("parsing", "attributes", "landmarks")
ANALYSIS_STAGES = ("", "separate", "joint")
INPUTS = ("both", "structure", "texture")
#: the codec's parts frozen in the joint stage (our choice: the decoder side)
JOINT_FROZEN = ("discriminator", "g_s", "generator", "edge_head")
#: default weights of the task terms (our choice: landmark L1 is on [0, 1] coordinates, hence x10)
TASK_WEIGHTS = {"parsing": 1.0, "attributes": 1.0, "landmarks": 10.0}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _norm(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), _norm(c))

    def forward(self, x):
        return F.relu(x + self.body(x))


class AnalysisTrunk(nn.Module):
    """Features ``(B, width, H / 2^n_up, W / 2^n_up)`` -> ``{"parsing", "attributes", "landmarks"}``."""

    def __init__(self, width: int, depth: int, n_up: int, num_classes: int, num_attributes: int,
                 num_landmarks: int = len(LANDMARKS)):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.blocks = nn.Sequential(*[ResBlock(width) for _ in range(depth)])
        ups, c = [], width
        for _ in range(n_up):
            c2 = max(16, c // 2)
            ups += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(c, c2, 3, padding=1), _norm(c2), nn.ReLU(inplace=True)]
            c = c2
        self.parsing_head = nn.Sequential(*ups, nn.Conv2d(c, num_classes, 1))
        self.attribute_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, width),
                                            nn.ReLU(inplace=True), nn.Linear(width, num_attributes))
        self.landmark_head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * width, width),
                                           nn.ReLU(inplace=True), nn.Linear(width, 2 * num_landmarks))

    def forward(self, f: torch.Tensor) -> dict:
        f = self.blocks(f)
        lm = torch.sigmoid(self.landmark_head(f)).view(-1, self.num_landmarks, 2)
        return {"parsing": self.parsing_head(f), "attributes": self.attribute_head(f), "landmarks": lm}


def task_terms(pred: dict, batch: dict) -> dict:
    """Unweighted task losses: CE (parsing), BCE (attributes), L1 (landmarks, [0, 1] coordinates)."""
    return {"parsing": F.cross_entropy(pred["parsing"], batch["parsing"].long()),
            "attributes": F.binary_cross_entropy_with_logits(pred["attributes"], batch["attributes"].float()),
            "landmarks": F.l1_loss(pred["landmarks"], batch["landmarks"].float())}


class _TaskModel(nn.Module):
    """Shared training protocol of the two analysis models."""

    def predict(self, x: torch.Tensor) -> dict:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict:
        return self.predict(x)

    def loss_terms(self, batch: dict, cfg) -> dict:
        missing = [k for k in TASKS if k not in batch]
        if missing:
            raise ValueError(f"{self.model_name_}: the batch has no {missing}: train on a face dataset "
                             "(dataset=faceworld or celebamask_hq)")
        return task_terms(self.predict(batch["image"]), batch)

    def loss_weights(self, cfg) -> dict:
        return dict(TASK_WEIGHTS)

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        return score(self.predict(batch["image"]), batch, self.num_classes)

    def for_task(self, task: str) -> "TaskView":
        """A module whose output is this model's ``task`` output alone, for :mod:`cdlib.eval`'s pixel
        pipelines (``DecodeThenAnalyse(codec, model.for_task("parsing"))``)."""
        return TaskView(self, task)


class TaskView(nn.Module):
    """``model.predict(x)[task]``: one task's output of a multi-task model (logits or landmarks)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)[self.task]


def _arch(profile_arch: dict, num_classes: int, width: int, depth: int) -> dict:
    return dict(codec=dict(profile_arch), width=width, depth=depth, num_classes=num_classes,
                num_attributes=len(ATTRIBUTES), inputs="both")


_ANALYSIS_TRAIN = {
    "laptop": dict(dataset="faceworld", image_size=64, num_classes=len(MERGED_LABELS), num_train=8000,
                   batch_size=32, lr=1e-3, steps=2000, warmup_steps=50, stage="separate"),
    "paper": dict(dataset="celebamask_hq", image_size=256, num_classes=len(CELEBAMASK_LABELS), batch_size=16,
                  lr=1e-4, steps=50_000, warmup_steps=500, stage="separate", num_workers=4),
}


@register_model("zhang2023_analysis",
                arch={"laptop": _arch(LAPTOP_ARCH, len(MERGED_LABELS), 64, 2),
                      "paper": _arch(PAPER_ARCH, len(CELEBAMASK_LABELS), 256, 4)},
                train=_ANALYSIS_TRAIN,
                options={"task_weight": Option(1.0, float, help="joint stage: weight of the task terms against "
                                                                "the codec's")},
                size_multiple=32)
class Zhang2023Analysis(_TaskModel, nn.Module):
    """Multi-task analysis of the two decoded latents of a :class:`~.model.Zhang2023` codec (held in
    ``self.codec``; initialise it from a codec checkpoint with ``init_from=``: a codec's keys are mapped under
    ``codec.``).

    ``inputs``: ``"both"`` (the paper), or ``"structure"`` / ``"texture"`` (ablations: the other latent is
    zeroed before the stem)."""

    model_name_ = "zhang2023_analysis"
    serving_drop = ("codec.discriminator",)

    def __init__(self, codec: dict, width=64, depth=2, num_classes=12, num_attributes=len(ATTRIBUTES),
                 inputs="both"):
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
        self.inputs, self.num_classes = inputs, int(num_classes)
        self.codec = Zhang2023(**codec)
        self.codec.model_name, self.codec.arch, self.codec.profile = "zhang2023", dict(codec), "custom"
        self.downsampling_factor = self.codec.downsampling_factor
        self.stem = nn.Sequential(nn.Conv2d(self.codec.M + self.codec.style_dim, width, 1), _norm(width),
                                  nn.ReLU(inplace=True))
        self.trunk = AnalysisTrunk(width, depth, self.codec.n_down, num_classes, num_attributes)

    def analyse_latents(self, y_hat: torch.Tensor, t_hat: torch.Tensor) -> dict:
        """Task outputs from ``(y_hat, t_hat)``: the only path the codec's ``analyse`` runs."""
        if self.inputs == "texture":
            y_hat = torch.zeros_like(y_hat)
        elif self.inputs == "structure":
            t_hat = torch.zeros_like(t_hat)
        t = t_hat[..., None, None].expand(-1, -1, *y_hat.shape[-2:])
        return self.trunk(self.stem(torch.cat([y_hat, t], 1)))

    def predict(self, x: torch.Tensor) -> dict:
        return self.analyse_latents(*self.codec.latents(x))

    # trainer hooks
    def _stage(self, cfg) -> str:
        if cfg.stage not in ANALYSIS_STAGES:
            raise ValueError(f"bad value {cfg.stage!r} for 'stage' of zhang2023_analysis; valid values: "
                             f"{ANALYSIS_STAGES} ('' = 'separate')")
        return cfg.stage or "separate"

    def frozen_parts(self, cfg) -> list[str]:
        """separate: the whole codec (analysis on frozen latents); joint: the codec's decoder side
        (discriminator, ``g_s``, generator, edge head): the encoders, which make the latents the analysis reads,
        learn from the task and from the reconstruction through the frozen decoder."""
        if self._stage(cfg) == "separate":
            return ["codec"]
        return [f"codec.{p}" for p in JOINT_FROZEN]

    def loss_terms(self, batch: dict, cfg) -> dict:
        terms = super().loss_terms(batch, cfg)
        if self._stage(cfg) == "joint":
            codec_cfg = _no_gan(cfg)
            terms.update({f"codec_{k}": v for k, v in self.codec.generator_terms(batch, codec_cfg).items()})
        return terms

    def loss_weights(self, cfg) -> dict:
        w = dict(TASK_WEIGHTS)
        if self._stage(cfg) == "joint":
            tw = cfg.model_options.get("task_weight", 1.0)
            w = {k: tw * v for k, v in w.items()}
            w.update({f"codec_{k}": v for k, v in self.codec.loss_weights(_no_gan(cfg)).items()})
        return w

    def configure_optimizers(self, cfg) -> dict:
        """The loop's default (``main`` + ``aux`` for the quantiles when the codec trains)."""
        from ...train import default_optimizers

        return default_optimizers(self, cfg)

    def aux_loss(self):
        return self.codec.aux_loss()

    # a codec checkpoint (keys without the "codec." prefix) initialises self.codec
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = set(self.codec.state_dict())
        mapped = {(f"codec.{k}" if k in own else k): v for k, v in state_dict.items()}
        from compressai.models.utils import update_registered_buffers

        for name, module in self.codec.named_modules():
            buffers = {"EntropyBottleneck": ["_quantized_cdf", "_offset", "_cdf_length"],
                       "GaussianConditional": ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"]}
            names = buffers.get(type(module).__name__)
            if names and any(k.startswith(f"codec.{name}.") for k in mapped):
                update_registered_buffers(module, f"codec.{name}", names, mapped)
        return nn.Module.load_state_dict(self, mapped, strict=strict, assign=assign)


def _no_gan(cfg):
    import dataclasses

    return dataclasses.replace(cfg, model_options={**cfg.model_options, "gan": False})


_PIXEL_TRAIN = {
    "laptop": dict(dataset="faceworld", image_size=64, num_classes=len(MERGED_LABELS), num_train=8000,
                   batch_size=32, lr=1e-3, steps=2000, warmup_steps=50),
    "paper": dict(dataset="celebamask_hq", image_size=256, num_classes=len(CELEBAMASK_LABELS), batch_size=16,
                  lr=1e-4, steps=50_000, warmup_steps=500, num_workers=4),
}


@register_model("zhang2023_pixel",
                arch={"laptop": dict(width=64, depth=2, n_down=LAPTOP_ARCH["n_down"],
                                     num_classes=len(MERGED_LABELS), num_attributes=len(ATTRIBUTES)),
                      "paper": dict(width=256, depth=4, n_down=PAPER_ARCH["n_down"],
                                    num_classes=len(CELEBAMASK_LABELS), num_attributes=len(ATTRIBUTES))},
                train=_PIXEL_TRAIN)
class Zhang2023Pixel(_TaskModel, nn.Module):
    """The pixel baseline: a strided RGB stem (``n_down`` conv3x3/2, the codec's latent grid) and the same
    :class:`AnalysisTrunk` as :class:`Zhang2023Analysis`."""

    model_name_ = "zhang2023_pixel"

    def __init__(self, width=64, depth=2, n_down=3, num_classes=12, num_attributes=len(ATTRIBUTES)):
        super().__init__()
        self.num_classes = int(num_classes)
        layers, c = [], 3
        for k in range(n_down):
            c2 = width if k == n_down - 1 else max(16, width // 2 ** (n_down - 1 - k))
            layers += [nn.Conv2d(c, c2, 3, stride=2, padding=1), _norm(c2), nn.ReLU(inplace=True)]
            c = c2
        self.stem = nn.Sequential(*layers)
        self.trunk = AnalysisTrunk(width, depth, n_down, num_classes, num_attributes)

    def predict(self, x: torch.Tensor) -> dict:
        return self.trunk(self.stem(x))


# ------------------------------------------------------------------------------------------------ metrics
def landmark_nme(pred: torch.Tensor, target: torch.Tensor, height: int = 1, width: int = 1) -> torch.Tensor:
    """Per image: mean landmark distance over the inter-ocular distance (landmarks 0 and 1), in pixels."""
    scale = torch.tensor([float(width), float(height)])
    p, t = pred.detach().cpu().float() * scale, target.detach().cpu().float() * scale
    iod = (t[:, 0] - t[:, 1]).norm(dim=-1).clamp_min(1e-6)
    return (p - t).norm(dim=-1).mean(1) / iod


class Landmarks(Task):
    """Five facial landmarks ``(N, 5, 2)`` in [0, 1]; metric ``nme`` (normalised mean error, lower is better).

    Not registered with :func:`cdlib.eval.register_task` (the core's task list is fixed by its tests): pass an
    instance, ``task_curve(pipeline, images, targets, Landmarks())``."""

    name = "landmarks"
    metric = "nme"

    def forward(self, model, x):
        out = model(x)
        return out["landmarks"] if isinstance(out, dict) else out

    def postprocess(self, output) -> torch.Tensor:
        return torch.as_tensor(output).detach().cpu().float()

    def check_targets(self, targets, n: int) -> torch.Tensor:
        t = torch.as_tensor(targets).float()
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(f"landmarks: expected (N, L, 2) targets, got shape {tuple(t.shape)}")
        if len(t) != n:
            raise ValueError(f"{n} images but {len(t)} landmark rows")
        return t

    def score(self, preds, targets) -> dict[str, float]:
        return {"nme": float(landmark_nme(torch.as_tensor(preds), torch.as_tensor(targets)).mean())}

    def describe(self, pred) -> dict:
        pts = torch.as_tensor(pred).reshape(-1, 2).tolist()
        return {"landmarks": [{"name": n, "x": p[0], "y": p[1]} for n, p in zip(LANDMARKS, pts)]}


@torch.no_grad()
def score(pred: dict, batch: dict, num_classes: int) -> dict:
    """mIoU (``MulticlassJaccardIndex``, macro), pixel accuracy, attribute mean accuracy (macro over attributes)
    and landmark NME of one set of predictions against its targets."""
    from torchmetrics.classification import MulticlassJaccardIndex, MultilabelAccuracy

    labels = pred["parsing"].argmax(1).cpu()
    target = batch["parsing"].long().cpu()
    h, w = target.shape[-2:]
    att = pred["attributes"].detach().cpu()
    return {
        "miou": float(MulticlassJaccardIndex(num_classes=num_classes, average="macro")(labels, target)),
        "pixel_accuracy": float((labels == target).float().mean()),
        "attribute_accuracy": float(MultilabelAccuracy(num_labels=att.shape[1], average="macro")(
            torch.sigmoid(att), batch["attributes"].long().cpu())),
        "landmark_nme": float(landmark_nme(pred["landmarks"], batch["landmarks"], h, w).mean()),
    }


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 64, limit: int | None = None) -> dict:
    """:func:`score` of ``model`` (:class:`Zhang2023Analysis` or :class:`Zhang2023Pixel`) over ``dataset``
    (items with ``image``, ``parsing``, ``attributes``, ``landmarks``), predictions gathered over all items."""
    from ...train import collate

    was = model.training
    model.eval()
    n = len(dataset) if limit is None else min(len(dataset), int(limit))
    preds, targets = [], []
    try:
        for i in range(0, n, batch_size):
            batch = collate([dataset[j] for j in range(i, min(n, i + batch_size))])
            preds.append({k: v.cpu() for k, v in model.predict(batch["image"]).items()})
            targets.append({k: batch[k] for k in TASKS})
    finally:
        model.train(was)
    cat = lambda rows: {k: torch.cat([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    return score(cat(preds), cat(targets), model.num_classes)
