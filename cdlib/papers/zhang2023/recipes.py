"""The zoo recipes of chapter 4 (Paper B): the codec's rate points, its analysis networks, the pixel baseline
and the ablations, with the metrics the manifest records (real streams on the FaceWorld test split).

Schedule (laptop): one codec trained from scratch at the base rate point, the other rate points fine-tuned
from it with their own rate weight (as chapter 1's hyperprior: four full GAN trainings would cost four times
the CPU); then, per rate point, the analysis network on the frozen latents (the paper's separate schedule);
the joint schedule, the structure-only / texture-only analysis and the codec without its GAN loss at the
base rate point only (the ablations).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ...zoo import METRIC_FNS, register_spec

#: The held-out faces of every number in chapter 4 (the ``faceworld`` dataset's test split, merged labels).
FACES_TEST = dict(split="test", n=1000, image_size=64, seed=0, labels="merged")

# lambda_rate per rate point: larger = fewer bits (q0 the lowest rate, aimed at 0.1 bpp or less in all).
ZHANG_BASE = "q2"
ZHANG_LAMBDAS = {"q0": 64.0, "q1": 12.0, "q2": 1.0, "q3": 0.3}
#: where each fine-tuned rate point starts (the lowest from the next one up: a shorter way down)
ZHANG_INIT = {"q0": "q1", "q1": ZHANG_BASE, "q3": ZHANG_BASE}
ZHANG_STEPS, ZHANG_FINETUNE_STEPS = 3000, 800
JOINT_STEPS = 400
ZHANG_EVAL_EVERY = 500
ANALYSIS_STEPS = 2000


@functools.lru_cache(maxsize=2)
def faces_test(n: int | None = None):
    """The test faces (``n``: only the first ``n``)."""
    from .faceworld import FaceWorld

    kw = dict(FACES_TEST)
    if n is not None:
        kw["n"] = int(n)
    return FaceWorld(**kw)


def _uint8_images(ds) -> list:
    return list(ds.images) if ds.images.dtype == np.uint8 else [
        (np.asarray(ds[i]["image"]).transpose(1, 2, 0) * 255).round().astype(np.uint8) for i in range(len(ds))]


@torch.no_grad()
def codec_metrics(model, cfg=None, limit: int | None = None) -> dict:
    """Real streams of the test faces: bpp (every byte) and per layer, the likelihood estimate, PSNR and
    MS-SSIM of the decoded faces."""
    from pytorch_msssim import ms_ssim

    from ...bitstream import bpp
    from ...losses import bpp_of_likelihoods
    from .codec import Zhang2023Codec

    ds = faces_test(limit)
    model = model.eval()
    model.update(force=True)
    codec = Zhang2023Codec([model], name="zhang2023")
    images = _uint8_images(ds)
    streams = codec.encode_batch(images, 0)
    h, w = images[0].shape[:2]
    parts = [codec.layer_bytes(s) for s in streams]
    recs = codec.decode_batch(streams, batch_size=100)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    r = torch.from_numpy(np.stack(recs)).permute(0, 3, 1, 2).float() / 255
    mse = ((x - r) ** 2).flatten(1).mean(1)
    est = [bpp_of_likelihoods(model(x[i:i + 100])["likelihoods"], len(x[i:i + 100]) * h * w).item()
           for i in range(0, len(x), 100)]
    return {"bpp": float(np.mean([bpp(s, h, w) for s in streams])),
            "bpp_structure": float(np.mean([p["structure"] for p in parts])) * 8 / (h * w),
            "bpp_texture": float(np.mean([p["texture"] for p in parts])) * 8 / (h * w),
            "bpp_header": float(np.mean([p["header"] for p in parts])) * 8 / (h * w),
            "bpp_likelihood": float(np.mean(est)),
            "psnr": float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()),
            # MS-SSIM at 64 px needs a smaller window than the default 11 (5 scales halve 64 to 4)
            "ms_ssim": float(ms_ssim(x, r, data_range=1.0, win_size=3, size_average=True))}


@torch.no_grad()
def analysis_metrics(model, cfg=None, limit: int | None = None) -> dict:
    """Decode-free analysis from real streams (:meth:`Zhang2023Codec.analyse`): mIoU, pixel accuracy, attribute
    accuracy, landmark NME on the test faces, and the streams' bpp."""
    from ...bitstream import bpp
    from .analysis import score
    from .codec import Zhang2023Codec

    ds = faces_test(limit)
    model = model.eval()
    model.codec.update(force=True)
    codec = Zhang2023Codec.from_analysis([model])
    images = _uint8_images(ds)
    streams = codec.encode_batch(images, 0)
    h, w = images[0].shape[:2]
    pred = {t: codec.analyse(streams, t) for t in codec.tasks}
    target = {"parsing": torch.from_numpy(ds.label_map(np.asarray(ds.parsing))),
              "attributes": torch.from_numpy(np.asarray(ds.attributes)),
              "landmarks": torch.from_numpy(np.asarray(ds.landmarks))}
    return {"bpp": float(np.mean([bpp(s, h, w) for s in streams])), **score(pred, target, model.num_classes)}


