"""``python -m cdlib``: train, compress, decompress, analyze, eval, bench, zoo, exercises.

Errors caused by the user's input are printed as one line on stderr with a
non-zero exit status (set ``CDLIB_DEBUG=1`` to see the traceback).

Outputs (``-o``) are never an input of the same command (compared as files: another path or a
symlink to the input is the input), never an existing file unless ``--force`` (``train`` resumes the
training checkpoint it finds there: that is not an overwrite), never an existing folder (give a file
path; ``analyze -o`` alone names a folder, where it writes ``<stream stem>.json``; ``analyze --json FILE`` and
``--parsing-png FILE`` / ``--masks-png FILE`` name files).  They are written
to a temporary file in the same folder and moved into place, so a failure leaves neither a partial
output nor a temporary file.  ``decompress`` writes the image format of the output's extension; a codec
without a pixel decoder (tang2025: its stream decodes to features) writes the feature tensor instead, to a
``.pt`` (torch) or ``.npy`` (NumPy) file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable

from .paths import atomic_write

# decompress: output extension -> (Pillow format, save arguments).  JPEG is lossy (quality 95, no chroma
# subsampling); WebP is written lossless, so that it holds the decoded pixels exactly, as PNG, BMP, TIFF, PPM.
IMAGE_OUTPUTS = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".jpeg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".webp": ("WEBP", {"lossless": True}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
    ".ppm": ("PPM", {}),
}
# decompress of a feature codec (no pixel decoder): the decoded tensor, as torch or NumPy
FEATURE_OUTPUTS = (".pt", ".npy")


class UserError(Exception):
    """A problem with the command line or its inputs, reported in one line."""


def _parse_sets(pairs: list[str], option: str = "--set") -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p or not p.split("=", 1)[0].strip():
            raise UserError(f"{option} expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# ------------------------------------------------------------------------------------------------------------
# Typed values: architecture options, qualities
# ------------------------------------------------------------------------------------------------------------
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _arch_value(model: str, profile: str, key: str, text: str, default):
    """``--arch key=text`` as the type of the profile's value ``default``."""
    def bad(expected: str):
        return UserError(f"bad value {text!r} for --arch {key} of model {model!r}: expected {expected} "
                         f"(the {profile!r} profile has {default!r})")

    if isinstance(default, bool):
        if text.lower() not in _BOOLS:
            raise bad("true or false")
        return _BOOLS[text.lower()]
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if isinstance(default, str):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        if isinstance(default, dict):
            raise bad('a JSON object such as {"key": 1}') from None
        return text  # a name that the model checks itself (agg_blocks="last"), or a string option
    if isinstance(default, (list, tuple)) and isinstance(value, list):
        return tuple(value) if isinstance(default, tuple) else value
    if isinstance(default, dict) and not isinstance(value, dict):
        raise bad('a JSON object such as {"key": 1}')
    if default is None and isinstance(value, list):
        return tuple(value)
    return value


def _parse_arch(model: str, profile: str, pairs: list[str]) -> dict:
    from .registry import model_arch

    raw = _parse_sets(pairs, "--arch")
    defaults = model_arch(model, profile)
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise UserError(f"unknown --arch key(s) {unknown} for model {model!r}; "
                        f"valid keys: {', '.join(sorted(defaults))}")
    return {k: _arch_value(model, profile, k, v, defaults[k]) for k, v in raw.items()}


