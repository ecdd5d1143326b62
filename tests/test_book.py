"""Structure of the book: chapter pairs, skeleton, parameters/Colab cells, Colab links, TOC, references.

Chapters are ``book/chNN_*.md`` (Jupytext MyST notebooks) paired with ``notebooks/chNN_*.ipynb``.
Per-chapter tests are parametrised over the chapters present (none yet -> those tests are skipped);
the configuration tests always run.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
HTML = ROOT / "_build" / "html"

# The skeleton every chapter follows: these level-2 headings ("## ..."), in this order. Other
# headings may sit between them. "Ablations" may just say "Not applicable".
CHAPTER_HEADINGS = (
    "Learning goals",
    "The idea",
    "The model",
    "Training",
    "Results",
    "Ablations",
    "Fidelity notes",
    "Summary",
    "Exercises",
)
# Parameters every chapter's `parameters` cell defines (scripts/run_chapter.py passes them).
REQUIRED_PARAMETERS = ("profile", "device", "data_root")
PAIRED_FORMATS = "book//md:myst,notebooks//ipynb"
COLAB = "https://colab.research.google.com"

REQUIRED_BIB_KEYS = (
    "bai2022",
    "zhang2025layered",
    "tang2025dicm",
    "balle2017",
    "balle2018",
    "minnen2018",
    "begaint2020compressai",
    "dosovitskiy2021vit",
    "touvron2021deit",
    "he2020moco",
    "chen2020mocov2",
    "bjontegaard2001",
)

CHAPTERS = sorted(p.stem for p in BOOK.glob("ch*.md"))


def _yaml(path: Path):
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())


def _config() -> dict:
    return _yaml(ROOT / "_config.yml")


def _colab_module():
    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import colab  # type: ignore

        return colab
    finally:
        sys.path.pop(0)


def _read_pair(stem: str):
    jupytext = pytest.importorskip("jupytext")
    md = BOOK / f"{stem}.md"
    nb = NOTEBOOKS / f"{stem}.ipynb"
    assert nb.is_file(), f"{md.relative_to(ROOT)} has no paired notebooks/{stem}.ipynb: run `make sync`"
    return jupytext.read(md), jupytext.read(nb)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _strip_magics(src: str) -> str:
    """IPython `!cmd` / `%magic` lines -> `pass` so that ast can parse the cell."""
    out = []
    for line in src.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("!", "%")):
            out.append(line[: len(line) - len(stripped)] + "pass")
        else:
            out.append(line)
    return "\n".join(out)


def _level2_headings(md_text: str) -> list[str]:
    headings, fence = [], None
    for line in md_text.splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,}|:{3,})", line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not line.strip()[len(marker):].strip():
                fence = None
            continue
        if fence is None:
            h = re.match(r"^##\s+(.+?)\s*#*\s*$", line)
            if h:
                headings.append(h.group(1).strip())
    return headings


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                files.append(value)
            else:
                files.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            files.extend(_toc_files(item))
    return files


# ------------------------------------------------------------------------------------ configuration
def test_config_execution_and_layout():
    cfg = _config()
    assert cfg["title"] == "Image Coding for Machines: a reproducibility course"
    ex = cfg["execute"]
    assert ex["execute_notebooks"] == "cache"
    assert ex["cache"] == "_build/.jupyter_cache"
    assert ex["timeout"] >= 600
    assert ex["raise_on_error"] is True
    assert cfg["only_build_toc_files"] is True
    for pattern in (".venv", "_build", "notebooks", "results"):
        assert pattern in cfg["exclude_patterns"], f"_config.yml exclude_patterns must contain {pattern}"
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"]
    assert (ROOT / cfg["bibtex_bibfiles"][0]).is_file()


def test_config_colab_links():
    cfg = _config()
    assert cfg["launch_buttons"]["colab_url"] == COLAB
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["sphinx"]["local_extensions"].get("colab") == "book/_ext"
    assert (BOOK / "_ext" / "colab.py").is_file()
    assert cfg["sphinx"]["config"].get("colab_notebooks_dir", "notebooks") == "notebooks"


def test_colab_url_rule():
    colab = _colab_module()
    want = f"{COLAB}/github/icm-book/icm-book/blob/main/notebooks/ch03_bai2022.ipynb"
    for name in ("ch03_bai2022", "book/ch03_bai2022", "book/ch03_bai2022.md", "notebooks/ch03_bai2022.ipynb"):
        assert colab.colab_url_for(name, "https://github.com/icm-book/icm-book", "main") == want
    assert colab.colab_url_for("ch01_x", "https://github.com/org/repo.git/", "dev").endswith(
        "/github/org/repo/blob/dev/notebooks/ch01_x.ipynb"
    )
    with pytest.raises(ValueError):
        colab.colab_url_for("ch01_x", "https://gitlab.com/org/repo")


def test_jupytext_pairing_config():
    text = (ROOT / "jupytext.toml").read_text()
    assert re.search(r'^formats\s*=\s*"book//md:myst,notebooks//ipynb"', text, re.M)


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = _yaml(ROOT / "_toc.yml")
    assert toc["format"] == "jb-book"
    assert toc["root"] == "book/intro"
    files = _toc_files(toc)
    for f in files:
        assert any((ROOT / f"{f}{ext}").is_file() for ext in ("", ".md", ".ipynb")), f"_toc.yml lists missing {f}"
    for stem in CHAPTERS:
        assert f"book/{stem}" in files, f"_toc.yml does not list book/{stem}"
    assert "book/references" in files and "book/instructors" in files


def test_no_unpaired_notebooks():
    orphans = sorted(p.name for p in NOTEBOOKS.glob("ch*.ipynb") if p.stem not in CHAPTERS)
    assert not orphans, f"notebooks without a book/<name>.md source (delete them or add the .md): {orphans}"


def test_references_bib_has_the_course_papers():
    pybtex = pytest.importorskip("pybtex.database")
    bib = pybtex.parse_file(str(BOOK / "references.bib"))
    missing = [k for k in REQUIRED_BIB_KEYS if k not in bib.entries]
    assert not missing, f"book/references.bib lacks {missing}"
    assert "bibliography" in (BOOK / "references.md").read_text()


def test_every_citation_is_in_the_bib():
    pybtex = pytest.importorskip("pybtex.database")
    keys = set(pybtex.parse_file(str(BOOK / "references.bib")).entries)
    used = set()
    for md in BOOK.glob("*.md"):
        for group in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", md.read_text()):
            used.update(k.strip() for k in group.split(","))
    assert not (used - keys), f"cited but not in references.bib: {sorted(used - keys)}"


# ------------------------------------------------------------------------------------ chapters
@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_paired_and_in_sync(stem):
    md_nb, ipynb_nb = _read_pair(stem)
    formats = md_nb.metadata.get("jupytext", {}).get("formats")
    assert formats in (None, PAIRED_FORMATS), f"book/{stem}.md pairs with {formats!r}, expected {PAIRED_FORMATS!r}"
    a = [(c.cell_type, c.source.strip(), _tags(c)) for c in md_nb.cells]
    b = [(c.cell_type, c.source.strip(), _tags(c)) for c in ipynb_nb.cells]
    assert len(a) == len(b), f"{stem}: {len(a)} cells in the .md, {len(b)} in the .ipynb: run `make sync`"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{stem}: cell {i} differs between book/{stem}.md and notebooks/{stem}.ipynb: run `make sync`"
    assert md_nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_notebook_has_no_outputs(stem):
    raw = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    code = [(i, c) for i, c in enumerate(raw["cells"]) if c["cell_type"] == "code"]
    checked = [(i, c) for i, c in code if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    dirty = [i for i, c in code if (i, c) not in checked and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"notebooks/{stem}.ipynb stores outputs in cells {dirty}: clear them with `make sync`"
    # the few cells nbval compares hold exactly one stored text output (scripts/store_checked_outputs.py)
    assert checked, f"{stem}: mark at least one seeded, rounded key number with # NBVAL_CHECK_OUTPUT"
    for i, c in checked:
        outs = c.get("outputs") or []
        assert len(outs) == 1 and outs[0].get("output_type") == "stream", \
            f"notebooks/{stem}.ipynb cell {i}: store its expected output with scripts/store_checked_outputs.py"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_skeleton(stem):
    text = (BOOK / f"{stem}.md").read_text()
    assert re.search(r"^# \S", text, re.M), f"book/{stem}.md has no level-1 title"
    found = _level2_headings(text)
    missing = [h for h in CHAPTER_HEADINGS if h not in found]
    assert not missing, f"book/{stem}.md lacks the section(s) {missing} (skeleton: {list(CHAPTER_HEADINGS)})"
    positions = [found.index(h) for h in CHAPTER_HEADINGS]
    assert positions == sorted(positions), f"book/{stem}.md: sections must come in the order {list(CHAPTER_HEADINGS)}"
    dupes = [h for h in CHAPTER_HEADINGS if found.count(h) > 1]
    assert not dupes, f"book/{stem}.md repeats {dupes}"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_colab_install_cell_first(stem):
    md_nb, _ = _read_pair(stem)
    code = _code_cells(md_nb)
    assert code, f"{stem} has no code cells"
    src = code[0].source
    tree = ast.parse(_strip_magics(src))
    guard = None
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            if (
                isinstance(t, ast.Compare)
                and isinstance(t.left, ast.Constant)
                and t.left.value == "google.colab"
                and isinstance(t.ops[0], ast.In)
                and ast.unparse(t.comparators[0]) == "sys.modules"
            ):
                guard = node
                break
    assert guard is not None, (
        f"{stem}: the first code cell must install cdlib only on Colab: "
        '`if "google.colab" in sys.modules: ... pip install git+https://github.com/...`'
    )
    lines = src.splitlines()
    body = "\n".join(lines[guard.body[0].lineno - 1: guard.end_lineno])
    assert '"clone", "-q", "--depth", "1"' in body and "https://github.com/" in body, (
        f"{stem}: the Colab cell must shallow-clone the repository (git clone --depth 1 https://github.com/...)"
    )
    assert "pip" in body and "install" in body and "CDLIB_ZOO" in body and "git+" not in body, (
        f"{stem}: the Colab cell must pip-install cdlib from the clone (a git+https install lacks the zoo) "
        "and point CDLIB_ZOO at the clone's zoo/"
    )
    outside = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.If, ast.Expr, ast.Pass))]
    assert not outside, f"{stem}: the Colab cell should only import sys and install on Colab"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_parameters_cell(stem):
    md_nb, _ = _read_pair(stem)
    code = _code_cells(md_nb)
    tagged = [i for i, c in enumerate(code) if "parameters" in _tags(c)]
    assert len(tagged) == 1, f"{stem}: exactly one code cell must be tagged `parameters` (found {len(tagged)})"
    assert tagged[0] == 1, f"{stem}: the `parameters` cell must be the second code cell, right after the Colab cell"
    tree = ast.parse(code[tagged[0]].source)
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    missing = [p for p in REQUIRED_PARAMETERS if p not in names]
    assert not missing, f"{stem}: the parameters cell must define {list(REQUIRED_PARAMETERS)}; missing {missing}"
    ns: dict = {}
    exec(compile(tree, f"{stem}:parameters", "exec"), ns)  # plain literals only
    assert ns["profile"] == "laptop", f"{stem}: the default profile must be 'laptop' (what the book executes)"
    assert ns["device"] == "cpu", f"{stem}: the default device must be 'cpu'"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_colab_link(stem):
    cfg = _config()
    colab = _colab_module()
    repo = cfg["repository"]["url"].rstrip("/").removesuffix(".git")
    org_repo = "/".join(repo.split("github.com/")[1].split("/")[:2])
    branch = cfg["repository"].get("branch", "main")
    url = colab.colab_url_for(stem, cfg["repository"]["url"], branch)
    assert url == f"{COLAB}/github/{org_repo}/blob/{branch}/notebooks/{stem}.ipynb"
    assert (NOTEBOOKS / f"{stem}.ipynb").is_file()
    page = HTML / "book" / f"{stem}.html"
    if not page.is_file():
        pytest.skip(f"{page.relative_to(ROOT)} not built (make book); URL rule checked only")
    html = page.read_text()
    assert url in html, f"built page {page.relative_to(ROOT)} has no Colab link to {url}"
    others = set(re.findall(r"https://colab\.research\.google\.com/[^\"'<>\s]+", html)) - {url}
    assert not others, f"built page {page.relative_to(ROOT)} has other Colab links: {sorted(others)}"


# ------------------------------------------------------------------------------------ results folders
_SETUP_NAME = re.compile(r"""setup_chapter\(\s*["']([^"']+)["']""")
# what a chapter calls when it trains (then its parameters cell must offer a STEPS budget)
_TRAINS = re.compile(r"\b(make_config|load_recipe|load_or_train|train_model)\(")


def test_two_chapters_saving_the_same_name_never_collide(tmp_path, monkeypatch):
    from cdlib.book import setup_chapter

    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    a = setup_chapter("ch02", "laptop", "cpu", 0, budget_s=10)
    b = setup_chapter("ch03", "laptop", "cpu", 0, budget_s=10)
    pa, pb = a.save("rate_accuracy", {"chapter": 2}), b.save("rate_accuracy", {"chapter": 3})
    assert pa == tmp_path / "laptop" / "ch02" / "rate_accuracy.json"
    assert pb == tmp_path / "laptop" / "ch03" / "rate_accuracy.json"
    assert json.loads(pa.read_text()) == {"chapter": 2} and json.loads(pb.read_text()) == {"chapter": 3}
    assert a.path("fig.png").parent == a.results != b.results
    assert not list((tmp_path / "laptop").glob("*.json")), "chapters must not write into results/<profile>/ itself"


@pytest.mark.parametrize("name", ["", "..", "a/b", "../ch02", "/abs"])
def test_chapter_and_result_names_are_single_folder_names(tmp_path, monkeypatch, name):
    from cdlib.book import setup_chapter

    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    with pytest.raises(ValueError, match="bad chapter name"):
        setup_chapter(name, "laptop", "cpu", 0)
    ch = setup_chapter("ch01", "laptop", "cpu", 0)
    with pytest.raises(ValueError, match="bad result name"):
        ch.save(name, {})


def test_chapter_names_match_their_results_folders():
    """setup_chapter's name is the stem's chNN prefix (the folder run_chapter.py puts the notebook in),
    and no two chapters share it."""
    names = {}
    for stem in CHAPTERS:
        found = _SETUP_NAME.findall((BOOK / f"{stem}.md").read_text())
        assert len(found) == 1, f"book/{stem}.md must call setup_chapter('<name>', ...) once (found {found})"
        assert found[0] == stem.split("_", 1)[0], (
            f"book/{stem}.md: setup_chapter({found[0]!r}, ...) but its results folder is {stem.split('_', 1)[0]!r}"
        )
        assert found[0] not in names, f"{stem} and {names.get(found[0])} share the results folder {found[0]}"
        names[found[0]] = stem


# ------------------------------------------------------------------------------------ make reproduce arguments
@pytest.fixture(scope="module")
def rc():
    """scripts/run_chapter.py as a module (nothing is executed: no notebook runs in these tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_chapter_under_test", ROOT / "scripts" / "run_chapter.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


_CELL = '''
profile = "laptop"  # comment
device = "cpu"
data_root: str | None = None
ckpt: str | None = None
seed = 0
train_steps = 20
zoo_steps: int | None = None
n_test = 200
budget_s: float = 180
'''


def _params(rc, *argv, cell=_CELL, chapter="chXX_test"):
    return rc.build_parameters(rc.parse_args([chapter, *argv]), rc.parse_parameters(cell), chapter)


def test_run_chapter_parameter_parsing(rc):
    declared = rc.parse_parameters(_CELL)
    assert list(declared) == ["profile", "device", "data_root", "ckpt", "seed", "train_steps", "zoo_steps", "n_test",
                              "budget_s"]
    assert declared["train_steps"].default == 20 and declared["zoo_steps"].annotation == "int | None"
    assert rc.expected_types(declared["zoo_steps"]) == ("int", "None")
    assert rc.expected_types(declared["n_test"]) == ("int",)
    assert rc.expected_types(declared["ckpt"]) == ("str", "None")
    assert rc.expected_types(rc.Parameter("x", None)) is None  # None default, no annotation: anything goes
    assert rc.step_parameters(declared) == ["train_steps", "zoo_steps"]
    assert rc.parse_sets(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    for bad in (["novalue"], ["1a=2"], ["a=1", "a=2"]):
        with pytest.raises(rc.UsageError):
            rc.parse_sets(bad)
    assert rc.parse_steps("50") == 50
    for bad in ("0", "-3", "1.5", "abc", ""):
        with pytest.raises(rc.UsageError, match="positive integer"):
            rc.parse_steps(bad)


def test_run_chapter_builds_typed_parameters(rc):
    p = _params(rc, "--steps", "7", "--set", "n_test=60", "--set", "budget_s=90.5", "--set", "ckpt=123")
    assert p == {"profile": "laptop", "device": "cpu", "train_steps": 7, "zoo_steps": 7, "n_test": 60,
                 "budget_s": 90.5, "ckpt": "123"}  # a str parameter keeps text that looks like a number
    # an explicit --set of a step parameter wins over the budget; None is a valid zoo_steps
    p = _params(rc, "--steps", "7", "--set", "zoo_steps=None", "--set", "train_steps=3")
    assert p["train_steps"] == 3 and p["zoo_steps"] is None
    assert _params(rc, "--set", "budget_s=60")["budget_s"] == 60  # an int is a valid float


@pytest.mark.parametrize("argv, message", [
    (["--set", "bogus=1"], r"unknown parameter\(s\) bogus for chXX_test; its parameters cell declares: "
                           r"profile, device, data_root, ckpt, seed, train_steps, zoo_steps, n_test, budget_s"),
    (["--set", "steps=5"], r"unknown parameter\(s\) steps .*STEPS=N"),
    (["--set", "n_test=abc"], r"bad value for parameter n_test: expected int \(default 200\), got 'abc'"),
    (["--set", "n_test=2.5"], r"parameter n_test: expected int"),
    (["--set", "zoo_steps=many"], r"parameter zoo_steps: expected int or None"),
    (["--set", "budget_s=true"], r"parameter budget_s: expected float"),
    (["--set", "seed=1.5"], r"parameter seed: expected int"),
    (["--steps", "ten"], r"STEPS \(--steps\) must be a positive integer"),
    (["--steps", "0"], r"positive integer"),
    (["--set", "profile=paper"], r"use --profile instead"),
    (["--set", "data_root=/x"], r"use --data instead"),
    (["--profile", "huge"], r"unknown profile 'huge'; valid profiles: laptop, paper"),
    (["--device", "tpu"], r"invalid device 'tpu'"),
    (["--data", "/does/not/exist"], r"does not exist"),
    (["--bogus-flag"], r"unrecognized arguments"),
])
def test_run_chapter_bad_arguments_give_one_clear_line(rc, argv, message):
    with pytest.raises(rc.UsageError, match=message) as info:
        _params(rc, *argv)
    assert "\n" not in str(info.value)


def test_run_chapter_steps_refused_for_a_chapter_that_does_not_train(rc):
    cell = 'profile = "laptop"\ndevice = "cpu"\ndata_root = None\nn_test = 200\n'
    with pytest.raises(rc.UsageError, match=r"chXX_test does not train .*declares: profile, device, data_root, n_test"):
        _params(rc, "--steps", "5", cell=cell)


def test_run_chapter_main_reports_usage_errors_in_one_line(rc, capsys):
    assert rc.main(["no_such_chapter", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run_chapter: error: unknown chapter 'no_such_chapter'") and err.count("\n") == 1
    if CHAPTERS:
        assert rc.main([CHAPTERS[0], "--set", "nope=1", "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert "unknown parameter(s) nope" in err and "profile, device" in err and err.count("\n") == 1


def test_run_chapter_output_goes_to_the_chapter_results_folder(rc, capsys, monkeypatch, tmp_path):
    if not CHAPTERS:
        pytest.skip("no chapters yet")
    stem = CHAPTERS[0]
    monkeypatch.delenv("CDLIB_RESULTS", raising=False)
    assert rc.chapter_results(stem, "paper") == ROOT / "results" / "paper" / stem.split("_", 1)[0]
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    assert rc.main([stem.split("_", 1)[0], "--profile", "paper", "--dry-run"]) == 0  # "ch01" finds its chapter
    out = capsys.readouterr().out
    assert f"output  : {tmp_path / 'paper' / stem.split('_', 1)[0] / (stem + '.ipynb')}" in out


@pytest.mark.parametrize("stem", CHAPTERS)
def test_steps_budget_reaches_the_chapter_step_parameters(rc, stem):
    """STEPS=N sets exactly the *_steps parameters of the chapter's parameters cell (read from the .md,
    independently of run_chapter.py), and a chapter that trains has at least one."""
    md_nb, _ = _read_pair(stem)
    cell = next(c for c in _code_cells(md_nb) if "parameters" in _tags(c))
    tree = ast.parse(cell.source)
    names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    names += [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    want = sorted(n for n in names if n == "steps" or n.endswith("_steps"))
    declared = rc.notebook_parameters(NOTEBOOKS / f"{stem}.ipynb")
    assert sorted(declared) == sorted(names)
    assert sorted(rc.step_parameters(declared)) == want
    if _TRAINS.search((BOOK / f"{stem}.md").read_text()):
        assert want, f"{stem} trains but its parameters cell has no *_steps parameter for STEPS=N"
    if want:
        params = rc.build_parameters(rc.parse_args([stem, "--steps", "7"]), declared, stem)
        assert {k: params[k] for k in want} == {k: 7 for k in want}
    else:
        with pytest.raises(rc.UsageError, match="does not train"):
            rc.build_parameters(rc.parse_args([stem, "--steps", "7"]), declared, stem)


# ------------------------------------------------------------------------------------ clean pages
def _check_site_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_site  # type: ignore

        return check_site
    finally:
        sys.path.pop(0)


def _page(*cells: str) -> str:
    """A page shaped like myst-nb's HTML: each argument is the inner HTML of one cell_output."""
    body = "".join(
        '<div class="cell docutils container"><div class="cell_input docutils container">'
        '<pre>code()</pre></div>'
        f'<div class="cell_output docutils container">{c}</div></div>' for c in cells)
    return f'<html><body><article class="bd-article"><p>Prose with $x$ and /tmp/ is fine.</p>{body}</article></body></html>'


def _stream(text: str, kind: str = "stream") -> str:
    return (f'<div class="output {kind} highlight-myst-ansi notranslate"><div class="highlight"><pre>'
            f'<span></span>{text}\n</pre></div></div>')


def test_check_site_accepts_a_clean_page():
    cs = _check_site_module()
    page = _page(_stream("parameters: {'factorized': 2968963}"),
                 _stream("a"), _stream("a"),  # the same text in two different cells is fine
                 '<div class="output text_html"><img src="x.png"></div><div class="output text_html"><img src="y.png"></div>')
    assert cs.check_html(page) == []


def test_check_site_reports_stderr_output():
    cs = _check_site_module()
    errors = cs.check_html(_page(_stream("  0%|          | 0/5 [00:00<?, ?it/s]", "stderr")))
    assert any("stderr output" in e for e in errors), errors


@pytest.mark.parametrize("path", ["/tmp/ipykernel_42/3.py", "/home/ana/icm/results", "/root/.cache/torch",
                                  "/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py"])
def test_check_site_reports_machine_paths_in_outputs(path):
    cs = _check_site_module()
    errors = cs.check_html(_page(_stream(f"Chapter(ch01: results={path})")))
    assert any("machine path" in e and path.split("/")[1] in e for e in errors), errors
    # in a stderr block too (reported as stderr and as a path)
    errors = cs.check_html(_page(_stream(f"{path}:12: FutureWarning: deprecated", "stderr")))
    assert any("machine path" in e for e in errors) and any("stderr" in e for e in errors), errors


def test_check_site_reports_an_output_shown_twice():
    cs = _check_site_module()
    once = _stream("test images per class: {'circle': 250}")
    errors = cs.check_html(_page(once + once))
    assert any("shown twice" in e for e in errors), errors


def test_check_site_reports_unrendered_math():
    cs = _check_site_module()
    errors = cs.check_html(_page('<div class="output text_markdown"><p>The bound is $\\log_2 10$ bits.</p></div>'))
    assert any("unrendered math" in e for e in errors), errors


def test_check_site_reports_error_boxes_and_tracebacks():
    cs = _check_site_module()
    errors = cs.check_html(_page(_stream("Traceback (most recent call last):\nValueError: boom", "traceback")))
    assert any("traceback" in e for e in errors) and any("ValueError" in e for e in errors), errors


def test_chapter_summary_has_no_machine_path(tmp_path, monkeypatch):
    from cdlib.book import setup_chapter

    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "res"))
    ch = setup_chapter("ch01", "laptop", "cpu", 0, data_root=tmp_path, budget_s=180)
    line = ch.summary()
    assert "\n" not in line and str(tmp_path) not in line and "/tmp" not in line
    assert "ch01" in line and "laptop" in line and "seed 0" in line


def test_chapters_print_no_object_repr():
    for stem in CHAPTERS:
        text = (BOOK / f"{stem}.md").read_text()
        assert not re.search(r"^print\(ch\)$", text, re.M), f"{stem}: print(ch) shows a repr with paths"


def test_progress_bar_is_plain_without_ipywidgets(monkeypatch):
    import importlib.util

    import tqdm.std

    from cdlib import progress

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    progress.progress_bar.cache_clear()
    try:
        assert progress.progress_bar() is tqdm.std.tqdm
    finally:
        progress.progress_bar.cache_clear()


def test_compressai_import_warning_is_silenced_only_for_compressai():
    import subprocess

    code = ("import warnings; warnings.simplefilter('error', FutureWarning); "
            "import cdlib.codecs.learned, cdlib.papers.baselines.models, cdlib.papers.bai2022.model; "
            "import warnings as w; assert not any(f[0] == 'ignore' and f[2] is FutureWarning and f[1] is None "
            "for f in w.filters), 'a blanket FutureWarning filter was left installed'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_mathjax_is_served_from_the_build():
    cfg = _config()
    assert "mathjax_local" in (cfg["sphinx"].get("local_extensions") or {})
    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import mathjax_local  # type: ignore
    finally:
        sys.path.pop(0)
    src = mathjax_local.find_local_mathjax()
    if src is None:
        pytest.skip("no local MathJax 3 installed (pip install django-static-mathjax)")
    assert (src / "tex-mml-chtml.js").is_file() and (src / "output" / "chtml" / "fonts").is_dir()
    page = HTML / "book" / "ch02_measuring_for_machines.html"
    if page.is_file():
        text = page.read_text()
        assert "_static/mathjax/tex-mml-chtml.js" in text and "cdn.jsdelivr" not in text
        assert (HTML / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_check_site_reports_mathjax_from_the_internet():
    cs = _check_site_module()
    cdn = '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
    local = '<script defer="defer" src="../_static/mathjax/tex-mml-chtml.js"></script>'
    assert any("MathJax loaded from the internet" in e for e in cs.check_html(_page() .replace("<body>", "<body>" + cdn)))
    assert cs.check_html(_page().replace("<body>", "<body>" + local)) == []


def test_saved_result_shows_no_machine_path_and_say_fits_the_column(tmp_path, monkeypatch, capsys):
    from cdlib.book import OUTPUT_WIDTH, SavedResult, say, setup_chapter

    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "res"))
    ch = setup_chapter("ch09")
    saved = ch.save("numbers", {"a": 1})
    assert saved.is_file() and saved.name == "numbers.json"
    assert repr(saved) == "saved numbers.json in results/laptop/ch09/" and str(tmp_path) not in repr(saved)
    assert isinstance(saved.parent, SavedResult) and saved.parent.name == "ch09"  # derived paths still work
    say("word " * 40, "and a dict", {k: k * 3 for k in "abcdefghij"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 2 and all(len(line) <= OUTPUT_WIDTH for line in lines)
    assert lines[1].startswith("  ")  # continuations indented
