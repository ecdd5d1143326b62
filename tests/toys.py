"""Tiny models for the training-loop tests (tests/test_train.py), registered by the ``toy_models`` fixture of
``tests/conftest.py`` and by the subprocess scripts of the kill and DDP tests (``register_toys()``).

- :class:`Toy` (``TOY``): a compression model with an entropy bottleneck and a classifier head: the default
  hooks (main + aux optimiser, weighted loss terms).  Its options ``noise`` and ``mix`` drive the data hooks.
- :class:`ToyGAN` (``GAN``): a generator and a discriminator, two optimisers from ``configure_optimizers``,
  a ``train_step`` that updates D, then G.
- :class:`ToyMoCo` (``MOCO``): an online encoder, an EMA key encoder updated after every step, a queue of
  keys (a buffer) pushed every step, an InfoNCE loss; stage ``"probe"`` freezes the encoders' stems (with a
  BatchNorm); SGD with timm-style weight-decay groups.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel

from cdlib import registry
from cdlib.registry import Option
from cdlib.train import default_optimizers, warmup_cosine

TOY, GAN, MOCO = "toy_test_train", "toy_test_gan", "toy_test_moco"


def soft_cross_entropy(logits, label):
    """Cross-entropy with class indices or with soft targets (B, C)."""
    if label.is_floating_point():
        return -(label * F.log_softmax(logits, 1)).sum(1).mean()
    return F.cross_entropy(logits, label)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=24, size=16, seed=0, num_classes=3):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.num_classes = num_classes
        self.epochs = []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


class NoisyItems(torch.utils.data.Dataset):
    """Per-item augmentation: Gaussian noise seeded by ``(seed, epoch, index)`` (a pure function of them)."""

    def __init__(self, dataset, sigma: float, seed: int):
        self.dataset, self.sigma, self.seed, self.epoch = dataset, sigma, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]))
        item["image"] = (item["image"] + self.sigma * torch.randn(item["image"].shape, generator=g)).clamp(0, 1)
        return item


class SwapMix:
    """Per-batch augmentation: blend each image with its neighbour in the batch (weight drawn from torch's
    global generator, which the loop re-seeds every step); labels become soft (B, num_classes)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def __call__(self, batch):
        x, y = batch["image"], F.one_hot(batch["label"], self.num_classes).float()
        lam = float(torch.rand(()))
        return {**batch, "image": lam * x + (1 - lam) * x.roll(1, 0), "label": lam * y + (1 - lam) * y.roll(1, 0)}


# ----------------------------------------------------------------------------------------------------------
# The compression toy: default hooks
# ----------------------------------------------------------------------------------------------------------
class Toy(CompressionModel):
    """A few hundred parameters: conv encoder, entropy bottleneck, conv decoder, linear classifier."""

    def __init__(self, N=4, num_classes=3):
        super().__init__()
        self.enc = nn.Conv2d(3, N, 3, stride=2, padding=1)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.dec = nn.ConvTranspose2d(N, 3, 5, stride=2, padding=2, output_padding=1)
        self.head = nn.Linear(N, num_classes)
        self.poison = False

    def forward(self, x):
        y = self.enc(x)
        y_hat, lk = self.entropy_bottleneck(y)
        return {"x_hat": self.dec(y_hat), "likelihoods": {"y": lk}, "logits": self.head(y_hat.mean((2, 3)))}

    def loss_terms(self, batch, cfg):
        x = batch["image"]
        out = self(x)
        n, _, h, w = x.shape
        mse = F.mse_loss(out["x_hat"], x)
        if self.poison:
            mse = mse * float("nan")
        return {"mse": mse, "bpp": -torch.log2(out["likelihoods"]["y"]).sum() / (n * h * w),
                "ce": soft_cross_entropy(out["logits"], batch["label"])}

    def loss_weights(self, cfg):
        return {"mse": cfg.lmbda * 255.0**2, "bpp": 1.0, "ce": 0.1}

    # data hooks, driven by the model options
    def wrap_train_dataset(self, dataset, cfg):
        sigma = cfg.model_options["noise"]
        return NoisyItems(dataset, sigma, cfg.seed) if sigma > 0 else dataset

    def batch_transform(self, cfg):
        return SwapMix(cfg.num_classes) if cfg.model_options["mix"] == "swap" else None


