"""How readers without a source checkout get cdlib and its checkpoint zoo: the chapters' "Colab only" cell.

The cell clones the repository (latest commit only), pip-installs cdlib from the clone (not editable) and
points ``CDLIB_ZOO`` at the clone's ``zoo/``.  Here that very cell (read from the chapters) runs offline:
the GitHub address becomes a ``file://`` URL of this checkout, and pip installs into a temporary
``--target`` folder instead of the running environment.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))

# the literals of the cell that the offline run replaces
URL = '"https://github.com/icm-book/icm-book"'
CLONE = '"/content/icm-book"'
PIP_TAIL = '"install", "-q", clone]'


def colab_cell(chapter: Path) -> str | None:
    """The source of the chapter's "Colab only" code cell (without its metadata lines), or None."""
    bodies = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", chapter.read_text(), re.S | re.M)
    cells = [b for b in bodies if "google.colab" in b]
    assert len(cells) <= 1, f"{chapter.name}: more than one Colab cell"
    if not cells:
        return None
    lines = cells[0].splitlines(keepends=True)
    while lines and (lines[0].startswith(":") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)


def the_cell() -> str:
    cells = {c.name: colab_cell(c) for c in CHAPTERS}
    cells = {k: v for k, v in cells.items() if v is not None}
    assert cells, "no chapter has a Colab cell"
    assert len(set(cells.values())) == 1, f"the Colab cells differ between chapters: {sorted(cells)}"
    return next(iter(cells.values()))


def test_colab_cell_is_shared_and_a_no_op_elsewhere(monkeypatch):
    cell = the_cell()
    for literal in (URL, CLONE, PIP_TAIL):
        assert cell.count(literal) == 1, f"the Colab cell no longer has {literal} (update this test with it)"
    assert '"--depth", "1"' in cell and "CDLIB_ZOO" in cell
    assert "git+" not in cell, "a pip install from a git URL comes without the zoo"

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("CDLIB_ZOO", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"the Colab cell ran {args} outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(compile(cell, "<colab cell>", "exec"), {})
    assert "CDLIB_ZOO" not in os.environ


def _run(script: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CDLIB_ZOO", "PYTHONPATH")}
    base.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env={**base, **env}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


REPORT = """
import json, os, cdlib
from cdlib import zoo
entries = zoo.entries()
print(json.dumps({"file": cdlib.__file__, "env": os.environ.get("CDLIB_ZOO"), "zoo": str(zoo.zoo_dir()),
                  "ids": [e["id"] for e in entries], "verified": [zoo.verify(e) for e in entries]}))
"""


@pytest.mark.slow
def test_colab_cell_installs_cdlib_and_finds_the_zoo(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    try:
        import setuptools  # noqa: F401  (the offline build uses this environment's setuptools)
    except ImportError:
        pytest.skip("needs setuptools in the test environment")
    clone, target = tmp_path / "icm-book", tmp_path / "site"
    cell = (the_cell().replace(URL, json.dumps(ROOT.as_uri()))
            .replace(CLONE, json.dumps(str(clone)))
            .replace(PIP_TAIL, f'"install", "-q", "--no-deps", "--no-build-isolation", "--target", '
                               f'{json.dumps(str(target))}, clone]'))
    script = ("import sys, types\n"
              "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
              f"exec({cell!r})\n"
              f"sys.path.insert(0, {str(target)!r})\n" + REPORT)

    # 1. the cell as Colab runs it: clone, install, CDLIB_ZOO
    out = _run(script, cwd=tmp_path)
    manifest = clone / "zoo" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("the committed tree has no zoo/manifest.json")
    ids = [e["id"] for e in json.loads(manifest.read_text())["entries"]]
    shallow = subprocess.run(["git", "-C", str(clone), "rev-list", "--count", "HEAD"], capture_output=True,
                             text=True, check=True)
    assert shallow.stdout.strip() == "1", "the clone should hold the latest commit only"
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(target.resolve()), got["file"]  # the installed copy
    assert got["env"] == str(clone / "zoo") and Path(got["zoo"]) == clone / "zoo"
    assert got["ids"] == ids and all(got["verified"]), got
    assert "CDLIB_ZOO" not in out.stderr

    # 2. a later session without CDLIB_ZOO: the installed package finds the zoo of the clone it came from
    out = _run(REPORT, cwd=tmp_path, PYTHONPATH=str(target))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["zoo"]) == clone / "zoo" and got["ids"] == ids and all(got["verified"]), got
    assert "CDLIB_ZOO" not in out.stderr

    # 3. no zoo anywhere: no entries (chapters would train), and one clear warning naming CDLIB_ZOO
    (clone / "zoo").rename(tmp_path / "zoo-away")
    out = _run(REPORT + "zoo.entries()\n", cwd=tmp_path, PYTHONPATH=str(target))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ids"] == [] and got["env"] is None, got
    assert out.stderr.count("no checkpoint zoo found") == 1 and "CDLIB_ZOO" in out.stderr, out.stderr
