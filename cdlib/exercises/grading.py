"""The machinery of the autograded exercises: the exercise registry, the checks, the stubs.

An exercise is registered next to its reference solution (``cdlib/exercises/chNN.py`` for Part I, a paper's
``exercises.py`` for a paper chapter) with :func:`register_exercise`: its number (``"1.1"``: chapter 1, item 1
of the chapter's Exercises list), the reference solution, a *check* and an *oracle*.

- ``check(fn, against)`` raises :class:`ExerciseFailure` (or whatever ``fn`` raises) unless ``fn`` does what
  the exercise asks: known answers worked out by hand, then ``fn`` compared with ``against`` on seeded inputs.
- ``oracle()`` returns an independent implementation of the same contract (a library function where one
  exists), so that grading the reference solution compares it with something other than itself.

The stubs that students start from are code cells of the chapters' Exercises sections (the single source of
truth): :func:`extract_stubs` finds them, :func:`init_solutions` writes them to ``solutions/chNN.py``
(``python -m cdlib exercises init solutions/``).  ``tests/test_exercises.py`` is the grader (``make grade``);
:func:`check_in_notebook` is what a chapter's check cell calls (through ``cdlib.book.check_exercise``).
"""
from __future__ import annotations

import importlib.util
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

SOLUTIONS_ENV = "CDLIB_SOLUTIONS"
STUB_MARK = 'raise NotImplementedError("Exercise '
NUMBER_RE = re.compile(r"^([1-9][0-9]*)\.([1-9][0-9]*)$")


class ExerciseFailure(AssertionError):
    """A check found a difference between a student's function and the exercise's contract."""


@dataclass(frozen=True)
class Exercise:
    number: str                         # "1.1": chapter 1, item 1 of the chapter's Exercises list
    reference: Callable                 # the reference solution (a function or a class)
    check: Callable[[Any, Any], None]   # check(fn, against): raises unless fn behaves like against
    oracle: Callable[[], Any]           # an independent implementation of the same contract

    @property
    def name(self) -> str:
        return self.reference.__name__

    @property
    def chapter(self) -> str:
        return f"ch{int(self.number.split('.')[0]):02d}"


_EXERCISES: dict[str, Exercise] = {}


def register_exercise(number: str, reference: Callable, *, check: Callable, oracle: Callable) -> Exercise:
    """Register exercise ``number`` (``"N.k"``); the reference's docstring must start with ``Exercise N.k:``."""
    if not NUMBER_RE.match(number):
        raise ValueError(f"an exercise number is 'N.k' (chapter N, item k), got {number!r}")
    doc = (reference.__doc__ or "").strip()
    if not doc.startswith(f"Exercise {number}:"):
        raise ValueError(f"the docstring of {reference.__name__} must start with 'Exercise {number}:'")
    old = _EXERCISES.get(number)
    if old is not None and old.reference.__module__ != reference.__module__:
        raise ValueError(f"exercise {number} is registered twice ({old.reference.__module__}, {reference.__module__})")
    ex = Exercise(number, reference, check, oracle)
    _EXERCISES[number] = ex
    return ex


def _sort_key(number: str) -> tuple[int, int]:
    n, k = number.split(".")
    return int(n), int(k)


def all_exercises(chapter: str | None = None) -> list[Exercise]:
    """Every registered exercise (Part I's and every paper's), in chapter order; or those of one chapter."""
    from ..registry import load_papers
    from . import ch01, ch02  # noqa: F401  (registration)

    load_papers()  # a paper's exercises register when its package is imported
    out = [_EXERCISES[k] for k in sorted(_EXERCISES, key=_sort_key)]
    return [e for e in out if chapter is None or e.chapter == chapter]


def get_exercise(number: str) -> Exercise:
    exercises = {e.number: e for e in all_exercises()}
    if number not in exercises:
        raise ValueError(f"no exercise {number!r}; the exercises are {', '.join(exercises)}")
    return exercises[number]


def grade(fn, number: str, against: str = "reference") -> None:
    """Check ``fn`` for exercise ``number`` against the reference solution or (``against="oracle"``) the
    independent oracle; raises on the first failure."""
    ex = get_exercise(number)
    if against not in ("reference", "oracle"):
        raise ValueError(f"against must be 'reference' or 'oracle', got {against!r}")
    ex.check(fn, ex.reference if against == "reference" else ex.oracle())


def check_in_notebook(fn, number: str) -> bool:
    """Grade ``fn`` for exercise ``number`` and print one verdict; never raises (a chapter cell must not fail)."""
    with warnings.catch_warnings():  # a dependency's import-time warning is no verdict (and goes to stderr)
        warnings.simplefilter("ignore")
        ex = get_exercise(number)
    head = f"Exercise {number} ({ex.name})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grade(fn, number)
    except NotImplementedError:
        # (no exception name in the output: the book's site check reads one in an output as an error)
        _say(f"{head}: not written yet. Write your code in the stub above, in place of its `raise` line, "
             f"run that cell, then this one again.")
        return False
    except Exception as exc:  # noqa: BLE001  (any error of the student's code is a verdict, not a crash)
        text = str(exc).strip().splitlines()
        _say(f"{head}: FAILED. {type(exc).__name__}: {text[0] if text else '(no message)'}")
        return False
    _say(f"{head}: passed.")
    return True