def check_toy_config(cfg):
    if cfg.model_options["mix"] == "swap" and cfg.batch_size % 2:
        raise ValueError(f"mix='swap' blends pairs of images: batch_size must be even, got {cfg.batch_size}")


# ----------------------------------------------------------------------------------------------------------
# A GAN: two optimisers, D then G every step
# ----------------------------------------------------------------------------------------------------------
class ToyGAN(nn.Module):
    """Generator z (8) -> 3x16x16 image; discriminator image -> logit; non-saturating GAN loss."""

    ddp_find_unused_parameters = True  # the D step does not use G's parameters

    def __init__(self, z_dim=8, width=8):
        super().__init__()
        self.z_dim = z_dim
        self.g = nn.Sequential(nn.Linear(z_dim, 3 * 4 * 4), nn.Unflatten(1, (3, 4, 4)), nn.Upsample(scale_factor=4),
                               nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid())
        self.d = nn.Sequential(nn.Conv2d(3, width, 4, stride=4), nn.LeakyReLU(0.2), nn.Flatten(),
                               nn.Linear(width * 16, 1))
        self.register_buffer("d_updates", torch.zeros((), dtype=torch.long))  # training state in a buffer

    def d_loss(self, real, z):
        fake = self.g(z).detach()
        return F.softplus(-self.d(real)).mean() + F.softplus(self.d(fake)).mean()

    def g_loss(self, z):
        return F.softplus(-self.d(self.g(z))).mean()

    def configure_optimizers(self, cfg):
        d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr * cfg.model_options["g_lr_ratio"], betas=(0.5, 0.999))
        return {"optimizers": {"d": d, "g": g}, "schedulers": {"d": warmup_cosine(d, cfg), "g": warmup_cosine(g, cfg)}}

    def train_step(self, batch, ctx):
        real = batch["image"]
        z = torch.randn(real.shape[0], self.z_dim, device=real.device)  # torch's generator, re-seeded every step
        d_opt, g_opt = ctx.optimizers["d"], ctx.optimizers["g"]
        with ctx.autocast():
            d_loss = ctx.forward("d_loss", real, z)
        record = ctx.reduce({"d_loss": d_loss})
        d_opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(d_loss).backward()
        ctx.scaler.step(d_opt)
        self.d_updates += 1
        with ctx.autocast():
            g_loss = ctx.forward("g_loss", z)
        record.update(ctx.reduce({"g_loss": g_loss}))
        g_opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(g_loss).backward()
        ctx.scaler.step(g_opt)
        ctx.scaler.update()
        for sched in ctx.schedulers.values():
            sched.step()
        return record


# ----------------------------------------------------------------------------------------------------------
# A momentum encoder with a queue (MoCo-like), staged
# ----------------------------------------------------------------------------------------------------------
class ToyEncoder(nn.Module):
    def __init__(self, dim=8, width=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.proj = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(width * 4, dim),
                                  nn.LayerNorm(dim))

    def forward(self, x):
        return F.normalize(self.proj(self.stem(x)), dim=1)


class ToyMoCo(nn.Module):
    """InfoNCE between the online encoder's queries and the EMA key encoder's keys (another view), against a
    queue of past keys.  Stage ``"probe"`` freezes both stems."""

    STAGES = {"": [], "probe": ["online.stem", "key.stem"]}

    def __init__(self, dim=8, queue=16):
        super().__init__()
        self.online = ToyEncoder(dim)
        self.key = copy.deepcopy(self.online)
        for p in self.key.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim, generator=g), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys = None

    def frozen_parts(self, cfg):
        if cfg.stage not in self.STAGES:
            raise ValueError(f"bad value {cfg.stage!r} for 'stage'; valid values: {list(self.STAGES)}")
        return self.STAGES[cfg.stage]

    def configure_optimizers(self, cfg):
        return default_optimizers(self, cfg, decay_groups=True)

    def loss_terms(self, batch, cfg):
        x = batch["image"]
        view = (x.flip(3) + 0.05 * torch.randn_like(x)).clamp(0, 1)  # a second view (global generator)
        q = self.online(x)
        with torch.no_grad():
            k = self.key(view)
        self._keys = k
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.t()], 1) / cfg.model_options["temperature"]
        return {"nce": F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long, device=x.device))}

    def loss_weights(self, cfg):
        return {"nce": 1.0}

    @torch.no_grad()
    def train_step(self, batch, ctx):
        with torch.enable_grad():
            record = ctx.default_step(batch)
        m = ctx.cfg.model_options["ema"]
        for pk, pq in zip(self.key.parameters(), self.online.parameters()):
            pk.lerp_(pq.detach(), 1.0 - m)  # exact when equal (frozen parts stay equal)
        keys = ctx.all_gather(self._keys)
        n, size = len(keys), len(self.queue)
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self._keys = None
        return record


