"""The checkpoint zoo: trained weights shipped with the book, and a load-or-train cache for chapters.

``zoo/`` (at the repository root, or ``$CDLIB_ZOO``; see :func:`zoo_dir` for an installed package,
which finds the zoo of the clone it was installed from) holds ``manifest.json`` and one
exported checkpoint per entry.  Each manifest entry records how the file was made
(full training config, architecture, seed, steps, CPU minutes, the command line) and
what it reached (``metrics``), plus the file's ``sha256``: :func:`load` refuses a file
whose hash differs.

Chapters call :func:`load_or_train`: the zoo entry of the same config if there is one,
else a checkpoint cached in ``~/.cache/cdlib/ckpt/`` (or ``$CDLIB_CACHE``), else a short
training run (``budget_steps``) whose result is cached for next time.

``make checkpoints`` (``python -m cdlib zoo build``) runs :func:`build_zoo` over
:data:`ZOO_SPECS`, registered with :func:`register_spec`.

A recipe registered with ``ship=False`` (the extra seeds of an ablation: their spread is the result, their
weights would break the size budget) is trained and measured the same way, but only its record is kept: the
manifest's ``"results"`` list, read with :func:`results` (never by :func:`entries`, :func:`load` or
:func:`load_or_train`, which serve weights).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

# The zoo of a source checkout (or an editable install): ``zoo/`` next to the ``cdlib/`` package folder.
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
ZOO_ENV = "CDLIB_ZOO"
REPO_URL = "https://github.com/icm-book/icm-book"
MANIFEST_FORMAT = "cdlib-zoo-1"

# Config keys that do not define *which* model a checkpoint is (where and how fast it was trained, and
# the machine-specific path of an init_from checkpoint): ignored when matching a config to a zoo entry.
MATCH_IGNORED = ("device", "num_workers", "ckpt_every", "log_every", "amp", "channels_last", "init_from")

# Recipes of the zoo: dicts {"id", "model", "profile", "overrides", "eval_fn"}; see register_spec.
ZOO_SPECS: list[dict] = []
# name -> fn(model, cfg) -> dict of numbers (held-out bpp/psnr, accuracy...); filled by the lead.
METRIC_FNS: dict[str, Callable[..., dict]] = {}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------------------------------------
# Locations and the manifest
# ----------------------------------------------------------------------------------------------------------
def zoo_dir() -> Path:
    """Where the zoo is: ``$CDLIB_ZOO`` when set, else :data:`ZOO_DIR` in a source checkout, else (a package
    installed, not editable, from a local clone: ``pip install <clone>``) the ``zoo/`` of that clone.

    When that default finds no ``manifest.json``, one warning on stderr says so (naming ``CDLIB_ZOO``):
    chapters then train every model themselves, which on the full recipes takes hours on a CPU.
    """
    env = os.environ.get(ZOO_ENV)
    if env:
        return Path(env)
    found = ZOO_DIR
    if not (ZOO_DIR / "manifest.json").is_file() and not (ZOO_DIR.parent / "pyproject.toml").is_file():
        src = _installed_from()  # not a source checkout: an installed package
        if src is not None and (src / "zoo" / "manifest.json").is_file():
            found = src / "zoo"
    if not (found / "manifest.json").is_file():
        _warn_no_zoo(found)
    return found


@functools.lru_cache(maxsize=1)
def _installed_from() -> Path | None:
    """The local folder this copy of cdlib was pip-installed from, as pip records it (``direct_url.json``,
    PEP 610); None for an install from an index or a git URL, or when the metadata is not this copy's."""
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        dist = metadata.distribution("icm-cdlib")
        if Path(dist.locate_file("cdlib/zoo.py")).resolve() != Path(__file__).resolve():
            return None  # the metadata found first belongs to another copy of the package
        info = json.loads(dist.read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    url = info.get("url", "") if isinstance(info, dict) and "dir_info" in info else ""
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else None


_WARNED: set[str] = set()


def _warn_no_zoo(path: Path) -> None:
    if str(path) in _WARNED:
        return
    _WARNED.add(str(path))
    print(f"cdlib: no checkpoint zoo found ({path / 'manifest.json'} does not exist), so every model a chapter "
          f"needs is trained from scratch: the full recipes take hours on a CPU. Set the environment variable "
          f"{ZOO_ENV} to the zoo/ folder of a clone of the book's repository (git clone --depth 1 {REPO_URL}), "
          f"or install cdlib from such a clone (pip install <clone>).", file=sys.stderr)


def cache_dir() -> Path:
    """Where :func:`load_or_train` caches checkpoints: ``ckpt/`` in the one cache dir of cdlib
    (:func:`cdlib.paths.cache_dir`: ``$CDLIB_CACHE`` or ``~/.cache/cdlib``)."""
    from .paths import cache_dir as root

    return root("ckpt")


def manifest_path() -> Path:
    return zoo_dir() / "manifest.json"


def load_manifest() -> dict:
    """``{"format": "cdlib-zoo-1", "entries": [...]}`` (no entries when there is no manifest yet)."""
    path = manifest_path()
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "entries": []}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        raise ValueError(f"{path} is not a cdlib zoo manifest "
                         f"(expected {{'format': {MANIFEST_FORMAT!r}, 'entries': [...]}})")
    return manifest


