"""Exercises with automatic checks for the course kit (issue 17).

    from dfs.exercises import check
    check("q_sample", my_q_sample)      # ✓ …, or ExerciseFailed naming the property that failed

Each exercise is the name of the function the student writes (``EXERCISES[name]`` has its notebook, title, the
equation it implements and the reference implementation: the project's own code wherever it has one).
The exercise notebooks are ``notebooks/exercises/NN_*.ipynb``; :mod:`dfs.exercises.student` makes the student
edition (``dfs exercises --out DIR``) and grades a filled-in notebook (``dfs exercises --grade NB``).
"""
from . import diffusion_checks, model_checks  # noqa: F401 - registers the exercises
from .core import EXERCISES, CheckResult, Exercise, ExerciseFailed, check, run_check

__all__ = ["EXERCISES", "CheckResult", "Exercise", "ExerciseFailed", "check", "run_check"]
