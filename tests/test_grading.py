"""The grader grades: ``make grade`` (tests/test_exercises.py, run here as a subprocess, as the Makefile runs
it) passes on the reference solutions, and fails every exercise on the chapters' stubs and on an empty
solutions folder (a missing answer is a failing grade, not a skip).  Also: the stubs in the chapters, the
reference solutions and the chapters' exercise lists agree (names, numbers, docstrings), and a chapter's
check cell prints a verdict without raising."""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdlib.exercises import all_exercises, check_in_notebook, extract_stubs, init_solutions
from cdlib.exercises.grading import _exercise_section

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
EXERCISES = all_exercises()
IDS = {f"ex{e.number}-{e.name}" for e in EXERCISES}
MAX_CODE_CHARS = 75  # scripts/check_site.py: a longer code line is wider than the book's column


def _grader(solutions: str | None) -> subprocess.Popen:
    """The Makefile's grade recipe: CDLIB_SOLUTIONS=... python -m pytest tests/test_exercises.py -q -rA."""
    env = {**os.environ, "CDLIB_SOLUTIONS": solutions or "", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pytest", "tests/test_exercises.py", "-q", "-rA",
                             "-p", "no:cacheprovider"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The grader's exit status, per-exercise outcome and output on three solution folders, run side by side."""
    tmp = tmp_path_factory.mktemp("grading")
    stubs, empty, shims = tmp / "stubs", tmp / "empty", tmp / "reference"
    init_solutions(stubs, BOOK)
    empty.mkdir()
    shims.mkdir()
    for ch in sorted({e.chapter for e in EXERCISES}):  # the reference solutions, handed in as a student would
        names = [e for e in EXERCISES if e.chapter == ch]
        (shims / f"{ch}.py").write_text("".join(f"from {e.reference.__module__} import {e.name}  # noqa: F401\n"
                                                for e in names))
    # (without CDLIB_SOLUTIONS the grader checks the reference solutions against the oracles: that is
    # tests/test_exercises.py itself in the test suite, so it does not run a fourth time here)
    runs = {"reference": _grader(str(shims)), "stubs": _grader(str(stubs)), "empty": _grader(str(empty))}
    out = {}
    for key, proc in runs.items():
        text, _ = proc.communicate(timeout=300)
        outcome = dict((m.group(2), m.group(1)) for m in
                       re.finditer(r"^(PASSED|FAILED|SKIPPED|ERROR) tests/test_exercises\.py::test_exercise\[([^\]]+)\]",
                                   text, flags=re.M))
        out[key] = (proc.returncode, outcome, text)
    return out


def test_grader_passes_the_reference_solutions(graded):
    rc, outcome, text = graded["reference"]
    assert rc == 0, text[-3000:]
    assert outcome == {i: "PASSED" for i in IDS}, text[-3000:]


def test_grader_fails_the_stubs(graded):
    rc, outcome, text = graded["stubs"]
    assert rc == 1, text[-3000:]
    assert outcome == {i: "FAILED" for i in IDS}, text[-3000:]
    assert text.count("NotImplementedError") >= len(IDS)


def test_grader_fails_an_empty_folder(graded):
    rc, outcome, text = graded["empty"]
    assert rc == 1, text[-3000:]
    assert outcome == {i: "FAILED" for i in IDS}, text[-3000:]
    assert "ch01.py not found" in text and "exercises init" in text


# ------------------------------------------------------------------------------------------------ consistency
def test_stubs_match_the_reference_solutions(tmp_path):
    """One stub per exercise in its chapter: same name and signature, the same docstring (which starts with
    'Exercise N.k:'), and it raises NotImplementedError naming the exercise."""
    stubs = extract_stubs(BOOK)
    assert set(stubs) == {e.chapter for e in EXERCISES}
    for e in EXERCISES:
        ns: dict = {}
        exec(compile(stubs[e.chapter], f"{e.chapter}.py", "exec"), ns)
        stub = ns.get(e.name)
        assert stub is not None, f"the stubs of {e.chapter} lack {e.name}"
        assert inspect.getdoc(stub) == inspect.getdoc(e.reference), f"{e.name}: stub and reference docstrings differ"
        assert inspect.getdoc(stub).startswith(f"Exercise {e.number}:")
        assert f'raise NotImplementedError("Exercise {e.number}: ' in stubs[e.chapter]
        if inspect.isclass(e.reference):
            for m in ("__init__", "forward"):
                assert str(inspect.signature(getattr(stub, m))) == str(inspect.signature(getattr(e.reference, m)))
        else:
            assert str(inspect.signature(stub)) == str(inspect.signature(e.reference))
    for ch, src in stubs.items():  # code wider than the book's column fails the site check
        wide = [ln for ln in src.split('"""\n', 1)[1].splitlines() if len(ln) > MAX_CODE_CHARS]
        assert not wide, f"{ch}: stub lines over {MAX_CODE_CHARS} characters: {wide}"
    defined = {ch: set(re.findall(r"^(?:def|class) (\w+)", src, flags=re.M)) for ch, src in stubs.items()}
    for ch, names in defined.items():
        assert names == {e.name for e in EXERCISES if e.chapter == ch}, f"{ch}: stubs {sorted(names)}"


def test_chapter_lists_number_the_exercises():
    """Item k of chapter N's Exercises list is 'Exercise N.k', naming the function of the registered N.k; each
    stub is followed by a check cell for the same number."""
    for e in EXERCISES:
        path = next(BOOK.glob(f"{e.chapter}_*.md"))
        section = _exercise_section(path.read_text())
        k = e.number.split(".")[1]
        item = re.search(rf"^{k}\. \*\*Exercise (\d+\.\d+) \(autograded\): `(\w+)", section, flags=re.M)
        assert item, f"{path.name}: item {k} of the Exercises list is not 'Exercise {e.number} (autograded): ...'"
        assert item.groups() == (e.number, e.name), f"{path.name}: item {k} is {item.groups()}"
        assert f'check_exercise({e.name}, "{e.number}")' in section, f"{path.name}: no check cell for {e.number}"


def test_init_solutions_refuses_to_overwrite(tmp_path):
    written = init_solutions(tmp_path, BOOK)
    assert sorted(p.name for p in written) == sorted(f"{c}.py" for c in {e.chapter for e in EXERCISES})
    (tmp_path / "ch01.py").write_text("# my answers\n")
    with pytest.raises(ValueError, match="already exist"):
        init_solutions(tmp_path, BOOK)
    assert (tmp_path / "ch01.py").read_text() == "# my answers\n"
    init_solutions(tmp_path, BOOK, force=True)
    assert "NotImplementedError" in (tmp_path / "ch01.py").read_text()
    with pytest.raises(FileNotFoundError, match="--book"):
        init_solutions(tmp_path / "x", tmp_path)


def test_cli_exercises_init(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "cdlib", "exercises", "init", str(tmp_path / "sol")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    written = {p.stem for p in (tmp_path / "sol").glob("ch*.py")}
    assert written == {e.chapter for e in EXERCISES} and "ch04" in written, run.stdout
    assert "make grade CDLIB_SOLUTIONS=" in run.stdout
    again = subprocess.run([sys.executable, "-m", "cdlib", "exercises", "init", str(tmp_path / "sol")], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and len(again.stderr.splitlines()) == 1


def test_check_cell_prints_a_verdict_and_never_raises(capsys):
    e = next(e for e in EXERCISES if e.number == "1.1")

    def stub(*a, **k):
        raise NotImplementedError("Exercise 1.1: write gaussian_likelihood")

    def crashes(*a, **k):
        return {}["no such key"]

    assert check_in_notebook(stub, "1.1") is False
    assert check_in_notebook(lambda y, m, s, **k: y * 0 + 0.5, "1.1") is False
    assert check_in_notebook(crashes, "1.1") is False
    assert check_in_notebook(e.reference, "1.1") is True
    out = capsys.readouterr()
    verdicts = re.split(r"\n(?=Exercise 1\.1 )", out.out.strip())
    assert out.err == "" and len(verdicts) == 4, out
    assert "not written yet" in verdicts[0] and "FAILED" in verdicts[1] and "KeyError" in verdicts[2]
    assert verdicts[3] == "Exercise 1.1 (gaussian_likelihood): passed."
    assert "Traceback" not in out.out and str(ROOT) not in out.out
    assert "Error" not in verdicts[0]  # the stub's verdict, shown in the book: no exception name
    assert max(len(line) for line in out.out.splitlines()) <= MAX_CODE_CHARS  # fits the book's column
