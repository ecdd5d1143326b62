"""The layout rules of docs/ARCHITECTURE.md, checked on the source: papers are found through the registry,
the core never imports a paper, a paper never imports another paper, and core modules import only
modules of their own layer or below."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cdlib"

# Core layers, lowest first (docs/ARCHITECTURE.md).  A module may import modules of its own layer or below.
LAYERS = [
    {"registry", "bitstream", "paths", "images", "losses", "exact", "progress"},
    {"config", "checkpoint"},
    {"data", "eval", "plots", "diagrams"},
    {"codecs"},
    {"train"},
    {"zoo"},
    {"recipes", "bench", "book", "exercises"},
    {"cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, lazy imports inside functions included."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            out += [(node.lineno, t) for t in names]
    return [(line, t) for line, t in out if t == "cdlib" or t.startswith("cdlib.")]


def _core_name(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(PKG.rglob("*.py"))


def test_the_rules_see_every_core_module():
    core = {_core_name(_module(p)) for p in FILES if "papers" not in p.relative_to(PKG).parts}
    assert core <= set(RANK) | {"papers"}, f"core modules missing from LAYERS: {sorted(core - set(RANK))}"


def _violations(path: Path, source: str | None = None) -> list[str]:
    mod = _module(path)
    bad = []
    if mod.startswith("cdlib.papers."):
        paper = mod.split(".")[2]
        for line, target in _imports(path, source):
            if target.startswith("cdlib.papers.") and target.split(".")[2] != paper:
                bad.append(f"line {line}: paper {paper!r} imports another paper ({target})")
    elif mod != "cdlib.papers":
        own = RANK[_core_name(mod)]
        for line, target in _imports(path, source):
            if target.startswith("cdlib.papers"):
                bad.append(f"line {line}: core module imports a paper package ({target})")
            elif target != "cdlib" and RANK[_core_name(target)] > own:
                bad.append(f"line {line}: upward import of {target} (layer {RANK[_core_name(target)]}) "
                           f"from layer {own}")
    return bad


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(PKG)) for p in FILES])
def test_imports_follow_the_layers(path):
    bad = _violations(path)
    assert not bad, f"{path.relative_to(PKG)}:\n" + "\n".join(bad)


def test_the_rule_checker_catches_violations():
    """The checker is not vacuous: a core file importing a paper, an upward import and a paper importing
    another paper are all reported."""
    core = _violations(PKG / "bitstream.py", "from .papers.bai2022 import model\n\ndef f():\n    from .zoo import load\n")
    assert len(core) == 2 and "imports a paper package" in core[0] and "upward import of cdlib.zoo" in core[1]
    paper = _violations(PKG / "papers" / "zhang2023" / "model.py", "from ..bai2022.model import Bai2022\n")
    assert len(paper) == 1 and "imports another paper (cdlib.papers.bai2022.model" in paper[0]


def test_paper_names_stay_in_their_packages():
    """Only the paper packages (and at most the CLI's help text) name a paper."""
    out = subprocess.run(["grep", "-rl", "bai2022", str(PKG), "--include=*.py"], capture_output=True, text=True)
    files = {str(Path(f).relative_to(PKG)) for f in out.stdout.split()}
    assert not {f for f in files if not f.startswith("papers/") and f != "cli.py"}, files


def test_chapters_do_not_import_reference_solutions():
    """Chapters call library functions; the exercise reference solutions are for grading only."""
    book = PKG.parent / "book"
    bad = [f"{p.name}:{i}" for p in sorted(book.glob("ch*.md"))
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if "import" in line and ("cdlib.exercises" in line or ".exercises import" in line)]
    assert not bad, bad