def _write_manifest(manifest: dict) -> None:
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def entries(model: str | None = None, **filters) -> list[dict]:
    """Manifest entries, filtered by ``model`` and by entry fields (``profile``, ``id``...), training-config
    fields (``lmbda=0.0067``, ``stage="step2"``) or model options (``augment="timm"``)."""
    return _filtered(load_manifest()["entries"], model, filters)


def _filtered(manifest: list[dict], model: str | None, filters: dict) -> list[dict]:
    from .config import upgrade_config_dict, valid_keys

    options = {k for e in manifest for k in upgrade_config_dict(e.get("config", {}))["model_options"]}
    known = {"id", "model", "profile", "seed", "steps", "file"} | set(valid_keys()) | options
    unknown = sorted(set(filters) - known)
    if unknown:
        raise ValueError(f"unknown zoo filter(s) {unknown}; valid filters: {', '.join(sorted(known))}")
    out = []
    for e in manifest:
        if model is not None and e["model"] != model:
            continue
        config = upgrade_config_dict(e.get("config", {}))
        fields = {**config["model_options"], **config, **{k: e[k] for k in e if k != "config"}}
        if all(fields.get(k) == v for k, v in filters.items()):
            out.append(e)
    return out


def results(model: str | None = None, **filters) -> list[dict]:
    """The manifest's weightless records (recipes registered with ``ship=False``): what :func:`entries`
    returns for shipped weights (config, arch, seed, steps, CPU minutes, metrics), without a file.  Filtered
    like :func:`entries`."""
    return _filtered(load_manifest().get("results", []), model, filters)


def get_entry(entry_id: str) -> dict:
    for e in load_manifest()["entries"]:
        if e["id"] == entry_id:
            return e
    ids = [e["id"] for e in load_manifest()["entries"]]
    raise ValueError(f"unknown zoo entry {entry_id!r}; entries in {manifest_path()}: {', '.join(ids) or '(none)'}")


def path_of(entry_id: str) -> Path:
    return zoo_dir() / get_entry(entry_id)["file"]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(entry: dict | str) -> bool:
    """True when the entry's file exists and its sha256 matches the manifest."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    path = zoo_dir() / entry["file"]
    return path.is_file() and sha256_of(path) == entry["sha256"]


def load(entry_id: str):
    """The model of a zoo entry, after checking the file's sha256 against the manifest."""
    from .checkpoint import load_model

    entry = get_entry(entry_id)
    path = zoo_dir() / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"zoo file {path} of entry {entry_id!r} is missing (run `make checkpoints` "
                                f"or `python -m cdlib zoo build {entry_id}`)")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ValueError(f"zoo file {path} does not match the manifest (sha256 {digest[:12]}..., expected "
                         f"{entry['sha256'][:12]}...): it is corrupt or was replaced; rebuild it with "
                         f"`python -m cdlib zoo build {entry_id}`")
    model = load_model(path, base_state=_base_state(entry))
    model.checkpoint_meta["zoo_id"] = entry_id
    return model