def _parse_number(text: str, option: str = "--quality"):
    """A quality given on the command line: an int when it is written as one, else a float."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{option} expects a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{option} expects a finite number, got {text!r}")
    return value


def _check_quality(codec, quality, option: str = "--quality"):
    """A learned codec's quality is a rate-point index: an integer in ``0..N-1``, never truncated."""
    from .codecs.learned import LearnedCodec

    if quality is None or not isinstance(codec, LearnedCodec):
        return quality  # a classical codec checks its own range (and says it)
    n = len(codec.qualities)
    if float(quality).is_integer() and 0 <= quality < n:
        return int(quality)
    names = [(getattr(m, "checkpoint_meta", None) or {}).get("zoo_id") for m in getattr(codec, "models", [])]
    which = f": {', '.join(f'{i} = {z}' for i, z in enumerate(names))}" if names and all(names) else ""
    raise UserError(f"{option} {quality}: codec {codec.name!r} expects a rate-point index, an integer in "
                    f"0..{n - 1} (0 = lowest rate){which}")


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
def _same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` are the same file (another spelling, a symlink, a hard link)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # an unreadable path or a symlink loop: compare the spellings
        return os.path.abspath(a) == os.path.abspath(b)


def _check_output(path_arg, inputs: Iterable = (), force: bool = False, example: str = "out") -> Path:
    """The output path, refused (before any work) when it is one of ``inputs``, a folder, an existing file
    without ``force``, under something that is not a folder, or in a folder that is not writable."""
    out = Path(path_arg)
    if not str(path_arg).strip():
        raise UserError("-o needs a file path, got an empty string")
    for src in inputs:
        if src and _same_file(out, src):
            raise UserError(f"-o {path_arg} is the input {src}: refusing to overwrite an input; choose another "
                            f"output path")
    if out.is_dir():
        raise UserError(f"-o {path_arg} is a folder: give a file path, e.g. {out / example}")
    if (out.exists() or out.is_symlink()) and not force:
        raise UserError(f"-o {path_arg} exists: pass --force to overwrite it, or choose another output path")
    for parent in out.absolute().parents:  # the nearest existing folder: found now, not after the work
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UserError(f"cannot write {path_arg}: {parent} is not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {path_arg}: the folder {parent} is not writable")
            break
    return out


def _image_format(path: Path) -> tuple[str, dict]:
    fmt = IMAGE_OUTPUTS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"-o {path}: cannot tell the image format from {path.suffix or 'no extension'!r}; "
                        f"expected one of {', '.join(IMAGE_OUTPUTS)}")
    return fmt


def _training_checkpoint_at(path: Path) -> bool:
    """Whether ``path`` holds a resumable cdlib training checkpoint (not a zoo export, not another file)."""
    from .checkpoint import read_checkpoint

    try:
        ckpt = read_checkpoint(path)
    except (ValueError, OSError):
        return False
    return "optimizers" in ckpt or "optimizer" in ckpt


def cmd_train(a) -> int:
    from .config import make_config
    from .registry import create_model, get_entry
    from .train import seed_everything, train

    overrides = _parse_sets(a.set)
    cfg = make_config(a.model, a.profile, **overrides)
    arch = _parse_arch(a.model, a.profile, a.arch)
    if "num_classes" in get_entry(a.model).arch[a.profile] and "num_classes" not in arch:
        arch["num_classes"] = cfg.num_classes
    # The output: an existing training checkpoint there is resumed (or, with --restart, replaced); any other
    # existing file is refused unless --force.  train() itself checks, before the first step, that it can write.
    out = Path(a.output)
    resume = not a.restart
    inputs = [cfg.init_from] if cfg.init_from else []
    if (out.exists() or out.is_symlink()) and not out.is_dir() and not any(_same_file(out, i) for i in inputs):
        if not _training_checkpoint_at(out):
            if not a.force:
                raise UserError(f"-o {a.output} exists and is not a cdlib training checkpoint (training would "
                                f"overwrite it): pass --force to overwrite it, or choose another path")
            resume = False
    else:
        _check_output(out, inputs, force=True, example="model.pt")
    seed_everything(cfg.seed)  # same seed, same initial weights
    try:
        model = create_model(a.model, a.profile, **arch)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        given = ", ".join(f"{k}={v!r}" for k, v in arch.items())
        raise UserError(f"cannot build model {a.model!r} ({a.profile}) with {given or 'its profile'}: "
                        f"{first}") from None
    result = train(model, cfg, out=out, resume=resume, progress=not a.quiet)
    final = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps({"checkpoint": str(a.output), **final}, default=str))
    return 0


def _takes_checkpoints(factory) -> bool:
    """Whether a registered codec factory accepts ``checkpoints=`` (the learned codecs)."""
    import inspect

    from .codecs.base import Codec
    from .codecs.learned import LearnedCodec

    if isinstance(factory, type) and issubclass(factory, Codec):
        return issubclass(factory, LearnedCodec)
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD or p.name == "checkpoints" for p in params)


def _codec_for(name: str, checkpoints: list[str] | None):
    from .codecs import get_codec, list_codecs
    from .codecs.base import _CODECS

    kw = {}
    if checkpoints:
        names = list_codecs()
        if name in _CODECS and not _takes_checkpoints(_CODECS[name]):
            learned = [n for n in names if _takes_checkpoints(_CODECS[n])]
            raise UserError(f"codec {name!r} is a classical codec and takes no --checkpoint (only learned codecs "
                            f"do: {', '.join(learned)})")
        for c in checkpoints:
            if not Path(c).is_file():
                raise UserError(f"checkpoint not found: {c}")
        kw["checkpoints"] = checkpoints
    return get_codec(name, **kw)


def _read_stream(path_arg: str) -> tuple[Path, bytes, str]:
    """The stream file, its bytes and the name of the codec that made it (every codec registered first,
    so that its stream tag is known)."""
    from .bitstream import peek_codec
    from .codecs import list_codecs

    path = Path(path_arg)
    if not path.is_file():
        raise UserError(f"input stream not found: {path_arg}")
    data = path.read_bytes()
    list_codecs()  # registers the classical codecs and the papers' learned ones
    return path, data, peek_codec(data)


def cmd_compress(a) -> int:
    from .data import load_image

    if not Path(a.image).is_file():
        raise UserError(f"input image not found: {a.image}")
    out = _check_output(a.output, [a.image, *(a.checkpoint or [])], a.force, example=f"{Path(a.image).stem}.icm")
    if out.suffix.lower() in IMAGE_OUTPUTS:
        raise UserError(f"-o {a.output}: compress writes a cdlib stream, not a {out.suffix} image; name it "
                        f"{out.with_suffix('.icm').name}")
    quality = None if a.quality is None else _parse_number(a.quality)
    img, note = load_image(a.image, return_note=True)
    codec = _codec_for(a.codec, a.checkpoint)
    data = codec.encode(img, _check_quality(codec, quality))
    atomic_write(out, lambda f: f.write(data))
    h, w = img.shape[:2]
    if note:
        print(f"note: {note}", file=sys.stderr)
    from .bitstream import bpp

    print(f"{a.output}: {len(data)} bytes, {bpp(data, h, w):.4f} bpp ({w}x{h}, codec {codec.name})")
    return 0


def cmd_decompress(a) -> int:
    from PIL import Image

    if not Path(a.input).is_file():
        raise UserError(f"input stream not found: {a.input}")
    out = _check_output(a.output, [a.input, *(a.checkpoint or [])], a.force, example=f"{Path(a.input).stem}.png")
    _, data, name = _read_stream(a.input)
    codec = _codec_for(name, a.checkpoint)
    if not getattr(codec, "decodes_pixels", True):
        return _decompress_features(codec, data, out, a.output, name)
    fmt, save_args = _image_format(out)
    img = codec.decode(data)
    atomic_write(out, lambda f: Image.fromarray(img).save(f, format=fmt, **save_args))
    print(f"{a.output}: {img.shape[1]}x{img.shape[0]} decoded with {name} ({fmt})")
    return 0


def _decompress_features(codec, data: bytes, out: Path, arg: str, name: str) -> int:
    """A feature codec's decoded tensor to ``out`` (.pt: torch.save; .npy: NumPy)."""
    import numpy as np
    import torch

    if out.suffix.lower() not in FEATURE_OUTPUTS:
        raise UserError(f"-o {arg}: codec {name!r} has no pixel decoder (its stream decodes to features); name a "
                        f"{' or '.join(FEATURE_OUTPUTS)} file for the decoded feature tensor, e.g. "
                        f"{out.with_suffix('.pt').name}")
    feats = codec.decode(data).cpu()
    if out.suffix.lower() == ".pt":
        atomic_write(out, lambda f: torch.save(feats, f))
    else:
        atomic_write(out, lambda f: np.save(f, feats.numpy()))
    print(f"{arg}: features {'x'.join(map(str, feats.shape))} decoded with {name} (no pixel decoder: "
          f"the stream holds features)")
    return 0


def cmd_analyze(a) -> int:
    """Analyse a stream with its codec's own analysis head (no pixel decoding); print the result as JSON.

    What is analysed and how it reads is the codec's (:meth:`~cdlib.codecs.base.Codec.describe_analysis`):
    by default its first task (one that has several, e.g. face parsing, attributes and landmarks, may
    describe them all).  ``--parsing-png`` writes the parsing map of a codec that has one as an indexed PNG
    (pixel value = label index, with a colour palette)."""
    from PIL import Image

    from . import eval as ev
    from .bitstream import unpack

    path, data, name = _read_stream(a.input)
    inputs = [a.input, *(a.checkpoint or [])]
    outputs: list[Path] = []

    def output(arg, example):
        out = _check_output(arg, inputs, a.force, example=example)
        if any(_same_file(out, o) for o in outputs):
            raise UserError(f"{arg} is named twice as an output of analyze: give each output its own path")
        outputs.append(out)
        return out

    target = json_out = png_out = masks_out = None
    if a.output:  # a folder: OUTDIR/<stream stem>.json
        if Path(a.output).exists() and not Path(a.output).is_dir():
            raise UserError(f"-o {a.output} is a file: analyze -o names a folder, where it writes "
                            f"{path.stem}.json (--json FILE names a file)")
        target = output(Path(a.output) / f"{path.stem}.json", f"{path.stem}.json")
    if a.json:
        json_out = output(a.json, f"{path.stem}.json")
    if a.parsing_png:
        png_out = output(a.parsing_png, f"{path.stem}_parsing.png")
        if png_out.suffix.lower() != ".png":
            raise UserError(f"--parsing-png {a.parsing_png}: the parsing map is written as PNG; name it "
                            f"{png_out.with_suffix('.png').name}")
    if getattr(a, "masks_png", None):
        masks_out = output(a.masks_png, f"{path.stem}_masks.png")
        if masks_out.suffix.lower() != ".png":
            raise UserError(f"--masks-png {a.masks_png}: the instance masks are written as PNG; name it "
                            f"{masks_out.with_suffix('.png').name}")
    codec = _codec_for(name, a.checkpoint)
    tasks = [t.strip() for t in a.task.split(",") if t.strip()] if a.task else None
    if a.task is not None and not tasks:
        raise UserError("--task needs a task name (or several, comma-separated)")
    wanted = (["parsing"] if png_out else []) + (["masks"] if masks_out else [])
    summary, maps = codec.describe_analysis(data, tasks, images=wanted)
    header, _ = unpack(data)
    result = {"stream": str(path), "codec": codec.name, "quality": header.quality, "height": header.height,
              "width": header.width, **summary}
    if png_out is not None:
        img = maps["parsing"]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(img)
        atomic_write(png_out, lambda f: img.save(f, format="PNG"))
        result["parsing_png"] = str(a.parsing_png)
    if masks_out is not None:
        img = maps["masks"]
        atomic_write(masks_out, lambda f: img.save(f, format="PNG"))
        result["masks_png"] = str(a.masks_png)
    for out in (target, json_out):
        if out is not None:
            ev.save_json(result, out)
    print(ev.dumps_json(result))
    return 0


def cmd_eval(a) -> int:
    from . import eval as ev
    from .data import FlatFolderDataset, NaturalPhotos, ShapesWorld

    for opt, value, low in (("--limit", a.limit, 0), ("--image-size", a.image_size, 1),
                            ("--max-side", a.max_side, 1)):
        if value is not None and value < low:
            raise UserError(f"{opt} expects an integer >= {low}, got {value}")
    inputs = [*(a.checkpoint or []), a.classifier]
    out = _check_output(a.output, inputs, a.force, example=f"{a.codec}.json")
    if a.data and not Path(a.data).is_dir():
        raise UserError(f"--data expects a folder of images, got {a.data}")
    qualities = None
    if a.qualities:
        qualities = [_parse_number(q, "--qualities") for q in a.qualities.split(",")]
    codec = _codec_for(a.codec, a.checkpoint)
    if qualities is not None:
        qualities = [_check_quality(codec, q, "--qualities") for q in qualities]
    if a.task == "rd":
        if a.data:
            ds = FlatFolderDataset(a.data)
            images = [ds.load(i) for i in range(len(ds))][: a.limit or None]
        else:
            images = NaturalPhotos.test_images(max_side=a.max_side)[: a.limit or None]
        df = ev.rd_curve(codec, images, qualities)
    else:
        from .checkpoint import load_model

        if a.classifier:  # decode, then classify the pixels
            pipeline = ev.DecodeThenAnalyse(codec, load_model(a.classifier).eval())
        elif "classification" in codec.tasks:  # the codec classifies its own streams
            pipeline = ev.DecodeFree(codec)
        else:
            raise UserError(f"--task accuracy needs --classifier CKPT (a pixel_classifier checkpoint): codec "
                            f"{codec.name!r} cannot classify its streams by itself")
        ds = ShapesWorld("test", n=a.limit or 1000, image_size=a.image_size)
        df = ev.task_curve(pipeline, ds.images, ds.labels, "classification", qualities)
    ev.save_json({"codec": codec.name, "task": a.task, "curve": df}, out)
    print(df.to_string(index=False))
    print(f"wrote {a.output}")
    return 0


def cmd_bench(a) -> int:
    from .bench import run_bench

    run_bench(out=a.output, quick=a.quick)
    return 0


def cmd_zoo(a) -> int:
    from . import zoo

    if a.action == "list":
        for e in _manifest_entries(zoo, ("id", "model", "profile", "steps", "cpu_minutes", "metrics")):
            print(f"{e['id']:28s} {e['model']:12s} {e['profile']:7s} steps={e['steps']:<6} "
                  f"cpu_min={e['cpu_minutes']:.1f} {json.dumps(e['metrics'])}")
        for r in zoo.results():  # trained and measured, weights not shipped (ship=False recipes)
            print(f"{r['id']:28s} {r['model']:12s} {r['profile']:7s} steps={r['steps']:<6} "
                  f"cpu_min={r['cpu_minutes']:.1f} {json.dumps(r['metrics'])} (record only, no weights)")
    elif a.action == "verify":
        bad = [e["id"] for e in _manifest_entries(zoo, ("id", "file", "sha256")) if not zoo.verify(e)]
        if bad:
            raise UserError(f"hash mismatch or missing file for: {', '.join(bad)}")
        print("all zoo files match the manifest")
    elif a.action == "build":
        zoo.build_zoo(ids=a.ids or None)
    return 0


def cmd_exercises(a) -> int:
    from .exercises import all_exercises, init_solutions

    if a.action == "list":
        for e in all_exercises():
            print(f"Exercise {e.number:5s} {e.chapter}  {e.name}")
        return 0
    if not a.folder:
        raise UserError("exercises init needs the folder for the chNN.py stubs, e.g. solutions/")
    for path in init_solutions(a.folder, a.book, force=a.force):
        print(f"wrote {path}")
    print(f"grade them with: make grade CDLIB_SOLUTIONS={a.folder}")
    return 0


def _manifest_entries(zoo, required: tuple[str, ...]) -> list[dict]:
    """The manifest's entries, each checked for the keys this command reads (one line naming the entry and
    what it lacks, not a bare ``KeyError``)."""
    entries = zoo.load_manifest()["entries"]
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise UserError(f"{zoo.manifest_path()}: entry {i} is a {type(e).__name__}, expected an object "
                            f"with keys {', '.join(required)}")
        missing = [k for k in required if k not in e]
        if missing:
            raise UserError(f"{zoo.manifest_path()}: entry {i} ({e.get('id', 'no id')!r}) lacks "
                            f"{', '.join(repr(k) for k in missing)}; each entry needs {', '.join(required)}")
    return entries


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cdlib", description="Image coding for machines: the cdlib tools.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a registered model")
    t.add_argument("model")
    t.add_argument("--profile", default="laptop", help="laptop | paper")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config override (repeatable)")
    t.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture override (repeatable)")
    t.add_argument("-o", "--output", required=True, help="checkpoint path (a training checkpoint there is resumed)")
    t.add_argument("--restart", action="store_true", help="replace an existing training checkpoint at -o")
    t.add_argument("--force", action="store_true", help="overwrite an existing file at -o that is not a "
                                                        "training checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("compress", help="compress an image to a cdlib bitstream")
    c.add_argument("image")
    c.add_argument("-o", "--output", required=True, help="the stream file (e.g. out.icm)")
    c.add_argument("--force", action="store_true", help="overwrite an existing output file")
    c.add_argument("--codec", required=True)
    c.add_argument("--quality", default=None, help="quality/QP (classical) or rate-point index (learned)")
    c.add_argument("--checkpoint", action="append", help="checkpoint(s) of a learned codec")
    c.set_defaults(fn=cmd_compress)

    d = sub.add_parser("decompress", help="decode a cdlib bitstream to an image (the codec comes from the header)")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True,
                   help=f"the image; its extension sets the format: {', '.join(IMAGE_OUTPUTS)} (JPEG at quality "
                        f"95, WebP lossless); a codec without a pixel decoder (tang2025) writes its decoded "
                        f"features to {' or '.join(FEATURE_OUTPUTS)}")
    d.add_argument("--force", action="store_true", help="overwrite an existing output file")
    d.add_argument("--checkpoint", action="append")
    d.set_defaults(fn=cmd_decompress)

    n = sub.add_parser("analyze", help="analyse a stream without decoding pixels (codecs with an analysis "
                                       "head, e.g. bai2022, zhang2023, tang2025); prints JSON")
    n.add_argument("input", metavar="STREAM")
    n.add_argument("--checkpoint", action="append", help="checkpoint(s) of the codec (default: the zoo's)")
    n.add_argument("--task", default=None, help="task(s) to analyse, comma-separated (default: the codec's "
                                                "choice: its first, e.g. classification, or all of a face codec's)")
    n.add_argument("-o", "--output", metavar="OUTDIR", help="also write OUTDIR/<stream stem>.json")
    n.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
    n.add_argument("--parsing-png", metavar="FILE", help="write the parsing map as an indexed PNG (pixel = label "
                                                         "index, coloured; codecs with a parsing task, e.g. "
                                                         "zhang2023)")
    n.add_argument("--masks-png", metavar="FILE", help="write the detected instances as an indexed PNG (pixel = "
                                                       "1 + detection index, 0 = none; tang2025)")
    n.add_argument("--force", action="store_true", help="overwrite existing output files")
    n.set_defaults(fn=cmd_analyze)

    e = sub.add_parser("eval", help="rate-distortion or rate-accuracy curve to JSON")
    e.add_argument("--codec", required=True)
    e.add_argument("--checkpoint", action="append")
    e.add_argument("--task", choices=("rd", "accuracy"), default="rd")
    e.add_argument("--qualities", help="comma-separated list (default: the codec's sweep)")
    e.add_argument("--data", help="flat folder of images (default: the held-out natural photos)")
    e.add_argument("--classifier", help="pixel classifier checkpoint for --task accuracy (default, for a codec "
                                        "that classifies its own streams: decode-free)")
    e.add_argument("--image-size", type=int, default=64)
    e.add_argument("--max-side", type=int, default=None)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("-o", "--output", required=True, help="the JSON file")
    e.add_argument("--force", action="store_true", help="overwrite an existing output file")
    e.set_defaults(fn=cmd_eval)

    b = sub.add_parser("bench", help="speed, memory and bits of every codec; prints a table, writes JSON")
    b.add_argument("-o", "--output", default="results/bench.json")
    b.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    b.set_defaults(fn=cmd_bench)

    z = sub.add_parser("zoo", help="the checkpoint zoo: list, verify, build (= make checkpoints)")
    z.add_argument("action", choices=("list", "verify", "build"))
    z.add_argument("ids", nargs="*")
    z.set_defaults(fn=cmd_zoo)

    x = sub.add_parser("exercises", help="the autograded exercises: list them, or copy the chapters' stubs to "
                                         "FOLDER/chNN.py (init)")
    x.add_argument("action", choices=("list", "init"))
    x.add_argument("folder", nargs="?", help="init: the solutions folder (e.g. solutions/)")
    x.add_argument("--book", default=None, help="the chapter sources (default: the repository's book/)")
    x.add_argument("--force", action="store_true", help="init: overwrite existing chNN.py files")
    x.set_defaults(fn=cmd_exercises)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # a dependency's own deprecation (compressai calls torch.jit.script on import) is not the user's
            # business, and would break the one-line error promise
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            return args.fn(args)
    except KeyboardInterrupt:
        print("error: interrupted (a resumable checkpoint is kept where one was written)", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback on demand
        if os.environ.get("CDLIB_DEBUG"):
            raise
        from .bitstream import BitstreamError

        known = (UserError, BitstreamError, ValueError, FileNotFoundError, KeyError, RuntimeError,
                 FloatingPointError, OSError)
        kind = "error" if isinstance(exc, known) else f"internal error ({type(exc).__name__})"
        text = str(exc)
        if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
            text = exc.args[0]  # str(KeyError) quotes its message
            if " " not in text.strip():  # a bare missing key: a bug or a malformed file, not a sentence
                kind, text = "internal error (KeyError)", f"missing key {text!r}"
        msg = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        print(f"{kind}: {msg}", file=sys.stderr)
        return 2
