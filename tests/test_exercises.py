"""The exercise grader (``make grade``; see book/instructors.md).

``CDLIB_SOLUTIONS=path`` (a folder of ``chNN.py`` files, or one such file) grades a student's functions:
one test per exercise, which FAILS when the answer is missing (no file, no function, or the stub's
``NotImplementedError``) or wrong.  A single ``chNN.py`` file grades that chapter only (the other chapters'
tests are skipped: not part of that submission).

Without ``CDLIB_SOLUTIONS``, the reference solutions are graded, so that the book's CI keeps them correct.
Every exercise's check (next to its reference solution: ``cdlib/exercises/chNN.py``, a paper's
``exercises.py``) tests known answers worked out by hand, then compares the function with another
implementation on seeded inputs: a student's with the reference solution, the reference solution with an
independent *oracle* (a library function where one exists: CompressAI, ``bjontegaard``, timm, the paper's
model), so that a wrong reference fails too.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from cdlib.exercises import all_exercises, load_solutions

EXERCISES = all_exercises()


def _solutions_root() -> str:
    return os.environ.get("CDLIB_SOLUTIONS", "").strip()


def student(ex):
    """The student's function (or class) of exercise ``ex``; a missing one fails the test."""
    root = _solutions_root()
    path = Path(root)
    if path.is_file() and path.suffix == ".py" and path.stem != ex.chapter:
        pytest.skip(f"{root} holds {path.stem}'s answers only")
    try:
        mod = load_solutions(ex.chapter, root)
    except FileNotFoundError as exc:
        pytest.fail(f"Exercise {ex.number} ({ex.name}): {exc}", pytrace=False)
    fn = getattr(mod, ex.name, None)
    if fn is None:
        pytest.fail(f"Exercise {ex.number}: {mod.__file__} does not define {ex.name}", pytrace=False)
    return fn


@pytest.mark.parametrize("ex", EXERCISES, ids=[f"ex{e.number}-{e.name}" for e in EXERCISES])
def test_exercise(ex):
    if _solutions_root():  # a student's answer, against the reference solution
        fn, against = student(ex), ex.reference
    else:  # the reference solution, against the independent oracle
        fn, against = ex.reference, ex.oracle()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # compressai's torch.jit.script on import
        ex.check(fn, against)


def test_every_chapter_has_two_exercises():
    chapters = {e.chapter for e in EXERCISES}
    assert {"ch01", "ch02", "ch03", "ch04"} <= chapters
    for ch in chapters:
        numbers = [e.number for e in EXERCISES if e.chapter == ch]
        k = [int(n.split(".")[1]) for n in numbers]
        assert len(k) >= 2 and k == list(range(1, len(k) + 1)), f"{ch}: exercises {numbers} (1..n, no gaps)"