def stored_state(entry_id: str) -> dict:
    """The complete state dict of a zoo entry as stored (fp16 where exported so; the weights it shares with
    its base filled in from the base), after checking every file's sha256."""
    from .checkpoint import fill_from_base, read_checkpoint

    entry = get_entry(entry_id)
    path = zoo_dir() / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"zoo file {path} of entry {entry_id!r} is missing (run `make checkpoints`)")
    if sha256_of(path) != entry["sha256"]:
        raise ValueError(f"zoo file {path} does not match the manifest: rebuild it with "
                         f"`python -m cdlib zoo build {entry_id}`")
    return fill_from_base(read_checkpoint(path), _base_state(entry), path)["state_dict"]


def _base_state(entry: dict) -> dict | None:
    return stored_state(entry["base"]) if entry.get("base") else None


def materialize(entry_id: str) -> Path:
    """A complete checkpoint file of a zoo entry (the weights shared with its base filled in), for
    ``init_from``: the entry's own file when it has no base, else a copy in the cache."""
    from .checkpoint import atomic_save, fill_from_base, read_checkpoint

    entry = get_entry(entry_id)
    path = zoo_dir() / entry["file"]
    if not entry.get("base"):
        return path
    out = cache_dir() / "zoo-full" / f"{entry_id}-{entry['sha256'][:12]}.pt"
    if not out.is_file():
        stored_state(entry_id)  # checks the files
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(fill_from_base(read_checkpoint(path), _base_state(entry), path), out)
    return out


# ----------------------------------------------------------------------------------------------------------
# Adding entries
# ----------------------------------------------------------------------------------------------------------
def _command_line(model: str, profile: str, config: dict, arch: dict, file: str) -> str:
    """The ``python -m cdlib train`` command that reproduces a config (only values differing from the profile)."""
    from .config import make_config
    from .registry import model_arch

    try:
        base = make_config(model, profile).to_dict()
        base_arch = model_arch(model, profile)
    except Exception:  # model not registered here: list everything
        base, base_arch = {}, {}
    parts = [f"python -m cdlib train {model} --profile {profile}"]
    for k, v in config.items():
        if k == "model_options":  # one --set per option that differs from the profile's value
            parts += [f"--set {o}={ov}" for o, ov in v.items() if base.get(k, {}).get(o, object()) != ov]
        elif k not in ("model", "profile") and base.get(k, object()) != v:
            parts.append(f"--set {k}={json.dumps(v) if isinstance(v, dict) else v}")
    for k, v in arch.items():
        if k not in base_arch or _json(base_arch[k]) != _json(v):  # lists and tuples compare as JSON
            parts.append(f"--arch {k}={json.dumps(v, default=str)}")
    return " ".join(parts + [f"-o {file}"])


class _ManifestLock:
    """Exclusive lock around a manifest read-modify-write (parallel ``zoo build`` processes)."""

    def __enter__(self):
        import fcntl

        zoo_dir().mkdir(parents=True, exist_ok=True)
        self.fh = open(zoo_dir() / ".manifest.lock", "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def add_entry(ckpt_path: str | Path, entry_id: str, metrics: dict, cpu_minutes: float, fp16: bool = True,
              created_by: str | None = None, base: str | None = None, base_prefix: str = "") -> dict:
    """Export a training checkpoint into the zoo as ``<entry_id>.pt`` and add (or replace) its manifest entry.

    ``base``: the zoo entry it was trained from; the file then stores only the weights that differ from it
    (``base_prefix``: where the base's weights sit in this model, e.g. ``"codec."``)."""
    from .checkpoint import export_checkpoint, read_checkpoint

    if not _ID.match(entry_id):
        raise ValueError(f"bad zoo entry id {entry_id!r}: use letters, digits, '_', '-', '.'")
    ckpt = read_checkpoint(ckpt_path)
    file = f"{entry_id}.pt"
    base_arg = {"id": base, "state_dict": stored_state(base), "prefix": base_prefix} if base else None
    dst = export_checkpoint(ckpt_path, zoo_dir() / file, fp16=fp16, base=base_arg)
    shares = bool(read_checkpoint(dst)["exported"].get("base_keys"))
    entry = {
        "id": entry_id, "model": ckpt["model"], "profile": ckpt["profile"], "config": ckpt["config"],
        "arch": ckpt["arch"], "seed": ckpt["config"]["seed"], "steps": ckpt["step"],
        "cpu_minutes": round(float(cpu_minutes), 2), "metrics": {k: float(v) for k, v in metrics.items()},
        "file": file, "sha256": sha256_of(dst), "bytes": dst.stat().st_size, "fp16": bool(fp16),
        **({"base": base} if shares else {}),
        "created_by": created_by or _command_line(ckpt["model"], ckpt["profile"], ckpt["config"], ckpt["arch"], file),
    }
    # plain JSON types (tuples -> lists); paths under the home directory written as ~ (no machine's name)
    entry = json.loads(json.dumps(entry, default=str).replace(json.dumps(str(Path.home()))[1:-1] + "/", "~/"))
    with _ManifestLock():
        manifest = load_manifest()
        manifest["format"] = MANIFEST_FORMAT
        ids = [e["id"] for e in manifest["entries"]]
        if entry_id in ids:
            manifest["entries"][ids.index(entry_id)] = entry
        else:
            manifest["entries"].append(entry)
        if "results" in manifest:  # a recipe now shipped: its weightless record goes
            manifest["results"] = [r for r in manifest["results"] if r["id"] != entry_id]
        _write_manifest(manifest)
    return entry


