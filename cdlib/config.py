"""Training configuration: the ``laptop`` and ``paper`` profiles.

A :class:`TrainConfig` is a frozen dataclass.  :func:`make_config` builds one from
(generic defaults) <- (the model's registered profile values) <- (user overrides),
and validates every key and value so that a typo is an error that lists the
valid choices, not a silently ignored setting.

Options that only one model understands are not fields: a model declares them when it is
registered (``register_model(..., options={"name": Option(default, type, choices)})``) and they
live in ``cfg.model_options``, which :func:`make_config` always fills with every declared option.
An override that is not a field but names an option of the model goes there
(``make_config(model, augment="deit")``, CLI ``--set augment=deit``), as do
``model_options.<name>=...`` and ``model_options={...}`` (merged over the profile's values).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from .registry import PROFILES, Option, check_profile

OPTIMIZERS = ("adam", "adamw", "sgd")

# Fields that TrainConfig no longer has, with the default they had.  A stored config (checkpoint, zoo
# manifest) that still holds one is read by :func:`upgrade_config_dict`: the value moves into
# ``model_options`` when the model declares an option of that name, is dropped when it is the old default
# (the run did not use it), and is kept otherwise (so that comparing it with a new config shows it).
RETIRED_FIELDS = {"augment": ""}


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides the model itself."""

    model: str = ""
    profile: str = "laptop"
    steps: int = 1000              # optimiser steps (not epochs: the same unit on every dataset)
    epochs: float = 0.0            # > 0: train this many epochs instead; the loop sets steps (and warmup_steps
                                   # from warmup_epochs) from the dataset size and the number of processes
    warmup_epochs: float = 0.0     # with epochs > 0: the warm-up, in epochs
    batch_size: int = 16
    lr: float = 1e-4
    aux_lr: float = 1e-3           # optimiser of the entropy bottleneck quantiles
    weight_decay: float = 0.0
    optimizer: str = "adam"        # adam | adamw | sgd
    momentum: float = 0.9          # sgd only
    nesterov: bool = False         # sgd only
    schedule: str = "cosine"       # cosine | constant
    warmup_steps: int = 0
    lmbda: float = 0.01            # rate-distortion trade-off, meaning defined by the model's loss
    loss_weights: dict = field(default_factory=dict)  # extra weights of named loss terms
    stage: str = ""                # model-specific training stage (the model's frozen_parts/loss read it)
    init_from: str = ""            # checkpoint whose weights initialise the model (e.g. stage 1 -> stage 2)
    image_size: int = 64
    num_classes: int = 10
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    amp: bool = True               # used only on CUDA
    channels_last: bool = True     # used only on CUDA
    grad_clip: float = 1.0         # 0 disables
    label_smoothing: float = 0.0
    dataset: str = "shapes"        # a registered dataset: shapes | photos | photomix | imagefolder | ...
    data_path: str = ""            # root of a user-given dataset (imagefolder/flatfolder)
    num_train: int = 4000          # ShapesWorld training images
    num_workers: int = 0
    log_every: int = 50
    ckpt_every: int = 200          # steps between resumable checkpoints (and one early, after step
                                   # min(ckpt_every, 10): cdlib.train.FIRST_CHECKPOINT_STEP)
    model_options: dict = field(default_factory=dict)  # the model's declared options (register_model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable 16-hex-digit hash of the whole config (the checkpoint-cache key)."""
        return config_hash(self.to_dict())


_CHOICES = {
    "profile": PROFILES,
    "optimizer": OPTIMIZERS,
    "schedule": ("cosine", "constant"),
}
_POSITIVE = ("steps", "batch_size", "lr", "image_size", "num_classes", "log_every", "ckpt_every", "num_train")
_NON_NEGATIVE = ("aux_lr", "weight_decay", "momentum", "warmup_steps", "lmbda", "grad_clip", "label_smoothing",
                 "num_workers", "seed", "epochs", "warmup_epochs")


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def valid_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(TrainConfig)}


def _parse_text(key: str, text: str, typ: str) -> Any:
    """``text`` as a ``typ`` ("str", "int", "float", "bool", "dict", "list")."""
    try:
        if typ == "int":
            return int(text)
        if typ == "float":
            return float(text)
        if typ == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ in ("dict", "list"):
            val = json.loads(text)
            if not isinstance(val, dict if typ == "dict" else list):
                raise ValueError(text)
            return val
    except ValueError:
        raise ValueError(f"bad value {text!r} for {key!r}: expected {typ}") from None
    return text


