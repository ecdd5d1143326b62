"""Checkpoints: the ``cdlib-ckpt-1`` format, atomic writes, fingerprints, resume, export, loading.

A checkpoint is a ``torch.save``d dict (described in ``docs/ARCHITECTURE.md``) written atomically: a
temporary file, then ``os.replace``.  A *training* checkpoint holds everything a killed run needs to
continue bit-exactly: the model's ``state_dict`` (parameters and buffers: momentum encoders, queues and
other training state live there), the state of every named optimiser and scheduler
(``"optimizers"``/``"schedulers"``, dicts by name), the AMP scaler, the random generators, the log.
Exported (zoo) files keep only the weights, optionally in fp16 (:func:`export_checkpoint`).
:func:`load_model` rebuilds a ready-to-code model from either.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig, upgrade_config_dict, valid_keys

CKPT_FORMAT = "cdlib-ckpt-1"

# Config keys that may differ between a run and its resumption: they do not change the numbers.
RESUME_IGNORED = ("num_workers", "ckpt_every")

# Buffers of CompressAI entropy models: their size changes with ``update()``; never cast, never synced by DDP.
ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
# The range coder's tables, a function of the other entropy parameters (``update()``): not exported.
DERIVED_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")

# export_checkpoint(fp16=True) casts a float tensor to fp16 only if it has at least this many elements and
# no part of its name is one of these (entropy models and GDN parameters stay exact).
FP16_MIN_NUMEL = 256
FP16_KEEP_NAMES = ("quantiles", "_quantized_cdf", "_offset", "_cdf_length", "scale_table", "target",
                   "entropy_bottleneck", "gaussian_conditional", "matrices", "biases", "factors",
                   "gamma", "beta")

_RESUME_HINT = "pass resume=False (CLI: --restart) to overwrite it, or choose another output path"


def is_entropy_state(name: str) -> bool:
    """Whether a parameter/buffer name is entropy-model state (quantiles, CDF tables)."""
    last = name.rsplit(".", 1)[-1]
    return last == "quantiles" or last in ENTROPY_BUFFERS


# ----------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def fingerprint_state(name: str, arch: dict, state: dict) -> str:
    """16 hex digits of a model name, its architecture kwargs and a state dict (keys, dtypes, shapes, bytes)."""
    from .registry import fingerprint_arch

    h = hashlib.blake2b(digest_size=8)
    h.update(str(name).encode())
    # an arch key added later, at the value its absence meant, is left out: old models keep their fingerprint
    h.update(json.dumps(fingerprint_arch(str(name), dict(arch or {})), sort_keys=True, default=str).encode())
    for key, t in state.items():
        h.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


_fingerprint_state = fingerprint_state  # the name train.py used


def fingerprint(model: nn.Module) -> str:
    """16 hex digits identifying the exact weights (and buffers) of a model, its name and architecture.

    Bitstreams carry it so that a decoder with other weights refuses to decode.  It is a
    function of the model's *current* state: call it after ``update(force=True)``.
    """
    return fingerprint_state(getattr(model, "model_name", type(model).__name__),
                             getattr(model, "arch", {}), model.state_dict())


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------
def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` into a temporary file next to ``path``, then ``os.replace`` (:func:`cdlib.paths.atomic_write`)."""
    from .paths import atomic_write

    return atomic_write(path, lambda f: torch.save(obj, f))


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a cdlib checkpoint dict (``weights_only``: no code runs), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a cdlib checkpoint (torch.load failed: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a cdlib checkpoint (expected format {CKPT_FORMAT!r}, found {found!r})")
    return ckpt


# ----------------------------------------------------------------------------------------------------------
# Random generators
# ----------------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """The states of torch's (CPU and, when initialised, CUDA), Python's and NumPy's global generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


_rng_state, _set_rng_state = rng_state, set_rng_state  # the names train.py used


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------
def load_state_dict(model: nn.Module, state: dict, strict: bool = True):
    """``model.load_state_dict`` that first resizes entropy-model buffers (``_quantized_cdf``...) whose size
    depends on whether ``update()`` was called, so any cdlib checkpoint loads into any fresh model."""
    own = dict(model.named_buffers())
    for key, value in state.items():
        buf = own.get(key)
        resizable = buf is not None and (buf.numel() == 0 or key.rsplit(".", 1)[-1] in ENTROPY_BUFFERS)
        if resizable and buf.shape != value.shape:
            buf.resize_(value.shape)
    return model.load_state_dict(state, strict=strict)


def fill_from_base(ckpt: dict, base_state: dict | None, path) -> dict:
    """``ckpt`` with the weights its export left out (equal to its base's) taken from ``base_state``."""
    exported = ckpt.get("exported") or {}
    keys = exported.get("base_keys") or []
    if not keys:
        return ckpt
    if base_state is None:
        raise ValueError(f"{path} stores only the weights that differ from zoo entry {exported.get('base')!r}: "
                         f"load it with cdlib.zoo.load (or cdlib.zoo.materialize for a complete file)")
    prefix = exported.get("base_prefix", "")
    missing = [k for k in keys if k[len(prefix):] not in base_state]
    if missing:
        raise ValueError(f"{path}: its base {exported.get('base')!r} lacks {len(missing)} of the weights it "
                         f"should provide (e.g. {missing[0][len(prefix):]!r}): the base was replaced")
    state = dict(ckpt["state_dict"])
    state.update({k: base_state[k[len(prefix):]] for k in keys})
    return {**ckpt, "state_dict": state, "exported": {**exported, "base_keys": []}}


def load_init_weights(model: nn.Module, path: str | Path, verbose: bool = True) -> dict:
    """Load weights from another checkpoint (``cfg.init_from``; ``strict=False``); report what did not match:
    ``{"path", "missing", "unexpected", "shape_mismatch"}``."""
    ckpt = fill_from_base(read_checkpoint(path), None, path)
    own = model.state_dict()
    state, mismatched = {}, []
    for key, value in ckpt["state_dict"].items():
        if key in own and own[key].shape != value.shape and key.rsplit(".", 1)[-1] not in ENTROPY_BUFFERS:
            mismatched.append(key)
            continue
        state[key] = value.to(own[key].dtype) if key in own and value.is_floating_point() else value
    result = load_state_dict(model, state, strict=False)
    report = {"path": str(path), "missing": list(result.missing_keys),
              "unexpected": list(result.unexpected_keys), "shape_mismatch": mismatched}
    if verbose and (report["missing"] or report["unexpected"] or mismatched):
        warnings.warn(f"init_from {path}: missing keys {report['missing']}, unexpected keys "
                      f"{report['unexpected']}, skipped (shape mismatch) {mismatched}", stacklevel=3)
    return report


# ----------------------------------------------------------------------------------------------------------
# Training checkpoints: write, check, restore
# ----------------------------------------------------------------------------------------------------------
def training_checkpoint(model: nn.Module, cfg: TrainConfig, step: int, optimizers: dict, schedulers: dict,
                        scaler, **extra) -> dict:
    """The dict of a resumable training checkpoint (``extra``: history, metrics, log_acc, world_size,
    cpu_seconds ...).  The RNG states are those of the moment of the call."""
    name = getattr(model, "model_name", type(model).__name__)
    arch = getattr(model, "arch", {})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": CKPT_FORMAT, "model": name, "profile": getattr(model, "profile", cfg.profile), "arch": arch,
            "config": cfg.to_dict(), "step": int(step), "state_dict": state,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(), **extra,
            "fingerprint": fingerprint_state(name, arch, state)}