def add_result(ckpt_path: str | Path, entry_id: str, metrics: dict, cpu_minutes: float,
               created_by: str | None = None) -> dict:
    """Add (or replace) the weightless record of a trained recipe (``ship=False``) in the manifest's
    ``"results"``: the fields of an entry (:func:`add_entry`) without ``file``, ``sha256`` and ``bytes``."""
    from .checkpoint import read_checkpoint

    if not _ID.match(entry_id):
        raise ValueError(f"bad zoo entry id {entry_id!r}: use letters, digits, '_', '-', '.'")
    ckpt = read_checkpoint(ckpt_path)
    record = {
        "id": entry_id, "model": ckpt["model"], "profile": ckpt["profile"], "config": ckpt["config"],
        "arch": ckpt["arch"], "seed": ckpt["config"]["seed"], "steps": ckpt["step"],
        "cpu_minutes": round(float(cpu_minutes), 2), "metrics": {k: float(v) for k, v in metrics.items()},
        "created_by": created_by or _command_line(ckpt["model"], ckpt["profile"], ckpt["config"], ckpt["arch"],
                                                  f"{entry_id}.pt"),
    }
    record = json.loads(json.dumps(record, default=str).replace(json.dumps(str(Path.home()))[1:-1] + "/", "~/"))
    with _ManifestLock():
        manifest = load_manifest()
        manifest["format"] = MANIFEST_FORMAT
        if any(e["id"] == entry_id for e in manifest["entries"]):
            raise ValueError(f"{entry_id!r} is a zoo entry with weights; a weightless record cannot replace it")
        kept = [r for r in manifest.get("results", []) if r["id"] != entry_id]
        manifest["results"] = kept + [record]
        _write_manifest(manifest)
    return record


def _set_metrics(entry_id: str, metrics: dict, evals: list | None = None) -> None:
    with _ManifestLock():
        manifest = load_manifest()
        for e in manifest["entries"]:
            if e["id"] == entry_id:
                e["metrics"] = {k: float(v) for k, v in metrics.items()}
                if evals:
                    e["evals"] = evals
        _write_manifest(manifest)


# ----------------------------------------------------------------------------------------------------------
# Load or train (what chapters call)
# ----------------------------------------------------------------------------------------------------------
def _matching_entries(model_name: str, profile: str, cfg, full_arch: dict, prefer: str | None) -> list[dict]:
    """Zoo entries trained with ``cfg`` (up to :data:`MATCH_IGNORED`) and ``full_arch``; ``prefer`` first."""
    from .registry import upgrade_arch

    want = (_matchable(cfg.to_dict()), _json(full_arch))
    # a stored arch lacks the keys the model gained since: read it with the values their absence meant
    found = [e for e in entries(model=model_name, profile=profile)
             if (_matchable(e["config"]), _json(upgrade_arch(model_name, e["arch"]))) == want]
    # entries that differ only in what MATCH_IGNORED leaves out (e.g. analysis networks of different rate
    # points, told apart by their init_from): the caller's recipe id decides
    found.sort(key=lambda e: e["id"] != prefer)
    return found


