"""The zoo recipes of chapter 5 (Paper C) and the metrics the manifest records.

Stages (laptop, ShapesWorld at 128 px, 4000 training scenes): (1) MoCo v2 + ContrastiveCrop from scratch,
(2) the RE module on the frozen backbone, (3) joint MoCo + RE, (4) the codec with everything else frozen, one
base rate point and the others fine-tuned from it.  Every stage starts from the previous stage's checkpoint.
The metric of the backbone stages is the linear probe on clean features (f1 for stage 1, f2 after the RE
module for stages 2 and 3), fitted on the first :data:`PROBE_TRAIN` training scenes, tested on the test split.
"""
from __future__ import annotations

import functools

import torch

from ...zoo import METRIC_FNS, register_spec

IMAGE_SIZE = 128
PROBE_TRAIN = 2000
MOCO_STEPS = 3000
RE_STEPS, JOINT_STEPS = 600, 500
CODEC_STEPS, CODEC_FINETUNE_STEPS = 400, 200
TASK_STEPS = 800
# stage 4's rate weight per rate point (the official one is 0.08 on bits per pixel); q1 the lowest rate.  The
# base is trained from the joint stage, the others fine-tuned from it with train_parts="rate".
CODEC_BASE = "q3"
CODEC_RATE = {"q1": 8000.0, "q2": 2000.0, "q3": 500.0, "q4": 125.0}
CODEC_INIT = {"q1": "q2", "q2": CODEC_BASE, "q4": CODEC_BASE}


# The official settings of each stage (papers.md, paper C): what these recipes run on the paper profile
# (``load_recipe(id, profile="paper")``; batch sizes per process, the official totals over 8 GPUs).  Stage 1 is
# the profile's own (ContrastiveCrop's MoCo v2 config); stage 3's 224-px crops become 256 (the model's
# stride is 64).
PAPER_STAGES = {
    "moco": dict(stage="moco"),
    "re": dict(stage="re", optimizer="adam", lr=1e-4, weight_decay=0.0, epochs=20.0, batch_size=8,
               schedule="constant"),
    "joint": dict(stage="joint", optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4, epochs=200.0,
                  batch_size=32, schedule="cosine"),
    "codec": dict(stage="codec", optimizer="adamw", lr=1e-4, weight_decay=0.0, epochs=20.0, batch_size=4,
                  schedule="constant", grad_clip=1.0),
}


@functools.lru_cache(maxsize=4)
def shapes(split: str, n: int, image_size: int = IMAGE_SIZE):
    """ShapesWorld scenes (data seed 0, no augmentation) with boxes and masks."""
    from ...data import ShapesWorld

    return ShapesWorld(split, n=n, image_size=image_size, seed=0, with_targets=True, augment=False)


def probe_metrics(model, cfg=None, where: str | None = None, limit: int | None = None) -> dict:
    """Linear-probe accuracy (and its standard error) of the pooled layer4 features at ``where`` (default:
    f1 for the stage-1 backbone, f2 otherwise; ``probe_on_f2`` records which: 0 or 1)."""
    from .tasks import fit_probe, pooled_features, probe_accuracy, standard_error

    stage = getattr(cfg, "stage", "moco") if cfg is not None else "moco"
    where = where or ("f1" if stage == "moco" else "f2")
    train = shapes("train", PROBE_TRAIN)
    test = shapes("test", limit or 1000)
    model = model.eval()
    xtr, ytr = pooled_features(model, train, where)
    xte, yte = pooled_features(model, test, where)
    probe = fit_probe(xtr, ytr, train.num_classes)
    acc = probe_accuracy(probe, xte, yte)
    return {"probe_acc": acc, "probe_se": standard_error(acc, len(yte)),
            "probe_train_acc": probe_accuracy(probe, xtr, ytr), "probe_on_f2": float(where == "f2")}


@torch.no_grad()
def codec_metrics(model, cfg=None, limit: int | None = None) -> dict:
    """Real streams of the test scenes: bpp (every byte, header included), the header's share, the likelihood
    estimate of the same latents, and how far the decoded features f3 are from the clean f2 (MSE, and the
    MSE relative to f2's variance)."""
    import numpy as np

    from ...bitstream import bpp
    from ...losses import bpp_of_likelihoods
    from .codec import Tang2025Codec

    test = shapes("test", limit or 1000)
    model = model.eval()
    model.update(force=True)
    codec = Tang2025Codec([model], name="tang2025")
    images = list(test.images)
    streams = codec.encode_batch(images, 0)
    feats = torch.stack(codec.decode_batch(streams, batch_size=100))
    h, w = images[0].shape[:2]
    x = torch.stack([test[i]["image"] for i in range(len(test))])
    est, f2 = [], []
    for i in range(0, len(x), 100):
        xb = x[i: i + 100]
        y = model.g_a(model.re.filter(model.head(xb)))
        est.append(bpp_of_likelihoods(model.entropy(y)["likelihoods"], len(xb) * h * w).item() * len(xb))
        f2.append(model.re.filter(model.head(xb)))
    f2 = torch.cat(f2)
    mse = float(((feats - f2) ** 2).mean())
    return {"bpp": float(np.mean([bpp(s, h, w) for s in streams])),
            "bpp_header": float(np.mean([codec.parse(s)[0].size for s in streams])) * 8 / (h * w),
            "bpp_likelihood": float(sum(est) / len(x)), "feature_mse": mse,
            "feature_nmse": mse / float(f2.var())}