def _saved_states(ckpt: dict) -> tuple[dict, dict]:
    """(optimizer states, scheduler states) by name; checkpoints written before named optimisers held
    ``optimizer``/``aux_optimizer``/``scheduler``, which are the default hooks' ``main``/``aux``/``main``."""
    if "optimizers" in ckpt:
        return dict(ckpt["optimizers"]), dict(ckpt.get("schedulers") or {})
    opts = {"main": ckpt["optimizer"]}
    if ckpt.get("aux_optimizer"):
        opts["aux"] = ckpt["aux_optimizer"]
    return opts, ({"main": ckpt["scheduler"]} if ckpt.get("scheduler") is not None else {})


def check_resumable(ckpt: dict, cfg: TrainConfig, name: str, arch: dict, world: int, path: str | Path) -> None:
    """Raise ``ValueError`` unless ``ckpt`` is a run of the same config, model, architecture and world size.

    The stored config is first brought to today's layout (:func:`cdlib.config.upgrade_config_dict`): a
    field added since is taken at its default, an old ``augment`` becomes the model option of that name
    (or, for a model without that option, must have held its old default ``""``)."""
    old = {k: v for k, v in upgrade_config_dict(ckpt["config"]).items() if k not in RESUME_IGNORED}
    new = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_IGNORED}
    diff = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if diff:
        fields = set(valid_keys())
        changes = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                            + ("" if k in fields else " (no longer a config field)") for k in diff)
        raise ValueError(f"{path} holds a run with a different training config ({changes}); {_RESUME_HINT}")
    stored = ckpt.get("arch") or {}
    if ckpt.get("model") == name:  # keys the model added since, at the value their absence meant
        from .registry import upgrade_arch

        stored = upgrade_arch(name, stored)
    same_arch = json.dumps(stored, sort_keys=True, default=str) == json.dumps(arch, sort_keys=True, default=str)
    if ckpt.get("model") != name or not same_arch:
        raise ValueError(f"{path} holds model {ckpt.get('model')!r} with arch {ckpt.get('arch')}, "
                         f"not {name!r} with arch {arch}; {_RESUME_HINT}")
    if ckpt.get("world_size", 1) != world:
        raise ValueError(f"{path} was written by a run on {ckpt.get('world_size', 1)} process(es); this run has "
                         f"{world} (the data order depends on it); {_RESUME_HINT}")


