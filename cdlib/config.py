"""Training configuration: the ``laptop`` and ``paper`` profiles.

A :class:`TrainConfig` is a frozen dataclass.  :func:`make_config` builds one from
(generic defaults) <- (the model's registered profile values) <- (user overrides),
and validates every key and value so that a typo is an error that lists the
valid choices, not a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from .registry import PROFILES, check_profile

DATASETS = ("shapes", "photos", "imagefolder", "flatfolder")
# "": the dataset's crops and flips only; "timm": + timm's default colour jitter (0.4); "deit": + RandAugment,
# random erasing, mixup/cutmix (cdlib.augment)
AUGMENTS = ("", "timm", "deit")


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides the model itself."""

    model: str = ""
    profile: str = "laptop"
    steps: int = 1000              # optimiser steps (not epochs: the same unit on every dataset)
    batch_size: int = 16
    lr: float = 1e-4
    aux_lr: float = 1e-3           # optimiser of the entropy bottleneck quantiles
    weight_decay: float = 0.0
    optimizer: str = "adam"        # adam | adamw
    schedule: str = "cosine"       # cosine | constant
    warmup_steps: int = 0
    lmbda: float = 0.01            # rate-distortion trade-off, meaning defined by the model's loss
    loss_weights: dict = field(default_factory=dict)  # extra weights of named loss terms
    stage: str = ""                # model-specific training stage (e.g. "step1"/"step2" for bai2022)
    init_from: str = ""            # checkpoint whose weights initialise the model (e.g. step 1 -> step 2)
    image_size: int = 64
    num_classes: int = 10
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    amp: bool = True               # used only on CUDA
    channels_last: bool = True     # used only on CUDA
    grad_clip: float = 1.0         # 0 disables
    label_smoothing: float = 0.0
    augment: str = ""              # "" | "timm" | "deit" (cdlib.augment)
    dataset: str = "shapes"        # shapes | photos | imagefolder | flatfolder
    data_path: str = ""            # root of a user-given dataset (imagefolder/flatfolder)
    num_train: int = 4000          # ShapesWorld training images
    num_workers: int = 0
    log_every: int = 50
    ckpt_every: int = 200          # steps between resumable checkpoints

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable 16-hex-digit hash of the whole config (the checkpoint-cache key)."""
        return config_hash(self.to_dict())


_CHOICES = {
    "profile": PROFILES,
    "optimizer": ("adam", "adamw"),
    "schedule": ("cosine", "constant"),
    "dataset": DATASETS,
    "augment": AUGMENTS,
}
_POSITIVE = ("steps", "batch_size", "lr", "image_size", "num_classes", "log_every", "ckpt_every", "num_train")
_NON_NEGATIVE = ("aux_lr", "weight_decay", "warmup_steps", "lmbda", "grad_clip", "label_smoothing", "num_workers", "seed")


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def valid_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def parse_value(key: str, text: str) -> Any:
    """Parse a ``--set key=value`` string to the field's type."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    if key not in types:
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    t = str(types[key])
    try:
        if t == "int":
            return int(text)
        if t == "float":
            return float(text)
        if t == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if t == "dict":
            val = json.loads(text)
            if not isinstance(val, dict):
                raise ValueError(text)
            return val
    except ValueError:
        raise ValueError(f"bad value {text!r} for {key!r}: expected {t}") from None
    return text


def validate(cfg: TrainConfig) -> TrainConfig:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ValueError(f"bad value {getattr(cfg, key)!r} for {key!r}; valid values: {', '.join(choices)}")
    for key in _POSITIVE:
        if not getattr(cfg, key) > 0:
            raise ValueError(f"bad value {getattr(cfg, key)!r} for {key!r}: must be > 0")
    for key in _NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ValueError(f"bad value {getattr(cfg, key)!r} for {key!r}: must be >= 0")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"bad value {dev!r} for 'device'; valid values: auto, cpu, cuda, cuda:N")
    if cfg.augment == "deit" and cfg.batch_size % 2:
        raise ValueError(f"augment='deit' mixes pairs of images: batch_size must be even, got {cfg.batch_size}")
    if cfg.dataset in ("imagefolder", "flatfolder") and not cfg.data_path:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_path (set data_path=/path/to/dataset)")
    return cfg


def make_config(model: str = "", profile: str = "laptop", **overrides) -> TrainConfig:
    """Generic defaults <- model's profile values <- overrides, validated."""
    check_profile(profile)
    unknown = sorted(set(overrides) - set(valid_keys()))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    values: dict[str, Any] = {"model": model, "profile": profile}
    if model:
        from .registry import get_entry

        values.update(get_entry(model).train.get(profile, {}))
    values.update(overrides)
    types = {f.name: f.type for f in fields(TrainConfig)}
    for key, val in list(values.items()):
        if isinstance(val, str) and str(types[key]) != "str":
            values[key] = parse_value(key, val)
    return validate(TrainConfig(**values))


def resolve_device(device: str) -> "torch.device":  # noqa: F821
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)
