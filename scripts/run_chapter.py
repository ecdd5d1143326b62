#!/usr/bin/env python3
"""Run one chapter notebook with papermill, e.g. at paper scale on a GPU.

    python scripts/run_chapter.py ch03_bai2022 --profile paper --device cuda --data /datasets
    python scripts/run_chapter.py ch03_bai2022 --profile laptop --device cpu --set steps=200

(``make reproduce CHAPTER=... PROFILE=... DEVICE=... DATA=... STEPS=...`` calls this.)

The chapter's ``notebooks/<chapter>.ipynb`` (the Jupytext pair of ``book/<chapter>.md``) is executed
with its ``parameters`` cell overridden by ``profile``, ``device``, ``data_root`` and any ``--set
key=value``; the executed notebook, with every output, is written to
``results/<profile>/<chapter>.ipynb`` (or ``--output``). The working directory is the repository
root. Invalid arguments are reported in one line on stderr with exit status 2; a failing cell gives
exit status 1 and leaves the partial notebook in place.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"
RESULTS = ROOT / "results"
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def known_profiles() -> tuple[str, ...]:
    """cdlib.registry.PROFILES, read without importing the whole package (and torch)."""
    path = ROOT / "cdlib" / "registry.py"
    try:
        spec = importlib.util.spec_from_file_location("_cdlib_registry_for_run_chapter", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return tuple(mod.PROFILES)
    except Exception:  # registry missing or broken: fall back to the documented profiles
        return ("laptop", "paper")


def available_chapters() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("ch*.ipynb"))


def resolve_chapter(name: str) -> Path:
    """Accept ``ch03_bai2022``, ``ch03_bai2022.ipynb``, ``book/ch03_bai2022.md``, ``notebooks/...``."""
    stem = Path(name).name
    for suffix in (".ipynb", ".md"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    nb = NOTEBOOKS / f"{stem}.ipynb"
    if nb.is_file():
        return nb
    if (BOOK / f"{stem}.md").is_file():
        raise UsageError(
            f"chapter {stem!r} has book/{stem}.md but no notebooks/{stem}.ipynb; run `make sync` first"
        )
    choices = ", ".join(available_chapters()) or "none yet"
    raise UsageError(f"unknown chapter {name!r}; available chapters: {choices}")


def parse_value(text: str):
    """``--set`` values: JSON (numbers, true/false/null, lists, quoted strings), Python True/False/None,
    otherwise the plain string."""
    py = {"True": True, "False": False, "None": None}
    if text in py:
        return py[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sets(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = (s.strip() for s in pair.split("=", 1))
        if not KEY_RE.match(key):
            raise UsageError(f"--set key must be a Python identifier, got {key!r}")
        out[key] = parse_value(value)
    return out


def notebook_parameters(nb: Path) -> dict:
    import papermill

    params = papermill.inspect_notebook(str(nb))
    if not params:
        raise UsageError(
            f"{nb.relative_to(ROOT)} has no cell tagged 'parameters' (add `:tags: [parameters]` in book/{nb.stem}.md)"
        )
    return params


def build_parameters(args: argparse.Namespace, declared: dict) -> dict:
    profiles = known_profiles()
    if args.profile not in profiles:
        raise UsageError(f"unknown profile {args.profile!r}; valid profiles: {', '.join(profiles)}")
    if not DEVICE_RE.match(args.device):
        raise UsageError(f"invalid device {args.device!r}; expected cpu, cuda, cuda:N or mps")
    params: dict = {"profile": args.profile, "device": args.device}
    if args.data is not None:
        data = Path(args.data).expanduser()
        if not data.exists():
            raise UsageError(f"data path {str(data)!r} does not exist")
        params["data_root"] = str(data.resolve())
    for key, value in parse_sets(args.set).items():
        if key in ("profile", "device", "data_root"):
            raise UsageError(f"use --{'data' if key == 'data_root' else key} instead of --set {key}=...")
        params[key] = value
    unknown = [k for k in params if k not in declared]
    if unknown:
        raise UsageError(
            f"parameter(s) {', '.join(unknown)} not in the chapter's parameters cell; "
            f"it declares: {', '.join(declared)}"
        )
    return params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, exit 2 (argparse prints the usage too; keep it short)
            raise UsageError(message)

    p = Parser(description="Run a chapter notebook with papermill (results/<profile>/<chapter>.ipynb).")
    p.add_argument("chapter", help="chapter name, e.g. ch03_bai2022")
    p.add_argument("--profile", default="laptop", help="laptop (default) or paper")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--data", default=None, help="dataset root, passed as data_root")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override another parameter of the chapter (repeatable)")
    p.add_argument("--output", default=None, help="output notebook (default results/<profile>/<chapter>.ipynb)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    p.add_argument("--quiet", action="store_true", help="do not stream cell outputs to the terminal")
    p.add_argument("--dry-run", action="store_true", help="validate and print what would run, run nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        nb = resolve_chapter(args.chapter)
        declared = notebook_parameters(nb)
        params = build_parameters(args, declared)
    except UsageError as exc:
        print(f"run_chapter: error: {exc}", file=sys.stderr)
        return 2

    out = Path(args.output) if args.output else RESULTS / args.profile / nb.name
    out = out if out.is_absolute() else (Path.cwd() / out)
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"chapter : {nb.relative_to(ROOT)}")
    print(f"params  : {shown}")
    print(f"output  : {out}")
    if args.dry_run:
        return 0

    import papermill
    from papermill.exceptions import PapermillExecutionError

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        papermill.execute_notebook(
            str(nb),
            str(out),
            parameters=params,
            kernel_name=args.kernel,
            cwd=str(ROOT),
            progress_bar=True,
            log_output=not args.quiet,
        )
    except PapermillExecutionError as exc:
        print(
            f"run_chapter: {nb.stem} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
            f"(partial notebook: {out})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"run_chapter: interrupted (partial notebook: {out})", file=sys.stderr)
        return 130
    minutes = (time.time() - start) / 60
    print(f"done in {minutes:.1f} min: executed notebook written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