def shipped_recipe_entry(spec: dict, profile: str, **extra) -> dict | None:
    """The zoo entry that holds recipe ``spec`` trained on ``profile`` (with config overrides ``extra``), or
    None.  ``init_from`` is not compared, so this needs no base: a shipped entry loads without its chain."""
    from .config import make_config

    if profile != spec["profile"]:
        return None
    overrides = {**spec["overrides"], **extra}
    arch = overrides.pop("arch", None)
    overrides["init_from"] = ""
    cfg = make_config(spec["model"], profile, **overrides)
    found = _matching_entries(spec["model"], profile, cfg, _default_arch(spec["model"], profile, cfg, arch),
                              spec["id"])
    return found[0] if found else None


def _json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _matchable(config: dict) -> dict:
    from .config import upgrade_config_dict

    # a stored config from an older cdlib in today's layout (fields added since: their defaults)
    full = upgrade_config_dict(config)
    return _json({k: v for k, v in full.items() if k not in MATCH_IGNORED})


def _default_arch(model_name: str, profile: str, cfg, arch: dict | None) -> dict:
    from .registry import model_arch

    arch = dict(arch or {})
    if "num_classes" in model_arch(model_name, profile) and "num_classes" not in arch:
        arch["num_classes"] = cfg.num_classes  # as `python -m cdlib train` does
    return model_arch(model_name, profile, **arch)


def load_or_train(model_name: str, profile: str = "laptop", entry_id: str | None = None,
                  budget_steps: int | None = None, *, arch: dict | None = None, progress: bool = True,
                  prefer: str | None = None, **cfg_overrides):
    """``(model, info)``: the zoo entry of this config, else the cached checkpoint, else train and cache.

    ``info["source"]`` is ``"zoo"``, ``"cache"`` or ``"trained"``.  ``budget_steps`` caps the
    training steps of a run made here (warm-up shrinks in proportion); a zoo entry of the full
    config is still preferred.  An interrupted training run resumes from the cache next time.  ``prefer``: the
    entry id to take when several zoo entries match the config (recipes that differ only in ``init_from``).
    """
    from .config import config_hash, make_config
    from .registry import create_model, upgrade_arch
    from .checkpoint import RESUME_IGNORED, load_model, read_checkpoint
    from .train import seed_everything, train

    cfg = make_config(model_name, profile, **cfg_overrides)
    full_arch = _default_arch(model_name, profile, cfg, arch)

    # 1. the zoo
    if entry_id is not None:
        entry = get_entry(entry_id)
        if entry["model"] != model_name:
            raise ValueError(f"zoo entry {entry_id!r} is a {entry['model']!r} model, not {model_name!r}")
        candidates = [entry]
    else:
        candidates = _matching_entries(model_name, profile, cfg, full_arch, prefer)
    if candidates:
        e = candidates[0]
        model = load(e["id"])
        return model, {"source": "zoo", "entry_id": e["id"], "path": str(materialize(e["id"])),
                       "config": e["config"], "steps": e["steps"], "metrics": e["metrics"],
                       "fingerprint": model.fingerprint}

    # 2. the cache, 3. train (resuming a cached, unfinished run)
    if budget_steps is not None and (cfg.epochs > 0 or budget_steps < cfg.steps):
        if budget_steps < 1:
            raise ValueError(f"budget_steps must be >= 1, got {budget_steps}")
        if cfg.epochs > 0:  # an epoch count becomes the budget, with the same share of warm-up
            warmup = round(cfg.warmup_epochs / cfg.epochs * budget_steps)
        else:
            warmup = cfg.warmup_steps * budget_steps // cfg.steps
        cfg = dataclasses.replace(cfg, steps=budget_steps, warmup_steps=warmup, epochs=0.0, warmup_epochs=0.0,
                                  ckpt_every=min(cfg.ckpt_every, budget_steps))
    key = config_hash({"model": model_name, "profile": profile, "arch": _json(full_arch),
                       "config": {k: v for k, v in cfg.to_dict().items() if k not in RESUME_IGNORED}})
    path = cache_dir() / f"{key}.pt"
    source = "trained"
    if path.is_file():
        try:
            done = read_checkpoint(path)
            if done["step"] >= done.get("total_steps", cfg.steps):  # total_steps: epochs resolved by the run
                source = "cache"
        except ValueError:  # unreadable cache file: train again
            path.unlink()
    if source == "trained":
        seed_everything(cfg.seed)
        model = create_model(model_name, profile, **full_arch)
        train(model, cfg, out=path, progress=progress)
    model = load_model(path)
    return model, {"source": source, "path": str(path), "config": cfg.to_dict(), "steps": cfg.steps,
                   "metrics": model.checkpoint_meta["metrics"], "fingerprint": model.fingerprint}


