"""The autograded exercises: reference solutions (one module per chapter of Part I: ``ch01.py``, ``ch02.py``;
a paper's are in its package's ``exercises.py``) and the grading machinery (:mod:`.grading`).

Students start from the stub cells of a chapter's Exercises section (``python -m cdlib exercises init
solutions/`` copies them to ``solutions/chNN.py``); ``make grade CDLIB_SOLUTIONS=solutions/`` (the grader,
``tests/test_exercises.py``) checks their functions against these.  See ``book/instructors.md``.
"""
from .grading import (Exercise, ExerciseFailure, all_exercises, check_in_notebook, extract_stubs, get_exercise,
                      grade, init_solutions, load_solutions, register_exercise)

__all__ = ["Exercise", "ExerciseFailure", "all_exercises", "check_in_notebook", "extract_stubs", "get_exercise",
           "grade", "init_solutions", "load_solutions", "register_exercise"]
