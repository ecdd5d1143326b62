"""The one training loop of cdlib, used by every model.

Read :func:`train` from top to bottom; it is the whole story:

1. set up (DDP when launched by ``torchrun``, device, seeds);
2. freeze the parts of the model that ``cfg.stage`` keeps fixed;
3. build the training data (a config that counts ``epochs`` gets its step counts here);
4. build the named optimisers and schedulers;
5. resume from ``out`` when it holds a checkpoint of the same config (or start from
   ``cfg.init_from`` weights);
6. loop over optimiser steps: one train step per batch, log, checkpoint.

A model changes what the loop does through optional hooks, never through branches of the loop.
Each has a default that is the loop's own behaviour:

``frozen_parts(cfg) -> list[str]``
    parameter-name prefixes (``"encoder"``, ``"head.norm"``) frozen in ``cfg.stage``: their parameters
    get ``requires_grad=False`` before the optimisers are built, and every norm layer with running
    statistics inside them stays in eval mode for the whole run (``model.train()`` included).  Default: none.
``configure_optimizers(cfg) -> {"optimizers": {name: Optimizer}, "schedulers": {name: scheduler}}``
    default :func:`default_optimizers`: ``"main"`` (``cfg.optimizer`` over every trainable parameter but
    entropy-model quantiles), ``"aux"`` (Adam, ``cfg.aux_lr``, the quantiles, for models with
    ``aux_loss``) and the ``"main"`` warm-up + cosine schedule.  Helpers: :func:`make_optimizer`,
    :func:`weight_decay_groups` (timm-style: no decay for biases, norms, position embeddings, cls tokens),
    :func:`warmup_cosine`.
``train_step(batch, ctx: StepContext) -> dict[str, float | Tensor]``
    one optimiser step (or several, e.g. a discriminator then a generator step); returns the numbers to
    log.  Default :meth:`StepContext.default_step`: ``loss = sum(weight[k] * term[k])`` from the model's
    ``loss_terms``/``loss_weights``, backward through the GradScaler, clip, step, schedule, aux step.
    A custom step runs its differentiable computations through ``ctx.forward(fn, *args)`` (the DDP-wrapped
    call; ``fn`` a callable or the name of a model method) and may call ``ctx.default_step(batch)`` and
    then do more (update a momentum encoder, push keys into a queue), or build its own step from
    ``ctx.optimizer_step(loss, opt)`` (backward, clip, step of one optimiser) and ``ctx.aux_step()``.
``wrap_train_dataset(dataset, cfg) -> dataset`` and ``batch_transform(cfg) -> callable | None``
    per-item and per-batch training augmentation.  Defaults: the dataset unchanged, no batch transform.

Training state (momentum encoders, queues, anything a step updates) must live in module buffers or
parameters: the checkpoint holds the model's ``state_dict`` and every named optimiser's and scheduler's
state, so a resumed run stays exact.

Reproducibility is by construction rather than by bookkeeping: the order of the
data in epoch ``e`` is a permutation seeded by ``(seed, e)``, and the random
generators are re-seeded before every step from ``(seed, rank, step)``.  So a run
that is killed and resumed from its last checkpoint ends with exactly the same
weights as a run that was never interrupted, and the same seed gives the same
numbers.  Checkpoints: :mod:`cdlib.checkpoint`.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import math
import os
import random
import shutil
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

# Re-exported: these names were defined here before cdlib.checkpoint existed (new code imports them from there).
from .checkpoint import (CKPT_FORMAT, ENTROPY_BUFFERS, FP16_KEEP_NAMES, FP16_MIN_NUMEL,  # noqa: F401
                         RESUME_IGNORED, _fingerprint_state, atomic_save, check_resumable, export_checkpoint,
                         fingerprint, is_entropy_state, load_init_weights, load_model, load_state_dict,
                         read_checkpoint, restore_training_state, training_checkpoint)
from .config import TrainConfig, check_image_size, resolve_device, resolve_epochs, validate

# A run also checkpoints after this many steps (or after ``ckpt_every``, if sooner), so that a run killed
# before its first periodic checkpoint (every 200 steps by default) still resumes.
FIRST_CHECKPOINT_STEP = 10

# Names whose parameters timm-style groups never decay (besides biases and 1-D parameters).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "mask_token", "absolute_pos_embed",
                  "relative_position_bias_table")


# ----------------------------------------------------------------------------------------------------------
# Seeds and data order
# ----------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. ``(seed, rank, step)``)."""
    digest = hashlib.blake2b("/".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation of ``range(n)`` seeded by ``(seed, epoch)``, cut into
    ``global_batch``-sized batches (a last partial batch is dropped; a dataset smaller than one batch
    is repeated).  Under DDP, rank ``r`` of ``W`` takes ``batch[r::W]`` of each batch."""
    if n <= 0:
        raise ValueError("the training dataset is empty")
    g = torch.Generator().manual_seed(mix_seed(seed, epoch))
    perm = torch.randperm(n, generator=g)
    while perm.numel() < global_batch:
        perm = torch.cat([perm, torch.randperm(n, generator=g)])
    k = perm.numel() // global_batch
    return perm[: k * global_batch].view(k, global_batch).tolist()


def collate(items: list) -> dict:
    """Stack a list of dataset items (dicts) into a batch dict; ragged fields (boxes, masks) stay lists."""
    items = [_as_item(it) for it in items]
    batch = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if all(torch.is_tensor(v) for v in vals) and len({tuple(v.shape) for v in vals}) == 1:
            batch[key] = torch.stack(vals)
        elif all(isinstance(v, (bool, int, float)) for v in vals):
            batch[key] = torch.tensor(vals)
        else:
            batch[key] = vals
    return batch


def _as_item(item) -> dict:
    if isinstance(item, dict):
        return item
    if torch.is_tensor(item):
        return {"image": item}
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return {"image": item[0], "label": torch.as_tensor(item[1])}
    raise TypeError(f"dataset items must be dicts like {{'image': tensor, 'label': int}}, got {type(item).__name__}")


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    def move(v):
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
            return v
        if isinstance(v, list):
            return [move(x) for x in v]
        return v

    return {k: move(v) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------
# Optimisers and schedules (also the helpers of a model's configure_optimizers)
# ----------------------------------------------------------------------------------------------------------
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step``: linear warm-up, then cosine to 0 (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def warmup_cosine(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The loop's schedule: :func:`lr_factor` of each step times every group's initial lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


def split_parameters(model: nn.Module, use_aux: bool):
    """(main, aux) trainable parameters; aux = names ending in ``.quantiles`` when ``use_aux``."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (aux if use_aux and name.endswith("quantiles") else main).append(p)
    return main, aux


def make_optimizer(params, cfg: TrainConfig, *, lr: float | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (adam | adamw | sgd) over ``params`` (tensors or groups; a group's own
    ``weight_decay`` wins), with ``cfg.lr`` (or ``lr``), ``cfg.weight_decay``, and for sgd ``cfg.momentum``
    and ``cfg.nesterov``."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=lr, weight_decay=cfg.weight_decay)


def weight_decay_groups(model: nn.Module, weight_decay: float, *, no_decay: tuple | list = (),
                        exclude: Callable[[str], bool] | None = None) -> list[dict]:
    """timm-style parameter groups ``[{"params": [...], "weight_decay": 0.0}, {"params": [...],
    "weight_decay": weight_decay}]`` (empty groups left out).

    Not decayed: biases, every parameter of at most one dimension (norm weights, layer scales), and
    parameters whose last name part is in :data:`NO_DECAY_NAMES` (position embeddings, cls tokens),
    matches a pattern of ``no_decay`` (fnmatch, against the full name or its last part), or is
    listed by the ``no_weight_decay()`` method of the module holding it (timm's convention).  Parameters
    that do not require grad, or whose name ``exclude(name)`` accepts (e.g. entropy quantiles), are left out.
    """
    listed = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            listed |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (exclude is not None and exclude(name)):
            continue
        last = name.rsplit(".", 1)[-1]
        exempt = (p.ndim <= 1 or name.endswith(".bias") or last in NO_DECAY_NAMES or name in listed
                  or any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(last, pat) for pat in no_decay))
        (keep if exempt else decay).append(p)
    groups = [{"params": keep, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]


def default_optimizers(model: nn.Module, cfg: TrainConfig, *, decay_groups: bool = False) -> dict:
    """What the loop builds for a model without ``configure_optimizers``: ``{"optimizers": {"main", "aux"
    (entropy models)}, "schedulers": {"main": warm-up + cosine}}``.  ``decay_groups``: the main optimiser
    gets :func:`weight_decay_groups` instead of one group (for a model's own ``configure_optimizers``)."""
    use_aux = callable(getattr(model, "aux_loss", None))
    main, aux = split_parameters(model, use_aux)
    if not main:
        raise ValueError(f"{getattr(model, 'model_name', type(model).__name__)}: no trainable parameters")
    if decay_groups:
        is_aux = (lambda n: n.endswith("quantiles")) if use_aux else None
        main = weight_decay_groups(model, cfg.weight_decay, exclude=is_aux)
    optimizers = {"main": make_optimizer(main, cfg)}
    if aux:
        optimizers["aux"] = torch.optim.Adam(aux, lr=cfg.aux_lr)
    return {"optimizers": optimizers, "schedulers": {"main": warmup_cosine(optimizers["main"], cfg)}}


def _build_optimizers(model: nn.Module, cfg: TrainConfig, name: str) -> tuple[dict, dict]:
    hook = getattr(model, "configure_optimizers", None)
    spec = hook(cfg) if callable(hook) else default_optimizers(model, cfg)
    what = f"{name}.configure_optimizers(cfg)"
    if not isinstance(spec, dict) or set(spec) - {"optimizers", "schedulers"} or not spec.get("optimizers"):
        raise ValueError(f"{what} must return {{'optimizers': {{name: optimizer, ...}}, 'schedulers': "
                         f"{{name: scheduler}}}}, got {spec!r}")
    optimizers, schedulers = dict(spec["optimizers"]), dict(spec.get("schedulers") or {})
    for key, opt in optimizers.items():
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(f"{what}: optimizer {key!r} is a {type(opt).__name__}, not a torch.optim.Optimizer")
        if any(not p.requires_grad for g in opt.param_groups for p in g["params"]):
            raise ValueError(f"{what}: optimizer {key!r} holds parameters that do not require grad "
                             f"(frozen parts of stage {cfg.stage!r}?)")
    for key, sched in schedulers.items():
        if not (callable(getattr(sched, "step", None)) and callable(getattr(sched, "state_dict", None))):
            raise ValueError(f"{what}: scheduler {key!r} has no step()/state_dict()")
    if not callable(getattr(model, "train_step", None)) and "main" not in optimizers:
        raise ValueError(f"{what} names no 'main' optimizer ({sorted(optimizers)}), which the default train "
                         f"step uses: define {name}.train_step(batch, ctx)")
    return optimizers, schedulers


# ----------------------------------------------------------------------------------------------------------
# Loss, stages
# ----------------------------------------------------------------------------------------------------------
def loss_weights(model: nn.Module, cfg: TrainConfig, required: bool = True) -> dict[str, float]:
    """The model's default weights, overridden by ``cfg.loss_weights``."""
    own = model.loss_weights(cfg) if callable(getattr(model, "loss_weights", None)) else {}
    weights = {**own, **cfg.loss_weights}
    if required and not weights:
        raise ValueError(f"{type(model).__name__}.loss_weights(cfg) is empty and cfg.loss_weights sets nothing")
    return weights


def weighted_loss(model: nn.Module, batch: dict, cfg: TrainConfig, weights: dict[str, float]):
    """``(sum(weights[k] * terms[k]), terms)`` of ``model.loss_terms(batch, cfg)``."""
    terms = model.loss_terms(batch, cfg)
    missing = [k for k in weights if k not in terms]
    if missing:
        raise ValueError(f"loss weight(s) {missing} name no loss term of {type(model).__name__}; "
                         f"its terms are {sorted(terms)}")
    loss = sum(weights[k] * terms[k] for k in weights)
    return loss, terms


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _stay_in_eval(self, mode: bool = True):
    return nn.Module.train(self, False)


class FrozenParts:
    """Freeze the parameters under some name prefixes and keep their norm layers with running statistics
    in eval mode (even across ``model.train()``); :meth:`restore` undoes both."""

    def __init__(self, model: nn.Module, prefixes: list[str] | tuple[str, ...]):
        prefixes = list(prefixes or [])
        names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_modules()]
        bad = [p for p in prefixes if not isinstance(p, str) or not p or not any(_under(n, [p]) for n in names)]
        if bad:
            parts = [n for n, _ in model.named_children()] + [n for n, _ in model.named_parameters(recurse=False)]
            raise ValueError(f"frozen part(s) {bad} name no part of {type(model).__name__}; its top-level parts "
                             f"are {parts} (give parameter-name prefixes such as 'encoder' or 'encoder.norm')")
        self.params = [(p, p.requires_grad) for n, p in model.named_parameters() if _under(n, prefixes)]
        self.norms = [m for n, m in model.named_modules() if _under(n, prefixes)
                      and any(torch.is_tensor(getattr(m, b, None)) for b in ("running_mean", "running_var"))]
        for p, _ in self.params:
            p.requires_grad_(False)
        for m in self.norms:
            m.train = types.MethodType(_stay_in_eval, m)
            nn.Module.train(m, False)

    def restore(self) -> None:
        for p, flag in self.params:
            p.requires_grad_(flag)
        for m in self.norms:
            if "train" in m.__dict__:
                del m.train
        self.params, self.norms = [], []


# ----------------------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------------------
class _Runner(nn.Module):
    """``forward(fn, *args, **kw) -> fn(*args, **kw)`` (``fn`` a callable or a method name of the model).

    DistributedDataParallel only synchronises gradients of what runs inside its ``forward``; the
    computations of a step are methods of the inner model, so DDP wraps this small adapter."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return (getattr(self.model, fn) if isinstance(fn, str) else fn)(*args, **kwargs)


@dataclass
class StepContext:
    """What a train step gets besides the batch: the model, config, named optimisers/schedulers, the AMP
    scaler, the process group, and the helpers :meth:`forward`, :meth:`autocast`, :meth:`reduce`,
    :meth:`all_gather`, :meth:`average_gradients`, :meth:`default_step`.  ``step`` counts the steps done
    before this one (the step being taken is ``step + 1``)."""

    model: nn.Module
    cfg: TrainConfig
    optimizers: dict
    schedulers: dict
    scaler: Any
    device: torch.device
    rank: int = 0
    world: int = 1
    step: int = 0
    loss_weights: dict | None = None
    amp_dtype: torch.dtype | None = None   # None: no autocast
    runner: nn.Module | None = field(default=None, repr=False)

    def forward(self, fn: Callable | str, *args, **kwargs):
        """``fn(*args, **kwargs)`` through the (DDP-wrapped) runner: gradients of what it computes are
        averaged over processes.  ``fn``: a callable, or the name of a model method."""
        return self.runner(fn, *args, **kwargs)

    def autocast(self):
        """Mixed precision for the forward computations (a no-op unless ``cfg.amp`` on CUDA)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def reduce(self, values: dict, what: str = "loss") -> dict[str, float]:
        """Scalars (tensors or numbers) averaged over processes, as floats; a non-finite one raises
        ``FloatingPointError`` (call it before stepping, so that no bad update is made)."""
        keys = list(values)
        stacked = torch.stack([torch.as_tensor(values[k]).detach().float().to(self.device) for k in keys])
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(stacked)
            stacked /= self.world
        record = dict(zip(keys, stacked.tolist()))
        if not all(math.isfinite(v) for v in record.values()):
            raise FloatingPointError(f"non-finite {what} at step {self.step + 1}: terms {record}")
        return record

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The concatenation (dim 0, in rank order) of ``tensor`` over processes (no gradient)."""
        if self.world <= 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.detach().contiguous())
        return torch.cat(parts)

    def average_gradients(self, params) -> None:
        """Average over processes the gradients of parameters outside the DDP runner (entropy quantiles)."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def optimizer_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, clip: bool = True) -> None:
        """One optimiser's step on ``loss``: zero its gradients, backward through the GradScaler, clip to
        ``cfg.grad_clip`` (``clip=False``: no clipping), step.  The caller updates the scaler and schedules
        once per training step (a step may run several optimisers, e.g. a GAN's generator and discriminator)."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip and self.cfg.grad_clip > 0:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.cfg.grad_clip)
        self.scaler.step(opt)

    def aux_step(self) -> dict[str, float]:
        """The ``aux`` optimiser (when there is one) minimises ``model.aux_loss()``, the entropy bottleneck's
        quantiles; returns ``{"aux_loss": ...}`` (empty without an ``aux`` optimiser)."""
        aux_opt = self.optimizers.get("aux")
        if aux_opt is None:
            return {}
        aux_opt.zero_grad(set_to_none=True)
        aux = self.model.aux_loss()
        aux.backward()
        self.average_gradients([p for g in aux_opt.param_groups for p in g["params"]])
        aux_opt.step()
        value = float(aux.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite aux loss at step {self.step + 1}: {value}")
        return {"aux_loss": value}

    def default_step(self, batch: dict) -> dict[str, float]:
        """``loss = sum(w[k] * terms[k])``; backward (GradScaler), clip, ``main`` step and schedule; then the
        ``aux`` optimiser minimises ``model.aux_loss()``.  Returns loss, terms and aux_loss."""
        model, cfg, opt = self.model, self.cfg, self.optimizers["main"]
        if not callable(getattr(model, "loss_terms", None)):
            raise ValueError(f"{type(model).__name__} has neither train_step(batch, ctx) nor loss_terms(batch, cfg)")
        with self.autocast():
            loss, terms = self.forward(weighted_loss, model, batch, cfg, self.loss_weights)
        record = self.reduce({"loss": loss, **terms})
        self.optimizer_step(loss, opt)
        self.scaler.update()
        if "main" in self.schedulers:
            self.schedulers["main"].step()
        record.update(self.aux_step())
        return record

    def finish(self, out: dict) -> dict[str, float]:
        """A step's returned numbers as floats (tensors averaged over processes), all finite."""
        if not isinstance(out, dict):
            raise ValueError(f"train_step must return a dict of numbers to log, got {type(out).__name__}")
        tensors = {k: v for k, v in out.items() if torch.is_tensor(v)}
        reduced = self.reduce(tensors) if tensors else {}
        record = {k: reduced[k] if k in reduced else float(v) for k, v in out.items()}
        if not all(math.isfinite(v) for v in record.values()):
            raise FloatingPointError(f"non-finite loss at step {self.step + 1}: terms {record}")
        return record


# ----------------------------------------------------------------------------------------------------------
# Distributed
# ----------------------------------------------------------------------------------------------------------
def _setup_distributed(device: torch.device):
    """(rank, world_size, we_created_the_group) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), created


def _runner(model: nn.Module, world: int, device: torch.device, find_unused_parameters: bool | None) -> nn.Module:
    """The adapter, DDP-wrapped when ``world > 1``.  Entropy-model quantiles and CDF buffers are kept out of
    DDP (their parameters start as rank 0's; the aux step averages their gradients by hand)."""
    runner = _Runner(model)
    if world <= 1:
        return runner
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    names = [n for n, _ in [*model.named_parameters(), *model.named_buffers()]]
    ignored = [n for n in names if is_entropy_state(n)]
    for n, p in model.named_parameters():
        if n in ignored:
            dist.broadcast(p.data, src=0)
    DDP._set_params_and_buffers_to_ignore_for_model(runner, [f"model.{n}" for n in ignored])
    if find_unused_parameters is None:
        find_unused_parameters = bool(getattr(model, "ddp_find_unused_parameters", False))
    return DDP(runner, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters)


def _training_data(model: nn.Module, cfg: TrainConfig, dataset, name: str):
    """(dataset, batch transform or None) after the model's data hooks."""
    if dataset is None:
        from .data import build_dataset

        dataset = build_dataset(cfg, "train")
    wrap = getattr(model, "wrap_train_dataset", None)
    if callable(wrap):
        dataset = wrap(dataset, cfg)  # per-item augmentation
    make = getattr(model, "batch_transform", None)
    transform = make(cfg) if callable(make) else None  # per-batch augmentation (mixup ...)
    if transform is not None:  # a transform that makes class targets must agree with the data's classes
        want = getattr(transform, "num_classes", cfg.num_classes)
        have = getattr(dataset, "num_classes", want)
        if want is not None and have != want:
            raise ValueError(f"the batch transform of {name} makes {want}-class targets (num_classes) but the "
                             f"dataset has {have} classes: set num_classes={have}")
    return dataset, transform


class _Log:
    """Means of every logged number over the last ``log_every`` steps (``metrics``), one record of them
    per ``log_every`` steps (``history``); ``acc`` is the running sum (checkpointed)."""

    def __init__(self, history=None, acc=None, metrics=None):
        self.history, self.acc, self.metrics = list(history or []), dict(acc or {}), dict(metrics or {})

    def add(self, step: int, record: dict, cfg: TrainConfig) -> bool:
        for k, v in record.items():
            if k != "lr":
                self.acc[k] = self.acc.get(k, 0.0) + v
        self.acc["_n"] = self.acc.get("_n", 0) + 1
        if step % cfg.log_every and step != cfg.steps:
            return False
        n = self.acc.pop("_n")
        self.metrics = {k: v / n for k, v in self.acc.items()}
        self.history.append({"step": step, "lr": record["lr"], **self.metrics})
        self.acc = {}
        return True


# ----------------------------------------------------------------------------------------------------------
# The output checkpoint: checked before the first step, saved with a clear error
# ----------------------------------------------------------------------------------------------------------
def check_output_writable(out: str | Path) -> Path:
    """Refuse, before any training, a checkpoint path that could not be written: a directory, a folder that
    cannot be created, or one where no file can be created.  Creates the folder; returns the path."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"checkpoint path {out} is a directory: give a file path such as {out / 'model.pt'}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder {parent} of checkpoint {out}: {_os_reason(exc)}") from None
    try:  # a file can be created there (permissions, read-only file system, a full disk's inodes)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"cannot write checkpoint {out}: no file can be created in {parent} "
                      f"({_os_reason(exc)})") from None
    return out


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_training_checkpoint(ckpt: dict, out: Path, step: int) -> None:
    """:func:`atomic_save` of a training checkpoint; a failed write (full disk, a vanished folder; torch's
    zip writer says ``[enforce fail at inline_container.cc] unexpected pos``) becomes one ``OSError`` that
    names the path.  The previous checkpoint at ``out``, if any, is left as it was."""
    try:
        atomic_save(ckpt, out)
    except (OSError, RuntimeError) as exc:
        text = str(exc)
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc  # atomic_write's one-line OSError
        if isinstance(cause, OSError) and cause.strerror:
            why = cause.strerror
        elif isinstance(exc, OSError) or any(w in text for w in ("inline_container", "unexpected pos", "write")):
            try:  # torch's zip writer hides the errno: say what the disk has left
                free = shutil.disk_usage(out.parent).free
                why = f"write failed with {free / 2**20:.1f} MiB free on the disk (full?)"
            except OSError:
                why = "write failed"
        else:
            why = _os_reason(exc)
        raise OSError(f"cannot save checkpoint {out} at step {step}: {why}; "
                      f"the previous checkpoint, if any, is kept") from exc


def _check_training_size(model: nn.Module, cfg: TrainConfig, name: str) -> None:
    """``cfg.image_size`` against the model's own stride (``downsampling_factor``), before any data or step:
    the registration's ``size_multiple`` is checked by :func:`cdlib.config.validate`; this catches a model
    that states its stride only on itself."""
    stride = getattr(model, "downsampling_factor", None)
    if isinstance(stride, int) and not isinstance(stride, bool) and stride > 1:
        check_image_size(cfg.image_size, stride, name)


# ----------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------
def train(model: nn.Module, cfg: TrainConfig, out: str | Path | None = None, dataset=None, resume: bool = True,
          progress: bool = True, callback: Callable[[int, dict], Any] | None = None, *,
          find_unused_parameters: bool | None = None) -> dict:
    """Train ``model`` for ``cfg.steps`` optimiser steps (or ``cfg.epochs`` epochs: then the steps, and the
    warm-up from ``cfg.warmup_epochs``, follow from the dataset size, ``cfg.batch_size`` and the number of
    processes, :func:`cdlib.config.resolve_epochs`; the model's hooks see that resolved config); checkpoint
    to ``out``.

    ``dataset``: items ``{"image": (3,H,W) in [0,1], "label": int64}``; default
    ``cdlib.data.build_dataset(cfg, "train")`` (then ``cfg.image_size`` must be a multiple of the model's
    ``downsampling_factor``).  ``resume``: continue from ``out`` if it
    holds a checkpoint of the same config (``False`` overwrites it).  ``out`` is checked before the
    first step (a folder that can hold it); checkpoints are written every ``cfg.ckpt_every`` steps, at the
    end, and once early, after step ``min(ckpt_every, FIRST_CHECKPOINT_STEP)``; a failed write is an
    ``OSError`` naming the path.  ``callback(step, record)``
    is called after every step (``record``: this step's logged numbers and lr); raising in it stops
    training (the last periodic checkpoint stays valid).  Under ``torchrun`` (``WORLD_SIZE>1``)
    the run is data-parallel: ``cfg.batch_size`` is per process, and
    ``find_unused_parameters`` (default: ``model.ddp_find_unused_parameters`` or False) goes to DDP.
    The model's hooks (module docstring) change the optimisers, the step, the frozen parts, the data.

    Returns ``{"step", "metrics", "history", "fingerprint", "checkpoint", "wall_seconds",
    "cpu_seconds", "resumed_from", "init_from"}``; ``metrics`` are the means of the logged numbers
    over the last ``cfg.log_every`` steps, ``history`` one such record per ``log_every`` steps.
    """
    from .progress import progress_bar

    tqdm = progress_bar()

    validate(cfg)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    name = getattr(model, "model_name", type(model).__name__)
    arch = getattr(model, "arch", {})
    if cfg.model and name != cfg.model:
        warnings.warn(f"training model {name!r} with a config made for {cfg.model!r}", stacklevel=2)
    out = Path(out) if out is not None else None
    if dataset is None:  # the data will be made at cfg.image_size
        _check_training_size(model, cfg, name)
    if out is not None:  # found now, not after the run
        check_output_writable(out)

    # 1. Processes, device, determinism --------------------------------------------------------------------
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:  # one GPU per process under torchrun
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world, created_group = _setup_distributed(device)
    is_main, on_cuda = rank == 0, device.type == "cuda"
    use_amp = bool(cfg.amp and on_cuda)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    channels_last = bool(cfg.channels_last and on_cuda)
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if not on_cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)

    bar, frozen = None, None
    try:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)

        # 2. The stage's frozen parts (before the optimisers see the parameters) ----------------------------
        parts = model.frozen_parts(cfg) if callable(getattr(model, "frozen_parts", None)) else []
        frozen = FrozenParts(model, parts)
        model.train()

        # 3. Data; a config that counts epochs gets its steps at this dataset size and number of processes ---
        dataset, transform = _training_data(model, cfg, dataset, name)
        global_batch = cfg.batch_size * world
        steps_per_epoch = len(epoch_batches(len(dataset), global_batch, cfg.seed, 0))
        # ``stored``: the config as given (checkpoints, resume checks); ``cfg``: with epochs resolved to steps
        stored, cfg = cfg, resolve_epochs(cfg, steps_per_epoch)

        # 4. Optimisers, schedules, the step ---------------------------------------------------------------
        optimizers, schedulers = _build_optimizers(model, cfg, name)
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
        custom_step = getattr(model, "train_step", None)
        weights = loss_weights(model, cfg, required=not callable(custom_step))

        # 5. Resume, or initialise from another checkpoint -------------------------------------------------
        state, init_report = {"step": 0, "history": [], "log_acc": {}, "metrics": {}, "cpu_seconds": 0.0}, None
        if out is not None and out.exists() and resume:
            ckpt = read_checkpoint(out)  # on CPU: RNG states must stay CPU tensors
            check_resumable(ckpt, stored, name, arch, world, out)
            state = restore_training_state(ckpt, model, optimizers, schedulers, scaler, out)
            del ckpt
        elif cfg.init_from:
            init_report = load_init_weights(model, cfg.init_from, verbose=is_main)
        step = start_step = state["step"]
        log = _Log(state["history"], state["log_acc"], state["metrics"])
        ctx = StepContext(model, cfg, optimizers, schedulers, scaler, device, rank, world, step, weights,
                          amp_dtype if use_amp else None, _runner(model, world, device, find_unused_parameters))
        step_fn = (lambda b: custom_step(b, ctx)) if callable(custom_step) else ctx.default_step
        lr_source = optimizers.get("main") or next(iter(optimizers.values()))

        def save(at_step: int) -> None:
            if out is not None and is_main:
                save_training_checkpoint(training_checkpoint(
                    model, stored, at_step, optimizers, schedulers, scaler, history=log.history, metrics=log.metrics,
                    log_acc=log.acc, world_size=world, total_steps=cfg.steps,
                    cpu_seconds=state["cpu_seconds"] + time.process_time() - t_cpu), out, at_step)

        first_save = min(cfg.ckpt_every, FIRST_CHECKPOINT_STEP)  # an early run that is killed resumes too

        # 6. The loop ----------------------------------------------------------------------------------------
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {name}", disable=not progress or not is_main,
                   dynamic_ncols=True)
        while step < cfg.steps:
            epoch, pos = divmod(step, steps_per_epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            batches = [b[rank::world] for b in epoch_batches(len(dataset), global_batch, cfg.seed, epoch)]
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=batches[pos: pos + cfg.steps - step], collate_fn=collate,
                num_workers=cfg.num_workers, pin_memory=on_cuda,
                generator=torch.Generator().manual_seed(mix_seed(cfg.seed, epoch, rank)))
            for batch in loader:
                seed_everything(mix_seed(cfg.seed, rank, step))  # the randomness of a step (noise, dropout)
                batch = _to_device(batch, device, channels_last)
                if transform is not None:
                    batch = transform(batch)
                ctx.step = step
                lr = lr_source.param_groups[0]["lr"]  # the lr of this step
                record = {**ctx.finish(step_fn(batch)), "lr": lr}
                step += 1
                if log.add(step, record, cfg):
                    bar.set_postfix({k: f"{v:.4g}" for k, v in log.metrics.items()}, refresh=False)
                bar.update(1)
                if step % cfg.ckpt_every == 0 or step == cfg.steps or step == first_save:
                    save(step)
                if callback is not None:
                    callback(step, {"step": step, **record})
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
    finally:
        if bar is not None:
            bar.close()
        if frozen is not None:
            frozen.restore()
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    model.eval()
    final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"step": step, "metrics": log.metrics, "history": log.history,
            "fingerprint": _fingerprint_state(name, arch, final),
            "checkpoint": str(out) if out is not None else None,
            "wall_seconds": time.perf_counter() - t_wall,
            "cpu_seconds": state["cpu_seconds"] + time.process_time() - t_cpu,
            "resumed_from": start_step, "init_from": init_report}
