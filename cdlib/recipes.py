"""The zoo's recipes: what ``make checkpoints`` trains and how each entry is measured.

Every entry is trained by the same loop as ``python -m cdlib train`` (the manifest
records that command line), from a recorded config and seed, then evaluated on
held-out data with real bitstreams.  The test suite re-runs these metric
functions on the shipped files and compares with the manifest.
"""
from __future__ import annotations

import numpy as np
import torch

from .zoo import METRIC_FNS, register_spec

# Laptop-scale rate points of the mean-scale hyperprior (lambda as in CompressAI:
# L = lambda * 255^2 * MSE + bpp).  Steps chosen so each trains in ~15-25 CPU minutes.
HYPERPRIOR_LAMBDAS = {"q1": 0.0035, "q2": 0.013, "q3": 0.05}
HYPERPRIOR_STEPS = 5000

# ShapesWorld test set used for every accuracy number in the zoo.
SHAPES_TEST = dict(n=1000, image_size=64, seed=0)
PHOTO_MAX_SIDE = 256


def shapes_test():
    from .data import ShapesWorld

    return ShapesWorld("test", **SHAPES_TEST)


def photo_test_images():
    from .data import NaturalPhotos

    return NaturalPhotos.test_images(max_side=PHOTO_MAX_SIDE)


def rd_metrics(model, cfg=None) -> dict:
    """Held-out photos: bytes-bpp, likelihood-bpp and PSNR of real bitstreams."""
    from .codecs.learned import LearnedCodec, pad_to, to_tensor
    from .eval import psnr
    from .models.baselines import bpp_of_likelihoods

    codec = LearnedCodec([model], name=model.model_name)
    bpps, liks, psnrs = [], [], []
    for img in photo_test_images():
        rec, data = codec.roundtrip(img, 0)
        h, w = img.shape[:2]
        bpps.append(8 * len(data) / (h * w))
        psnrs.append(psnr(img, rec))
        with torch.no_grad():
            x, _, _ = pad_to(to_tensor([img]), codec.stride)
            liks.append(float(bpp_of_likelihoods(model(x)["likelihoods"], h * w)))
    return {"bpp": float(np.mean(bpps)), "bpp_likelihood": float(np.mean(liks)), "psnr": float(np.mean(psnrs))}


@torch.no_grad()
def classifier_metrics(model, cfg=None) -> dict:
    """Top-1 accuracy on the ShapesWorld test split (raw RGB input)."""
    ds = shapes_test()
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.asarray(ds.labels))
    preds = torch.cat([model.eval()(x[i:i + 250]).argmax(1) for i in range(0, len(x), 250)])
    return {"accuracy": float((preds == y).float().mean())}


METRIC_FNS["rd"] = rd_metrics
METRIC_FNS["accuracy"] = classifier_metrics

for q, lmbda in HYPERPRIOR_LAMBDAS.items():
    register_spec(f"hyperprior_{q}", "hyperprior", "laptop",
                  {"lmbda": lmbda, "steps": HYPERPRIOR_STEPS, "seed": 0}, "rd")

register_spec("pixel_classifier", "pixel_classifier", "laptop", {"steps": 1500, "seed": 0}, "accuracy")
