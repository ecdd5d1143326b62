"""Reference solutions of the autograded exercises (one module per chapter).

Students write the same functions in ``solutions/chNN.py``; ``make grade`` (or
``CDLIB_SOLUTIONS=solutions pytest tests/test_exercises.py``) compares theirs with these.
"""
