"""``python -m cdlib``: train, compress, decompress, analyze, eval, bench, zoo.

Errors caused by the user's input are printed as one line on stderr with a
non-zero exit status (set ``CDLIB_DEBUG=1`` to see the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
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
    from .bitstream import bpp

    print(f"{a.output}: {len(data)} bytes, {bpp(data, h, w):.4f} bpp ({w}x{h}, codec {codec.name})")
    return 0


def cmd_decompress(a) -> int:
    from PIL import Image

    _, data, name = _read_stream(a.input)
    codec = _codec_for(name, a.checkpoint)
    img = codec.decode(data)
    tmp = Path(str(a.output) + ".tmp.png")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, a.output)
    print(f"{a.output}: {img.shape[1]}x{img.shape[0]} decoded with {name}")
    return 0


def cmd_analyze(a) -> int:
    """Analyse a stream with its codec's own analysis head (no pixel decoding); print the result as JSON."""
    from . import eval as ev
    from .bitstream import unpack

    path, data, name = _read_stream(a.input)
    codec = _codec_for(name, a.checkpoint)
    task = codec.check_task(a.task or (codec.tasks[0] if codec.tasks else "classification"))
    pred = ev.DecodeFree(codec).analyse([data], task)
    header, _ = unpack(data)
    result = {"stream": str(path), "codec": codec.name, "quality": header.quality, "height": header.height,
              "width": header.width, "task": task, **ev.get_task(task).describe(pred[0])}
    if a.output:
        ev.save_json(result, Path(a.output) / f"{path.stem}.json")
    print(ev.dumps_json(result))
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
    ev.save_json({"codec": codec.name, "task": a.task, "curve": df}, a.output)
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

    n = sub.add_parser("analyze", help="analyse a stream without decoding pixels (codecs with an analysis "
                                       "head, e.g. bai2022); prints JSON")
    n.add_argument("input", metavar="STREAM")
    n.add_argument("--checkpoint", action="append", help="checkpoint(s) of the codec (default: the zoo's)")
    n.add_argument("--task", default=None, help="task to analyse (default: the codec's first, e.g. classification)")
    n.add_argument("-o", "--output", metavar="OUTDIR", help="also write OUTDIR/<stream stem>.json")
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
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{kind}: {msg}", file=sys.stderr)
        return 2