def _say(text: str, width: int = 75) -> None:
    """Print ``text`` in lines of at most ``width`` characters (a chapter's output fits the book's column)."""
    import textwrap

    print(textwrap.fill(text, width=width, break_on_hyphens=False))


# ------------------------------------------------------------------------------------------------ students
def load_solutions(chapter: str, root: str | Path):
    """The student's module of ``chapter``: ``root/chNN.py`` (``root`` a folder) or ``root`` itself (a
    ``chNN.py`` file).  ``FileNotFoundError`` when it is not there: a missing answer is a failing grade."""
    path = Path(root)
    if path.is_dir():
        path = path / f"{chapter}.py"
    elif path.is_file() and path.stem != chapter:
        raise FileNotFoundError(f"{root} is the solutions file of {path.stem}, not of {chapter}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no answers for {chapter} (start from the stubs: "
                                f"python -m cdlib exercises init {path.parent})")
    spec = importlib.util.spec_from_file_location(f"cdlib_solutions_{chapter}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------ stubs
def default_book_dir() -> Path:
    """The book's chapter sources (``<repo>/book``) next to this package."""
    return Path(__file__).resolve().parent.parent.parent / "book"


def _exercise_section(text: str) -> str:
    """The ``## Exercises`` section of a chapter's MyST source (up to the next ``## `` heading)."""
    m = re.search(r"^## Exercises[ \t]*$", text, flags=re.M)
    if not m:
        return ""
    rest = text[m.end():]
    nxt = re.search(r"^## ", rest, flags=re.M)
    return rest[: nxt.start()] if nxt else rest


def _code_cells(section: str) -> list[str]:
    """The sources of the ``{code-cell}`` blocks of a MyST section, without their option lines."""
    cells = []
    for m in re.finditer(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", section, flags=re.M | re.S):
        lines = m.group(1).splitlines()
        if lines and lines[0].strip() == "---":  # a YAML options block
            end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---"), 0)
            lines = lines[end + 1:]
        while lines and (lines[0].startswith(":") or not lines[0].strip()):  # ":tags: [...]" options
            lines = lines[1:]
        cells.append("\n".join(lines).rstrip() + "\n")
    return cells


def extract_stubs(book_dir: str | Path | None = None) -> dict[str, str]:
    """``{chapter: source of solutions/chNN.py}``: the stub cells (code cells that ``raise
    NotImplementedError("Exercise ...")``) of each chapter's Exercises section, in order."""
    book = Path(book_dir) if book_dir is not None else default_book_dir()
    files = sorted(book.glob("ch[0-9][0-9]_*.md"))
    if not files:
        raise FileNotFoundError(f"no chapter sources (chNN_*.md) in {book}: pass the book folder with --book")
    out = {}
    for path in files:
        cells = [c for c in _code_cells(_exercise_section(path.read_text())) if STUB_MARK in c]
        if cells:
            chapter = path.name[:4]
            head = (f'"""Solutions to the autograded exercises of {path.stem} (stubs from book/{path.name}).\n\n'
                    f'Replace each `raise NotImplementedError(...)` with your code, then grade with\n'
                    f'`make grade CDLIB_SOLUTIONS=<this folder>`.\n"""\n')
            out[chapter] = head + "\n\n".join(cells)
    return out


def init_solutions(folder: str | Path, book_dir: str | Path | None = None, force: bool = False) -> list[Path]:
    """Write the stubs to ``folder/chNN.py`` (never over an existing file unless ``force``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file: give the folder where chNN.py files go")
    stubs = extract_stubs(book_dir)
    targets = {folder / f"{ch}.py": src for ch, src in stubs.items()}
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ValueError(f"{', '.join(existing)} already exist (your answers?); pass --force to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    for path, src in targets.items():
        path.write_text(src)
    return list(targets)


# ------------------------------------------------------------------------------------------------ check helpers
def expect(cond: bool, message: str) -> None:
    if not cond:
        raise ExerciseFailure(message)


def expect_close(actual, expected, what: str, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """``actual`` and ``expected`` (scalars, arrays or tensors) have the same shape and close values (NaN
    where the other is NaN)."""
    a = _as_array(actual)
    e = _as_array(expected)
    expect(a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}")
    if not np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(a - e)
        diff = np.where(np.isnan(diff), np.inf, diff)
        i = np.unravel_index(int(np.argmax(diff)), a.shape) if a.ndim else ()
        raise ExerciseFailure(f"{what}: got {a[i]!r}, expected {e[i]!r}" + (f" at index {tuple(int(j) for j in i)}"
                                                                           if a.ndim else ""))


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ExerciseFailure(f"expected a number or an array of numbers, got {type(x).__name__}") from None


def expect_raises(exc_type, fn, *args, what: str, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except exc_type:
        return
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExerciseFailure(f"{what}: expected {exc_type.__name__}, got {type(exc).__name__}: {exc}") from None
    raise ExerciseFailure(f"{what}: expected {exc_type.__name__}, nothing was raised")


def expect_nan(x, what: str) -> None:
    expect(isinstance(x, (float, np.floating)) and math.isnan(x), f"{what}: expected nan, got {x!r}")
