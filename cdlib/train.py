"""The one training loop of cdlib, used by every model.

Read :func:`train` from top to bottom; it is the whole story:

1. set up (DDP when launched by ``torchrun``, device, seeds);
2. build the optimisers (main + auxiliary for entropy models) and the LR schedule;
3. resume from ``out`` when it holds a checkpoint of the same config (or start from
   ``cfg.init_from`` weights);
4. loop over optimiser steps: ``loss = sum(weight[k] * term[k])`` from the model's
   ``loss_terms``, backward, clip, step, auxiliary step, log, checkpoint.

Reproducibility is by construction rather than by bookkeeping: the order of the
data in epoch ``e`` is a permutation seeded by ``(seed, e)``, and the random
generators are re-seeded before every step from ``(seed, rank, step)``.  So a run
that is killed and resumed from its last checkpoint ends with exactly the same
weights as a run that was never interrupted, and the same seed gives the same
numbers.

Checkpoints are plain ``torch.save`` dicts (format ``"cdlib-ckpt-1"``, described in
``docs/ARCHITECTURE.md``) written atomically: a temporary file, then ``os.replace``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig, resolve_device, validate

CKPT_FORMAT = "cdlib-ckpt-1"

# Config keys that may differ between a run and its resumption: they do not change the numbers.
RESUME_IGNORED = ("num_workers", "ckpt_every")

# Buffers of CompressAI entropy models: their size changes with ``update()``; never cast, never synced by DDP.
ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

# export_checkpoint(fp16=True) casts a float tensor to fp16 only if it has at least this many elements and
# no part of its name is one of these (entropy models and GDN parameters stay exact).
FP16_MIN_NUMEL = 256
FP16_KEEP_NAMES = ("quantiles", "_quantized_cdf", "_offset", "_cdf_length", "scale_table", "target",
                   "entropy_bottleneck", "gaussian_conditional", "matrices", "biases", "factors",
                   "gamma", "beta")


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
# Loss, schedule
# ----------------------------------------------------------------------------------------------------------
class LossModule(nn.Module):
    """``forward(batch) -> (weighted loss, terms)`` around a model's ``loss_terms``.

    DistributedDataParallel only synchronises gradients of what goes through its
    ``forward``; ``loss_terms`` is a method of the inner model, so DDP wraps this
    small adapter instead of the model itself.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, weights: dict[str, float]):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.weights = weights

    def forward(self, batch: dict):
        terms = self.model.loss_terms(batch, self.cfg)
        missing = [k for k in self.weights if k not in terms]
        if missing:
            raise ValueError(f"loss weight(s) {missing} name no loss term of {type(self.model).__name__}; "
                             f"its terms are {sorted(terms)}")
        loss = sum(self.weights[k] * terms[k] for k in self.weights)
        return loss, terms


