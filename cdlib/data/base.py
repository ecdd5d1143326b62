"""What every dataset module shares: splits, seeded randomness, and the dataset registry.

A dataset module registers a *builder* per name::

    @register_dataset("shapes")
    def _build(cfg, split):            # cfg: a TrainConfig; split: "train" | "val" | "test"
        return ShapesWorld(split, ...)

and :func:`build_dataset` turns ``cfg.dataset`` into a dataset by looking the name up.
The registry lives here (not in ``cdlib/data/__init__.py``) so that the dataset modules can
import it without a circular import; ``cdlib.data`` re-exports it.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

SPLITS = ("train", "val", "test")
SPLIT_ID = {"train": 0, "val": 1, "test": 2}  # stable numbers for seeding per split

Builder = Callable[..., torch.utils.data.Dataset]
_BUILDERS: dict[str, Builder] = {}  # insertion order = registration order


def seeded_rng(*parts: int) -> np.random.Generator:
    """A generator that is a pure function of the integers ``parts`` (each taken modulo 2**32).

    Datasets seed per-item randomness with ``seeded_rng(seed, epoch, index, salt)`` so that
    resumed and multi-process training see the same data.
    """
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def content_hash(arr: np.ndarray) -> str:
    """Short sha256 of an array's bytes (used by tests and chapters to show determinism)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- registry
def register_dataset(name: str):
    """Decorator adding ``builder(cfg, split) -> Dataset`` to the registry under ``name``.

    ``name`` is what ``TrainConfig.dataset`` holds.  Registering a taken name is an error
    (call :func:`unregister_dataset` first to replace a builder).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")

    def deco(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"dataset {name!r} is already registered")
        if not callable(builder):
            raise TypeError(f"dataset {name!r}: builder must be callable, got {type(builder).__name__}")
        _BUILDERS[name] = builder
        return builder

    return deco


def unregister_dataset(name: str) -> Builder:
    """Remove ``name`` from the registry and return its builder (for tests and replacements)."""
    _lookup(name)
    return _BUILDERS.pop(name)


def list_datasets() -> tuple[str, ...]:
    """Registered dataset names, in registration order."""
    return tuple(_BUILDERS)


def _lookup(name: str) -> Builder:
    if name not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; expected {' | '.join(_BUILDERS)}")
    return _BUILDERS[name]


def build_dataset(cfg, split: str = "train") -> torch.utils.data.Dataset:
    """The dataset a :class:`~cdlib.config.TrainConfig` names (``cfg.dataset``) for ``split``.

    Raises ``ValueError`` for a split outside :data:`SPLITS` and for a name nobody
    registered (the message lists the registered names).
    """
    check_split(split)
    return _lookup(cfg.dataset)(cfg, split)
