"""Model registry: ``create_model(name, profile="laptop"|"paper", **overrides)``.

Every model file registers itself with :func:`register_model`, giving its
architecture hyperparameters for each profile.  ``create_model`` merges the
profile with user overrides, rejects unknown keys with a message listing the
valid ones, and records what it built on the model (``model.model_name``,
``model.profile``, ``model.arch``) so checkpoints and bitstreams can check that
they match.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

PROFILES = ("laptop", "paper")


@dataclass
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    arch: dict[str, dict[str, Any]]  # profile -> architecture kwargs
    train: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> TrainConfig overrides
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, arch: dict[str, dict], train: dict[str, dict] | None = None,
                   description: str = ""):
    """Class/function decorator adding a model to the registry.

    ``arch`` maps each profile in :data:`PROFILES` to the keyword arguments of the
    factory; ``train`` maps each profile to the training-config values that differ
    from the generic defaults in :mod:`cdlib.config`.
    """
    missing = [p for p in PROFILES if p not in arch]
    if missing:
        raise ValueError(f"model {name!r} must define arch profiles {list(PROFILES)}; missing {missing}")

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, factory, arch, train or {}, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def _ensure_loaded() -> None:
    # Importing the models package registers every model file.
    import cdlib.models  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return profile


def model_arch(name: str, profile: str = "laptop", **overrides) -> dict[str, Any]:
    """The architecture kwargs ``create_model`` would use (profile merged with overrides)."""
    entry = get_entry(name)
    check_profile(profile)
    arch = copy.deepcopy(entry.arch[profile])
    unknown = sorted(set(overrides) - set(arch))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {sorted(arch)}")
    arch.update(overrides)
    return arch


def create_model(name: str, profile: str = "laptop", **overrides):
    """Build a registered model at the given profile, with architecture overrides."""
    entry = get_entry(name)
    arch = model_arch(name, profile, **overrides)
    model = entry.factory(**arch)
    model.model_name = name
    model.profile = profile
    model.arch = arch
    return model