# ----------------------------------------------------------------------------------------------------------
# Building the zoo (`make checkpoints`)
# ----------------------------------------------------------------------------------------------------------
def rate_points(model: str, ids=None, **filters) -> list:
    """The zoo's checkpoints of ``model`` (entries matching ``filters``, e.g. ``stage="step2"``), loaded and
    ordered from low to high rate (by ``lmbda``): what a learned codec uses when it is given no weights.

    ``ids``: only these entries (a paper's main rate points, not its ablations, which share the filters);
    those the zoo does not hold are left out, and none at all is an error."""
    found = entries(model=model, **filters)
    if ids is not None:
        wanted = [ids] if isinstance(ids, str) else list(ids)
        found = [e for e in found if e["id"] in wanted]
    if not found:
        what = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        which = f" among {', '.join(wanted)}" if ids is not None else ""
        raise ValueError(f"codec {model!r} needs model=, checkpoint= or a zoo entry for {model!r}"
                         f"{' with ' + what if what else ''}{which} (run `make checkpoints`)")
    return sorted((load(e["id"]) for e in found), key=lambda m: m.checkpoint_meta["config"]["lmbda"])


def with_rate_points(model: str, codec_kwargs: dict, ids=None, **filters) -> dict:
    """``codec_kwargs`` for a learned codec, with the zoo's :func:`rate_points` of ``model`` as ``models=``
    when the caller gave no weights (``model=``, ``models=``, ``checkpoint=``, ``checkpoints=``).

    ``entries=[id, ...]`` (or one id) in ``codec_kwargs`` names the zoo entries to use instead (an ablation's
    rate points: ``get_codec(name, entries=["<id>_q1_last", ...])``), loaded and ordered by rate;
    without it, ``ids`` and ``filters`` select the default rate points."""
    codec_kwargs = dict(codec_kwargs)
    named = codec_kwargs.pop("entries", None)
    given = [k for k in ("model", "models", "checkpoint", "checkpoints") if codec_kwargs.get(k) is not None]
    if named is not None:
        if given:
            raise ValueError(f"codec {model!r}: give entries= or {given[0]}=, not both")
        named = [named] if isinstance(named, str) else list(named)
        if not named:
            raise ValueError(f"codec {model!r}: entries= names no zoo entry")
        for i in named:
            if get_entry(i)["model"] != model:
                raise ValueError(f"zoo entry {i!r} is a {get_entry(i)['model']!r} model; codec {model!r} needs "
                                 f"{model!r} entries")
        codec_kwargs["models"] = sorted((load(i) for i in named),
                                        key=lambda m: m.checkpoint_meta["config"]["lmbda"])
    elif not given:
        codec_kwargs["models"] = rate_points(model, ids=ids, **filters)
    return codec_kwargs


def specs() -> list[dict]:
    """Every registered recipe (the paper packages register theirs when loaded)."""
    from .registry import load_papers

    load_papers()
    return list(ZOO_SPECS)