def restore_training_state(ckpt: dict, model: nn.Module, optimizers: dict, schedulers: dict, scaler,
                           path: str | Path = "the checkpoint") -> dict:
    """Load weights, optimiser/scheduler/scaler states and the RNG states of a training checkpoint; return
    ``{"step", "history", "log_acc", "metrics", "cpu_seconds"}``."""
    opt_states, sched_states = _saved_states(ckpt)
    for what, saved, built in (("optimiser", opt_states, optimizers), ("scheduler", sched_states, schedulers)):
        if set(saved) != set(built):
            raise ValueError(f"{path} holds {what}s {sorted(saved)} but this run builds {sorted(built)} "
                             f"(configure_optimizers changed?); {_RESUME_HINT}")
    load_state_dict(model, ckpt["state_dict"])
    for key, opt in optimizers.items():
        opt.load_state_dict(opt_states[key])
    for key, sched in schedulers.items():
        sched.load_state_dict(sched_states[key])
    if ckpt.get("scaler") and scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return {"step": int(ckpt["step"]), "history": list(ckpt["history"]),
            "log_acc": dict(ckpt.get("log_acc") or {}), "metrics": dict(ckpt.get("metrics") or {}),
            "cpu_seconds": float(ckpt.get("cpu_seconds", 0.0))}


# ----------------------------------------------------------------------------------------------------------
# Finite weights
# ----------------------------------------------------------------------------------------------------------
def nonfinite_tensors(state: dict, limit: int | None = None) -> list[str]:
    """``"name (k of n values are NaN/inf)"`` for each floating-point tensor of ``state`` (a state dict)
    holding a NaN or an infinity, in state-dict order; at most ``limit`` of them.  One pass, no copies
    beyond a boolean mask per tensor."""
    bad = []
    for key, t in state.items():
        if not (isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())) or not t.numel():
            continue
        finite = torch.isfinite(t.detach())
        if not bool(finite.all()):
            bad.append(f"{key} ({int(finite.numel() - finite.sum())} of {t.numel()} values are NaN/inf)")
            if limit is not None and len(bad) >= limit:
                break
    return bad


def check_finite_state(state: dict, what: str, shown: int = 3) -> None:
    """Raise ``ValueError`` naming ``what`` (a file, a model) and its first non-finite tensors, if any.

    A NaN or an infinity in a weight or buffer makes a compression model useless: its entropy coder can
    loop forever on a non-finite latent, and its decoder returns garbage.  Checked by :func:`load_model`
    and by every learned codec (``cdlib.codecs.learned.LearnedCodec``)."""
    bad = nonfinite_tensors(state, limit=shown + 1)
    if bad:
        more = ", ..." if len(bad) > shown else ""
        raise ValueError(f"{what} has non-finite weights (NaN or inf) in {', '.join(bad[:shown])}{more}: "
                         "the checkpoint is corrupt or its training diverged; use another checkpoint")


# ----------------------------------------------------------------------------------------------------------
# Loading and exporting
# ----------------------------------------------------------------------------------------------------------
def load_model(path: str | Path, map_location="cpu", expect: str | None = None,
               expected_by: str = "this caller", base_state: dict | None = None) -> nn.Module:
    """Rebuild a model from a cdlib checkpoint (training or exported), ready to code with.

    Sets ``model.fingerprint`` (of the loaded weights after ``update(force=True)``) and
    ``model.checkpoint_meta`` (config, step, metrics, path).  The model is in eval mode.

    Raises ``ValueError`` if a weight or buffer is not finite (naming the file and the first bad tensors),
    and, with ``expect`` (a registered model name), if the checkpoint holds another model (the message
    says that ``expected_by``, e.g. ``"codec 'hyperprior'"``, needs ``expect``); both are checked before
    the model is built.  ``base_state``: the state dict of the checkpoint an exported file names as its base
    (the weights it left out, :func:`export_checkpoint`); :func:`cdlib.zoo.load` passes it.
    """
    from .registry import create_model, get_entry, upgrade_arch

    ckpt = fill_from_base(read_checkpoint(path, map_location=map_location), base_state, path)
    if expect is not None and ckpt.get("model") != expect:
        raise ValueError(f"checkpoint {path} holds a {ckpt.get('model')!r} model; {expected_by} needs {expect!r}")
    try:
        get_entry(ckpt["model"])
    except KeyError as exc:
        raise ValueError(f"{path}: {exc.args[0]}") from None
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} is not a cdlib checkpoint (it has no state_dict)")
    check_finite_state(ckpt["state_dict"], f"checkpoint {path}")
    # an arch stored before the model gained a key is read with the value its absence meant
    model = create_model(ckpt["model"], ckpt["profile"], **upgrade_arch(ckpt["model"], ckpt["arch"]))
    for name in ckpt.get("exported", {}).get("dropped_modules", ()):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, None)  # trained, not served
    state = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in ckpt["state_dict"].items()}
    load_state_dict(model, state)
    model.to(map_location)
    model.eval()
    if callable(getattr(model, "update", None)):
        model.update(force=True)
    model.fingerprint = fingerprint(model)
    model.checkpoint_meta = {"config": ckpt["config"], "step": ckpt["step"], "metrics": ckpt.get("metrics", {}),
                             "path": str(path)}
    return model


