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


@functools.lru_cache(maxsize=4)
def shapes(split: str, n: int, image_size: int = IMAGE_SIZE):
    """ShapesWorld scenes (data seed 0, no augmentation) with boxes and masks."""
    from ...data import ShapesWorld

    return ShapesWorld(split, n=n, image_size=image_size, seed=0, with_targets=True, augment=False)


def probe_metrics(model, cfg=None, where: str | None = None, limit: int | None = None) -> dict:
    """Linear-probe accuracy (and its standard error) of the pooled layer4 features at ``where`` (default:
    f1 for the stage-1 backbone, f2 otherwise)."""
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
            "probe_train_acc": probe_accuracy(probe, xtr, ytr), "where": where}


METRIC_FNS["tang2025_probe"] = probe_metrics

# Stage 1: MoCo v2 + ContrastiveCrop (the profile's defaults: SGD 0.06, batch 64, 128 px, 3000 steps, boxes
# after 8 epochs and every 8 epochs)
register_spec("tang2025_moco", "tang2025", "laptop", {"seed": 0, "stage": "moco", "steps": MOCO_STEPS},
              "tang2025_probe")
# ablation: plain random-resized crops instead of ContrastiveCrop
register_spec("tang2025_moco_plaincrop", "tang2025", "laptop",
              {"seed": 0, "stage": "moco", "steps": MOCO_STEPS, "ccrop": False}, "tang2025_probe")
