"""``python -m cdlib bench``: speed, memory and bits of every codec on this machine.

Each codec is measured in its own subprocess so that its peak resident memory
(including the ffmpeg children of the HEVC/VVC codecs) is its own.  The table is
printed and written as JSON; nothing here is a test of correctness.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (64, 256)


def codec_names() -> tuple[list[str], list[str]]:
    """(classical, learned) codec names, from the registries: a learned codec is one named after a
    registered model (its paper package registers both)."""
    from .codecs import list_codecs
    from .registry import list_models

    models = set(list_models())
    names = list_codecs()
    return [n for n in names if n not in models], [n for n in names if n in models]


def _images(size: int, n: int) -> list[np.ndarray]:
    """Crops of the held-out natural photos (same for every codec)."""
    from .data import NaturalPhotos

    photos = NaturalPhotos.test_images()
    out = []
    rng = np.random.default_rng(0)
    while len(out) < n:
        img = photos[len(out) % len(photos)]
        h, w = img.shape[:2]
        if h < size or w < size:
            continue
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def _learned_codec(name: str):
    """The zoo's rate points when the zoo has any for ``name``, else an untrained model (speed is the same;
    the table says "untrained").  A zoo entry that fails to load is an error, not a fallback."""
    from . import zoo
    from .codecs import get_codec
    from .registry import create_model

    if zoo.entries(model=name):
        return get_codec(name), "zoo"
    return get_codec(name, model=create_model(name, "laptop")), "untrained"


def _likelihood_bpp(codec, images, quality) -> float:
    import torch

    from .images import pad_to, to_tensor
    from .losses import bpp_of_likelihoods

    model = codec.models[int(quality)]
    x = to_tensor(images)
    xp, _, _ = pad_to(x, codec.stride)
    with torch.no_grad():
        out = model(xp)
    # likelihoods of the padded image, per pixel of the original image (what the stream codes)
    return float(bpp_of_likelihoods(out["likelihoods"], x.shape[0] * x.shape[2] * x.shape[3]))


def measure_one(name: str, repeats: int) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from .bitstream import bpp as stream_bpp
    from .codecs import get_codec
    from .eval import psnr

    classical, learned = codec_names()
    source = "classical"
    codec = get_codec(name) if name in classical else None
    if codec is None:
        codec, source = _learned_codec(name)
    quality = codec.qualities[len(codec.qualities) // 2]
    row = {"codec": name, "label": getattr(codec, "label", name), "weights": source, "quality": quality}
    for size in SIZES:
        n = 16 if size == 64 else 4
        images = _images(size, n)
        codec.encode_batch(images[:1], quality)  # warm-up (process start, CDF tables)
        t0 = time.perf_counter()
        for _ in range(repeats):
            streams = codec.encode_batch(images, quality)
        t1 = time.perf_counter()
        for _ in range(repeats):
            decoded = codec.decode_batch(streams)
        t2 = time.perf_counter()
        bpp = float(np.mean([stream_bpp(s, size, size) for s in streams]))
        row[f"enc_img_s_{size}"] = repeats * n / (t1 - t0)
        row[f"dec_img_s_{size}"] = repeats * n / (t2 - t1)
        row[f"bpp_bytes_{size}"] = bpp
        # a feature codec (no pixel decoder: ``decodes_pixels = False``) has no PSNR
        row[f"psnr_{size}"] = (float(np.mean([psnr(a, b) for a, b in zip(images, decoded)]))
                               if getattr(codec, "decodes_pixels", True) else None)
        row[f"bpp_likelihood_{size}"] = _likelihood_bpp(codec, images, quality) if name in learned else None
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    row["peak_rss_mb"] = max(me, kids) / 1024.0
    return row


def train_speed(name: str, steps: int = 5) -> float:
    """Optimiser steps per second of a learned codec's model at its laptop profile (its batch size and image
    size; random images and labels), through the one training loop with the model's hooks (its data views,
    its own step, its optimisers), timed between the callbacks of the first and the last step."""
    import dataclasses

    import torch

    from .config import make_config
    from .registry import create_model
    from .train import seed_everything, train

    seed_everything(0)
    cfg = dataclasses.replace(make_config(name, "laptop"), steps=steps + 1, log_every=1)
    model = create_model(name, "laptop")
    g = torch.Generator().manual_seed(0)
    size = cfg.image_size
    data = [{"image": torch.rand(3, size, size, generator=g),
             "label": torch.randint(0, cfg.num_classes, (), generator=g)}
            for _ in range(cfg.batch_size * (steps + 1))]
    stamps: list[float] = []
    train(model, cfg, dataset=data, progress=False, callback=lambda step, record: stamps.append(time.perf_counter()))
    return steps / (stamps[-1] - stamps[0])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def format_table(rows: list[dict]) -> str:
    head = ("codec", "enc/s 64", "dec/s 64", "enc/s 256", "dec/s 256", "bpp 256", "lik-bpp 256", "PSNR 256",
            "peak MB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lik = r["bpp_likelihood_256"]
        lines.append("| " + " | ".join([
            f"{r['label']}" + (" (untrained)" if r.get("weights") == "untrained" else ""),
            f"{r['enc_img_s_64']:.1f}", f"{r['dec_img_s_64']:.1f}", f"{r['enc_img_s_256']:.1f}",
            f"{r['dec_img_s_256']:.1f}", f"{r['bpp_bytes_256']:.3f}", "n/a" if lik is None else f"{lik:.3f}",
            "n/a (features)" if r["psnr_256"] is None else f"{r['psnr_256']:.2f}",
            f"{r['peak_rss_mb']:.0f}"]) + " |")
    return "\n".join(lines)


def run_bench(out: str | Path = "results/bench.json", quick: bool = False, codecs=None) -> dict:
    from tqdm import tqdm

    repeats = 1 if quick else 3
    rows = []
    classical, learned = codec_names()
    for name in tqdm(list(codecs or (classical + learned)), desc="bench codecs"):
        proc = subprocess.run([sys.executable, "-m", "cdlib.bench", "--one", name, "--repeats", str(repeats)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark of {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    speeds = {n: train_speed(n, steps=2 if quick else 5) for n in learned if codecs is None or n in codecs}
    result = {"machine": machine(), "codecs": rows, "train_steps_per_s": speeds,
              "train_setting": "laptop profile of each model (its batch and image size), fp32, CPU"}
    table = format_table(rows)
    print(f"Machine: {result['machine']}\n")
    print(table)
    print("\nTraining steps/s (laptop profile of each model): "
          + ", ".join(f"{k} {v:.2f}" for k, v in speeds.items()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    result["table"] = table
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(json.dumps(measure_one(a.one, a.repeats)))