def loss_weights(model: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """The model's default weights, overridden by ``cfg.loss_weights``."""
    weights = {**model.loss_weights(cfg), **cfg.loss_weights}
    if not weights:
        raise ValueError(f"{type(model).__name__}.loss_weights(cfg) is empty and cfg.loss_weights sets nothing")
    return weights


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step``: linear warm-up, then cosine to 0 (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def split_parameters(model: nn.Module, use_aux: bool):
    """(main, aux) trainable parameters; aux = names ending in ``.quantiles`` when ``use_aux``."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (aux if use_aux and name.endswith("quantiles") else main).append(p)
    return main, aux


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


def _is_entropy_state(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "quantiles" or last in ENTROPY_BUFFERS


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _fingerprint_state(name: str, arch: dict, state: dict) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(str(name).encode())
    h.update(json.dumps(arch, sort_keys=True, default=str).encode())
    for key, t in state.items():
        h.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def fingerprint(model: nn.Module) -> str:
    """16 hex digits identifying the exact weights (and buffers) of a model, its name and architecture.

    Bitstreams carry it so that a decoder with other weights refuses to decode.  It is a
    function of the model's *current* state: call it after ``update(force=True)``.
    """
    return _fingerprint_state(getattr(model, "model_name", type(model).__name__),
                              getattr(model, "arch", {}), model.state_dict())


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path.tmp``, flush to disk, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


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


def _init_from(model: nn.Module, path: str, verbose: bool) -> dict:
    """Load weights from another checkpoint (``strict=False``); report what did not match."""
    ckpt = read_checkpoint(path)
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


def _check_resumable(ckpt: dict, cfg: TrainConfig, name: str, arch: dict, world: int, path: Path) -> None:
    old = {k: v for k, v in ckpt["config"].items() if k not in RESUME_IGNORED}
    new = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_IGNORED}
    diff = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))
    hint = "pass resume=False (CLI: --restart) to overwrite it, or choose another output path"
    if diff:
        changes = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in diff)
        raise ValueError(f"{path} holds a run with a different training config ({changes}); {hint}")
    same_arch = json.dumps(ckpt.get("arch"), sort_keys=True, default=str) == json.dumps(arch, sort_keys=True, default=str)
    if ckpt.get("model") != name or not same_arch:
        raise ValueError(f"{path} holds model {ckpt.get('model')!r} with arch {ckpt.get('arch')}, "
                         f"not {name!r} with arch {arch}; {hint}")
    if ckpt.get("world_size", 1) != world:
        raise ValueError(f"{path} was written by a run on {ckpt.get('world_size', 1)} process(es); this run has "
                         f"{world} (the data order depends on it); {hint}")


# ----------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------
def train(model: nn.Module, cfg: TrainConfig, out: str | Path | None = None, dataset=None, resume: bool = True,
          progress: bool = True, callback: Callable[[int, dict], Any] | None = None, *,
          find_unused_parameters: bool | None = None) -> dict:
    """Train ``model`` for ``cfg.steps`` optimiser steps; checkpoint to ``out``.

    ``dataset``: items ``{"image": (3,H,W) in [0,1], "label": int64}``; default
    ``cdlib.data.build_dataset(cfg, "train")``.  ``resume``: continue from ``out`` if it
    holds a checkpoint of the same config (``False`` overwrites it).  ``callback(step, record)``
    is called after every step (``record``: this step's loss terms and lr); raising in it stops
    training (the last periodic checkpoint stays valid).  Under ``torchrun`` (``WORLD_SIZE>1``)
    the run is data-parallel: ``cfg.batch_size`` is per process, and
    ``find_unused_parameters`` (default: ``model.ddp_find_unused_parameters`` or False) goes to DDP.

    Returns ``{"step", "metrics", "history", "fingerprint", "checkpoint", "wall_seconds",
    "cpu_seconds", "resumed_from", "init_from"}``; ``metrics`` are the means of the loss terms
    over the last ``cfg.log_every`` steps, ``history`` one such record per ``log_every`` steps.
    """
    from tqdm.auto import tqdm

    validate(cfg)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    name = getattr(model, "model_name", type(model).__name__)
    profile = getattr(model, "profile", cfg.profile)
    arch = getattr(model, "arch", {})
    if cfg.model and name != cfg.model:
        warnings.warn(f"training model {name!r} with a config made for {cfg.model!r}", stacklevel=2)
    out = Path(out) if out is not None else None

    # 1. Processes, device, determinism --------------------------------------------------------------------
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:  # one GPU per process under torchrun
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world, created_group = _setup_distributed(device)
    is_main = rank == 0
    on_cuda = device.type == "cuda"
    use_amp = bool(cfg.amp and on_cuda)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    channels_last = bool(cfg.channels_last and on_cuda)
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if not on_cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)

    bar = None
    try:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()

        # 2. Optimisers and schedule -----------------------------------------------------------------------
        use_aux = callable(getattr(model, "aux_loss", None))
        main_params, aux_params = split_parameters(model, use_aux)
        if not main_params:
            raise ValueError(f"{name}: no trainable parameters")
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(main_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
        weights = loss_weights(model, cfg)

        # 3. Resume, or initialise from another checkpoint -------------------------------------------------
        step, history, log_acc, metrics, cpu_before, init_report = 0, [], {}, {}, 0.0, None
        if out is not None and out.exists() and resume:
            ckpt = read_checkpoint(out)  # on CPU: RNG states must stay CPU tensors
            _check_resumable(ckpt, cfg, name, arch, world, out)
            load_state_dict(model, ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if aux_optimizer is not None and ckpt.get("aux_optimizer"):
                aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            _set_rng_state(ckpt["rng"])
            step, history = int(ckpt["step"]), list(ckpt["history"])
            log_acc, metrics = dict(ckpt.get("log_acc") or {}), dict(ckpt.get("metrics") or {})
            cpu_before = float(ckpt.get("cpu_seconds", 0.0))
            del ckpt
        elif cfg.init_from:
            init_report = _init_from(model, cfg.init_from, verbose=is_main)
        start_step = step

        # DDP wraps the loss adapter; entropy-model quantiles/CDF buffers are kept out of it (the aux
        # optimiser's gradients are averaged by hand below).
        runner: nn.Module = LossModule(model, cfg, weights)
        if world > 1:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP

            for p in aux_params:
                dist.broadcast(p.data, src=0)
            names = [n for n, _ in [*model.named_parameters(), *model.named_buffers()]]
            ignore = [f"model.{n}" for n in names if _is_entropy_state(n)]
            DDP._set_params_and_buffers_to_ignore_for_model(runner, ignore)
            if find_unused_parameters is None:
                find_unused_parameters = bool(getattr(model, "ddp_find_unused_parameters", False))
            runner = DDP(runner, device_ids=[device.index] if on_cuda else None,
                         find_unused_parameters=find_unused_parameters)

        # 4. Data --------------------------------------------------------------------------------------------
        if dataset is None:
            from .data import build_dataset

            dataset = build_dataset(cfg, "train")
        from .augment import batch_transform, wrap_dataset

        dataset = wrap_dataset(dataset, cfg)  # cfg.augment: per-image part (colour jitter; RandAugment, erasing)
        mix = batch_transform(cfg)  # and per-batch part (mixup/cutmix), or None
        if mix is not None and getattr(dataset, "num_classes", cfg.num_classes) != cfg.num_classes:
            raise ValueError(f"augment='deit' makes {cfg.num_classes}-class soft targets (num_classes) but the "
                             f"dataset has {dataset.num_classes} classes: set num_classes={dataset.num_classes}")
        global_batch = cfg.batch_size * world
        steps_per_epoch = len(epoch_batches(len(dataset), global_batch, cfg.seed, 0))

        def save(at_step: int) -> None:
            if out is None or not is_main:
                return
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            atomic_save({
                "format": CKPT_FORMAT, "model": name, "profile": profile, "arch": arch, "config": cfg.to_dict(),
                "step": at_step, "state_dict": state, "optimizer": optimizer.state_dict(),
                "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer is not None else None,
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                "history": history, "metrics": metrics, "log_acc": log_acc, "world_size": world,
                "cpu_seconds": cpu_before + time.process_time() - t_cpu,
                "fingerprint": _fingerprint_state(name, arch, state),
            }, out)

        # 5. The loop ----------------------------------------------------------------------------------------
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
                if mix is not None:
                    batch = mix(batch)

                with torch.autocast(device.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext():
                    loss, terms = runner(batch)
                keys = ["loss", *terms]
                values = torch.stack([loss.detach().float(), *(torch.as_tensor(terms[k]).detach().float().to(device)
                                                                for k in terms)])
                if world > 1:
                    dist.all_reduce(values)
                    values /= world
                record = dict(zip(keys, values.tolist()))
                if not all(math.isfinite(v) for v in record.values()):
                    raise FloatingPointError(f"non-finite loss at step {step + 1}: terms {record}")

                record["lr"] = optimizer.param_groups[0]["lr"]  # the lr of this step
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(main_params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()

                if aux_optimizer is not None:  # fit the entropy bottleneck's quantiles
                    aux_optimizer.zero_grad(set_to_none=True)
                    aux = model.aux_loss()
                    aux.backward()
                    if world > 1:
                        for p in aux_params:
                            if p.grad is not None:
                                dist.all_reduce(p.grad)
                                p.grad /= world
                    aux_optimizer.step()
                    record["aux_loss"] = float(aux.detach())
                    if not math.isfinite(record["aux_loss"]):
                        raise FloatingPointError(f"non-finite aux loss at step {step + 1}: {record['aux_loss']}")
                step += 1

                # log: means of every term over the last log_every steps
                for k, v in record.items():
                    if k != "lr":
                        log_acc[k] = log_acc.get(k, 0.0) + v
                log_acc["_n"] = log_acc.get("_n", 0) + 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    n = log_acc.pop("_n")
                    metrics = {k: v / n for k, v in log_acc.items()}
                    history.append({"step": step, "lr": record["lr"], **metrics})
                    log_acc = {}
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
                bar.update(1)

                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    save(step)
                if callback is not None:
                    callback(step, {"step": step, **record})
        if world > 1:
            dist.barrier()
    finally:
        if bar is not None:
            bar.close()
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"step": step, "metrics": metrics, "history": history,
            "fingerprint": _fingerprint_state(name, arch, state),
            "checkpoint": str(out) if out is not None else None,
            "wall_seconds": time.perf_counter() - t_wall,
            "cpu_seconds": cpu_before + time.process_time() - t_cpu,
            "resumed_from": start_step, "init_from": init_report}


# ----------------------------------------------------------------------------------------------------------
# Loading and exporting
# ----------------------------------------------------------------------------------------------------------
def load_model(path: str | Path, map_location="cpu") -> nn.Module:
    """Rebuild a model from a cdlib checkpoint (training or exported), ready to code with.

    Sets ``model.fingerprint`` (of the loaded weights after ``update(force=True)``) and
    ``model.checkpoint_meta`` (config, step, metrics, path).  The model is in eval mode.
    """
    from .registry import create_model, get_entry

    ckpt = read_checkpoint(path, map_location=map_location)
    try:
        get_entry(ckpt["model"])
    except KeyError as exc:
        raise ValueError(f"{path}: {exc.args[0]}") from None
    model = create_model(ckpt["model"], ckpt["profile"], **ckpt["arch"])
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


def export_checkpoint(src: str | Path, dst: str | Path, fp16: bool = True) -> Path:
    """Write a serving copy of a checkpoint: no optimiser/RNG state; with ``fp16`` the large float
    weights are stored as fp16 (entropy-model parameters and buffers, GDN and integer tensors stay exact).
    ``load_model`` casts them back to fp32."""
    ckpt = read_checkpoint(src)
    state, cast = {}, []
    for key, t in ckpt["state_dict"].items():
        if fp16 and _castable(key, t):
            state[key] = t.half()
            cast.append(key)
        else:
            state[key] = t
    loaded = {k: t.float() if k in cast else t for k, t in state.items()}
    out = {k: ckpt[k] for k in ("format", "model", "profile", "arch", "config", "step")}
    out.update(state_dict=state, history=ckpt.get("history", []), metrics=ckpt.get("metrics", {}),
               cpu_seconds=ckpt.get("cpu_seconds", 0.0), world_size=ckpt.get("world_size", 1),
               fingerprint=_fingerprint_state(ckpt["model"], ckpt["arch"], loaded),
               exported={"fp16_keys": cast, "source_fingerprint": ckpt.get("fingerprint")})
    return atomic_save(out, dst)