@torch.no_grad()
def pixel_metrics(model, cfg=None, limit: int | None = None) -> dict:
    """The pixel baseline on the raw test faces."""
    from .analysis import evaluate

    return evaluate(model, faces_test(limit))


METRIC_FNS["zhang2023_codec"] = codec_metrics
METRIC_FNS["zhang2023_analysis"] = analysis_metrics
METRIC_FNS["zhang2023_pixel"] = pixel_metrics

_CODEC = {"seed": 0}
register_spec(f"zhang2023_{ZHANG_BASE}", "zhang2023", "laptop",
              {**_CODEC, "lambda_rate": ZHANG_LAMBDAS[ZHANG_BASE], "steps": ZHANG_STEPS}, "zhang2023_codec",
              eval_every=ZHANG_EVAL_EVERY)
register_spec("zhang2023_pixel", "zhang2023_pixel", "laptop", {"seed": 0, "steps": ANALYSIS_STEPS},
              "zhang2023_pixel")
# ablation: the same training without the adversary (no discriminator step, no GAN or feature-matching term)
register_spec(f"zhang2023_{ZHANG_BASE}_nogan", "zhang2023", "laptop",
              {**_CODEC, "lambda_rate": ZHANG_LAMBDAS[ZHANG_BASE], "steps": ZHANG_STEPS, "gan": False},
              "zhang2023_codec")

# the other rate points: fine-tuned from the base with the generator frozen (train_parts="rate"), so the zoo
# stores only what differs from the base
for q, lam in ZHANG_LAMBDAS.items():
    if q != ZHANG_BASE:
        register_spec(f"zhang2023_{q}", "zhang2023", "laptop",
                      {**_CODEC, "lambda_rate": lam, "steps": ZHANG_FINETUNE_STEPS, "train_parts": "rate",
                       "init_from": f"@zhang2023_{ZHANG_INIT[q]}"}, "zhang2023_codec", eval_every=ZHANG_EVAL_EVERY,
                      base=f"zhang2023_{ZHANG_BASE}")

# the separate schedule: one analysis network per rate point, on its frozen latents (its file stores the
# analysis network only: the codec is the rate point's)
for q in ZHANG_LAMBDAS:
    register_spec(f"zhang2023_analysis_{q}", "zhang2023_analysis", "laptop",
                  {"seed": 0, "steps": ANALYSIS_STEPS, "stage": "separate", "init_from": f"@zhang2023_{q}"},
                  "zhang2023_analysis", base=f"zhang2023_{q}", base_prefix="codec.")
# ablations at the base rate point: structure only, texture only, and the joint schedule (from the separate one)
for inputs in ("structure", "texture"):
    register_spec(f"zhang2023_analysis_{ZHANG_BASE}_{inputs}", "zhang2023_analysis", "laptop",
                  {"seed": 0, "steps": ANALYSIS_STEPS, "stage": "separate", "init_from": f"@zhang2023_{ZHANG_BASE}",
                   "arch": {"inputs": inputs}},
                  "zhang2023_analysis", base=f"zhang2023_{ZHANG_BASE}", base_prefix="codec.")
register_spec(f"zhang2023_analysis_{ZHANG_BASE}_joint", "zhang2023_analysis", "laptop",
              {"seed": 0, "steps": JOINT_STEPS, "stage": "joint", "lr": 2e-4,
               "init_from": f"@zhang2023_analysis_{ZHANG_BASE}", "warmup_steps": 0},
              "zhang2023_analysis", base=f"zhang2023_analysis_{ZHANG_BASE}")
# the fair control of the joint schedule: the separate network trained as many more steps, at the same lr
register_spec(f"zhang2023_analysis_{ZHANG_BASE}_longer", "zhang2023_analysis", "laptop",
              {"seed": 0, "steps": JOINT_STEPS, "stage": "separate", "lr": 2e-4,
               "init_from": f"@zhang2023_analysis_{ZHANG_BASE}", "warmup_steps": 0},
              "zhang2023_analysis", base=f"zhang2023_analysis_{ZHANG_BASE}")
