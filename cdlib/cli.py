"""``python -m cdlib``: train, compress, decompress, eval, bench, zoo.

Errors caused by the user's input are printed as one line on stderr with a
non-zero exit status (set ``CDLIB_DEBUG=1`` to see the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A problem with the command line or its inputs, reported in one line."""


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UserError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_train(a) -> int:
    from .config import make_config
    from .registry import create_model, get_entry
    from .train import seed_everything, train

    overrides = _parse_sets(a.set)
    cfg = make_config(a.model, a.profile, **overrides)
    arch = _parse_sets(a.arch)
    arch = {k: json.loads(v) if v[:1] in "[{0123456789-tf" else v for k, v in arch.items()}
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    if "num_classes" in get_entry(a.model).arch[a.profile] and "num_classes" not in arch:
        arch["num_classes"] = cfg.num_classes
    seed_everything(cfg.seed)  # same seed, same initial weights
    model = create_model(a.model, a.profile, **arch)
    result = train(model, cfg, out=a.output, resume=not a.restart, progress=not a.quiet)
    final = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps({"checkpoint": str(a.output), **final}, default=str))
    return 0


def _codec_for(name: str, checkpoints: list[str] | None):
    from .codecs import get_codec

    kw = {}
    if checkpoints:
        kw["checkpoints"] = checkpoints
    return get_codec(name, **kw)


def cmd_compress(a) -> int:
    from .data import load_image

    if not Path(a.image).is_file():
        raise UserError(f"input image not found: {a.image}")
    img, note = load_image(a.image, return_note=True)
    codec = _codec_for(a.codec, a.checkpoint)
    quality = a.quality
    if quality is not None:
        quality = float(quality) if "." in quality else int(quality)
    data = codec.encode(img, quality)
    _atomic_write(a.output, data)
    h, w = img.shape[:2]
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"{a.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h}, codec {codec.name})")
    return 0


def cmd_decompress(a) -> int:
    from PIL import Image

    from .bitstream import unpack

    path = Path(a.input)
    if not path.is_file():
        raise UserError(f"input stream not found: {a.input}")
    data = path.read_bytes()
    header, _ = unpack(data)
    codec = _codec_for(header.codec, a.checkpoint)
    img = codec.decode(data)
    tmp = Path(str(a.output) + ".tmp.png")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, a.output)
    print(f"{a.output}: {img.shape[1]}x{img.shape[0]} decoded with {header.codec}")
    return 0


def cmd_eval(a) -> int:
    from . import eval as ev
    from .data import FlatFolderDataset, NaturalPhotos, ShapesWorld

    codec = _codec_for(a.codec, a.checkpoint)
    qualities = None
    if a.qualities:
        qualities = [float(q) if "." in q else int(q) for q in a.qualities.split(",")]
    if a.task == "rd":
        if a.data:
            ds = FlatFolderDataset(a.data)
            images = [ds.load(i) for i in range(len(ds))][: a.limit or None]
        else:
            images = NaturalPhotos.test_images(max_side=a.max_side)[: a.limit or None]
        df = ev.rd_curve(codec, images, qualities)
    else:
        from .train import load_model

        if not a.classifier:
            raise UserError("--task accuracy needs --classifier CKPT (a pixel_classifier checkpoint)")
        clf = load_model(a.classifier).eval()
        ds = ShapesWorld("test", n=a.limit or 1000, image_size=a.image_size)
        df = ev.rate_accuracy_curve(codec, ds.images, ds.labels, clf, qualities)
    ev.save_json({"codec": codec.name, "task": a.task, "curve": df}, a.output)
    print(df.to_string(index=False))
    print(f"wrote {a.output}")
    return 0


def cmd_bench(a) -> int:
    from .bench import run_bench

    run_bench(out=a.output, quick=a.quick)
    return 0


def cmd_zoo(a) -> int:
    from . import recipes  # noqa: F401  (registers the zoo's recipes)
    from . import zoo

    if a.action == "list":
        for e in zoo.load_manifest()["entries"]:
            print(f"{e['id']:28s} {e['model']:12s} {e['profile']:7s} steps={e['steps']:<6} "
                  f"cpu_min={e['cpu_minutes']:.1f} {json.dumps(e['metrics'])}")
    elif a.action == "verify":
        bad = [e["id"] for e in zoo.load_manifest()["entries"] if not zoo.verify(e)]
        if bad:
            raise UserError(f"hash mismatch or missing file for: {', '.join(bad)}")
        print("all zoo files match the manifest")
    elif a.action == "build":
        zoo.build_zoo(ids=a.ids or None)
    return 0


def _atomic_write(path, data: bytes) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cdlib", description="Image coding for machines: the cdlib tools.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a registered model")
    t.add_argument("model")
    t.add_argument("--profile", default="laptop", help="laptop | paper")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config override (repeatable)")
    t.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture override (repeatable)")
    t.add_argument("-o", "--output", required=True, help="checkpoint path (resumed if it exists)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("compress", help="compress an image to a cdlib bitstream")
    c.add_argument("image")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--codec", required=True)
    c.add_argument("--quality", default=None, help="quality/QP (classical) or rate-point index (learned)")
    c.add_argument("--checkpoint", action="append", help="checkpoint(s) of a learned codec")
    c.set_defaults(fn=cmd_compress)

    d = sub.add_parser("decompress", help="decode a cdlib bitstream to PNG (the codec comes from the header)")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--checkpoint", action="append")
    d.set_defaults(fn=cmd_decompress)

    e = sub.add_parser("eval", help="rate-distortion or rate-accuracy curve to JSON")
    e.add_argument("--codec", required=True)
    e.add_argument("--checkpoint", action="append")
    e.add_argument("--task", choices=("rd", "accuracy"), default="rd")
    e.add_argument("--qualities", help="comma-separated list (default: the codec's sweep)")
    e.add_argument("--data", help="flat folder of images (default: the held-out natural photos)")
    e.add_argument("--classifier", help="pixel classifier checkpoint for --task accuracy")
    e.add_argument("--image-size", type=int, default=64)
    e.add_argument("--max-side", type=int, default=None)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(fn=cmd_eval)

    b = sub.add_parser("bench", help="speed, memory and bits of every codec; prints a table, writes JSON")
    b.add_argument("-o", "--output", default="results/bench.json")
    b.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    b.set_defaults(fn=cmd_bench)

    z = sub.add_parser("zoo", help="the checkpoint zoo: list, verify, build (= make checkpoints)")
    z.add_argument("action", choices=("list", "verify", "build"))
    z.add_argument("ids", nargs="*")
    z.set_defaults(fn=cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{kind}: {msg}", file=sys.stderr)
        return 2