def register_spec(entry_id: str, model: str, profile: str, overrides: dict | None = None,
                  eval_fn_name: str | None = None, other_profiles: dict | None = None, eval_every: int = 0,
                  base: str | None = None, base_prefix: str = "", ship: bool = True) -> dict:
    """Add a zoo recipe.  ``overrides``: training-config values (an ``"arch"`` key holds architecture
    overrides); ``eval_fn_name``: key of :data:`METRIC_FNS` computing the entry's metrics
    (``None``: the final training loss terms).  ``other_profiles``: the overrides that carry over when
    the same recipe runs on another profile (default: ``overrides`` without ``"steps"``, so the profile's
    own step count applies).  ``eval_every``: also measure the metrics every that many steps during
    training (recorded as the entry's ``evals``: quality against training steps).  ``base``: the entry whose
    weights this one shares (it was fine-tuned from it with parts frozen): its file stores only the rest
    (:func:`add_entry`).  ``ship=False``: the build keeps only the record (metrics, CPU minutes), not the weights
    (:func:`add_result`, read with :func:`results`)."""
    if not _ID.match(entry_id):
        raise ValueError(f"bad zoo entry id {entry_id!r}: use letters, digits, '_', '-', '.'")
    overrides = dict(overrides or {})
    if other_profiles is None:
        other_profiles = {k: v for k, v in overrides.items() if k != "steps"}
    spec = {"id": entry_id, "model": model, "profile": profile, "overrides": overrides,
            "other_profiles": dict(other_profiles), "eval_fn": eval_fn_name, "eval_every": int(eval_every),
            "base": base, "base_prefix": base_prefix, "ship": bool(ship)}
    if base and not ship:
        raise ValueError(f"recipe {entry_id!r}: a weightless record (ship=False) has no file to share a base with")
    for i, s in enumerate(ZOO_SPECS):
        if s["id"] == entry_id:
            ZOO_SPECS[i] = spec
            return spec
    ZOO_SPECS.append(spec)
    return spec


def _spec_config(spec: dict):
    from .config import make_config

    overrides = dict(spec["overrides"])
    arch = overrides.pop("arch", None)
    cfg = make_config(spec["model"], spec["profile"], **overrides)
    return cfg, _default_arch(spec["model"], spec["profile"], cfg, arch)


def _train_spec(spec: dict, workdir: str, progress: bool, threads: int | None = None) -> tuple[str, float]:
    """Train one recipe to ``workdir/<id>.pt`` (resumable); returns (path, CPU minutes)."""
    import torch

    from .registry import create_model
    from .train import seed_everything, train

    if threads:
        torch.set_num_threads(threads)
    cfg, arch = _spec_config(spec)
    if cfg.init_from.startswith("@"):  # "@<spec id>": that recipe's training checkpoint, else its zoo file
        src = cfg.init_from[1:]
        path = Path(workdir) / f"{src}.pt"
        if not path.is_file():
            try:
                path = materialize(src)
            except (KeyError, ValueError):
                raise FileNotFoundError(f"spec {spec['id']!r} starts from {src!r}, which is neither trained in "
                                        f"{workdir} nor in the zoo: build {src!r} first") from None
        cfg = dataclasses.replace(cfg, init_from=str(path))
    seed_everything(cfg.seed)
    model = create_model(spec["model"], spec["profile"], **arch)
    ckpt = Path(workdir) / f"{spec['id']}.pt"
    result = train(model, cfg, out=ckpt, progress=progress, callback=_eval_callback(spec, model, cfg, ckpt))
    return str(ckpt), result["cpu_seconds"] / 60.0


def evals_path(ckpt: str | Path) -> Path:
    """Where a training run's intermediate measurements (``eval_every``) are kept, next to its checkpoint."""
    return Path(ckpt).with_suffix(".evals.json")


def _eval_callback(spec: dict, model, cfg, ckpt: Path):
    """A ``train`` callback measuring the spec's metrics every ``eval_every`` steps into ``evals_path``.

    Kept across a resumed run (only the measurements of steps the checkpoint has reached); a measurement
    never changes training: every step reseeds its randomness, and the model is put back in train mode.
    """
    every, fn = spec.get("eval_every", 0), METRIC_FNS.get(spec["eval_fn"] or "")
    if not every or fn is None:
        return None
    import torch

    from .paths import atomic_write

    path = evals_path(ckpt)
    evals: list = []
    if ckpt.is_file() and path.is_file():
        try:
            evals = json.loads(path.read_text())
        except ValueError:  # damaged: measure again
            evals = []

    def callback(step: int, record: dict) -> None:
        if step % every or any(e["step"] == step for e in evals):
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = fn(model, cfg)
        model.train(was_training)
        evals.append({"step": step, **{k: float(v) for k, v in metrics.items()}})
        data = json.dumps(evals, indent=1).encode()
        atomic_write(path, lambda f: f.write(data))

    return callback


