"""Model registry: ``create_model(name, profile="laptop"|"paper", **overrides)``.

Every model file registers itself with :func:`register_model`, giving its
architecture hyperparameters for each profile.  ``create_model`` merges the
profile with user overrides, rejects unknown keys with a message listing the
valid ones, and records what it built on the model (``model.model_name``,
``model.profile``, ``model.arch``) so checkpoints and bitstreams can check that
they match.

A registration may also declare per-model training options (:class:`Option`, stored in
``TrainConfig.model_options`` by :func:`cdlib.config.make_config`) and a ``check_config(cfg)``
hook for cross-field checks of a config made for the model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

PROFILES = ("laptop", "paper")
OPTION_TYPES = (str, int, float, bool, dict, list)


@dataclass(frozen=True)
class Option:
    """A per-model training option (a value of ``TrainConfig.model_options``).

    ``type`` defaults to the type of ``default`` (one of :data:`OPTION_TYPES`); a string given on the
    command line is parsed to it.  ``choices``, when given, are the only valid values.  A profile may
    give its own default in the registration's ``train[profile]`` values (``{"augment": "timm"}``).
    """

    default: Any
    type: type | None = None
    choices: tuple | None = None
    help: str = ""

    def __post_init__(self):
        typ = self.type if self.type is not None else type(self.default)
        if typ not in OPTION_TYPES:
            raise ValueError(f"option type {typ!r} is not supported; use one of "
                             f"{', '.join(t.__name__ for t in OPTION_TYPES)}")
        object.__setattr__(self, "type", typ)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
            if self.default not in self.choices:
                raise ValueError(f"option default {self.default!r} is not one of its choices {self.choices}")


@dataclass
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    arch: dict[str, dict[str, Any]]  # profile -> architecture kwargs
    train: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> TrainConfig overrides
    description: str = ""
    options: dict[str, Option] = field(default_factory=dict)  # name -> declared model option
    check_config: Callable[[Any], None] | None = None  # cross-field checks of a config (raises ValueError)
    size_multiple: int = 1  # training image sides must be a multiple of this (the model's total stride)
    legacy_arch: dict[str, Any] = field(default_factory=dict)  # arch keys added later -> value when absent


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # another name of a registered model (a paper's short name): alias -> name


def register_alias(alias: str, name: str) -> None:
    """``alias`` names the registered model ``name`` too (``create_model``, ``make_config``, the CLI); models
    built through it carry ``name``.  Registering an alias that is a model's name, or another model's alias,
    is an error."""
    if alias in _REGISTRY or _ALIASES.get(alias, name) != name:
        raise ValueError(f"alias {alias!r} is already the name of {_ALIASES.get(alias, alias)!r}")
    _ALIASES[alias] = name


def canonical_name(name: str) -> str:
    """The registered name behind ``name`` (itself, or the model an alias names)."""
    _ensure_loaded()
    return _ALIASES.get(name, name)


def _as_options(name: str, options: dict | None) -> dict[str, Option]:
    out = {}
    for key, opt in (options or {}).items():
        if not (isinstance(key, str) and key.isidentifier()) or key == "model_options":
            raise ValueError(f"model {name!r}: bad option name {key!r} (use a Python identifier)")
        out[key] = opt if isinstance(opt, Option) else Option(opt)
    return out


def register_model(name: str, *, arch: dict[str, dict], train: dict[str, dict] | None = None,
                   description: str = "", options: dict[str, Option | Any] | None = None,
                   check_config: Callable[[Any], None] | None = None, size_multiple: int = 1,
                   legacy_arch: dict[str, Any] | None = None):
    """Class/function decorator adding a model to the registry.

    ``arch`` maps each profile in :data:`PROFILES` to the keyword arguments of the
    factory; ``train`` maps each profile to the training-config values that differ
    from the generic defaults in :mod:`cdlib.config` (it may also set the model's options).
    ``options`` declares the model's own training options, ``{name: Option(default, type, choices)}``
    (a bare value is ``Option(value)``); ``check_config(cfg)`` raises ``ValueError`` for a config
    that the model cannot train with (it runs whenever a config for the model is validated).
    ``size_multiple``: the model's total stride; a config whose ``image_size`` is not a multiple of it
    is refused when it is made (with the nearest valid sizes), not at the first training step.
    ``legacy_arch``: architecture keys added after checkpoints were stored, each with the value that an
    arch without the key means (the behaviour before the key existed): :func:`upgrade_arch` fills them in
    when a stored arch is read, and :func:`fingerprint_arch` leaves a key at that value out of fingerprints,
    so an old checkpoint loads, matches and fingerprints as before.
    """
    missing = [p for p in PROFILES if p not in arch]
    if missing:
        raise ValueError(f"model {name!r} must define arch profiles {list(PROFILES)}; missing {missing}")
    declared = _as_options(name, options)
    if check_config is not None and not callable(check_config):
        raise ValueError(f"model {name!r}: check_config must be callable, got {type(check_config).__name__}")
    if isinstance(size_multiple, bool) or not isinstance(size_multiple, int) or size_multiple < 1:
        raise ValueError(f"model {name!r}: size_multiple must be an integer >= 1, got {size_multiple!r}")
    legacy = dict(legacy_arch or {})
    stray = sorted(k for k in legacy if any(k not in arch[p] for p in PROFILES))
    if stray:
        raise ValueError(f"model {name!r}: legacy_arch keys {stray} are not arch keys of every profile")

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, factory, arch, train or {},
                                     description or (factory.__doc__ or "").strip().split("\n")[0],
                                     declared, check_config, size_multiple, legacy)
        return factory

    return deco


def unregister_model(name: str) -> None:
    """Remove a registered model (tests register temporary models and remove them afterwards)."""
    if name not in _REGISTRY:
        raise KeyError(f"model {name!r} is not registered")
    del _REGISTRY[name]


def load_papers() -> None:
    """Import every paper package under ``cdlib/papers/`` (each registers its models, codecs and recipes).

    The core finds papers only through this registry: no core module imports a paper package by name."""
    import importlib
    import pkgutil

    papers = importlib.import_module("cdlib.papers")
    for info in pkgutil.iter_modules(papers.__path__):
        if info.ispkg:
            importlib.import_module(f"{papers.__name__}.{info.name}")


_ensure_loaded = load_papers


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    name = _ALIASES.get(name, name)
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


def upgrade_arch(name: str, arch: dict) -> dict[str, Any]:
    """A stored arch (checkpoint, zoo manifest) in today's layout: every key the model added since
    (``legacy_arch`` of its registration) is filled with the value its absence meant."""
    entry = _REGISTRY.get(name)
    if entry is None:
        try:
            entry = get_entry(name)
        except KeyError:  # not a registered model: nothing to fill in
            return dict(arch)
    return {**copy.deepcopy(entry.legacy_arch), **dict(arch)}


def fingerprint_arch(name: str, arch: dict) -> dict[str, Any]:
    """``arch`` without the keys added since checkpoints were stored that hold their legacy value (what the
    weight fingerprint hashes, so that adding an arch key changes no old model's fingerprint).  A model that is
    not registered: ``arch`` as it is."""
    entry = _REGISTRY.get(name)
    legacy = entry.legacy_arch if entry is not None else {}
    return {k: v for k, v in arch.items() if not (k in legacy and _same(v, legacy[k]))}


def _same(a, b) -> bool:
    import json

    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def create_model(name: str, profile: str = "laptop", **overrides):
    """Build a registered model at the given profile, with architecture overrides."""
    entry = get_entry(name)
    arch = model_arch(name, profile, **overrides)
    model = entry.factory(**arch)
    model.model_name = entry.name
    model.profile = profile
    model.arch = arch
    return model