@torch.no_grad()
def tasks_metrics(model, cfg=None, limit: int | None = None) -> dict:
    """The heads on clean features (``where``) of the test scenes: probe accuracy (with its standard error),
    box mAP and mask mAP (torchmetrics, COCO definitions)."""
    from ...eval import Detection, InstanceSegmentation
    from .tasks import standard_error

    test = shapes("test", limit or 1000)
    model = model.eval()
    logits, dets = [], []
    for i in range(0, len(test), 50):
        x = torch.stack([test[j]["image"] for j in range(i, min(len(test), i + 50))])
        out = model.analyse_features(model.features(x))
        logits.append(out["logits"])
        dets += out["detections"]
    labels = torch.as_tensor(test.labels)
    acc = float((torch.cat(logits).argmax(1) == labels).float().mean())
    targets = [test.targets(i) for i in range(len(test))]
    box = Detection().score(Detection().postprocess(dets), targets)
    seg = InstanceSegmentation()
    mask = seg.score(seg.postprocess(dets), targets)
    return {"probe_acc": acc, "probe_se": standard_error(acc, len(labels)), "box_map": box["map"],
            "box_map_50": box["map_50"], "mask_map": mask["map"], "mask_map_50": mask["map_50"]}


METRIC_FNS["tang2025_probe"] = probe_metrics
METRIC_FNS["tang2025_codec"] = codec_metrics
METRIC_FNS["tang2025_tasks"] = tasks_metrics

# Stage 1: MoCo v2 + ContrastiveCrop (the profile's defaults: SGD 0.06, batch 64, 128 px, 3000 steps, boxes
# after 8 epochs and every 8 epochs)
register_spec("tang2025_moco", "tang2025", "laptop", {"seed": 0, "stage": "moco", "steps": MOCO_STEPS},
              "tang2025_probe", other_profiles={"seed": 0, **PAPER_STAGES["moco"]})
# ablation: plain random-resized crops instead of ContrastiveCrop (stored against stage 1: the parts stage 1
# leaves at their initial values are the same, from the same seed)
register_spec("tang2025_moco_plaincrop", "tang2025", "laptop",
              {"seed": 0, "stage": "moco", "steps": MOCO_STEPS, "ccrop": False}, "tang2025_probe",
              base="tang2025_moco")

# Stage 2: the RE module on the frozen stage-1 backbone (official: Adam 1e-4, 128 * L1 + rate; here 3e-4 for
# the short run); its file stores the RE module only
register_spec("tang2025_re", "tang2025", "laptop",
              {"seed": 0, "stage": "re", "steps": RE_STEPS, "optimizer": "adam", "lr": 3e-4, "warmup_steps": 20,
               "init_from": "@tang2025_moco"}, "tang2025_probe", base="tang2025_moco",
              other_profiles={"seed": 0, **PAPER_STAGES["re"], "init_from": "@tang2025_moco"})
# Stage 3: joint MoCo + RE (official: SGD 1e-3, weights 1 / 0.1 / 0.1), from stage 2
register_spec("tang2025_joint", "tang2025", "laptop",
              {"seed": 0, "stage": "joint", "steps": JOINT_STEPS, "optimizer": "sgd", "lr": 0.01,
               "weight_decay": 1e-4, "init_from": "@tang2025_re"}, "tang2025_probe", base="tang2025_re",
              other_profiles={"seed": 0, **PAPER_STAGES["joint"], "init_from": "@tang2025_re"})
# Stage 4: the codec on the frozen stage-3 network (official: AdamW 1e-4, 2048 MSE + rate + feature terms)
register_spec(f"tang2025_{CODEC_BASE}", "tang2025", "laptop",
              {"seed": 0, "stage": "codec", "steps": CODEC_STEPS, "optimizer": "adamw", "lr": 3e-4,
               "warmup_steps": 20, "loss_weights": {"rate": CODEC_RATE[CODEC_BASE]}, "init_from": "@tang2025_joint"},
              "tang2025_codec", base="tang2025_joint",
              other_profiles={"seed": 0, **PAPER_STAGES["codec"], "loss_weights": {"rate": CODEC_RATE[CODEC_BASE]},
                              "init_from": "@tang2025_joint"})
for _q, _w in CODEC_RATE.items():
    if _q != CODEC_BASE:
        register_spec(f"tang2025_{_q}", "tang2025", "laptop",
                      {"seed": 0, "stage": "codec", "steps": CODEC_FINETUNE_STEPS, "optimizer": "adamw", "lr": 3e-4,
                       "warmup_steps": 0, "loss_weights": {"rate": _w}, "train_parts": "rate",
                       "init_from": f"@tang2025_{CODEC_INIT[_q]}"}, "tang2025_codec",
                      base=f"tang2025_{CODEC_BASE}",
                      other_profiles={"seed": 0, **PAPER_STAGES["codec"], "loss_weights": {"rate": _w},
                                      "train_parts": "rate", "init_from": f"@tang2025_{CODEC_INIT[_q]}"})
# The task heads: on the DICM backbone (clean f2 of stage 3) and on the stage-1 backbone (clean f1: the heads
# behind every pixel codec); each file stores the heads only
register_spec("tang2025_tasks_dicm", "tang2025_tasks", "laptop",
              {"seed": 0, "steps": TASK_STEPS, "init_from": "@tang2025_joint"}, "tang2025_tasks",
              base="tang2025_joint", base_prefix="codec.")
register_spec("tang2025_tasks_ssl", "tang2025_tasks", "laptop",
              {"seed": 0, "steps": TASK_STEPS, "init_from": "@tang2025_moco", "arch": {"where": "f1"}},
              "tang2025_tasks", base="tang2025_moco", base_prefix="codec.")
# The supervised reference (the same backbone and heads trained from scratch on the labels, boxes and masks:
# Tang2025Tasks(supervised=True)) is not a zoo recipe yet: its 4 MB do not fit Paper C's 20 MB with the rest.