# ----------------------------------------------------------------------------------------------------------
# Model options
# ----------------------------------------------------------------------------------------------------------
def model_options(model: str) -> dict[str, Option]:
    """The options a registered model declares (``{}`` for ``model=""``)."""
    if not model:
        return {}
    from .registry import get_entry

    options = dict(getattr(get_entry(model), "options", {}) or {})
    clash = sorted(set(options) & set(valid_keys()))
    if clash:
        raise ValueError(f"model {model!r} declares option(s) {clash} that are TrainConfig fields; rename them")
    return options


def _options_hint(model: str, options: dict) -> str:
    if not model:
        return "no model is given, so there are no model options"
    return (f"model {model!r} has no options" if not options
            else f"options of model {model!r}: {', '.join(sorted(options))}")


def _check_option(model: str, key: str, value: Any, opt: Option) -> Any:
    """``value`` (a string is parsed) as the option's type, checked against its choices."""
    typ = opt.type.__name__
    if isinstance(value, str) and opt.type is not str:
        value = _parse_text(f"model_options.{key}", value, typ)
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, tuple) and opt.type is list:
        value = list(value)
    ok = isinstance(value, opt.type) and not (opt.type in (int, float) and isinstance(value, bool))
    if not ok:
        raise ValueError(f"bad value {value!r} for option {key!r} of model {model!r}: expected {typ}")
    if opt.choices is not None and value not in opt.choices:
        raise ValueError(f"bad value {value!r} for option {key!r} of model {model!r}; valid values: "
                         f"{', '.join(repr(c) if c == '' else str(c) for c in opt.choices)}")
    return value


def check_model_options(model: str, values: dict, *, complete: bool = True) -> dict:
    """``values`` checked against the options ``model`` declares: unknown names are a ``ValueError`` that lists
    the valid ones, strings are parsed to the declared type, choices are enforced; with ``complete``
    every declared option must be present."""
    options = model_options(model)
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for model {model!r}; "
                         f"valid options: {', '.join(sorted(options)) or '(none)'}")
    missing = sorted(set(options) - set(values)) if complete else []
    if missing:
        raise ValueError(f"model_options lacks {missing} of model {model!r}: build configs with make_config, "
                         f"which fills every declared option")
    return {k: _check_option(model, k, v, options[k]) for k, v in values.items()}


def _split_overrides(model: str, values: dict, options: dict, source: str) -> tuple[dict, dict]:
    """``(fields, options)`` of a dict of overrides: TrainConfig fields, the model's options (by name,
    ``model_options.<name>`` or a ``model_options`` dict / JSON string)."""
    names = valid_keys()
    core, opts, unknown = {}, {}, []
    for key, val in values.items():
        if key == "model_options":
            if isinstance(val, str):
                val = _parse_text(key, val, "dict")
            if not isinstance(val, dict):
                raise ValueError(f"bad value {val!r} for 'model_options': expected dict")
            opts.update(val)
        elif key.startswith("model_options."):
            opts[key[len("model_options."):]] = val
        elif key in names:
            core[key] = val
        elif key in options:
            opts[key] = val
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}{source}; valid keys: {', '.join(names)}; "
                         f"{_options_hint(model, options)}")
    return core, opts


def parse_value(key: str, text: str, model: str = "") -> Any:
    """Parse a ``--set key=value`` string to the type of the field, or of the model's option
    (``key`` an option name or ``model_options.<name>``)."""
    types = _field_types()
    if key in types:
        return _parse_text(key, text, types[key])
    options = model_options(model)
    name = key[len("model_options."):] if key.startswith("model_options.") else key
    if name in options:
        return _check_option(model, name, text, options[name])
    if key.startswith("model_options."):
        raise ValueError(f"unknown model option {name!r}; {_options_hint(model, options)}")
    raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}; "
                     f"{_options_hint(model, options)}")


# ----------------------------------------------------------------------------------------------------------
# Validation and construction
# ----------------------------------------------------------------------------------------------------------
def _registered_entry(model: str):
    if not model:
        return None
    from .registry import get_entry

    try:
        return get_entry(model)
    except KeyError:  # a config for a model that is not registered here: nothing model-specific to check
        return None


