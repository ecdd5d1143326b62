#!/usr/bin/env python3
"""Run one chapter notebook with papermill, e.g. at paper scale on a GPU.

    python scripts/run_chapter.py ch03_bai2022 --profile paper --device cuda --data /datasets
    python scripts/run_chapter.py ch03_bai2022 --profile laptop --device cpu --steps 200
    python scripts/run_chapter.py ch02_measuring_for_machines --set n_test=500

(``make reproduce CHAPTER=... PROFILE=... DEVICE=... DATA=... STEPS=N SET="k=v ..."`` calls this.)

The chapter's ``notebooks/<chapter>.ipynb`` (the Jupytext pair of ``book/<chapter>.md``) is executed
with its ``parameters`` cell overridden by ``profile``, ``device``, ``data_root`` and any ``--set
key=value``.  Only parameters that the cell declares are accepted, and each value must have the type
of the declared one (its annotation, e.g. ``zoo_steps: int | None = None``, else the type of its
default).

``--steps N`` (``STEPS=N``) is a training budget: it sets every parameter of the chapter whose name is
``steps`` or ends in ``_steps`` (``train_steps``, ``zoo_steps``, ...), i.e. each chapter lists the
parameters a budget sets by naming them so in its parameters cell; a ``--set`` of one of them wins
over ``--steps``.  A chapter without such a parameter does not train, and ``--steps`` is refused.

A chapter writes its results into ``results/<profile>/<chNN>/`` (``cdlib.book.setup_chapter``, with
``<chNN>`` the chapter's number prefix, e.g. ``ch03``; ``$CDLIB_RESULTS`` replaces ``results``); the
executed notebook, with every output, goes into the same folder, ``results/<profile>/<chNN>/<chapter>.ipynb``
(or ``--output``).  The working directory is the repository root. Invalid arguments are reported in one
line on stderr with exit status 2; a failing cell gives exit status 1 and leaves the partial notebook in
place.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"
RESULTS = ROOT / "results"
RESULTS_ENV = "CDLIB_RESULTS"  # cdlib.paths.RESULTS_ENV (not imported: importing cdlib pulls in torch)
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STEPS_RE = re.compile(r"^(steps|\w+_steps)$")
# parameters run_chapter sets from its own options, never through --set
OWN_OPTIONS = {"profile": "--profile", "device": "--device", "data_root": "--data"}


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


_MISSING = object()  # a default that is not a plain literal


@dataclass(frozen=True)
class Parameter:
    """One assignment of a chapter's ``parameters`` cell."""

    name: str
    default: object = _MISSING
    annotation: str | None = None


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
    """Accept ``ch03_bai2022``, ``ch03``, ``ch03_bai2022.ipynb``, ``book/ch03_bai2022.md``, ``notebooks/...``."""
    stem = Path(name).name
    for suffix in (".ipynb", ".md"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    nb = NOTEBOOKS / f"{stem}.ipynb"
    if nb.is_file():
        return nb
    numbered = sorted(NOTEBOOKS.glob(f"{stem}_*.ipynb")) if re.fullmatch(r"ch\d+", stem) else []
    if len(numbered) == 1:  # "ch03" -> ch03_bai2022
        return numbered[0]
    if (BOOK / f"{stem}.md").is_file():
        raise UsageError(
            f"chapter {stem!r} has book/{stem}.md but no notebooks/{stem}.ipynb; run `make sync` first"
        )
    choices = ", ".join(available_chapters()) or "none yet"
    raise UsageError(f"unknown chapter {name!r}; available chapters: {choices}")


def chapter_results(stem: str, profile: str) -> Path:
    """The chapter's results folder, where ``setup_chapter("chNN", ...)`` writes its JSON:
    ``$CDLIB_RESULTS/<profile>/<chNN>`` (relative to the repository root, where the kernel runs), default
    ``results/<profile>/<chNN>``."""
    env = os.environ.get(RESULTS_ENV)
    base = (ROOT / env if not Path(env).is_absolute() else Path(env)) if env else RESULTS
    return base / profile / stem.split("_", 1)[0]


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


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: "v"}`` (raw text; :func:`convert` types it against the chapter)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = (s.strip() for s in pair.split("=", 1))
        if not KEY_RE.match(key):
            raise UsageError(f"--set key must be a Python identifier, got {key!r}")
        if key in out:
            raise UsageError(f"--set {key}=... given twice")
        out[key] = value
    return out


def parse_steps(text) -> int:
    """``--steps`` / ``STEPS``: a positive integer."""
    raw = str(text).strip()
    if not re.fullmatch(r"\+?\d+", raw) or int(raw) < 1:
        raise UsageError(f"STEPS (--steps) must be a positive integer number of training steps, got {text!r}")
    return int(raw)


# ------------------------------------------------------------------------------ the parameters cell
def parameters_source(nb: Path) -> str:
    """The source of the notebook's cell tagged ``parameters``."""
    try:
        cells = json.loads(nb.read_text())["cells"]
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot read {nb}: {exc}") from None
    where = nb.relative_to(ROOT) if nb.is_relative_to(ROOT) else nb
    tagged = [c for c in cells if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise UsageError(f"{where} has no cell tagged 'parameters' (add `:tags: [parameters]` in book/{nb.stem}.md)")
    src = tagged[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Parameter]:
    """Every ``name = literal`` / ``name: type = literal`` of a parameters cell, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UsageError(f"{where}: the parameters cell does not parse: {exc}") from None
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets, value, ann = [node.target], node.value, ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign):
            targets, value, ann = [t for t in node.targets if isinstance(t, ast.Name)], node.value, None
        else:
            continue
        try:
            default = ast.literal_eval(value) if value is not None else _MISSING
        except ValueError:
            default = _MISSING
        for t in targets:
            params[t.id] = Parameter(t.id, default, ann)
    return params


def notebook_parameters(nb: Path) -> dict[str, Parameter]:
    """The parameters that ``nb``'s ``parameters`` cell declares."""
    return parse_parameters(parameters_source(nb), nb.name)


def step_parameters(declared) -> list[str]:
    """The parameters a ``--steps`` budget sets: those named ``steps`` or ``*_steps``."""
    return [name for name in declared if STEPS_RE.match(name)]


# ------------------------------------------------------------------------------ types
_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
    "list": lambda v: isinstance(v, (list, tuple)),
    "tuple": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, dict),
}


