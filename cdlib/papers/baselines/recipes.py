"""The zoo recipes of chapters 1-2: the hyperprior's four rate points and the pixel classifier."""
from __future__ import annotations

import numpy as np
import torch

from ...bitstream import bpp
from ...recipes import photo_test_images, shapes_test
from ...zoo import METRIC_FNS, register_spec

# Laptop-scale rate points of the mean-scale hyperprior (lambda as in CompressAI:
# L = lambda * 255^2 * MSE + bpp).  Four points: BD metrics need at least four.
HYPERPRIOR_LAMBDAS = {"q1": 0.0035, "q2": 0.0085, "q3": 0.02, "q4": 0.05}
HYPERPRIOR_STEPS = 3000
# 256x256 crops, as at paper scale: the hyper-latent z (stride 64) is then 4x4 with an interior, as on the
# held-out photos.  Trained on 64x64 crops (z 1x1) the hyper-synthesis never sees an interior position, and at
# 256 px 1-3% of the latents land in the far tails of their predicted Gaussians (chapter 1, exercise 5).
HYPERPRIOR_CROP, HYPERPRIOR_BATCH = 256, 4

def rd_metrics(model, cfg=None) -> dict:
    """Held-out photos: bytes-bpp, likelihood-bpp and PSNR of real bitstreams."""
    from ...codecs.learned import LearnedCodec
    from ...images import pad_to, to_tensor
    from ...eval import psnr
    from ...losses import bpp_of_likelihoods

    codec = LearnedCodec([model], name=model.model_name)
    bpps, liks, psnrs = [], [], []
    for img in photo_test_images():
        rec, data = codec.roundtrip(img, 0)
        h, w = img.shape[:2]
        bpps.append(bpp(data, h, w))
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
                  {"lmbda": lmbda, "steps": HYPERPRIOR_STEPS, "seed": 0, "image_size": HYPERPRIOR_CROP,
                   "batch_size": HYPERPRIOR_BATCH}, "rd")

register_spec("pixel_classifier", "pixel_classifier", "laptop", {"steps": 2000, "seed": 0}, "accuracy")