def check_image_size(size: int, multiple: int, model: str = "") -> None:
    """A ``ValueError`` naming the nearest valid sizes when ``size`` is not a multiple of ``multiple`` (the
    model's stride: a 33-px image cannot go through a stride-16 encoder and back)."""
    if multiple <= 1 or size % multiple == 0:
        return
    lower = size // multiple * multiple
    nearest = " or ".join(str(v) for v in (lower, lower + multiple) if v > 0)
    who = f"model {model!r}" if model else "the model"
    raise ValueError(f"bad value {size} for 'image_size': {who} needs a multiple of {multiple} (its stride); "
                     f"nearest valid: {nearest}")


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
    if cfg.nesterov and not cfg.momentum > 0:
        raise ValueError(f"nesterov=True needs momentum > 0, got momentum={cfg.momentum}")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"bad value {dev!r} for 'device'; valid values: auto, cpu, cuda, cuda:N")
    if cfg.dataset in ("imagefolder", "flatfolder") and not cfg.data_path:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_path (set data_path=/path/to/dataset)")
    if not isinstance(cfg.model_options, dict):
        raise ValueError(f"bad value {cfg.model_options!r} for 'model_options': expected dict")
    entry = _registered_entry(cfg.model)
    if entry is not None:
        check_image_size(cfg.image_size, int(getattr(entry, "size_multiple", 1) or 1), cfg.model)
        check_model_options(cfg.model, cfg.model_options)
        if getattr(entry, "check_config", None) is not None:
            entry.check_config(cfg)
    return cfg


def resolve_epochs(cfg: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """``cfg`` with ``steps`` and ``warmup_steps`` set from ``epochs`` and ``warmup_epochs`` (when ``epochs > 0``)
    at ``steps_per_epoch`` optimiser steps per epoch (dataset size / (batch size x processes)); else ``cfg``.
    The training loop calls it once the data and the number of processes are known."""
    if not cfg.epochs > 0:
        return cfg
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return dataclasses.replace(cfg, steps=max(1, round(cfg.epochs * steps_per_epoch)),
                               warmup_steps=round(cfg.warmup_epochs * steps_per_epoch))


def make_config(model: str = "", profile: str = "laptop", **overrides) -> TrainConfig:
    """Generic defaults <- model's profile values <- overrides, validated.

    An override of ``steps`` or ``warmup_steps`` without ``epochs`` sets ``epochs = warmup_epochs = 0``: an
    explicit step count wins over a profile that counts epochs.

    ``model_options`` holds every option the model declares: its default, the profile's value, then
    the overrides' value (strings are parsed to the declared type)."""
    check_profile(profile)
    if model:
        from .registry import canonical_name

        model = canonical_name(model)  # an alias (e.g. "dicm") makes the config of the model it names
    options = model_options(model)
    values: dict[str, Any] = {"model": model, "profile": profile}
    opts = {k: o.default for k, o in options.items()}
    if model:
        from .registry import get_entry

        core, extra = _split_overrides(model, get_entry(model).train.get(profile, {}), options,
                                       f" in the registered {profile!r} training values of model {model!r}")
        values.update(core)
        opts.update(extra)
    core, extra = _split_overrides(model, overrides, options, "")
    if ({"steps", "warmup_steps"} & set(core)) and "epochs" not in core:
        # an explicit step count wins over a profile that counts epochs
        values.update(epochs=0.0, warmup_epochs=0.0)
    values.update(core)
    opts.update(extra)
    types = _field_types()
    for key, val in list(values.items()):
        if isinstance(val, str) and types[key] != "str":
            values[key] = _parse_text(key, val, types[key])
    if not model and opts:
        raise ValueError(f"unknown model option(s) {sorted(opts)}; {_options_hint(model, options)}")
    values["model_options"] = check_model_options(model, opts) if model else {}
    return validate(TrainConfig(**values))


def upgrade_config_dict(config: dict) -> dict:
    """A config dict stored by an older cdlib (checkpoint, zoo manifest) in today's layout.

    - a field TrainConfig gained later is filled with its default (the run behaved as that default);
    - a key that is no longer a field moves into ``model_options`` when the model declares an option of
      that name (``augment`` became a model option), is dropped when it holds its old default
      (:data:`RETIRED_FIELDS`: it did nothing), and is kept otherwise, so that a comparison with a new
      config reports it;
    - an option the model declares and ``model_options`` lacks is filled with the option's default.
    """
    out = {**TrainConfig().to_dict(), **config}
    entry = _registered_entry(str(out.get("model") or ""))
    declared = dict(getattr(entry, "options", {}) or {}) if entry is not None else {}
    opts = dict(out.get("model_options") or {})
    names = set(valid_keys())
    for key in [k for k in out if k not in names]:
        if key in declared and key not in opts:
            opts[key] = out.pop(key)
        elif key in RETIRED_FIELDS and out[key] == RETIRED_FIELDS[key]:
            out.pop(key)
    for key, opt in declared.items():
        opts.setdefault(key, opt.default)
    out["model_options"] = opts
    return out


def config_from_dict(config: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a stored config dict (a checkpoint's or a zoo entry's ``config``), upgraded
    to today's layout (:func:`upgrade_config_dict`) and validated."""
    return validate(TrainConfig(**upgrade_config_dict(config)))


def resolve_device(device: str) -> "torch.device":  # noqa: F821
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)
