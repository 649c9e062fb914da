"""The checking machinery: an :class:`Exercise` registry, the :class:`Probe` that calls a student's function, and
:func:`check`, which answers with the *property* that failed, never with the solution.

A checker is a function ``checker(p: Probe)``: it calls the student's function through ``p(...)`` (which turns
the student's exceptions into a readable failure), compares what comes back with a property or with the
reference implementation, and calls ``p.fail("...")`` with a sentence that names the property and the numbers
("your x_t has variance 1.9 at t = 999, expected ≈ 1"). ``p.passed("...")`` records each property that held.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class ExerciseFailed(AssertionError):
    """A check failed; the message says which property, with the numbers."""

    def __init__(self, name: str, message: str):
        self.name, self.reason = name, message
        super().__init__(f"{name}: {message}")


class _Failure(Exception):
    """Raised inside a checker by :meth:`Probe.fail`; :func:`check` turns it into an ExerciseFailed."""


@dataclass(frozen=True)
class Exercise:
    """One checked exercise: ``name`` is also the name of the function the student writes."""

    name: str
    notebook: str                      # "01", "02", … (the exercise notebook's number)
    title: str
    equation: str                      # the paper/thesis equation it implements
    checker: Callable
    reference: Callable


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, notebook: str, title: str, equation: str, reference: Callable):
    """Decorator that registers a checker under ``name``."""
    def register(checker):
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        EXERCISES[name] = Exercise(name, notebook, title, equation, checker, reference)
        return checker
    return register


def _shape(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, (int, float, bool, str)) or x is None:
        return repr(x)
    return getattr(x, "__name__", type(x).__name__)


class Probe:
    """Calls the student's function and collects the properties that held."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn, self.properties = name, fn, []

    def __call__(self, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except NotImplementedError:
            raise _NotImplemented() from None
        except _Failure:
            raise
        except Exception as e:  # noqa: BLE001 - any error of the student's code is reported, not raised
            shown = ", ".join([_shape(a) for a in args] + [f"{k}={_shape(v)}" for k, v in kwargs.items()])
            raise _Failure(f"your function raised {type(e).__name__}: {e} (called with {shown})") from None

    def fail(self, message: str):
        raise _Failure(message)

    def passed(self, what: str) -> None:
        self.properties.append(what)

    # ------------------------------------------------------------------ helpers for the checkers

    def tensor(self, out, what: str, shape=None, dtype=None) -> torch.Tensor:
        """``out`` must be a tensor (of ``shape`` and ``dtype`` when given) without NaN."""
        if not isinstance(out, torch.Tensor):
            self.fail(f"your {what} is a {type(out).__name__}, expected a torch.Tensor")
        if shape is not None and tuple(out.shape) != tuple(shape):
            self.fail(f"your {what} has shape {tuple(out.shape)}, expected {tuple(shape)}")
        if dtype is not None and out.dtype != dtype:
            self.fail(f"your {what} is {str(out.dtype).replace('torch.', '')} for "
                      f"{str(dtype).replace('torch.', '')} inputs; keep the inputs' dtype")
        if out.is_floating_point() and torch.isnan(out).any():
            self.fail(f"your {what} contains NaN (a square root or log of a negative number?)")
        return out

    def close(self, got: torch.Tensor, expected: torch.Tensor, what: str, where: str = "", rtol: float = 1e-6,
              atol: float = 1e-8) -> None:
        """``got`` ≈ ``expected`` elementwise, else fail with the largest difference and where it is."""
        got, expected = got.detach().double(), expected.detach().double()
        if got.shape != expected.shape:
            try:
                got = got.expand_as(expected)
            except RuntimeError:
                self.fail(f"your {what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}{where}")
        err = (got - expected).abs()
        bad = err > atol + rtol * expected.abs()
        if bad.any():
            i = int(err.flatten().argmax())
            self.fail(f"your {what} is {float(got.flatten()[i]):.6g} where {float(expected.flatten()[i]):.6g} is "
                      f"expected{where} (largest difference {float(err.max()):.3g})")


class _NotImplemented(Exception):
    pass


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str
    properties: list = field(default_factory=list)

    def __str__(self) -> str:
        if self.passed:
            return f"✓ {self.name}: every check passed ({'; '.join(self.properties)})"
        return f"✗ {self.name}: {self.message}"


def run_check(name: str, fn: Callable, seed: int = 0) -> CheckResult:
    """Run exercise ``name``'s checker on ``fn`` (seeded, the global RNG state restored); never raises."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise named {name!r}; known: {sorted(EXERCISES)}")
    if not callable(fn):
        return CheckResult(name, False, f"expected your function, got a {type(fn).__name__}")
    probe = Probe(name, fn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            EXERCISES[name].checker(probe)
        except _NotImplemented:
            return CheckResult(name, False, "not implemented yet: the function still raises NotImplementedError "
                                            "(replace the stub's body with your implementation)")
        except _Failure as e:
            return CheckResult(name, False, str(e), probe.properties)
    return CheckResult(name, True, "", probe.properties)


def check(name: str, fn: Callable, seed: int = 0) -> None:
    """Check your implementation of exercise ``name``: prints ✓ and the properties checked, or raises
    :class:`ExerciseFailed` naming the property that failed (with the numbers, not the solution). Use
    :func:`run_check` for the result as data."""
    result = run_check(name, fn, seed)
    if not result.passed:
        raise ExerciseFailed(name, result.message)
    print(result)


def mc_tolerance(n: int, k: float = 6.0) -> float:
    """k standard errors of a Gaussian sample variance's relative error, k √(2/(n−1))."""
    return k * math.sqrt(2 / (n - 1))