def expected_types(param: Parameter) -> tuple[str, ...] | None:
    """The type names a value of ``param`` may have (from its annotation, else its default's type);
    ``None`` when unknown (a ``None`` default without annotation, an annotation not checked here)."""
    if param.annotation:
        ann = param.annotation.replace(" ", "")
        m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", ann)
        parts = m.group(1).split("|") + ["None"] if m else ann.split("|")
        parts = ["None" if p in ("None", "NoneType") else p for p in parts]
        return tuple(dict.fromkeys(parts)) if all(p in _CHECKS for p in parts) else None
    if param.default is _MISSING or param.default is None:
        return None
    name = type(param.default).__name__
    return (name,) if name in _CHECKS else None


def describe(types: tuple[str, ...]) -> str:
    return " or ".join(types)


def convert(param: Parameter, raw) -> object:
    """``raw`` (``--set`` text, or an already typed value) as a value of ``param``'s type, or a UsageError
    that names the expected type."""
    value = parse_value(raw) if isinstance(raw, str) else raw
    types = expected_types(param)
    if types is None or any(_CHECKS[t](value) for t in types):
        return value
    if "str" in types and isinstance(raw, str):
        return raw  # a path or name that happens to look like a number
    default = "" if param.default is _MISSING else f" (default {param.default!r})"
    raise UsageError(f"bad value for parameter {param.name}: expected {describe(types)}{default}, got {raw!r}")


def _declared_list(declared) -> str:
    return ", ".join(declared) or "nothing"


def build_parameters(args: argparse.Namespace, declared: dict[str, Parameter], chapter: str = "the chapter") -> dict:
    """The papermill parameters of a run: ``profile``, ``device``, ``data_root``, the ``--steps`` budget
    on the chapter's step parameters and each ``--set``, each checked against the parameters cell."""
    profiles = known_profiles()
    if args.profile not in profiles:
        raise UsageError(f"unknown profile {args.profile!r}; valid profiles: {', '.join(profiles)}")
    if not DEVICE_RE.match(args.device):
        raise UsageError(f"invalid device {args.device!r}; expected cpu, cuda, cuda:N or mps")
    missing = [k for k in OWN_OPTIONS if k not in declared]
    if missing:
        raise UsageError(f"{chapter}'s parameters cell lacks {', '.join(missing)}; it declares: {_declared_list(declared)}")
    params: dict = {"profile": args.profile, "device": args.device}
    if args.data is not None:
        data = Path(args.data).expanduser()
        if not data.exists():
            raise UsageError(f"data path {str(data)!r} does not exist")
        params["data_root"] = str(data.resolve())
    sets = parse_sets(args.set)
    for key in sets:
        if key in OWN_OPTIONS:
            raise UsageError(f"use {OWN_OPTIONS[key]} instead of --set {key}=...")
    unknown = [k for k in sets if k not in declared]
    if unknown:
        hint = " (a training budget is STEPS=N / --steps N)" if any(STEPS_RE.match(k) for k in unknown) else ""
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)} for {chapter}{hint}; "
                         f"its parameters cell declares: {_declared_list(declared)}")
    if getattr(args, "steps", None) is not None:
        steps = parse_steps(args.steps)
        targets = step_parameters(declared)
        if not targets:
            raise UsageError(f"{chapter} does not train (no parameter named *_steps), so STEPS (--steps) does not "
                             f"apply; its parameters cell declares: {_declared_list(declared)}")
        for name in targets:
            params[name] = convert(declared[name], steps)
    for key, raw in sets.items():
        params[key] = convert(declared[key], raw)
    return params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, exit 2 (argparse prints the usage too; keep it short)
            raise UsageError(message)

    p = Parser(description="Run a chapter notebook with papermill (results/<profile>/<chNN>/<chapter>.ipynb).")
    p.add_argument("chapter", help="chapter name, e.g. ch03_bai2022")
    p.add_argument("--profile", default="laptop", help="laptop (default) or paper")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--data", default=None, help="dataset root, passed as data_root")
    p.add_argument("--steps", default=None, metavar="N",
                   help="training budget: sets every *_steps parameter of the chapter (train_steps, zoo_steps, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override another parameter of the chapter (repeatable)")
    p.add_argument("--output", default=None,
                   help="output notebook (default results/<profile>/<chNN>/<chapter>.ipynb, next to its results)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    p.add_argument("--quiet", action="store_true", help="do not stream cell outputs to the terminal")
    p.add_argument("--dry-run", action="store_true", help="validate and print what would run, run nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        nb = resolve_chapter(args.chapter)
        declared = notebook_parameters(nb)
        params = build_parameters(args, declared, nb.stem)
    except UsageError as exc:
        print(f"run_chapter: error: {exc}", file=sys.stderr)
        return 2

    results = chapter_results(nb.stem, args.profile)
    out = Path(args.output) if args.output else results / nb.name
    out = out if out.is_absolute() else (Path.cwd() / out)
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"chapter : {nb.relative_to(ROOT)}")
    print(f"params  : {shown}")
    print(f"results : {results}")
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