def build_zoo(ids: list[str] | None = None, jobs: int = 1, workdir: str | Path | None = None,
              progress: bool = True) -> list[dict]:
    """Train every spec of :data:`ZOO_SPECS` (or those in ``ids``), measure it, add it to the zoo.

    Training checkpoints go to ``workdir`` (default ``<cache>/zoo-build``), so an interrupted build
    resumes.  ``jobs > 1`` trains that many specs in parallel processes.
    """
    by_id = {s["id"]: s for s in specs()}
    unknown = [i for i in ids or [] if i not in by_id]
    if unknown:
        raise ValueError(f"unknown zoo spec(s) {unknown}; specs: {', '.join(by_id) or '(none registered)'}")
    todo = [by_id[i] for i in ids] if ids else list(by_id.values())
    for s in todo:
        if s["eval_fn"] and s["eval_fn"] not in METRIC_FNS:
            raise ValueError(f"spec {s['id']!r}: unknown metric function {s['eval_fn']!r}; "
                             f"available: {', '.join(METRIC_FNS) or '(none)'}")
    workdir = Path(workdir) if workdir is not None else cache_dir() / "zoo-build"
    workdir.mkdir(parents=True, exist_ok=True)

    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_train_spec, s, str(workdir), False, threads) for s in todo]
            trained = [f.result() for f in futures]
    else:
        trained = [_train_spec(s, str(workdir), progress) for s in todo]

    added = []
    for spec, (ckpt, cpu_minutes) in zip(todo, trained):
        t0 = time.perf_counter()
        if not spec.get("ship", True):
            added.append(_add_weightless(spec, ckpt, cpu_minutes, progress, t0))
            continue
        entry = add_entry(ckpt, spec["id"], metrics={}, cpu_minutes=cpu_minutes, base=spec.get("base"),
                          base_prefix=spec.get("base_prefix", ""))
        if spec["eval_fn"]:  # measured on the exported (served) weights
            cfg, _ = _spec_config(spec)
            metrics = METRIC_FNS[spec["eval_fn"]](load(spec["id"]), cfg)
        else:
            from .checkpoint import read_checkpoint

            metrics = read_checkpoint(ckpt)["metrics"]
        evals = json.loads(evals_path(ckpt).read_text()) if evals_path(ckpt).is_file() else None
        _set_metrics(spec["id"], metrics, evals)
        entry["metrics"] = {k: float(v) for k, v in metrics.items()}
        if evals:
            entry["evals"] = evals
        if progress:
            print(f"zoo: {spec['id']} ({entry['bytes']} bytes, {cpu_minutes:.1f} CPU min, "
                  f"eval {time.perf_counter() - t0:.0f}s) {json.dumps(entry['metrics'])}")
        added.append(entry)
    return added


def _add_weightless(spec: dict, ckpt: str, cpu_minutes: float, progress: bool, t0: float) -> dict:
    """Measure a ``ship=False`` recipe on its serving weights (exported as a shipped entry would be, to a
    temporary file) and keep its record only."""
    import tempfile

    from .checkpoint import export_checkpoint, load_model, read_checkpoint

    if spec["eval_fn"]:
        with tempfile.TemporaryDirectory() as tmp:
            served = export_checkpoint(ckpt, Path(tmp) / f"{spec['id']}.pt", fp16=True)
            cfg, _ = _spec_config(spec)
            metrics = METRIC_FNS[spec["eval_fn"]](load_model(served), cfg)
    else:
        metrics = read_checkpoint(ckpt)["metrics"]
    record = add_result(ckpt, spec["id"], metrics, cpu_minutes)
    if progress:
        print(f"zoo: {spec['id']} (record only, weights not shipped; {cpu_minutes:.1f} CPU min, "
              f"eval {time.perf_counter() - t0:.0f}s) {json.dumps(record['metrics'])}")
    return record