def _castable(key: str, t: torch.Tensor) -> bool:
    return (t.dtype in (torch.float32, torch.float64) and t.numel() >= FP16_MIN_NUMEL
            and not any(part in FP16_KEEP_NAMES for part in key.split("."))
            and bool(t.abs().max() < 6e4))


def serving_drops(model_name: str) -> tuple[str, ...]:
    """Submodules a model needs only to train (its class attribute ``serving_drop``, e.g. a GAN's
    discriminator): :func:`export_checkpoint` leaves them out and :func:`load_model` removes them."""
    from .registry import get_entry

    try:
        return tuple(getattr(get_entry(model_name).factory, "serving_drop", ()))
    except KeyError:
        return ()


def _under(key: str, modules) -> bool:
    return any(key == m or key.startswith(m + ".") for m in modules)


def export_checkpoint(src: str | Path, dst: str | Path, fp16: bool = True, base: dict | None = None) -> Path:
    """Write a serving copy of a checkpoint: no optimiser/RNG state, no range-coder tables (rebuilt on load),
    no training-only submodules (:func:`serving_drops`); with ``fp16`` the large float weights are stored as
    fp16 (entropy-model parameters and buffers, GDN and integer tensors stay exact).  ``load_model`` casts
    them back to fp32.

    ``base``: ``{"id", "state_dict", "prefix"}`` of another exported checkpoint (a zoo entry) that this one was
    trained from: the tensors equal to the base's (``prefix`` + its key: a codec inside an analysis model) are
    left out and listed, so rate points fine-tuned from one base store only what differs.  Such a file loads
    through :func:`cdlib.zoo.load`, which fills them in from the base."""
    ckpt = read_checkpoint(src)
    drops = serving_drops(ckpt["model"])
    state, cast, from_base = {}, [], []
    base_state, prefix = (base or {}).get("state_dict", {}), (base or {}).get("prefix", "")
    for key, t in ckpt["state_dict"].items():
        if _under(key, drops):
            continue
        if key.rsplit(".", 1)[-1] in DERIVED_TABLES:
            # rebuilt by update(force=True) whenever a checkpoint loads: storing them costs bytes (800 kB for a
            # Gaussian conditional) and depends on whether the run happened to call update()
            t = t.new_empty(0)
        elif fp16 and _castable(key, t):
            t = t.half()
            cast.append(key)
        b = base_state.get(key[len(prefix):]) if key.startswith(prefix) else None
        if b is not None and b.dtype == t.dtype and b.shape == t.shape and torch.equal(b, t):
            from_base.append(key)
        else:
            state[key] = t
    if from_base and base is not None:
        full = {**state, **{k: base_state[k[len(prefix):]] for k in from_base}}
    else:
        full = state
    loaded = {k: t.float() if k in cast else t for k, t in full.items()}
    out = {k: ckpt[k] for k in ("format", "model", "profile", "arch", "config", "step")}
    out.update(state_dict=state, history=ckpt.get("history", []), metrics=ckpt.get("metrics", {}),
               cpu_seconds=ckpt.get("cpu_seconds", 0.0), world_size=ckpt.get("world_size", 1),
               fingerprint=fingerprint_state(ckpt["model"], ckpt["arch"], loaded),
               exported={"fp16_keys": cast, "source_fingerprint": ckpt.get("fingerprint"),
                         "dropped_modules": list(drops), "base": (base or {}).get("id") if from_base else None,
                         "base_prefix": prefix if from_base else "", "base_keys": from_base})
    return atomic_save(out, dst)