class ZooToy(CompressionModel):
    """The smallest compression model, for the zoo's tests (tests/test_zoo.py)."""

    def __init__(self, N=4):
        super().__init__()
        self.enc = nn.Conv2d(3, N, 3, stride=2, padding=1)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.dec = nn.ConvTranspose2d(N, 3, 5, stride=2, padding=2, output_padding=1)

    def forward(self, x):
        y_hat, lk = self.entropy_bottleneck(self.enc(x))
        return {"x_hat": self.dec(y_hat), "likelihoods": {"y": lk}}

    def loss_terms(self, batch, cfg):
        x = batch["image"]
        out = self(x)
        n, _, h, w = x.shape
        return {"mse": F.mse_loss(out["x_hat"], x), "bpp": -torch.log2(out["likelihoods"]["y"]).sum() / (n * h * w)}

    def loss_weights(self, cfg):
        return {"mse": cfg.lmbda * 255.0**2, "bpp": 1.0}


# ----------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------
def register_toys() -> list[str]:
    """Register the three toys (``unregister_toys`` removes them)."""
    registry.register_model(
        TOY, arch={"laptop": {"N": 4}, "paper": {"N": 8}},
        options={"noise": Option(0.0, float, help="per-item noise sigma (wrap_train_dataset)"),
                 "mix": Option("", str, choices=("", "swap"), help="per-batch blending (batch_transform)")},
        train={"paper": {"noise": 0.1}}, check_config=check_toy_config)(Toy)
    registry.register_model(GAN, arch={"laptop": {"z_dim": 8}, "paper": {"z_dim": 16}},
                            options={"g_lr_ratio": Option(1.0, float)})(ToyGAN)
    registry.register_model(
        MOCO, arch={"laptop": {"dim": 8, "queue": 16}, "paper": {"dim": 16, "queue": 64}},
        options={"ema": Option(0.9, float, help="key encoder momentum"), "temperature": Option(0.2, float)},
        train={"laptop": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}})(ToyMoCo)
    return [TOY, GAN, MOCO]


def register_zoo_toy(name: str) -> str:
    """Register :class:`ZooToy` as ``name`` with a tiny laptop recipe (``unregister_toys([name])`` removes it)."""
    registry.register_model(name, arch={"laptop": {"N": 4}, "paper": {"N": 8}},
                            train={"laptop": dict(steps=6, batch_size=4, image_size=16, num_train=12, lr=1e-2,
                                                  ckpt_every=3, log_every=3, device="cpu")})(ZooToy)
    return name


def unregister_toys(names=(TOY, GAN, MOCO)) -> None:
    for name in names:
        if name in registry._REGISTRY:
            registry.unregister_model(name)


# ------------------------------------------------------------------------------------------ shared test helpers
def run_torchrun(script, nproc: int = 2, timeout: int = 600):
    """Run ``script`` under ``torch.distributed.run`` with ``nproc`` CPU processes (gloo), one thread each, on a
    free local port, with this checkout importable; assert that it succeeded (its output tail otherwise)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def save_model_checkpoint(model, name: str, path):
    """``model`` as a cdlib training checkpoint of model ``name`` (laptop config, step 0) at ``path``."""
    from cdlib.checkpoint import atomic_save, training_checkpoint
    from cdlib.config import make_config

    atomic_save(training_checkpoint(model, make_config(name, "laptop"), 0, {}, {}, None), path)
    return path
